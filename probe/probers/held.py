"""Held connections: one gRPC channel per opted-in target, kept the way pymilvus keeps its own.

A fresh cycle answers "can a new client connect and be served?"; most Milvus clients are
not new. A target with `held: true` also gets one channel that is opened once, configured
as pymilvus 3.0.2 configures its channels, and never reconnected by hand: each cycle
calls the probe RPC on it with the cycle's timeout, so what gRPC does on its own
(keepalive, reconnect, backoff) is what the view shows. Its result is a `HeldView`,
published beside the cycle's like the management and TLS checks (`Probers.beside`).

Cost: exactly one connection per held target for the target's life (recorded in the
ConnectionLedger, closed when the target goes or the daemon stops); keepalive pings every
10 s, never faster than the 5 s Milvus's proxy allows; no Connect call ever (pymilvus
calls Connect when it opens a client; the fresh cycle's Connect policy already speaks
for us).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

import probe
from probe import logs
from probe.milvus import client, grpcio
from probe.milvus import wire_pb2 as wire
from probe.milvus.auth import SecretFileError
from probe.milvus.channel import ChannelFactory
from probe.probers import ERROR_TEXT_LIMIT
from probe.probers.ledger import ConnectionLedger
from probe.probers.reasons import classify_rpc_error, classify_status
from probe.result import (
    FailureReason,
    HeldReason,
    HeldView,
    ProbeResult,
    RpcMethod,
    StateChange,
)
from probe.targets import Target

logger = logging.getLogger(__name__)

PYMILVUS_VERSION = "3.0.2"
"""The pymilvus release `PYMILVUS_OPTIONS` were read from
(`pymilvus/client/grpc_handler.py`, `GrpcHandler._create_grpc_channel`)."""

PYMILVUS_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
"""pymilvus 3.0.2's default channel options, as it passes them to grpc.insecure_channel /
grpc.secure_channel (plus `grpc.ssl_target_name_override` with a server name). Its calls
all go with `wait_for_ready=True`, and it dials `host:port` through gRPC's own resolver."""

MILVUS_MIN_PING_INTERVAL_MS = 5_000
"""The least time between keepalive pings Milvus's proxy accepts (its server keepalive
enforcement policy); faster pings get GOAWAY `too_many_pings` (pymilvus #1796)."""

_OWN_OPTIONS: tuple[tuple[str, str | int], ...] = (
    # One connection per held target, as the ledger counts it: without this, two held
    # targets with the same address would share one (gRPC's global sub-channel pool).
    ("grpc.use_local_subchannel_pool", 1),
    # The fresh cycle dials directly; so does the held channel (an HTTP proxy from the
    # environment would hide the path both are about).
    ("grpc.enable_http_proxy", 0),
    ("grpc.primary_user_agent", f"milvus-probe/{probe.__version__}"),
)

WATCH_SLICE = 1.0
"""Longest single wait of a channel's state watch: a state change ends it at once, so
this bounds only how late the watch notices its channel was closed."""

CHANGES_KEPT = 16
"""State changes kept per held channel (shown on pages and in the API)."""


def held_options(target: Target) -> list[tuple[str, str | int]]:
    """The held channel's options: pymilvus's, then ours (each with its reason above)."""
    keepalive = dict(PYMILVUS_OPTIONS)["grpc.keepalive_time_ms"]
    assert keepalive >= MILVUS_MIN_PING_INTERVAL_MS, "keepalive faster than Milvus permits"
    options: list[tuple[str, str | int]] = [*PYMILVUS_OPTIONS, *_OWN_OPTIONS]
    if target.secure:
        name = (target.tls.server_name if target.tls else None) or target.host
        options.append(("grpc.ssl_target_name_override", name))
    return options


