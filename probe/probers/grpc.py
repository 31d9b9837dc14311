"""The gRPC prober: resolve → connect → RPC → (server info) → close, timed and classified.

Also home of the Connect-interval policy: Milvus Connect registers the caller as a
client in the proxy for 24 h (at most 10,000, oldest purged), so scheduled cycles call it
on the first success and then once per `connect_interval` only.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from probe.milvus import client
from probe.milvus import wire_pb2 as wire
from probe.milvus.auth import SecretFileError
from probe.milvus.channel import (
    ChannelFactory,
    ChannelState,
    wait_until_any,
)
from probe.probers import ERROR_TEXT_LIMIT, BaseProber, Failed, InfoMode
from probe.probers import canary as canary_steps
from probe.probers.canary import CanaryCounter, CanarySetups, Setup, SetupError
from probe.probers.ledger import ConnectionLedger
from probe.probers.reasons import classify_rpc_error, classify_status
from probe.resolver import ATTEMPT_DELAY, Resolved, ResolveError, resolve
from probe.result import (
    QUOTA_STATES,
    Dial,
    FailureReason,
    ProbeResult,
    RpcMethod,
    ServerInfo,
    dials_note,
)
from probe.targets import Target


class Phase(enum.StrEnum):
    """The steps of a gRPC cycle, in the order they run."""

    RESOLVE = "resolve"
    """Name resolution (getaddrinfo), done by us so it can be timed and told apart."""
    CONNECT = "connect"
    """From channel creation until the connection can carry an RPC (TCP, TLS, HTTP/2)."""
    RPC = "rpc"
    """The probe RPC itself: CheckHealth (default) or GetVersion."""
    INFO = "info"
    """Milvus Connect and/or GetVersion; only in cycles where server info is due."""
    CLOSE = "close"
    """Closing the channel, which closes its connection."""


@dataclass(frozen=True, slots=True)
class GrpcFacts:
    """What a gRPC cycle learnt beyond the common fields."""

    rpc: RpcMethod
    grpc_code: str | None = None
    """gRPC status code name of the failing call, if a call failed."""
    connect_called: bool = False
    """Whether this cycle called Milvus Connect (which registers a client for 24 h)."""
    connect_supported: bool = True
    """False when the server answered Connect with UNIMPLEMENTED (Milvus before 2.3)."""
    canary_notes: tuple[tuple[str, str], ...] = ()
    """What each canary phase did, in words (phase, note)."""
    canary_visibility: float | None = None
    """Seconds from the canary's acknowledged write until a strong read saw it."""
    canary_waiting: str = ""
    """Why the canary did not run this cycle although due: its first setup is under way
    (not a failure: the server was never asked)."""

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"grpc_code": self.grpc_code, "connect_called": self.connect_called}
        if self.canary_visibility is not None:
            found["canary_visibility_seconds"] = self.canary_visibility
        if self.canary_waiting:
            found["canary_waiting"] = self.canary_waiting
        return found

    def phase_note(self, result: ProbeResult, phase: str) -> str:
        """What `phase` did, in words, for traces."""
        failed = result.failed_phase == phase
        if phase == Phase.RESOLVE:
            if failed:
                return "FAILED"
            return "→ " + ", ".join(result.addresses) if result.addresses else ""
        if phase == Phase.CONNECT:
            dialled = dials_note(result.dials)
            if failed:
                return f"FAILED ({dialled})" if dialled else "FAILED"
            return dialled or "ready"
        if phase == Phase.RPC:
            method = "GetVersion" if self.rpc is RpcMethod.GET_VERSION else "CheckHealth"
            if failed:
                return f"{method} FAILED"
            waiting = f"; canary not run: {self.canary_waiting}" if self.canary_waiting else ""
            if result.healthy is not None:
                quota = ", ".join(result.quota_states or ()) or "none"
                healthy = str(result.healthy).lower()
                return f"{method}: isHealthy={healthy} quota_states={quota}{waiting}"
            return f"{method}: version={result.version}{waiting}"
        if phase == Phase.INFO:
            calls = "Connect + GetVersion" if self.connect_called else "GetVersion"
            if failed:
                return f"{calls} FAILED"
            notes = [calls + ":"]
            if result.version:
                notes.append(f"version={result.version}")
            if result.server_info:
                notes.append(f"deploy_mode={result.server_info.deploy_mode or '-'}")
            if self.connect_called and not self.connect_supported:
                notes.append("(server has no Connect RPC)")
            return " ".join(notes)
        if failed:
            return "FAILED"
        return dict(self.canary_notes).get(phase, "")


