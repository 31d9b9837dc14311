"""One probe cycle: resolve → connect → RPC → (server info) → close, timed and classified.

The prober knows nothing of metrics, schedules or HTTP: it returns a `ProbeResult`.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from probe.milvus import client
from probe.milvus import wire_pb2 as wire
from probe.milvus.auth import SecretFileError
from probe.milvus.channel import (
    ChannelFactory,
    ChannelState,
    ConnectionLedger,
    ResolveError,
    resolve,
    wait_until_ready,
)
from probe.result import (
    QUOTA_STATES,
    FailureReason,
    Phase,
    ProbeResult,
    RpcMethod,
    ServerInfo,
)
from probe.targets import Target

ERROR_TEXT_LIMIT = 2048
"""Error texts are cut to this many characters (a hostile server could send megabytes)."""


class InfoMode(enum.Enum):
    """What the `info` phase asks, in cycles that have one."""

    NONE = "none"
    VERSION = "version"
    """GetVersion only: no side effect on the server."""
    FULL = "full"
    """Connect (checks the database, registers the client for 24 h) and GetVersion."""


class SlotsBusy(Exception):
    """Every connection slot stayed busy for as long as the caller would wait."""


# Milvus common.Status codes (REFERENCE.md §1) → reasons.
STATUS_REASONS: dict[int, FailureReason] = {
    1: FailureReason.NOT_READY,
    2: FailureReason.UNAVAILABLE,
    10: FailureReason.UNIMPLEMENTED,
    800: FailureReason.DB_NOT_FOUND,
    1400: FailureReason.UNAUTHENTICATED,
    1401: FailureReason.PERMISSION_DENIED,
}

_GRPC_REASONS: dict[grpc.StatusCode, FailureReason] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: FailureReason.TIMEOUT,
    grpc.StatusCode.UNAUTHENTICATED: FailureReason.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: FailureReason.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED: FailureReason.UNIMPLEMENTED,
}

# Substrings of grpcio's UNAVAILABLE details, measured per failure (REFERENCE.md §2).
_DETAIL_REASONS: tuple[tuple[tuple[str, ...], FailureReason], ...] = (
    (("connection refused",), FailureReason.REFUSED),
    (("errors resolving", "domain name not found", "dns resolution"), FailureReason.DNS),
    (
        (
            "certificate_verify_failed",
            "hostname verification",
            "wrong_version_number",
            "ssl",
            "tls",
            "handshake",
            "certificate",
        ),
        FailureReason.TLS,
    ),
    (("failed parsing http/2", "http2 error", "unexpected http"), FailureReason.UNIMPLEMENTED),
    (("timed out", "timeout"), FailureReason.TIMEOUT),
)


def classify_rpc_error(
    code: grpc.StatusCode | None, details: str, *, connecting: bool, secure: bool
) -> FailureReason:
    """The reason for a failed call; `connecting` when no connection was ever usable."""
    if code in _GRPC_REASONS:
        return _GRPC_REASONS[code]
    if connecting and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        # Only a failed connection attempt describes our path to the server. On a working
        # connection the text is Milvus talking about its own parts ("querynode: dial tcp:
        # connection refused"), which must not pass for our refused/dns/tls.
        text = details.lower()
        for needles, reason in _DETAIL_REASONS:
            if any(n in text for n in needles):
                return reason
        if (
            secure
            and connecting
            and any(n in text for n in ("socket closed", "unwrap failed", "tsi_data_corrupted"))
        ):
            # The server dropped us during the TLS handshake: mutual TLS without a
            # client certificate, or one it does not trust. With TLS 1.3 the client has
            # finished its side first, so grpcio says "Unwrap failed (TSI_DATA_CORRUPTED)".
            return FailureReason.TLS
    if code == grpc.StatusCode.UNAVAILABLE:
        return FailureReason.UNAVAILABLE
    return FailureReason.ERROR


def classify_status(status: wire.Status) -> FailureReason | None:
    """The reason for a Milvus error answer, or None when the Status says success."""
    if status.code == 0 and status.error_code == 0:
        return None
    if status.code in STATUS_REASONS:
        return STATUS_REASONS[status.code]
    text = status.reason.lower()
    if "database" in text and "not" in text and "exist" in text or "database not found" in text:
        return FailureReason.DB_NOT_FOUND
    if "not ready" in text:
        return FailureReason.NOT_READY
    return FailureReason.ERROR


def _raise_for_status(method: str, status: wire.Status, phase: Phase) -> None:
    """Raise the cycle's failure when Milvus answered `method` with an error Status."""
    reason = classify_status(status)
    if reason is not None:
        code = status.code or status.error_code
        text = f"Milvus answered {method} with code {code}: {status.reason or status.detail}"
        raise _Failed(reason, phase, text, status_code=code)


