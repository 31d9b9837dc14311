"""Milvus's own view of itself: `GET /healthz` on its management port (9091).

Milvus answers per component when asked for JSON (`Content-Type: application/json`):
`{"state":"OK","detail":[{"name":"proxy","code":1},...]}`, or HTTP 500 with "Not all
components are healthy". That view can say OK while port 19530 refuses clients (and the
other way round), so it is shown beside the probe's, never instead of it. Each check is
one fresh connection, counted in the ledger.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from probe.probers import ERROR_TEXT_LIMIT, Failed
from probe.probers.http import connect, tls_context
from probe.probers.ledger import ConnectionLedger
from probe.resolver import ResolveError, resolve
from probe.result import ComponentState, FailureReason, ManagementView
from probe.targets import Target

PHASE = "management"


class ManagementCheck:
    """Runs /healthz checks, each target at most once per its management interval."""

    def __init__(
        self,
        ledger: ConnectionLedger,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}

    def due(self, target: Target) -> bool:
        with self._lock:
            last = self._last.get((target.alias, target.address))
        return last is None or self._clock() - last >= target.management_interval

    def forget(self, target: Target) -> None:
        with self._lock:
            self._last.pop((target.alias, target.address), None)

    def run(self, target: Target) -> ManagementView:
        """One check of the target's management URI. Never raises."""
        endpoint = target.management
        assert endpoint is not None
        started_at, start = self._wall(), self._clock()
        with self._lock:
            self._last[target.alias, target.address] = start
        deadline = start + target.timeout
        try:
            status, body = self._get(target, deadline)
        except Failed as failed:
            return ManagementView(
                uri=endpoint.uri,
                started_at=started_at,
                duration=self._clock() - start,
                healthy=False,
                reason=failed.reason,
                error=target.redact(failed.error)[:ERROR_TEXT_LIMIT],
            )
        state, components = _parse(body)
        healthy = status == 200 and state.upper() == "OK"
        error = ""
        reason = None if healthy else FailureReason.UNHEALTHY
        if not healthy:
            text = body[:400].decode("utf-8", "replace").strip()
            error = target.redact(f"HTTP {status}: {text}")[:ERROR_TEXT_LIMIT]
        return ManagementView(
            uri=endpoint.uri,
            started_at=started_at,
            duration=self._clock() - start,
            healthy=healthy,
            http_status=status,
            state=state,
            components=components,
            reason=reason,
            error=error,
        )

    def _get(self, target: Target, deadline: float) -> tuple[int, bytes]:
        endpoint = target.management
        assert endpoint is not None
        try:
            resolved = resolve(endpoint.host, endpoint.port, deadline - self._clock())
        except ResolveError as exc:
            raise Failed(exc.reason, PHASE, str(exc)) from None
        context = tls_context(target, PHASE) if endpoint.secure else None
        connection, _ = connect(
            target, resolved, endpoint.secure, context, deadline, self._clock, PHASE
        )
        key = (target.alias, target.address)
        if not self._ledger.opened(key, connection):
            raise Failed(FailureReason.ERROR, PHASE, "cancelled: the probe is shutting down")
        try:
            answer = connection.exchange(
                "GET",
                "/healthz",
                {
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "Connection": "close",
                    "User-Agent": "milvus-probe",
                },
                None,
                deadline,
                self._clock,
                PHASE,
            )
        finally:
            connection.close()
            self._ledger.closed(connection)
        return answer.status, answer.body


def _parse(body: bytes) -> tuple[str, tuple[ComponentState, ...]]:
    """(state, components) from a JSON /healthz answer; a plain `OK` body means OK."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        text = body[:64].decode("utf-8", "replace").strip()
        return ("OK" if text == "OK" else ""), ()
    if not isinstance(doc, dict):
        return "", ()
    state = doc.get("state")
    components: list[ComponentState] = []
    detail = doc.get("detail")
    if isinstance(detail, list):
        for item in detail[:64]:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                code = item.get("code")
                components.append(
                    ComponentState(item["name"][:64], code if isinstance(code, int) else -1)
                )
    return (state if isinstance(state, str) else "")[:64], tuple(components)