class ConnectPolicy:
    """When a scheduled cycle calls Connect: until one succeeds, then once per interval.

    Connect registered us (or doesn't exist) even if a later step of its cycle failed:
    calling it again before `connect_interval` would register again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._connected_at: dict[tuple[str, str], float] = {}

    def due(self, target: Target) -> bool:
        with self._lock:
            last = self._connected_at.get((target.alias, target.address))
        return last is None or self._clock() - last >= target.connect_interval

    def record(self, target: Target, facts: GrpcFacts, server_info: ServerInfo | None) -> None:
        if facts.connect_called and (server_info is not None or not facts.connect_supported):
            with self._lock:
                self._connected_at[target.alias, target.address] = self._clock()

    def forget(self, target: Target) -> None:
        with self._lock:
            self._connected_at.pop((target.alias, target.address), None)


def _raise_for_status(method: str, status: wire.Status, phase: Phase) -> None:
    """Raise the cycle's failure when Milvus answered `method` with an error Status."""
    reason = classify_status(status)
    if reason is not None:
        code = status.code or status.error_code
        text = f"Milvus answered {method} with code {code}: {status.reason or status.detail}"
        raise Failed(reason, phase, text, status_code=code)


def _redacted_info(info: ServerInfo | None, redact: Callable[[str], str]) -> ServerInfo | None:
    if info is None:
        return None
    return ServerInfo(*(redact(getattr(info, f)) for f in ServerInfo.__dataclass_fields__))


@dataclass
class _Cycle:
    """What a cycle has seen so far; becomes the ProbeResult."""

    phases: dict[str, float] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    dials: tuple[Dial, ...] = ()
    healthy: bool | None = None
    health_reasons: tuple[str, ...] = ()
    quota_states: tuple[str, ...] | None = None
    version: str | None = None
    server_info: ServerInfo | None = None
    connect_called: bool = False
    connect_supported: bool = True
    canary: canary_steps.StepsOutcome | None = None
    """Set when the canary runs this cycle."""
    canary_number: int = 0
    canary_waiting: str = ""
    """Set when the canary was due but waits for its first setup."""


