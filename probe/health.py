"""Liveness, readiness and per-target state, as plain state machines (no HTTP here).

Liveness is about the daemon only: the scheduler's heartbeat. Readiness follows
`--readiness.policy`; a target's passing state changes only after
`failure_threshold` consecutive failures or `success_threshold` consecutive
successes, so one lost probe does not flap it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from probe import logs
from probe.config.settings import ReadinessPolicy, ReadinessSettings
from probe.hub import TargetDiff
from probe.result import FailureReason, HeldView, ManagementView, ProbeResult, SideView, TlsView
from probe.targets import Target

logger = logging.getLogger(__name__)

HEARTBEAT_STALE_AFTER = 10.0
"""Seconds without a scheduler heartbeat before /healthz fails (it beats every second)."""


@dataclass
class TargetState:
    """Where one target stands for readiness (its recent cycles are probe.history's)."""

    target: Target
    last: ProbeResult | None = None
    passing: bool = False
    """Debounced by the thresholds; False until the first success_threshold successes."""
    consecutive_successes: int = 0
    consecutive_failures: int = 0
    server_info: ProbeResult | None = None
    """The last result that carried server info or a version."""
    management: ManagementView | None = None
    """Milvus's own view (its management port), last checked."""
    tls: TlsView | None = None
    """The server's certificates, last inspected."""
    held: HeldView | None = None
    """The last call on the target's held connection (targets with `held: true`)."""


@dataclass(frozen=True)
class Change:
    """A target went up or down (raw, per cycle), or stayed down for another reason."""

    alias: str
    target: str
    up: bool
    first: bool
    reason: FailureReason | None
    previous_reason: FailureReason | None
    error: str


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str
    counts: bool = True
    """Whether this check decides readiness under the current policy."""


@dataclass
class Health:
    """All health state of the daemon. Thread-safe."""

    settings: ReadinessSettings
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _states: dict[str, TargetState] = field(default_factory=dict)
    _first_round: set[str] = field(default_factory=set)
    _heartbeat: float | None = None
    _server_up: bool = False
    _stopping: bool = False
    extra_checks: list[Callable[[], Check]] = field(default_factory=list)
    """More readiness checks (e.g. discovery), each called on every /readyz."""

    # ----------------------------------------------------------- daemon state

    def heartbeat(self) -> None:
        self._heartbeat = self.clock()

    def server_started(self) -> None:
        self._server_up = True

    def stopping(self) -> None:
        self._stopping = True

    def live(self) -> tuple[bool, str]:
        """Liveness: the scheduler is beating. Never depends on Milvus."""
        beat = self._heartbeat
        if beat is None:
            return False, "scheduler has not started"
        age = self.clock() - beat
        if age > HEARTBEAT_STALE_AFTER:
            return (
                False,
                f"scheduler heartbeat is {age:.1f}s old (limit {HEARTBEAT_STALE_AFTER:g}s)",
            )
        return True, "ok"

    # ----------------------------------------------------------- targets

    def follow(self, diff: TargetDiff) -> None:
        """A hub listener: fresh state for each new generation (an added or replaced target),
        none for removed ones; a target the hub kept keeps its state, with its new settings."""
        with self._lock:
            states: dict[str, TargetState] = {}
            for target in diff.current:
                state = self._states.get(target.alias)
                if state is None or state.target.generation != target.generation:
                    state = TargetState(target)
                    if diff.first_round:
                        self._first_round.add(target.alias)
                else:
                    state.target = target
                states[target.alias] = state
            self._first_round &= states.keys()
            self._states = states

    def configure(self, settings: ReadinessSettings) -> None:
        with self._lock:
            self.settings = settings

    def observe_view(self, target: Target, view: SideView) -> None:
        """A hub view sink: take a side check's view (management port, certificates, held
        connection)."""
        with self._lock:
            state = self._states.get(target.alias)
            if state is None or state.target.generation != target.generation:
                return
            if isinstance(view, ManagementView):
                state.management = view
            elif isinstance(view, HeldView):
                state.held = view
            else:
                state.tls = view

    def observe(self, target: Target, result: ProbeResult) -> Change | None:
        """A hub sink: take `target`'s cycle; a Change when the target flipped up/down."""
        with self._lock:
            state = self._states.get(target.alias)
            if state is None or state.target.generation != target.generation:
                return None
            previous = state.last
            state.last = result
            if result.version is not None or result.server_info is not None:
                state.server_info = result
            if result.management is not None:
                state.management = result.management
            if result.tls is not None:
                state.tls = result.tls
            if result.held is not None:
                state.held = result.held
            self._first_round.discard(target.alias)
            if result.success:
                state.consecutive_successes += 1
                state.consecutive_failures = 0
                if state.consecutive_successes >= self.settings.success_threshold:
                    state.passing = True
            else:
                state.consecutive_failures += 1
                state.consecutive_successes = 0
                if state.consecutive_failures >= self.settings.failure_threshold:
                    state.passing = False
        if (
            previous is not None
            and previous.success == result.success
            and (result.success or previous.reason == result.reason)
        ):
            return None
        return Change(
            alias=target.alias,
            target=target.address,
            up=result.success,
            first=previous is None,
            reason=result.reason,
            previous_reason=previous.reason if previous else None,
            error=result.error,
        )

    def states(self) -> list[TargetState]:
        with self._lock:
            return list(self._states.values())

    def state(self, alias: str) -> TargetState | None:
        with self._lock:
            return self._states.get(alias)

    # ----------------------------------------------------------- readiness

    def target_check(self, alias: str) -> Check | None:
        """Readiness of one target (None if there is no such alias)."""
        with self._lock:
            state = self._states.get(alias)
            if state is None:
                return None
            return self._target_check(state, counts=True)

    def _target_check(self, state: TargetState, counts: bool) -> Check:
        check = self._probe_check(state, counts)
        ok, message = check.ok, check.message
        if state.held is not None:
            # The held connection beside the fresh one: it decides readiness only under
            # a policy that says so (any-held, all-held).
            held = f"held: {state.held.summary()}"
            if self.settings.policy.counts_held and not state.held.success:
                ok, message = False, f"failing ({held}); fresh: {message}"
            else:
                message = f"{message}; {held}"
        if state.management is not None:
            # Milvus's own view beside ours: which one lies shows at a glance. It never
            # decides readiness (clients connect to 19530, not to 9091).
            message = f"{message}; Milvus /healthz: {state.management.summary()}"
        if message == check.message and ok == check.ok:
            return check
        return Check(check.name, ok, message, check.counts)

    def _probe_check(self, state: TargetState, counts: bool) -> Check:
        name = f"target:{state.target.alias}"
        last = state.last
        if state.passing:
            if last is not None and not last.success:
                return Check(
                    name,
                    True,
                    f"ok ({state.consecutive_failures} consecutive failure(s), "
                    f"last {last.reason}; fails at {self.settings.failure_threshold})",
                    counts,
                )
            return Check(name, True, "ok", counts)
        if last is None:
            return Check(name, False, "no probe has finished yet", counts)
        if last.success:
            return Check(
                name,
                False,
                f"{state.consecutive_successes} consecutive success(es); "
                f"passes at {self.settings.success_threshold}",
                counts,
            )
        return Check(
            name,
            False,
            f"failing: {last.reason} ({state.consecutive_failures} consecutive failure(s))",
            counts,
        )

    def ready(self) -> tuple[bool, list[Check]]:
        """Overall readiness under the policy, with every check for `?verbose`."""
        policy = self.settings.policy
        with self._lock:
            checks = [
                Check("config", True, "loaded"),
                Check("server", self._server_up, "listening" if self._server_up else "not started"),
                Check(
                    "shutdown",
                    not self._stopping,
                    "shutting down" if self._stopping else "not in progress",
                ),
            ]
            if policy is ReadinessPolicy.SELF:
                pending = len(self._first_round)
                checks.append(
                    Check(
                        "first-round",
                        pending == 0,
                        "done" if pending == 0 else f"{pending} target(s) not probed yet",
                    )
                )
            targets = [
                self._target_check(s, counts=policy is not ReadinessPolicy.SELF)
                for s in self._states.values()
            ]
        checks.extend(check() for check in self.extra_checks)
        counted = [c for c in checks if c.counts]
        ok = all(c.ok for c in counted)
        if policy in (ReadinessPolicy.ANY, ReadinessPolicy.ANY_HELD):
            passing = sum(c.ok for c in targets)
            checks.append(
                Check(
                    f"policy:{policy.value}",
                    passing > 0,
                    f"{passing} of {len(targets)} target(s) passing",
                )
            )
            ok = ok and passing > 0
        elif policy in (ReadinessPolicy.ALL, ReadinessPolicy.ALL_HELD):
            passing = sum(c.ok for c in targets)
            checks.append(
                Check(
                    f"policy:{policy.value}",
                    passing == len(targets),
                    f"{passing} of {len(targets)} target(s) passing",
                )
            )
            ok = ok and passing == len(targets)
        return ok, checks + targets


def log_change(change: Change) -> None:
    """Say in the log that a target went up or down, or changed why it is down."""
    if change.up:
        message = "target up" if change.first else "target recovered"
        logger.info(
            message,
            extra=logs.fields(
                alias=change.alias,
                target=change.target,
                **({"was": change.previous_reason} if change.previous_reason else {}),
            ),
        )
    elif change.first or change.previous_reason is None:
        logger.warning(
            "target down",
            extra=logs.fields(
                alias=change.alias, target=change.target, reason=change.reason, error=change.error
            ),
        )
    else:
        logger.warning(
            "target still down, for another reason",
            extra=logs.fields(
                alias=change.alias,
                target=change.target,
                reason=change.reason,
                was=change.previous_reason,
                error=change.error,
            ),
        )
