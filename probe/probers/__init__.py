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
    http.py        the bounded HTTP/1.1 client rest.py and management.py share
    reasons.py     how answers and errors become FailureReasons (shared by every kind)
    ledger.py      every connection opened and closed, per target
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import threading
from typing import TYPE_CHECKING, Any, Protocol

from probe.probers.ledger import ConnectionLedger
from probe.result import FailureReason, ProbeResult
from probe.targets import Target

if TYPE_CHECKING:
    from probe.probers.canary import CanarySetups
    from probe.probers.management import ManagementCheck
    from probe.probers.tls import TlsInspector

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
    ) -> None:
        super().__init__(error)
        self.reason, self.phase, self.error = reason, phase, error
        self.status_code, self.code = status_code, code


class Prober(Protocol):
    """One kind of probe."""

    phases: tuple[str, ...]
    """Every phase a cycle of this kind may report, in order (series exist from the start)."""

    def run(self, target: Target, info: InfoMode = InfoMode.NONE) -> ProbeResult:
        """One cycle: open a fresh connection, prove it can talk, close it. Never raises."""
        ...

    def forget(self, target: Target) -> None:
        """The target is gone: drop whatever is kept about it."""
        ...


def prober_class(protocol: str) -> type[Prober]:
    """The prober class for `protocol`, imported on first use."""
    module, _, name = KINDS[protocol].partition(":")
    cls: type[Prober] = getattr(importlib.import_module(module), name)
    return cls


def phases_of(target: Target | str) -> tuple[str, ...]:
    """Every phase a cycle against `target` may report (for a protocol name: its kind's
    phases). A prober with `phases_for(target)` adds per-target phases (the canary's)."""
    if isinstance(target, str):
        return prober_class(target).phases
    cls = prober_class(target.protocol)
    phases_for = getattr(cls, "phases_for", None)
    if phases_for is None:
        return cls.phases
    found: tuple[str, ...] = phases_for(target)
    return found


def occasional_phases_of(target: Target) -> tuple[str, ...]:
    """The phases of `target` a cycle runs only now and then (gRPC: info, once per
    connect-interval): history keeps their figures aside instead of in every row."""
    found: tuple[str, ...] = getattr(prober_class(target.protocol), "occasional_phases", ())
    return found


ON_DEMAND_SLOTS = 2
"""Cycles run on demand (`/probe`) at once, on slots of their own beside the schedule's."""


class Probers:
    """Every kind's prober (made on first use), sharing connection slots and one ledger,
    and the checks beside a cycle: Milvus's management port and TLS certificates.

    At most `max_concurrent` scheduled cycles run at once across all kinds, each holding
    a connection, and beside them at most ON_DEMAND_SLOTS cycles asked for on demand:
    those never take a scheduled cycle's slot, however many clients ask.
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 64,
        ledger: ConnectionLedger | None = None,
        canary_setups: CanarySetups | None = None,
    ):
        from probe.probers.canary import CanarySetups

        self.ledger = ledger or ConnectionLedger()
        self.canary_setups = canary_setups or CanarySetups()
        """Canary setups of every target, run off the cycle (read by metrics)."""
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._on_demand = threading.BoundedSemaphore(ON_DEMAND_SLOTS)
        self._lock = threading.Lock()
        self._probers: dict[str, Prober] = {}
        self._management: ManagementCheck | None = None
        self._tls: TlsInspector | None = None

    def _beside(self) -> tuple[ManagementCheck, TlsInspector]:
        """The side checks, built on first use (most targets need neither)."""
        with self._lock:
            if self._management is None or self._tls is None:
                from probe.probers.management import ManagementCheck
                from probe.probers.tls import TlsInspector

                self._management = ManagementCheck(self.ledger)
                self._tls = TlsInspector(self.ledger)
            return self._management, self._tls

    def of(self, protocol: str) -> Prober:
        with self._lock:
            prober = self._probers.get(protocol)
            if prober is None:
                cls: type = prober_class(protocol)
                kwargs: dict[str, Any] = {"ledger": self.ledger}
                if getattr(cls, "runs_canary", False):
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
        """One cycle. Waits for a connection slot (raising SlotsBusy after `slot_timeout`):
        a scheduled one, or with `on_demand` one of the ON_DEMAND_SLOTS."""
        prober = self.of(target.protocol)
        slots = self._on_demand if on_demand else self._slots
        if not slots.acquire(timeout=slot_timeout):
            if on_demand:
                raise SlotsBusy(f"all {ON_DEMAND_SLOTS} on-demand slots are busy")
            raise SlotsBusy(f"all {self.max_concurrent} connection slots are busy")
        try:
            result = prober.run(target, info)
            if target.management is None and not target.secure:
                return result
            management, inspector = self._beside()
            asked = info in (InfoMode.VERSION, InfoMode.FULL)
            view = None
            if target.management is not None and (asked or management.due(target)):
                view = management.run(target)
            tls = None
            inspect = info is InfoMode.FULL or inspector.due(target)
            if target.secure and result.tls is None and inspect:
                tls = inspector.inspect(target)
            if view is None and tls is None:
                return result
            return dataclasses.replace(
                result, management=view or result.management, tls=tls or result.tls
            )
        finally:
            slots.release()

    def forget(self, target: Target) -> None:
        with self._lock:
            prober = self._probers.get(target.protocol)
            beside = (self._management, self._tls)
        if prober is not None:
            prober.forget(target)
        for check in beside:
            if check is not None:
                check.forget(target)