def _redacted_info(info: ServerInfo | None, redact: Callable[[str], str]) -> ServerInfo | None:
    if info is None:
        return None
    return ServerInfo(*(redact(getattr(info, f)) for f in ServerInfo.__dataclass_fields__))


class _Failed(Exception):
    def __init__(
        self,
        reason: FailureReason,
        phase: Phase,
        error: str,
        grpc_code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(error)
        self.reason, self.phase, self.error = reason, phase, error
        self.grpc_code, self.status_code = grpc_code, status_code


@dataclass
class _Cycle:
    """What a cycle has seen so far; becomes the ProbeResult."""

    phases: dict[Phase, float] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    healthy: bool | None = None
    health_reasons: tuple[str, ...] = ()
    quota_states: tuple[str, ...] | None = None
    version: str | None = None
    server_info: ServerInfo | None = None
    connect_called: bool = False
    connect_supported: bool = True


class Prober:
    """Runs cycles against targets. Thread-safe; one instance serves every target."""

    def __init__(
        self,
        *,
        max_concurrent: int = 64,
        factory: ChannelFactory | None = None,
        ledger: ConnectionLedger | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.factory = factory or ChannelFactory()
        self.ledger = ledger or ConnectionLedger()
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._clock = clock
        self._wall = wall

    def run(
        self, target: Target, info: InfoMode = InfoMode.NONE, slot_timeout: float | None = None
    ) -> ProbeResult:
        """One cycle. Waits for a connection slot (raising SlotsBusy after `slot_timeout`)."""
        if not self._slots.acquire(timeout=slot_timeout):
            raise SlotsBusy(f"all {self.max_concurrent} connection slots are busy")
        try:
            return self._run(target, info)
        finally:
            self._slots.release()

    def _run(self, target: Target, info: InfoMode) -> ProbeResult:
        clock = self._clock
        started_at = self._wall()
        start = clock()
        deadline = start + target.timeout
        cycle = _Cycle()
        failure: _Failed | None = None
        try:
            self._cycle(target, info, cycle, deadline)
        except _Failed as failed:
            failure = failed
        duration = clock() - start
        redact = target.redact
        return ProbeResult(
            alias=target.alias,
            target=target.address,
            rpc=target.rpc,
            started_at=started_at,
            duration=duration,
            phases=cycle.phases,
            success=failure is None,
            reason=failure.reason if failure else None,
            failed_phase=failure.phase if failure else None,
            error=redact(failure.error)[:ERROR_TEXT_LIMIT] if failure else "",
            grpc_code=failure.grpc_code if failure else None,
            status_code=failure.status_code if failure else None,
            addresses=cycle.addresses,
            healthy=cycle.healthy,
            # What the server says is scrubbed like our own errors: a server (or a proxy
            # in front of it) that echoes the credential must not leak it through us.
            health_reasons=tuple(redact(r) for r in cycle.health_reasons),
            quota_states=cycle.quota_states,
            version=redact(cycle.version) if cycle.version is not None else None,
            server_info=_redacted_info(cycle.server_info, redact),
            connect_called=cycle.connect_called,
            connect_supported=cycle.connect_supported,
        )

    def _cycle(self, target: Target, info: InfoMode, cycle: _Cycle, deadline: float) -> None:
        clock = self._clock
        try:
            authorization = target.credentials.authorization() if target.credentials else None
        except SecretFileError as exc:
            raise _Failed(FailureReason.ERROR, Phase.RESOLVE, str(exc)) from None
        md = client.metadata(authorization, target.db_name)

        t = clock()
        try:
            grpc_target, addresses = resolve(target.host, target.port)
        except ResolveError as exc:
            cycle.phases[Phase.RESOLVE] = clock() - t
            raise _Failed(FailureReason.DNS, Phase.RESOLVE, str(exc)) from None
        cycle.phases[Phase.RESOLVE] = clock() - t
        cycle.addresses = tuple(addresses)
        if clock() >= deadline:
            raise _Failed(
                FailureReason.TIMEOUT,
                Phase.RESOLVE,
                f"resolving {target.host!r} took longer than the {target.timeout:g}s timeout",
            )

        t = clock()
        try:
            channel = self.factory.new_channel(target, grpc_target)
        except OSError as exc:
            raise _Failed(
                FailureReason.ERROR,
                Phase.CONNECT,
                f"cannot read TLS file {exc.filename}: {exc.strerror}",
            ) from None
        key = (target.alias, target.address)
        if not self.ledger.opened(key, channel):
            raise _Failed(
                FailureReason.ERROR, Phase.CONNECT, "cancelled: the probe is shutting down"
            )
        try:
            self._on_channel(target, info, cycle, channel, md, deadline, t)
        finally:
            t = clock()
            channel.close()
            self.ledger.closed(channel)
            cycle.phases[Phase.CLOSE] = clock() - t

    def _on_channel(
        self,
        target: Target,
        info: InfoMode,
        cycle: _Cycle,
        channel: grpc.Channel,
        md: client.Metadata,
        deadline: float,
        connect_start: float,
    ) -> None:
        clock = self._clock
        state = wait_until_ready(channel, deadline, clock)
        cycle.phases[Phase.CONNECT] = clock() - connect_start
        if state is ChannelState.TIMEOUT:
            raise _Failed(
                FailureReason.TIMEOUT,
                Phase.CONNECT,
                f"no usable connection to {target.address} within {target.timeout:g}s",
            )
        if state is ChannelState.CLOSED:
            raise _Failed(
                FailureReason.ERROR, Phase.CONNECT, "cancelled: the probe is shutting down"
            )
        if state is ChannelState.FAILED:
            # The attempt failed; a fail-fast call on the channel returns the reason
            # (refused, TLS, not HTTP/2, ...) at once instead of waiting out the deadline.
            try:
                self._call(target, channel, md, deadline)
            except grpc.RpcError as exc:
                raise self._rpc_failure(exc, target, Phase.CONNECT, connecting=True) from None
            raise _Failed(
                FailureReason.UNAVAILABLE,
                Phase.CONNECT,
                "the connection failed, then recovered within the cycle",
            )

        t = clock()
        try:
            response = self._call(target, channel, md, deadline)
        except grpc.RpcError as exc:
            cycle.phases[Phase.RPC] = clock() - t
            raise self._rpc_failure(exc, target, Phase.RPC, connecting=False) from None
        cycle.phases[Phase.RPC] = clock() - t
        self._check_answer(target, response, cycle)

        if info is not InfoMode.NONE:
            t = clock()
            try:
                self._info(target, info, cycle, channel, md, deadline)
            finally:
                cycle.phases[Phase.INFO] = clock() - t

    def _call(
        self, target: Target, channel: grpc.Channel, md: client.Metadata, deadline: float
    ) -> wire.CheckHealthResponse | wire.GetVersionResponse:
        remaining = max(deadline - self._clock(), 0.001)
        if target.rpc is RpcMethod.GET_VERSION:
            return client.get_version(channel, remaining, md)
        return client.check_health(channel, remaining, md)

    def _check_answer(
        self,
        target: Target,
        response: wire.CheckHealthResponse | wire.GetVersionResponse,
        cycle: _Cycle,
    ) -> None:
        method = "GetVersion" if target.rpc is RpcMethod.GET_VERSION else "CheckHealth"
        _raise_for_status(method, response.status, Phase.RPC)
        if isinstance(response, wire.GetVersionResponse):
            cycle.version = response.version
            return
        cycle.healthy = response.isHealthy
        cycle.health_reasons = tuple(response.reasons[:32])
        cycle.quota_states = tuple(
            QUOTA_STATES.get(s, f"Unknown({s})") for s in response.quota_states[:16]
        )
        if not response.isHealthy:
            why = "; ".join(cycle.health_reasons) or "no reason given"
            raise _Failed(
                FailureReason.UNHEALTHY, Phase.RPC, f"Milvus reports it is not healthy: {why}"
            )

    def _info(
        self,
        target: Target,
        info: InfoMode,
        cycle: _Cycle,
        channel: grpc.Channel,
        md: client.Metadata,
        deadline: float,
    ) -> None:
        if info is InfoMode.FULL:
            cycle.connect_called = True
            user = target.credentials.user if target.credentials else None
            try:
                answer = client.connect(
                    channel,
                    max(deadline - self._clock(), 0.001),
                    md,
                    client.client_info(target.alias, user),
                )
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    raise self._rpc_failure(exc, target, Phase.INFO, connecting=False) from None
                cycle.connect_supported = False  # Milvus before 2.3: no Connect RPC
            else:
                _raise_for_status("Connect", answer.status, Phase.INFO)
                si = answer.server_info
                cycle.server_info = ServerInfo(
                    build_tags=si.build_tags,
                    build_time=si.build_time,
                    git_commit=si.git_commit,
                    go_version=si.go_version,
                    deploy_mode=si.deploy_mode,
                )
        if target.rpc is not RpcMethod.GET_VERSION:
            try:
                version = client.get_version(channel, max(deadline - self._clock(), 0.001), md)
            except grpc.RpcError as exc:
                raise self._rpc_failure(exc, target, Phase.INFO, connecting=False) from None
            _raise_for_status("GetVersion", version.status, Phase.INFO)
            cycle.version = version.version

    @staticmethod
    def _rpc_failure(
        exc: grpc.RpcError, target: Target, phase: Phase, *, connecting: bool
    ) -> _Failed:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        reason = classify_rpc_error(code, details, connecting=connecting, secure=target.secure)
        name = code.name if code is not None else "UNKNOWN"
        return _Failed(reason, phase, f"{name}: {details}", grpc_code=name)