class GrpcProber(BaseProber):
    """Runs gRPC cycles against targets. Thread-safe; one instance serves every target."""

    phases = tuple(Phase)
    occasional_phases = (Phase.INFO,)
    """GetVersion (and Connect) run once per connect-interval, not every cycle."""
    runs_canary = True

    @classmethod
    def phases_for(cls, target: Target) -> tuple[str, ...]:
        """The phases a cycle against `target` may report: the canary's after info."""
        extra = canary_steps.phases_for(target.canary)
        if not extra:
            return cls.phases
        return (*cls.phases[:-1], *extra, cls.phases[-1])

    def __init__(
        self,
        *,
        factory: ChannelFactory | None = None,
        ledger: ConnectionLedger | None = None,
        connect_policy: ConnectPolicy | None = None,
        setups: CanarySetups | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.factory = factory or ChannelFactory()
        self.ledger = ledger or ConnectionLedger()
        self.connect_policy = connect_policy or ConnectPolicy()
        self.setups = setups or CanarySetups()
        self.canary_counter = CanaryCounter()
        self._clock = clock
        self._wall = wall

    def forget(self, target: Target) -> None:
        self.factory.forget(target)
        self.connect_policy.forget(target)
        self.canary_counter.forget((target.alias, target.address))
        self.setups.forget((target.alias, target.address))

    def run(self, target: Target, info: InfoMode = InfoMode.NONE) -> ProbeResult:
        """One cycle; never raises."""
        scheduled = info is InfoMode.SCHEDULED
        if info is InfoMode.SCHEDULED:
            info = InfoMode.FULL if self.connect_policy.due(target) else InfoMode.NONE
        clock = self._clock
        started_at = self._wall()
        start = clock()
        deadline = start + target.timeout
        cycle = _Cycle()
        if target.canary is not None:
            due, number = self.canary_counter.next(
                (target.alias, target.address), target.canary.every, scheduled
            )
            waiting = self._first_setup(target) if due and scheduled else ""
            if waiting:
                cycle.canary_waiting = waiting
            elif due:
                cycle.canary = canary_steps.StepsOutcome()
                cycle.canary_number = number
        failure: Failed | None = None
        try:
            self._cycle(target, info, cycle, deadline)
        except Failed as failed:
            failure = failed
            if failure.reason in (FailureReason.COLLECTION_MISSING, FailureReason.NOT_LOADED):
                failure = self._maybe_set_up(target, failure)
        duration = clock() - start
        redact = target.redact
        facts = GrpcFacts(
            rpc=target.rpc,
            grpc_code=failure.code if failure else None,
            connect_called=cycle.connect_called,
            connect_supported=cycle.connect_supported,
            canary_notes=tuple(cycle.canary.notes.items()) if cycle.canary else (),
            canary_visibility=cycle.canary.visibility if cycle.canary else None,
            canary_waiting=cycle.canary_waiting,
        )
        server_info = _redacted_info(cycle.server_info, redact)
        self.connect_policy.record(target, facts, server_info)
        return ProbeResult(
            alias=target.alias,
            target=target.address,
            method=target.rpc.value,
            started_at=started_at,
            duration=duration,
            phases=cycle.phases,
            success=failure is None,
            protocol="grpc",
            reason=failure.reason if failure else None,
            failed_phase=failure.phase if failure else None,
            error=redact(failure.error)[:ERROR_TEXT_LIMIT] if failure else "",
            status_code=failure.status_code if failure else None,
            addresses=cycle.addresses,
            dials=cycle.dials,
            healthy=cycle.healthy,
            # What the server says is scrubbed like our own errors: a server (or a proxy
            # in front of it) that echoes the credential must not leak it through us.
            health_reasons=tuple(redact(r) for r in cycle.health_reasons),
            quota_states=cycle.quota_states,
            version=redact(cycle.version) if cycle.version is not None else None,
            server_info=server_info,
            facts=facts,
            visibility=cycle.canary.visibility if cycle.canary else None,
        )

    def _cycle(self, target: Target, info: InfoMode, cycle: _Cycle, deadline: float) -> None:
        clock = self._clock
        try:
            authorization = target.credentials.authorization() if target.credentials else None
        except SecretFileError as exc:
            raise Failed(FailureReason.ERROR, Phase.RESOLVE, str(exc)) from None
        md = client.metadata(authorization, target.db_name)

        t = clock()
        try:
            resolved = resolve(target.host, target.port, deadline - clock())
        except ResolveError as exc:
            cycle.phases[Phase.RESOLVE] = clock() - t
            raise Failed(exc.reason, Phase.RESOLVE, str(exc)) from None
        cycle.phases[Phase.RESOLVE] = clock() - t
        cycle.addresses = resolved.addresses
        if clock() >= deadline:  # an answer just in time leaves no time to dial
            raise Failed(
                FailureReason.TIMEOUT,
                Phase.RESOLVE,
                f"resolving {target.host!r} took the whole {target.timeout:g}s timeout",
            )

        t = clock()
        try:
            channel = self._connect(target, resolved, cycle, md, deadline)
        finally:
            cycle.phases[Phase.CONNECT] = clock() - t
        try:
            self._on_channel(target, info, cycle, channel, md, deadline)
        finally:
            t = clock()
            channel.close()
            self.ledger.closed(channel)
            cycle.phases[Phase.CLOSE] = clock() - t

    def _open(self, target: Target, grpc_target: str) -> grpc.Channel:
        """A fresh channel to one address, counted in the ledger."""
        try:
            channel = self.factory.new_channel(target, grpc_target)
        except OSError as exc:
            raise Failed(
                FailureReason.ERROR,
                Phase.CONNECT,
                f"cannot read TLS file {exc.filename}: {exc.strerror}",
            ) from None
        if not self.ledger.opened((target.alias, target.address), channel):
            raise Failed(
                FailureReason.ERROR, Phase.CONNECT, "cancelled: the probe is shutting down"
            )
        return channel

    def _connect(
        self,
        target: Target,
        resolved: Resolved,
        cycle: _Cycle,
        md: client.Metadata,
        deadline: float,
    ) -> grpc.Channel:
        """A ready channel to the first address that answers, dialled as grpc's pick_first
        does (probe/resolver.py): in order, the next one at once when one fails or after
        ATTEMPT_DELAY beside it. One channel per address, each in the ledger; every one but
        the returned one is closed here. `cycle.dials` says what each address did."""
        clock = self._clock
        waiting = list(resolved.addresses)
        racing: list[tuple[str, grpc.Channel]] = []
        outcomes: dict[str, str] = {}
        failure: Failed | None = None
        next_at = clock()
        try:
            while True:
                if waiting and (not racing or clock() >= next_at):
                    address = waiting.pop(0)
                    racing.append((address, self._open(target, resolved.grpc_target(address))))
                    next_at = clock() + ATTEMPT_DELAY
                until = min(deadline, next_at) if waiting else deadline
                index, state = wait_until_any([c for _, c in racing], until, clock)
                if state is ChannelState.READY:
                    address, channel = racing.pop(index)
                    outcomes[address] = "ready"
                    return channel
                if state is ChannelState.CLOSED:
                    raise Failed(
                        FailureReason.ERROR, Phase.CONNECT, "cancelled: the probe is shutting down"
                    )
                if state is ChannelState.FAILED:
                    address, channel = racing.pop(index)
                    failure = self._why_failed(target, channel, md, deadline)
                    outcomes[address] = str(failure.reason)
                    channel.close()
                    self.ledger.closed(channel)
                    if not racing and not waiting:
                        break
                    next_at = clock()  # the next address at once, as pick_first does
                elif clock() >= deadline:
                    failure = Failed(
                        FailureReason.TIMEOUT,
                        Phase.CONNECT,
                        f"no usable connection to {target.address} within {target.timeout:g}s",
                    )
                    for address, _ in racing:
                        outcomes[address] = str(FailureReason.TIMEOUT)
                    break
        finally:
            for address, channel in racing:
                outcomes.setdefault(address, "abandoned")
                channel.close()
                self.ledger.closed(channel)
            cycle.dials = tuple(
                Dial(resolved.endpoint(a), outcomes.get(a, "not tried")) for a in resolved.addresses
            )
        assert failure is not None
        text = failure.error
        if len(resolved.addresses) > 1:
            text += f" (every address failed: {dials_note(cycle.dials)})"
        raise Failed(
            failure.reason,
            Phase.CONNECT,
            text,
            status_code=failure.status_code,
            code=failure.code,
            dials=cycle.dials,
        )

    def _why_failed(
        self, target: Target, channel: grpc.Channel, md: client.Metadata, deadline: float
    ) -> Failed:
        """Why a channel's connection attempt failed: a fail-fast call on it says at once
        (refused, TLS, not HTTP/2, ...) instead of waiting out the deadline."""
        try:
            self._call(target, channel, md, deadline)
        except grpc.RpcError as exc:
            return self._rpc_failure(exc, target, Phase.CONNECT, connecting=True)
        return Failed(
            FailureReason.UNAVAILABLE,
            Phase.CONNECT,
            "the connection failed, then recovered within the cycle",
        )

    def _on_channel(
        self,
        target: Target,
        info: InfoMode,
        cycle: _Cycle,
        channel: grpc.Channel,
        md: client.Metadata,
        deadline: float,
    ) -> None:
        clock = self._clock
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

        if cycle.canary is not None and target.canary is not None:
            canary = target.canary
            value = None
            if canary.write:
                value = self.canary_counter.next_value((target.alias, target.address))
            canary_steps.Steps(
                target=target,
                canary=canary,
                channel=channel,
                md=md,
                deadline=deadline,
                clock=clock,
                rpc_failure=lambda exc, phase: self._rpc_failure(
                    exc, target, phase, connecting=False
                ),
                phases=cycle.phases,
                outcome=cycle.canary,
            ).run(cycle.canary_number, value)

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
            raise Failed(
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

    # ----------------------------------------------------------- canary setup

    def _first_setup(self, target: Target) -> str:
        """With `create`, the canary waits for its collection's first setup (started here,
        off the cycle) instead of failing a healthy server as `collection_missing`; what to
        say while it waits, or "" to run the canary. After a failed setup the canary runs,
        and its failure says what is wrong."""
        canary = target.canary
        if canary is None or not canary.create or not self.setups.background:
            return ""
        key = (target.alias, target.address)
        state = self.setups.state(key)
        if state is not None and any(state.counts.values()):
            return ""  # a setup has finished: from now on the canary speaks for itself
        return self.setups.start(
            key, lambda: self.set_up(target), retry_after=max(canary.setup_timeout, target.interval)
        )

    def _maybe_set_up(self, target: Target, failure: Failed) -> Failed:
        """A canary that found its collection missing or not loaded: with `create`, start
        (or report) the setup off the cycle; either way the cycle's reason stands."""
        canary = target.canary
        if canary is None or failure.phase not in canary_steps.phases_for(canary):
            return failure
        if not canary.create:
            hint = (
                "the probe does not create or load it (create: false); "
                "`milvus-probe canary init` sets it up"
            )
        else:
            hint = self.setups.start(
                (target.alias, target.address),
                lambda: self.set_up(target),
                retry_after=max(canary.setup_timeout, target.interval),
            )
        return Failed(
            failure.reason,
            failure.phase,
            f"{failure.error}; {hint}",
            status_code=failure.status_code,
            code=failure.code,
        )

    def set_up(self, target: Target) -> list[str]:
        """Set the target's canary collection up on a connection of its own, within
        `setup_timeout`; what it did, in words. Raises SetupError."""
        canary = target.canary
        if canary is None:
            raise SetupError(f"target {target.alias!r} has no canary")
        clock = time.monotonic
        deadline = clock() + canary.setup_timeout
        try:
            authorization = target.credentials.authorization() if target.credentials else None
        except SecretFileError as exc:
            raise SetupError(str(exc)) from None
        md = client.metadata(authorization, target.db_name)
        # Resolving and connecting get the probe's own timeout (on the prober's clock).
        connect_deadline = self._clock() + min(target.timeout, canary.setup_timeout)
        try:
            resolved = resolve(target.host, target.port, connect_deadline - self._clock())
            channel = self._connect(target, resolved, _Cycle(), md, connect_deadline)
        except ResolveError as exc:
            raise SetupError(str(exc)) from None
        except Failed as exc:
            raise SetupError(f"no usable connection to {target.address}: {exc.error}") from None
        try:
            setup = Setup(canary, target.db_name, channel, md, deadline, clock)
            try:
                setup.run()
            except SetupError as exc:
                raise SetupError(target.redact(str(exc))[:ERROR_TEXT_LIMIT]) from None
            return setup.done
        finally:
            channel.close()
            self.ledger.closed(channel)

    @staticmethod
    def _rpc_failure(exc: grpc.RpcError, target: Target, phase: str, *, connecting: bool) -> Failed:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        reason = classify_rpc_error(code, details, connecting=connecting, secure=target.secure)
        name = code.name if code is not None else "UNKNOWN"
        return Failed(reason, phase, f"{name}: {details}", code=name)
