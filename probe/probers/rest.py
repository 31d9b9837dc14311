"""The REST prober: Milvus's RESTful API on 19530 (or proxy.http.port with TLS on).

resolve → connect (TCP, TLS) → request (list collections, until the whole body is read)
→ close, on a fresh connection every cycle. The HTTP status alone does not tell success:
Milvus answers many errors with HTTP 200 and a code in the body (2.3.5 here: a missing
database is HTTP 200 with code 800), so success is the body's code — v1 200; v2 0, or 200
as some 2.4.x releases send.

`rest_api: auto` finds out once which API the server speaks (v2 first, then v1 on the
same connection), remembers it, and finds out again when it stops answering.
"""

from __future__ import annotations

import enum
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from probe.milvus.auth import SecretFileError
from probe.probers import ERROR_TEXT_LIMIT, BaseProber, Failed, InfoMode
from probe.probers.http import Answer, Connection, connect, tls_context
from probe.probers.ledger import ConnectionLedger
from probe.probers.reasons import STATUS_REASONS
from probe.probers.tls import view_of
from probe.resolver import ResolveError, resolve
from probe.result import Dial, FailureReason, ProbeResult, TlsView, dials_note
from probe.targets import Target


class Phase(enum.StrEnum):
    """The steps of a REST cycle, in the order they run."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    """TCP, and the TLS handshake for https."""
    REQUEST = "request"
    """From sending the request until the whole answer is read."""
    CLOSE = "close"


class RestApi(enum.StrEnum):
    AUTO = "auto"
    V1 = "v1"
    """Milvus 2.2/2.3: GET /v1/vector/collections."""
    V2 = "v2"
    """Milvus 2.4+: POST /v2/vectordb/collections/list."""


# Body codes of the REST API that are not common.Status codes.
_BODY_REASONS: dict[int, FailureReason] = {
    **STATUS_REASONS,
    1800: FailureReason.UNAUTHENTICATED,
    1801: FailureReason.PERMISSION_DENIED,
    8: FailureReason.RATE_LIMITED,
}
_HTTP_REASONS: dict[int, FailureReason] = {
    401: FailureReason.UNAUTHENTICATED,
    403: FailureReason.PERMISSION_DENIED,
    404: FailureReason.UNIMPLEMENTED,
    405: FailureReason.UNIMPLEMENTED,
    429: FailureReason.RATE_LIMITED,
}


@dataclass(frozen=True, slots=True)
class RestFacts:
    """What a REST cycle learnt beyond the common fields."""

    api: str
    """v1 or v2: the API the request used ("" if none was sent)."""
    http_status: int | None = None
    body_code: int | None = None
    collections: int | None = None
    """How many collections the list named (a count only: names stay private)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rest_api": self.api or None,
            "http_status": self.http_status,
            "body_code": self.body_code,
        }

    def phase_note(self, result: ProbeResult, phase: str) -> str:
        failed = result.failed_phase == phase
        if phase == Phase.RESOLVE:
            if failed:
                return "FAILED"
            return "→ " + ", ".join(result.addresses) if result.addresses else ""
        if phase == Phase.CONNECT:
            dialled = dials_note(result.dials)
            if failed:
                return f"FAILED ({dialled})" if dialled else "FAILED"
            return (dialled or "ready") + (f" ({result.tls.version})" if result.tls else "")
        if phase == Phase.REQUEST:
            call = _describe(self.api)
            if failed:
                return f"{call} FAILED" + (
                    f" (HTTP {self.http_status})" if self.http_status else ""
                )
            return (
                f"{call}: HTTP {self.http_status} code={self.body_code} "
                f"collections={self.collections}"
            )
        return ""


def _describe(api: str) -> str:
    if api == RestApi.V1:
        return "GET /v1/vector/collections"
    if api == RestApi.V2:
        return "POST /v2/vectordb/collections/list"
    return "list collections"


@dataclass
class _Cycle:
    phases: dict[str, float] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    dials: tuple[Dial, ...] = ()
    api: str = ""
    http_status: int | None = None
    body_code: int | None = None
    collections: int | None = None
    tls: TlsView | None = None


