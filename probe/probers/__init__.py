"""Probers: one module per kind of probe, each running one cycle and returning a ProbeResult.

A prober knows nothing of metrics, schedules, health or HTTP. Adding a kind means adding
a module here with a class that satisfies `Prober`, and one line in `KINDS`; its code is
imported only when a target uses it.

    grpc.py        the gRPC cycle: resolve → connect → CheckHealth/GetVersion → info →
                   [canary: search → query → write] → close
    canary.py      the data-plane canary's steps and its collection's setup
    rest.py        the RESTful API: resolve → connect → request (list collections) → close
    management.py  beside either: Milvus's own /healthz on its management port
    tls.py         beside gRPC: the certificates the server presents (own handshake)
    held.py        beside gRPC: the target's held connection, kept as pymilvus keeps one
    http.py        the bounded HTTP/1.1 client rest.py and management.py share
    reasons.py     how answers and errors become FailureReasons (shared by every kind)
    ledger.py      every connection opened and closed, per target
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from probe import logs
from probe.probers.ledger import ConnectionLedger
from probe.result import (
    Dial,
    FailureReason,
    HeldView,
    ManagementView,
    ProbeResult,
    SideView,
    TlsView,
)
from probe.targets import Target

if TYPE_CHECKING:
    from probe.probers.canary import CanarySetups
    from probe.probers.held import HeldConnections
    from probe.probers.management import ManagementCheck
    from probe.probers.tls import TlsInspector

logger = logging.getLogger(__name__)

PROBE_PHASE = "probe"
"""The phase named in a `probe_error` result: the probe's own code, not a step of the cycle."""

ERROR_TEXT_LIMIT = 2048
"""Error texts are cut to this many characters (a hostile server could send megabytes)."""

KINDS: dict[str, str] = {
    "grpc": "probe.probers.grpc:GrpcProber",
    "rest": "probe.probers.rest:RestProber",
}
"""protocol → "module:class" of its prober."""


class InfoMode(enum.Enum):
    """How much a cycle asks beyond the probe itself."""

    NONE = "none"
    """The probe alone."""
    SCHEDULED = "scheduled"
    """A scheduled cycle: the prober adds what is due (gRPC: Connect once per
    connect-interval, as the first success and then rarely)."""
    VERSION = "version"
    """What the server is, with no side effect on it (gRPC: GetVersion)."""
    FULL = "full"
    """Everything, side effects included (gRPC: Connect, which registers a client for 24 h,
    and GetVersion)."""


class SlotsBusy(Exception):
    """Every connection slot stayed busy for as long as the caller would wait."""


class Failed(Exception):
    """Ends a cycle: the reason, the phase it failed in, and the error text."""

    def __init__(
        self,
        reason: FailureReason,
        phase: str,
        error: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        dials: tuple[Dial, ...] = (),
    ) -> None:
        super().__init__(error)
        self.reason, self.phase, self.error = reason, phase, error
        self.status_code, self.code = status_code, code
        self.dials = dials
        """What each address did, when the failure ended a dial."""


class Prober(Protocol):
    """One kind of probe. `BaseProber` gives the optional parts their defaults."""

    phases: ClassVar[tuple[str, ...]]
    """Every phase a cycle of this kind may report, in order (series exist from the start)."""
    occasional_phases: ClassVar[tuple[str, ...]]
    """Phases a cycle runs only now and then (gRPC: info, once per connect-interval):
    history keeps their figures aside instead of in every row."""
    runs_canary: ClassVar[bool]
    """Whether the kind runs the data-plane canary (Probers hands it the CanarySetups)."""

    @classmethod
    def phases_for(cls, target: Target) -> tuple[str, ...]:
        """The phases a cycle against `target` may report (the canary adds its own)."""
        ...

    def run(self, target: Target, info: InfoMode = InfoMode.NONE) -> ProbeResult:
        """One cycle: open a fresh connection, prove it can talk, close it. Never raises."""
        ...

    def forget(self, target: Target) -> None:
        """The target is gone: drop whatever is kept about it."""
        ...


class BaseProber:
    """Defaults for the optional parts of `Prober`."""

    phases: ClassVar[tuple[str, ...]] = ()
    occasional_phases: ClassVar[tuple[str, ...]] = ()
    runs_canary: ClassVar[bool] = False

    @classmethod
    def phases_for(cls, target: Target) -> tuple[str, ...]:
        return cls.phases


def prober_class(protocol: str) -> type[Prober]:
    """The prober class for `protocol`, imported on first use."""
    module, _, name = KINDS[protocol].partition(":")
    cls: type[Prober] = getattr(importlib.import_module(module), name)
    return cls


def phases_of(target: Target | str) -> tuple[str, ...]:
    """Every phase a cycle against `target` may report (for a protocol name: its kind's
    phases, before any per-target ones such as the canary's)."""
    if isinstance(target, str):
        return prober_class(target).phases
    return prober_class(target.protocol).phases_for(target)