def dial_target(target: Target) -> str:
    """What pymilvus hands gRPC: `host:port`, resolved (and re-resolved) by gRPC itself."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


@dataclass
class _Watch:
    """The channel's connectivity, followed on a thread of its own: every change, timed."""

    channel: grpc.Channel
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: str = "IDLE"
    changes: collections.deque[StateChange] = field(
        default_factory=lambda: collections.deque(maxlen=CHANGES_KEPT)
    )
    counts: dict[str, int] = field(default_factory=dict)
    ready_since: float | None = None
    """Monotonic time the channel last became READY; None while it is not."""
    ever_ready: bool = False
    reconnects: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"held-watch-{self.name}", daemon=True).start()

    def _run(self) -> None:
        names = grpcio.state_names()
        try:
            current = grpcio.check_state(self.channel, False)
            self._enter(names.get(current, str(current)))
            while not self.closed.is_set():
                grpcio.watch_state(self.channel, current, time.time() + WATCH_SLICE)
                state = grpcio.check_state(self.channel, False)
                if state != current:
                    current = state
                    self._enter(names.get(state, str(state)))
        except ValueError:  # "Channel closed!"
            pass
        except Exception:  # the watch is a witness: losing it must not take anything down
            logger.exception("the held channel's state watch stopped")

    def _enter(self, state: str) -> None:
        with self.lock:
            self.state = state
            self.changes.append(StateChange(time.time(), state))
            self.counts[state] = self.counts.get(state, 0) + 1
            if state == "READY":
                self.ready_since = time.monotonic()
                if self.ever_ready:
                    self.reconnects += 1
                self.ever_ready = True
            else:
                self.ready_since = None

    def now(self) -> str:
        with self.lock:
            return self.state


class HeldConnection:
    """One target's held channel and what its calls have seen."""

    def __init__(self, target: Target, channel: grpc.Channel, clock: Callable[[], float]) -> None:
        self.channel = channel
        self._clock = clock
        self.opened_at = time.time()
        self._last_call_end = clock()
        self._failing_since: float | None = None
        self._lock = threading.Lock()
        """One call at a time (a scheduled cycle and `/probe` may meet)."""
        self.watch = _Watch(channel, target.alias)
        self.watch.start()
        # Registered methods: the channel lives long, so their one-time setup pays off.
        self._check_health = channel.unary_unary(
            client.CHECK_HEALTH,
            request_serializer=wire.CheckHealthRequest.SerializeToString,
            response_deserializer=wire.CheckHealthResponse.FromString,
        )
        self._get_version = channel.unary_unary(
            client.GET_VERSION,
            request_serializer=wire.GetVersionRequest.SerializeToString,
            response_deserializer=wire.GetVersionResponse.FromString,
        )

    def close(self) -> None:
        self.watch.closed.set()
        self.channel.close()

    def check(self, target: Target, fresh: ProbeResult | None) -> HeldView:
        """Call the probe RPC on the held channel within the target's timeout, as pymilvus
        calls (`wait_for_ready=True`); `fresh` is the cycle beside it, which tells an idle
        drop or a slow reconnect from a server that is down for everyone."""
        with self._lock:
            return self._check(target, fresh)

    def _check(self, target: Target, fresh: ProbeResult | None) -> HeldView:
        clock = self._clock
        try:
            authorization = target.credentials.authorization() if target.credentials else None
        except SecretFileError as exc:
            return self._view(target, time.time(), clock(), "", FailureReason.ERROR, str(exc))
        md = client.metadata(authorization, target.db_name)
        before = self.watch.now()
        ever_ready = self.watch.ever_ready
        started_at, start = time.time(), clock()
        reason: str | None = None
        error = ""
        try:
            if target.rpc is RpcMethod.GET_VERSION:
                version = self._get_version(
                    wire.GetVersionRequest(), timeout=target.timeout, metadata=md,
                    wait_for_ready=True,
                )  # fmt: skip
                status = version.status
                unhealthy = ""
            else:
                health = self._check_health(
                    wire.CheckHealthRequest(), timeout=target.timeout, metadata=md,
                    wait_for_ready=True,
                )  # fmt: skip
                status = health.status
                unhealthy = "" if health.isHealthy else "; ".join(health.reasons[:32]) or "-"
            status_reason = classify_status(status)
            if status_reason is not None:
                reason = status_reason
                code = status.code or status.error_code
                error = f"Milvus answered with code {code}: {status.reason or status.detail}"
            elif unhealthy:
                reason = FailureReason.UNHEALTHY
                error = f"Milvus reports it is not healthy: {unhealthy}"
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
            reason = _classify(code, details, target, before, ever_ready, fresh)
            error = f"{code.name if code is not None else 'UNKNOWN'}: {details}"
        except ValueError as exc:  # the channel was closed under us: shutdown
            reason, error = FailureReason.ERROR, f"cancelled: the probe is shutting down ({exc})"
        return self._view(target, started_at, start, before, reason, error)

    def _view(
        self,
        target: Target,
        started_at: float,
        start: float,
        before: str,
        reason: str | None,
        error: str,
    ) -> HeldView:
        end = self._clock()
        idle = max(start - self._last_call_end, 0.0)
        self._last_call_end = end
        unusable = failing = None
        if reason is None:
            if self._failing_since is not None:
                unusable = end - self._failing_since
                self._failing_since = None
        else:
            if self._failing_since is None:
                self._failing_since = start
            failing = end - self._failing_since
        watch = self.watch
        with watch.lock:
            after = watch.state
            age = time.monotonic() - watch.ready_since if watch.ready_since is not None else None
            reconnects = watch.reconnects
            counts = tuple(sorted(watch.counts.items()))
            changes = tuple(watch.changes)
        return HeldView(
            started_at=started_at,
            duration=end - start,
            success=reason is None,
            reason=str(reason) if reason is not None else None,
            error=target.redact(error)[:ERROR_TEXT_LIMIT],
            state_before=before,
            state_after=after,
            idle=idle,
            opened_at=self.opened_at,
            connection_age=age,
            reconnects=reconnects,
            state_counts=counts,
            changes=changes,
            unusable_for=unusable,
            failing_for=failing,
        )