class RestProber(BaseProber):
    """Runs REST cycles against targets. Thread-safe; one instance serves every target."""

    phases = tuple(Phase)

    def __init__(
        self,
        *,
        ledger: ConnectionLedger | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger or ConnectionLedger()
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._apis: dict[tuple[str, str], RestApi] = {}
        """What `auto` found each target speaks."""
        self._contexts: dict[Target, ssl.SSLContext] = {}

    def forget(self, target: Target) -> None:
        with self._lock:
            self._apis.pop((target.alias, target.address), None)
            self._contexts.pop(target, None)

    def run(self, target: Target, info: InfoMode = InfoMode.NONE) -> ProbeResult:
        """One cycle; never raises."""
        started_at, start = self._wall(), self._clock()
        deadline = start + target.timeout
        cycle = _Cycle()
        failure: Failed | None = None
        try:
            self._cycle(target, cycle, deadline)
        except Failed as failed:
            failure = failed
        duration = self._clock() - start
        redact = target.redact
        return ProbeResult(
            alias=target.alias,
            target=target.address,
            method="list_collections",
            started_at=started_at,
            duration=duration,
            phases=cycle.phases,
            success=failure is None,
            protocol="rest",
            reason=failure.reason if failure else None,
            failed_phase=failure.phase if failure else None,
            error=redact(failure.error)[:ERROR_TEXT_LIMIT] if failure else "",
            status_code=cycle.body_code if failure else None,
            addresses=cycle.addresses,
            dials=cycle.dials,
            facts=RestFacts(cycle.api, cycle.http_status, cycle.body_code, cycle.collections),
            tls=cycle.tls,
        )

    def _context(self, target: Target) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(target)
        if context is None:
            context = tls_context(target, Phase.CONNECT)
            with self._lock:
                self._contexts[target] = context
        return context

    def _cycle(self, target: Target, cycle: _Cycle, deadline: float) -> None:
        clock = self._clock
        try:
            token = target.credentials.bearer() if target.credentials else None
        except SecretFileError as exc:
            raise Failed(FailureReason.ERROR, Phase.RESOLVE, str(exc)) from None

        t = clock()
        try:
            resolved = resolve(target.host, target.port, deadline - clock())
        except ResolveError as exc:
            cycle.phases[Phase.RESOLVE] = clock() - t
            raise Failed(exc.reason, Phase.RESOLVE, str(exc)) from None
        cycle.phases[Phase.RESOLVE] = clock() - t
        cycle.addresses = resolved.addresses

        t = clock()
        context = self._context(target) if target.secure else None
        try:
            connection, cycle.dials = connect(
                target, resolved, target.secure, context, deadline, clock, Phase.CONNECT
            )
        except Failed as failed:
            cycle.dials = failed.dials
            raise
        finally:
            cycle.phases[Phase.CONNECT] = clock() - t
        key = (target.alias, target.address)
        if not self.ledger.opened(key, connection):
            connection.close()
            raise Failed(
                FailureReason.ERROR, Phase.CONNECT, "cancelled: the probe is shutting down"
            )
        try:
            if isinstance(connection.sock, ssl.SSLSocket):
                cycle.tls = view_of(connection.sock, self._wall)
            t = clock()
            try:
                self._request(target, connection, token, cycle, deadline)
            finally:
                cycle.phases[Phase.REQUEST] = clock() - t
        finally:
            t = clock()
            connection.close()
            self.ledger.closed(connection)
            cycle.phases[Phase.CLOSE] = clock() - t

    def _request(
        self,
        target: Target,
        connection: Connection,
        token: str | None,
        cycle: _Cycle,
        deadline: float,
    ) -> None:
        key = (target.alias, target.address)
        wanted = RestApi(target.rest_api)
        with self._lock:
            known = self._apis.get(key)
        api = wanted if wanted is not RestApi.AUTO else (known or RestApi.V2)
        answer = self._send(target, connection, api, token, deadline, cycle)
        if wanted is RestApi.AUTO and answer.status == 404:
            if api is RestApi.V2 and known is None:
                with self._lock:
                    self._apis[key] = RestApi.V1  # not v2: the next cycle asks v1
                if answer.reusable:  # ... and so does this one, on the same connection
                    api = RestApi.V1
                    answer = self._send(target, connection, api, token, deadline, cycle)
            else:
                with self._lock:
                    self._apis.pop(key, None)  # it stopped answering: find out again
        self._judge(api, answer, cycle)
        if wanted is RestApi.AUTO:
            with self._lock:
                self._apis[key] = api

    def _send(
        self,
        target: Target,
        connection: Connection,
        api: RestApi,
        token: str | None,
        deadline: float,
        cycle: _Cycle,
    ) -> Answer:
        headers = {"Accept": "application/json", "User-Agent": "milvus-probe"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        cycle.api = api.value
        if api is RestApi.V1:
            path = "/v1/vector/collections"
            if target.db_name:
                path += f"?dbName={target.db_name}"
            answer = connection.exchange(
                "GET", path, headers, None, deadline, self._clock, Phase.REQUEST
            )
        else:
            headers["Content-Type"] = "application/json"
            body = json.dumps({"dbName": target.db_name} if target.db_name else {}).encode()
            answer = connection.exchange(
                "POST",
                "/v2/vectordb/collections/list",
                headers,
                body,
                deadline,
                self._clock,
                Phase.REQUEST,
            )
        cycle.http_status = answer.status
        return answer

    @staticmethod
    def _judge(api: RestApi, answer: Answer, cycle: _Cycle) -> None:
        """Raise the cycle's failure unless the body says success."""
        status, body = answer.status, answer.body
        doc: Any = None
        try:
            doc = json.loads(body) if body else None
        except (ValueError, RecursionError):
            doc = None
        code = doc.get("code") if isinstance(doc, dict) else None
        cycle.body_code = code if isinstance(code, int) and not isinstance(code, bool) else None
        message = doc.get("message") if isinstance(doc, dict) else None
        said = f": {message}" if isinstance(message, str) and message else ""
        if status != 200:
            reason = _HTTP_REASONS.get(status)
            if reason is None and status >= 500:
                reason = FailureReason.UNAVAILABLE
            if reason is None and _https_on_plain(body):
                reason = FailureReason.TLS
            if cycle.body_code in (1800, 1801):
                reason = _BODY_REASONS[cycle.body_code]
            text = said or (": " + _snippet(body) if body else "")
            raise Failed(
                reason or FailureReason.ERROR,
                Phase.REQUEST,
                f"HTTP {status} from {_describe(api)}{text}",
                status_code=cycle.body_code,
            )
        if not isinstance(doc, dict):
            what = "HTML" if body.lstrip()[:1] == b"<" else "not JSON"
            raise Failed(
                FailureReason.UNIMPLEMENTED,
                Phase.REQUEST,
                f"HTTP 200 from {_describe(api)} but the body is {what}: {_snippet(body)}",
            )
        ok = (200,) if api is RestApi.V1 else (0, 200)
        if cycle.body_code in ok:
            data = doc.get("data")
            cycle.collections = len(data) if isinstance(data, list) else None
            return
        if cycle.body_code is None:
            raise Failed(
                FailureReason.UNIMPLEMENTED,
                Phase.REQUEST,
                f"HTTP 200 from {_describe(api)} without a code in the body: {_snippet(body)}",
            )
        reason = _BODY_REASONS.get(cycle.body_code, FailureReason.ERROR)
        text = f"Milvus answered {_describe(api)} with HTTP 200 and code {cycle.body_code}{said}"
        raise Failed(reason, Phase.REQUEST, text, status_code=cycle.body_code)


def _snippet(body: bytes) -> str:
    return repr(body[:160].decode("utf-8", "replace"))


def _https_on_plain(body: bytes) -> bool:
    """Go's answer to plain HTTP sent to a TLS port."""
    return b"HTTP request to an HTTPS server" in body[:200]