def occasional_phases_of(target: Target) -> tuple[str, ...]:
    """The phases of `target` a cycle runs only now and then."""
    return prober_class(target.protocol).occasional_phases


SIDE_WORKERS = 4
"""Threads for the checks beside the cycles (management port, TLS inspection): each runs
on its own budget, never in a cycle's connection slot, so a black-holed management port
can't make cycles late."""


ON_DEMAND_SLOTS = 2
"""Cycles run on demand (`/probe`) at once, on slots of their own beside the schedule's."""


class Probers:
    """Every kind's prober (made on first use), sharing connection slots and one ledger,
    and the checks beside a cycle: Milvus's management port, TLS certificates and held
    connections.

    At most `max_concurrent` scheduled cycles run at once across all kinds, each holding
    a connection, and beside them at most ON_DEMAND_SLOTS cycles asked for on demand:
    those never take a scheduled cycle's slot, however many clients ask. Whatever a
    prober or a side check raises becomes a result (reason `probe_error`), is logged with
    its traceback (scrubbed) and reported through `on_internal_error(where)`: a cycle
    always ends in a result.
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 64,
        ledger: ConnectionLedger | None = None,
        canary_setups: CanarySetups | None = None,
        on_internal_error: Callable[[str], None] = lambda where: None,
    ):
        from probe.probers.canary import CanarySetups

        self.ledger = ledger or ConnectionLedger()
        self.canary_setups = canary_setups or CanarySetups()
        """Canary setups of every target, run off the cycle (read by metrics)."""
        self.max_concurrent = max_concurrent
        self._on_internal_error = on_internal_error
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._on_demand = threading.BoundedSemaphore(ON_DEMAND_SLOTS)
        self._lock = threading.Lock()
        self._probers: dict[str, Prober] = {}
        self._management: ManagementCheck | None = None
        self._tls: TlsInspector | None = None
        self._side_pool: ThreadPoolExecutor | None = None
        self._held: HeldConnections | None = None
        self._held_pool: ThreadPoolExecutor | None = None
        """Held connections' calls wait out a cycle's timeout when a flow is dropped: a
        pool of their own keeps them from delaying the management and TLS checks."""
        self._side_running: set[tuple[str, str, str]] = set()
        """(alias, address, check) of side checks queued or running: one at a time each."""

    def _beside(self) -> tuple[ManagementCheck, TlsInspector]:
        """The side checks, built on first use (most targets need neither)."""
        with self._lock:
            if self._management is None or self._tls is None:
                from probe.probers.management import ManagementCheck
                from probe.probers.tls import TlsInspector

                self._management = ManagementCheck(self.ledger)
                self._tls = TlsInspector(self.ledger)
            return self._management, self._tls

    @property
    def held(self) -> HeldConnections:
        """The held connections of targets with `held: true` (built on first use)."""
        with self._lock:
            if self._held is None:
                from probe.probers.held import HeldConnections

                self._held = HeldConnections(self.ledger)
            return self._held

    def of(self, protocol: str) -> Prober:
        with self._lock:
            prober = self._probers.get(protocol)
            if prober is None:
                cls: Any = prober_class(protocol)
                kwargs: dict[str, Any] = {"ledger": self.ledger}
                if cls.runs_canary:
                    kwargs["setups"] = self.canary_setups
                prober = self._probers[protocol] = cls(**kwargs)
            return prober

    def run(
        self,
        target: Target,
        info: InfoMode = InfoMode.NONE,
        slot_timeout: float | None = None,
        *,
        on_demand: bool = False,
    ) -> ProbeResult:
        """One cycle in a connection slot (SlotsBusy after waiting `slot_timeout` for one):
        a scheduled one, or with `on_demand` one of the ON_DEMAND_SLOTS.

        Asked for server info (VERSION, FULL: `/probe`, `check`), the side checks run too,
        after the cycle and outside its slot, each on its own budget, and their views come
        with the result. Scheduled cycles leave them to `beside()`.
        """
        slots = self._on_demand if on_demand else self._slots
        if not slots.acquire(timeout=slot_timeout):
            if on_demand:
                raise SlotsBusy(f"all {ON_DEMAND_SLOTS} on-demand slots are busy")
            raise SlotsBusy(f"all {self.max_concurrent} connection slots are busy")
        try:
            result = self._cycle(target, info)
        finally:
            slots.release()
        if info not in (InfoMode.VERSION, InfoMode.FULL):
            return result
        management = tls = held = None
        if target.management is not None:
            management = self._management_view(target)
        if target.secure and result.tls is None:
            tls = self._tls_view(target)
        if target.held:
            held = self._held_view(target, result)
        if management is None and tls is None and held is None:
            return result
        return dataclasses.replace(
            result,
            management=management or result.management,
            tls=tls or result.tls,
            held=held,
        )

    def _cycle(self, target: Target, info: InfoMode) -> ProbeResult:
        started_at, start = time.time(), time.perf_counter()
        try:
            return self.of(target.protocol).run(target, info)
        except Exception as exc:  # a bug, or an answer the prober could not handle
            error = self._internal_error("prober", target, exc)
            return ProbeResult(
                alias=target.alias,
                target=target.address,
                method=target.rpc.value,
                started_at=started_at,
                duration=time.perf_counter() - start,
                phases={},
                success=False,
                protocol=target.protocol,
                reason=FailureReason.PROBE_ERROR,
                failed_phase=PROBE_PHASE,
                error=error,
            )

    def beside(
        self,
        target: Target,
        result: ProbeResult,
        on_view: Callable[[SideView], object],
    ) -> int:
        """Start the side checks due for `target` after a scheduled cycle: on their own
        threads and budgets, one at a time per target; `on_view(view)` when one ends.
        The held connection's call, for a target with one, is one of them (on a pool of
        its own). How many it started."""
        started = 0
        if target.held:
            started += self._submit(
                target, "held", lambda: self._held_view(target, result), on_view, held=True
            )
        if target.management is None and not target.secure:
            return started
        management, inspector = self._beside()
        if target.management is not None and management.due(target):
            started += self._submit(
                target, "management", lambda: self._management_view(target), on_view
            )
        if target.secure and result.tls is None and inspector.due(target):
            started += self._submit(target, "tls", lambda: self._tls_view(target), on_view)
        return started

    def _submit(
        self,
        target: Target,
        check: str,
        run: Callable[[], SideView | None],
        on_view: Callable[[SideView], object],
        *,
        held: bool = False,
    ) -> bool:
        key = (target.alias, target.address, check)
        with self._lock:
            if key in self._side_running:
                return False
            self._side_running.add(key)
            if held:
                if self._held_pool is None:
                    self._held_pool = ThreadPoolExecutor(
                        self.max_concurrent, thread_name_prefix="held"
                    )
                pool = self._held_pool
            else:
                if self._side_pool is None:
                    self._side_pool = ThreadPoolExecutor(SIDE_WORKERS, thread_name_prefix="side")
                pool = self._side_pool

        def job() -> None:
            try:
                view = run()
            finally:
                with self._lock:
                    self._side_running.discard(key)
            if view is not None:
                on_view(view)

        try:
            pool.submit(job)
        except RuntimeError:  # shut down: no new checks
            with self._lock:
                self._side_running.discard(key)
            return False
        return True

    def _management_view(self, target: Target) -> ManagementView:
        management, _ = self._beside()
        started_at, start = time.time(), time.perf_counter()
        try:
            return management.run(target)
        except Exception as exc:
            error = self._internal_error("management", target, exc)
            assert target.management is not None
            return ManagementView(
                uri=target.management.uri,
                started_at=started_at,
                duration=time.perf_counter() - start,
                healthy=False,
                reason=FailureReason.PROBE_ERROR,
                error=error,
            )

    def _held_view(self, target: Target, fresh: ProbeResult | None) -> HeldView:
        started_at, start = time.time(), time.perf_counter()
        try:
            return self.held.check(target, fresh)
        except Exception as exc:
            error = self._internal_error("held", target, exc)
            return HeldView(
                started_at=started_at,
                duration=time.perf_counter() - start,
                success=False,
                reason=FailureReason.PROBE_ERROR.value,
                error=error,
            )

    def _tls_view(self, target: Target) -> TlsView | None:
        _, inspector = self._beside()
        try:
            return inspector.inspect(target)
        except Exception as exc:
            self._internal_error("tls", target, exc)
            return None

    def _internal_error(self, where: str, target: Target, exc: Exception) -> str:
        """Log what broke (traceback included, secrets masked), count it; the error text."""
        trace = target.redact("".join(traceback.format_exception(exc)))
        error = target.redact(f"{type(exc).__name__}: {exc}")[:ERROR_TEXT_LIMIT]
        logger.error(
            "the probe itself failed; this says nothing about the target",
            extra=logs.fields(alias=target.alias, where=where, error=error, traceback=trace),
        )
        self._on_internal_error(where)
        return f"the probe itself failed in its {where} ({error}); see the daemon's log"

    def close(self) -> None:
        """Stop starting side checks (shutdown); those running end by their own deadline.
        Held connections are closed."""
        with self._lock:
            pools = (self._side_pool, self._held_pool)
            self._side_pool = self._held_pool = None
            held = self._held
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if held is not None:
            held.close()

    def forget(self, target: Target) -> None:
        with self._lock:
            prober = self._probers.get(target.protocol)
            beside = (self._management, self._tls)
            held = self._held
        if held is not None:
            held.forget(target)
        if prober is not None:
            prober.forget(target)
        for check in beside:
            if check is not None:
                check.forget(target)