def _classify(
    code: grpc.StatusCode | None,
    details: str,
    target: Target,
    before: str,
    ever_ready: bool,
    fresh: ProbeResult | None,
) -> str:
    """The bounded reason of a failed held call.

    `goaway` when the text says so; a timeout or a dropped connection on a channel that
    was READY, while the fresh cycle worked: `idle_dropped`; one while gRPC was
    (re)connecting, while the fresh cycle worked: `reconnecting`. When the fresh cycle
    failed to connect too, the held call's reason is the fresh cycle's (refused, dns,
    ...): the server is down for everyone, and the fresh cycle saw why.
    """
    text = details.lower()
    if "goaway" in text or "too_many_pings" in text or "too many pings" in text:
        return HeldReason.GOAWAY
    fresh_ok = fresh is not None and fresh.success
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
        if fresh_ok:
            return HeldReason.IDLE_DROPPED if before == "READY" else HeldReason.RECONNECTING
        if fresh is not None and fresh.reason is not None and fresh.reason.is_connection_failure:
            return fresh.reason
    connecting = not ever_ready or before != "READY"
    return classify_rpc_error(code, details, connecting=connecting, secure=target.secure)


class HeldConnections:
    """The held channel of every target that asks for one (`held: true`). Thread-safe.

    Opened on a target's first check, kept until `forget(target)` or `close()`;
    each is in the ledger for as long as it is open.
    """

    def __init__(
        self,
        ledger: ConnectionLedger,
        factory: ChannelFactory | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.ledger = ledger
        self.factory = factory or ChannelFactory()
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], HeldConnection] = {}

    def check(self, target: Target, fresh: ProbeResult | None = None) -> HeldView:
        """The probe RPC on `target`'s held channel (opened now if it has none yet)."""
        try:
            held = self._open(target)
        except OSError as exc:
            error = f"cannot read TLS file {exc.filename}: {exc.strerror}"
            return _failed(target, FailureReason.ERROR, error)
        if held is None:
            return _failed(target, FailureReason.ERROR, "cancelled: the probe is shutting down")
        return held.check(target, fresh)

    def _open(self, target: Target) -> HeldConnection | None:
        key = (target.alias, target.address)
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                return held
            options = held_options(target)
            dial = dial_target(target)
            if target.secure:
                credentials = self.factory.credentials(target)
                channel = grpc.secure_channel(dial, credentials, options=options)
            else:
                channel = grpc.insecure_channel(dial, options=options)
            if not self.ledger.opened(key, channel):
                return None
            held = self._held[key] = HeldConnection(target, channel, self._clock)
            logger.info(
                "held connection opened",
                extra=logs.fields(alias=target.alias, target=dial),
            )
            return held

    def held(self, target: Target) -> HeldConnection | None:
        with self._lock:
            return self._held.get((target.alias, target.address))

    def forget(self, target: Target) -> None:
        """The target is gone: close its held channel."""
        with self._lock:
            held = self._held.pop((target.alias, target.address), None)
        if held is not None:
            held.close()
            self.ledger.closed(held.channel)

    def close(self) -> None:
        """Close every held channel (shutdown)."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for h in held:
            h.close()
            self.ledger.closed(h.channel)

    def count(self) -> int:
        with self._lock:
            return len(self._held)


def _failed(target: Target, reason: FailureReason, error: str) -> HeldView:
    return HeldView(
        started_at=time.time(),
        duration=0.0,
        success=False,
        reason=str(reason),
        error=target.redact(error)[:ERROR_TEXT_LIMIT],
    )

