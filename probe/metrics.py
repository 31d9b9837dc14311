"""Every metric milvus-probe exports, defined in one place on a registry the app owns.

Per-target series carry the target's labels (`alias`, `target` = `host:port`, and
`namespace`/`service`/`pod`, empty for static targets). They are created when the
target is added (so counters start at 0) and removed when it goes away. A sample::

    milvus_probe_attempts_total{alias="default",target="localhost:19530",...} 42.0
    milvus_probe_failures_total{alias="default",target="localhost:19530",...,reason="refused"} 3.0
    milvus_probe_success{alias="default",target="localhost:19530",...} 1.0
    milvus_probe_phase_duration_seconds_bucket{alias="default",...,phase="connect",le="0.001"} 40.0
    milvus_probe_connections_opened_total{alias="default",target="localhost:19530",...} 42.0
    milvus_probe_server_info{alias="default",...,version="v2.3.5",...,deploy_mode="STANDALONE"} 1.0
    milvus_probe_canary_visibility_seconds_bucket{alias="default",...,le="0.25"} 40.0
    milvus_probe_canary_setups_total{alias="default",...,result="success"} 1.0
    milvus_probe_held_success{alias="default",target="localhost:19530",...} 1.0
    milvus_probe_held_failures_total{alias="default",...,reason="idle_dropped"} 1.0

The canary's series (phases search/query/write, visibility, setups) exist only for
targets with a `canary:` block, and the `held_*` series only for targets with
`held: true`: a target without them grows no series.

Per-target numbers live in plain `_Series` objects: `record()` is a few increments under
one lock, and a scrape writes each target's lines once per change (probe.exposition),
which is what keeps /metrics cheap with hundreds of targets. Process-wide metrics are
ordinary prometheus_client metrics.
"""

from __future__ import annotations

import bisect
import functools
import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

import probe
from probe.exposition import RenderedFamily
from probe.hub import TargetDiff
from probe.probers import phases_of
from probe.probers.canary import SETUP_RESULTS, CanarySetups
from probe.probers.ledger import ConnectionLedger
from probe.result import (
    HELD_REASONS,
    QUOTA_NONE,
    QUOTA_STATES,
    FailureReason,
    HeldView,
    ManagementView,
    ProbeResult,
    SideView,
    TlsView,
)
from probe.targets import Target

PREFIX = "milvus_probe"
TARGET_LABELS = ("alias", "target", "namespace", "service", "pod", "protocol")
"""Every per-target series; namespace/service/pod are empty for static targets; protocol
is grpc or rest."""
QUOTA_LABELS = (QUOTA_NONE, *QUOTA_STATES.values())
SERVER_INFO_LABELS = ("version", "git_commit", "go_version", "deploy_mode", "build_time")
TLS_INFO_LABELS = ("version", "subject", "issuer", "serial")

CYCLE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""The whole cycle, fine-grained: a healthy cycle on a LAN takes 1-10 ms."""
PHASE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0)
"""Per phase, coarse: enough to tell which step got slow (the alerts use 0.25/1/2.5),
at half the series of the cycle's buckets (five phases per target)."""


VISIBILITY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The canary's write → visible time: ~1 ms on milvus-lite, up to a time tick (200 ms by
default) on a real Milvus reading strongly."""


INTERNAL_ERROR_PLACES = ("prober", "management", "tls", "held", "sink", "scheduler")
"""Where `milvus_probe_internal_errors_total{where}` counts the probe breaking: a prober's
cycle, a side check, a sink taking a result, the scheduler running a cycle."""


def latency_buckets(max_timeout: float, base: tuple[float, ...] = CYCLE_BUCKETS) -> list[float]:
    """Buckets of `base` below the longest timeout, then the timeout (no cycle is longer)."""
    return [*(b for b in base if b < max_timeout), max_timeout]


# `_created` samples double the lines of every counter and histogram and say nothing a
# scrape needs (series are created with their target).
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Buckets:
    """Upper bounds and their `le` label values (+Inf last)."""

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.le = [(("le", _value(b)),) for b in bounds] + [(("le", "+Inf"),)]


class _Histogram:
    __slots__ = ("buckets", "counts", "sum", "exemplars")

    def __init__(self, buckets: _Buckets, exemplars: bool = False) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets.le)
        self.sum = 0.0
        self.exemplars: list[_Exemplar | None] | None = (
            [None] * len(buckets.le) if exemplars else None
        )
        """Per bucket, the latest cycle that fell in it: (trace_id, seconds, Unix time)."""

    def observe(self, seconds: float, exemplar: _Exemplar | None = None) -> None:
        index = bisect.bisect_left(self.buckets.bounds, seconds)
        self.counts[index] += 1
        self.sum += seconds
        if self.exemplars is not None and exemplar is not None:
            self.exemplars[index] = exemplar

    def rows(self, labels: tuple[tuple[str, str], ...] = ()) -> Iterator[_Row]:
        total = 0
        for le, count in zip(self.buckets.le, self.counts, strict=True):
            total += count
            yield "_bucket", labels + le, total
        yield "_count", labels, total
        yield "_sum", labels, self.sum


_Row = tuple[str, tuple[tuple[str, str], ...], float]
"""(suffix of the family name, labels after the target's, value)."""
_Exemplar = tuple[str, float, float]
"""(trace_id, seconds, Unix time): a cycle to look at, `/probe?trace=ID`."""


class _Series:
    """One target's numbers, and its exposition lines until the next change."""

    def __init__(
        self, labels: tuple[str, ...], cycle: _Buckets, phase: _Buckets, phases: Iterable[str]
    ) -> None:
        self.labels = dict(zip(TARGET_LABELS, labels, strict=True))
        self.key: tuple[str, str] = ("", "")
        """(alias, address): how the connection ledger and canary setups know it."""
        self.prefix = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels.items())
        self.attempts = 0
        self.failures = dict.fromkeys(FailureReason, 0)
        self.success = 0
        self.duration = _Histogram(cycle, exemplars=True)
        self.phase_buckets = phase
        self.phases = {p: _Histogram(phase) for p in phases}
        self.last_success = 0.0
        self.missed = 0
        self.healthy: int | None = None
        """Appears with the first CheckHealth answer: a 0 before it would claim an answer."""
        self.quota: dict[str, int] | None = None
        self.info: tuple[str, ...] | None = None
        self.management: _Management | None = None
        """Milvus's management view; only for targets with a management URI."""
        self.tls_expiry: float | None = None
        self.tls_info: tuple[str, ...] | None = None
        self.visibility: _Histogram | None = None
        """Only for targets whose canary writes."""
        self.held: _Held | None = None
        """Only for targets with a held connection."""
        self.canary_setup = False
        """Whether the target's canary sets its collection up (create: true)."""
        self.text: list[bytes] | None = None
        """Lines per family of `_FAMILIES`, encoded; None when a number changed since."""
        self.exemplar_text: bytes | None = None
        """The duration family's OpenMetrics lines, exemplars included; None when stale."""


HELD_STATES = ("IDLE", "CONNECTING", "READY", "TRANSIENT_FAILURE", "SHUTDOWN")
"""gRPC's channel states, the label values of `milvus_probe_held_state_changes_total`."""
UNUSABLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0)
"""How long a held connection stayed unusable: gRPC's reconnect backoff grows to 120 s,
keepalive notices a dropped flow within 15 s (10 s + 5 s)."""


class _Held:
    """A target's held connection: its last call, its failures and its channel's story."""

    __slots__ = ("age", "duration", "failures", "reconnects", "states", "success", "unusable")

    def __init__(self, phase: _Buckets) -> None:
        self.success: int | None = None
        self.failures = dict.fromkeys(HELD_REASONS, 0)
        self.duration = _Histogram(phase)
        self.unusable = _Histogram(_Buckets(list(UNUSABLE_BUCKETS)))
        self.reconnects = 0
        self.states = dict.fromkeys(HELD_STATES, 0)
        self.age: float | None = None

    def record(self, view: HeldView) -> None:
        self.success = 1 if view.success else 0
        self.duration.observe(view.duration)
        if view.reason is not None:
            self.failures[view.reason] = self.failures.get(view.reason, 0) + 1
        if view.unusable_for is not None:
            self.unusable.observe(view.unusable_for)
        if view.opened_at:  # a view from an open channel (not a refusal at shutdown)
            self.reconnects = view.reconnects
            self.states.update(view.state_counts)
        self.age = view.connection_age


class _Management:
    """The last management check of a target, and its failures so far."""

    __slots__ = ("components", "duration", "failures", "healthy")

    def __init__(self) -> None:
        self.healthy: int | None = None
        self.duration: float | None = None
        self.components: dict[str, int] = {}
        self.failures = dict.fromkeys(FailureReason, 0)

    def rows_healthy(self) -> list[_Row]:
        return [] if self.healthy is None else [("", (), self.healthy)]


@dataclass(frozen=True)
class _Family:
    name: str
    type: str
    doc: str
    rows: Callable[[_Series], Iterable[_Row]]


_FAMILIES: tuple[_Family, ...] = (
    _Family("attempts", "counter", "Probe cycles run.", lambda s: [("_total", (), s.attempts)]),
    _Family(
        "failures",
        "counter",
        "Failed probe cycles, by reason.",
        lambda s: [("_total", (("reason", r.value),), n) for r, n in s.failures.items()],
    ),
    _Family(
        "success",
        "gauge",
        "1 if the last cycle succeeded, else 0.",
        lambda s: [("", (), s.success)],
    ),
    _Family(
        "duration_seconds",
        "histogram",
        "Whole cycle: resolve, connect, RPC(s) and close.",
        lambda s: s.duration.rows(),
    ),
    _Family(
        "phase_duration_seconds",
        "histogram",
        "Time spent in each phase of a cycle.",
        lambda s: [row for p, h in s.phases.items() for row in h.rows((("phase", str(p)),))],
    ),
    _Family(
        "last_success_timestamp_seconds",
        "gauge",
        "Unix time the last successful cycle started.",
        lambda s: [("", (), s.last_success)],
    ),
    _Family(
        "healthy",
        "gauge",
        "CheckHealth's isHealthy in the last answer (check_health only).",
        lambda s: [] if s.healthy is None else [("", (), s.healthy)],
    ),
    _Family(
        "quota_state",
        "gauge",
        '1 for each quota state in CheckHealth\'s last answer (state="none": no quota state).',
        lambda s: [("", (("state", k),), v) for k, v in (s.quota or {}).items()],
    ),
    _Family(
        "server_info",
        "gauge",
        "What Milvus says about itself (Connect, GetVersion); 1.",
        lambda s: (
            [] if s.info is None else [("", tuple(zip(SERVER_INFO_LABELS, s.info, strict=True)), 1)]
        ),
    ),
    _Family(
        "canary_visibility_seconds",
        "histogram",
        "Canary: time from an acknowledged upsert until a strong query saw it.",
        lambda s: [] if s.visibility is None else s.visibility.rows(),
    ),
    _Family(
        "missed_cycles",
        "counter",
        "Cycles skipped because the previous one had not finished or no worker was free.",
        lambda s: [("_total", (), s.missed)],
    ),
    _Family(
        "management_healthy",
        "gauge",
        "1 when Milvus's own management port answered /healthz with 200 and state OK, else 0.",
        lambda s: s.management.rows_healthy() if s.management else [],
    ),
    _Family(
        "management_component_healthy",
        "gauge",
        "1 for each component Milvus's /healthz reports Healthy, else 0.",
        lambda s: (
            [("", (("component", name),), up) for name, up in s.management.components.items()]
            if s.management
            else []
        ),
    ),
    _Family(
        "management_duration_seconds",
        "gauge",
        "How long the last management check took (its own connection, GET /healthz, close).",
        lambda s: (
            [("", (), s.management.duration)]
            if s.management and s.management.duration is not None
            else []
        ),
    ),
    _Family(
        "management_failures",
        "counter",
        "Management checks that failed, by reason (unhealthy: it answered, not OK).",
        lambda s: (
            [("_total", (("reason", r.value),), n) for r, n in s.management.failures.items()]
            if s.management
            else []
        ),
    ),
    _Family(
        "tls_certificate_expiry_timestamp_seconds",
        "gauge",
        "Unix time the earliest-expiring certificate the server presented expires.",
        lambda s: [] if s.tls_expiry is None else [("", (), s.tls_expiry)],
    ),
    _Family(
        "tls_info",
        "gauge",
        "The server's TLS version and leaf certificate; 1.",
        lambda s: (
            []
            if s.tls_info is None
            else [("", tuple(zip(TLS_INFO_LABELS, s.tls_info, strict=True)), 1)]
        ),
    ),
)
_FAMILIES += (
    _Family(
        "held_success",
        "gauge",
        "1 if the last call on the target's held connection succeeded, else 0.",
        lambda s: [] if s.held is None or s.held.success is None else [("", (), s.held.success)],
    ),
    _Family(
        "held_failures",
        "counter",
        "Failed calls on the held connection, by reason (idle_dropped, goaway, reconnecting, "
        "or the fresh cycle's reasons).",
        lambda s: (
            [("_total", (("reason", r),), n) for r, n in s.held.failures.items()] if s.held else []
        ),
    ),
    _Family(
        "held_duration_seconds",
        "histogram",
        "The probe RPC on the held connection (no connect, no close).",
        lambda s: s.held.duration.rows() if s.held else [],
    ),
    _Family(
        "held_unusable_seconds",
        "histogram",
        "How long the held connection was unusable each time: from the start of the first "
        "failed call to the end of the next success.",
        lambda s: s.held.unusable.rows() if s.held else [],
    ),
    _Family(
        "held_reconnects",
        "counter",
        "Times gRPC brought the held channel back to READY after its first connection.",
        lambda s: [("_total", (), s.held.reconnects)] if s.held else [],
    ),
    _Family(
        "held_state_changes",
        "counter",
        "Times the held channel entered each connectivity state.",
        lambda s: (
            [("_total", (("state", k),), n) for k, n in s.held.states.items()] if s.held else []
        ),
    ),
    _Family(
        "held_connection_age_seconds",
        "gauge",
        "How long the held channel's current connection had been READY at its last call.",
        lambda s: [] if s.held is None or s.held.age is None else [("", (), s.held.age)],
    ),
)
_DURATION = next(f for f in _FAMILIES if f.name == "duration_seconds")
"""The family whose buckets carry exemplars (OpenMetrics only)."""
_CONNECTIONS = (
    ("connections_opened", "counter", "Channels (fresh connections) opened.", "_total", 0),
    ("connections_closed", "counter", "Channels (connections) closed.", "_total", 1),
    ("open_connections", "gauge", "Channels open right now.", "", 2),
)
"""Read from the ledger at scrape time, so they are never stale: (opened, closed, open)."""
_SETUPS = (
    (
        "canary_setups",
        "counter",
        "Canary collection setups (create, insert, index, load), run off the cycle, by result.",
    ),
    (
        "canary_setup_duration_seconds",
        "gauge",
        "How long the last canary setup took.",
    ),
)
"""Read from the canary's setups at scrape time; only targets with `create: true`."""


class _TargetFamilies(Collector):
    """Every per-target family, from the series and the connection ledger."""

    def __init__(
        self,
        series: dict[int, _Series],
        lock: threading.Lock,
        ledger: ConnectionLedger,
        setups: CanarySetups | None = None,
    ) -> None:
        self._series, self._lock, self._ledger = series, lock, ledger
        self._setups = setups

    def describe(self) -> Iterator[Metric]:
        """The families' names, so the registry rejects clashes and `?name[]=` finds them."""
        for family in _FAMILIES:
            yield Metric(f"{PREFIX}_{family.name}", family.doc, family.type)
        for name, typ, doc, _, _ in _CONNECTIONS:
            yield Metric(f"{PREFIX}_{name}", doc, typ)
        for name, typ, doc in _SETUPS:
            yield Metric(f"{PREFIX}_{name}", doc, typ)

    def collect(self) -> Iterator[RenderedFamily]:
        with self._lock:
            series = list(self._series.values())
        texts: list[list[bytes]] | None = None

        def text(index: int) -> list[bytes]:
            nonlocal texts
            if texts is None:
                texts = [self._text(s) for s in series]
            return [t[index] for t in texts]

        for index, family in enumerate(_FAMILIES):
            yield RenderedFamily(
                f"{PREFIX}_{family.name}",
                family.doc,
                family.type,
                functools.partial(self._samples, family, series),
                functools.partial(text, index),
                functools.partial(self._exemplar_text, series) if family is _DURATION else None,
            )
        counts = self._ledger.snapshot()
        connections = []
        for s in series:
            opened, closed = counts.get(s.key, (0, 0))
            connections.append((s, (opened, closed, opened - closed)))
        for name, typ, doc, suffix, which in _CONNECTIONS:
            full = f"{PREFIX}_{name}"
            rows = [(s, [(suffix, (), values[which])]) for s, values in connections]
            yield RenderedFamily(
                full,
                doc,
                typ,
                functools.partial(_sample_list, full, rows),
                functools.partial(_text_chunks, full, rows),
            )
        yield from self._setup_families(series)

    def _setup_families(self, series: list[_Series]) -> Iterator[RenderedFamily]:
        setups = self._setups.snapshot() if self._setups is not None else {}
        counted: list[tuple[_Series, list[_Row]]] = []
        durations: list[tuple[_Series, list[_Row]]] = []
        for s in series:
            if not s.canary_setup:
                continue
            counts, last = setups.get(s.key, ({}, 0.0))
            counted.append(
                (s, [("_total", (("result", r.value),), counts.get(r, 0)) for r in SETUP_RESULTS])
            )
            durations.append((s, [("", (), last)]))
        for (name, typ, doc), rows in zip(_SETUPS, (counted, durations), strict=True):
            full = f"{PREFIX}_{name}"
            yield RenderedFamily(
                full,
                doc,
                typ,
                functools.partial(_sample_list, full, rows),
                functools.partial(_text_chunks, full, rows),
            )

    def _samples(self, family: _Family, series: list[_Series]) -> list[Sample]:
        name = f"{PREFIX}_{family.name}"
        with self._lock:
            rows = [(s, list(family.rows(s))) for s in series]
            if family is not _DURATION:
                return _sample_list(name, rows)
            exemplars = [list(s.duration.exemplars or ()) for s in series]
        out = []
        for (s, series_rows), kept in zip(rows, exemplars, strict=True):
            for index, (suffix, extra, value) in enumerate(series_rows):
                exemplar = kept[index] if suffix == "_bucket" else None
                out.append(
                    Sample(
                        name + suffix,
                        {**s.labels, **dict(extra)},
                        value,
                        exemplar=(
                            None
                            if exemplar is None
                            else Exemplar({"trace_id": exemplar[0]}, exemplar[1], exemplar[2])
                        ),
                    )
                )
        return out

    def _exemplar_text(self, series: list[_Series]) -> list[bytes]:
        """The duration family for OpenMetrics: bucket lines carry their exemplar."""
        with self._lock:
            return [self._exemplar_lines(s) for s in series]

    def _exemplar_lines(self, s: _Series) -> bytes:
        if s.exemplar_text is None:
            name = f"{PREFIX}_{_DURATION.name}"
            exemplars = s.duration.exemplars or []
            lines = []
            for index, (suffix, extra, value) in enumerate(s.duration.rows()):
                line = f"{name}{suffix}{{{s.prefix}{_labels_text(extra)}}} {_value(value)}"
                kept = exemplars[index] if suffix == "_bucket" else None
                if kept is not None:
                    trace_id, seconds, at = kept
                    line += f' # {{trace_id="{_escape(trace_id)}"}} {_value(seconds)} {at!r}'
                lines.append(line + "\n")
            s.exemplar_text = "".join(lines).encode()
        return s.exemplar_text

    def _text(self, s: _Series) -> list[bytes]:
        with self._lock:
            if s.text is None:
                s.text = [_text_lines(f"{PREFIX}_{f.name}", [(s, f.rows(s))]) for f in _FAMILIES]
            return s.text


def _sample_list(name: str, rows: Iterable[tuple[_Series, Iterable[_Row]]]) -> list[Sample]:
    return [
        Sample(name + suffix, {**s.labels, **dict(extra)}, value)
        for s, series_rows in rows
        for suffix, extra, value in series_rows
    ]


def _text_chunks(name: str, rows: Iterable[tuple[_Series, Iterable[_Row]]]) -> list[bytes]:
    return [_text_lines(name, rows)]


def _text_lines(name: str, rows: Iterable[tuple[_Series, Iterable[_Row]]]) -> bytes:
    return "".join(
        f"{name}{suffix}{{{s.prefix}{_labels_text(extra)}}} {_value(value)}\n"
        for s, series_rows in rows
        for suffix, extra, value in series_rows
    ).encode()


@functools.lru_cache(maxsize=4096)
def _labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    return "".join(f',{k}="{_escape(v)}"' for k, v in labels)


def _escape(value: str) -> str:
    """Label value escaping, the same in the text format and OpenMetrics."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _value(value: float) -> str:
    """prometheus_client's floatToGoString, without its branches for the common case."""
    if 0 <= value < 1e6:
        return repr(float(value))
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class ProbeMetrics:
    """The exported metrics; `record()` turns a ProbeResult into samples."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ledger: ConnectionLedger,
        max_timeout: float = 5.0,
        canary_setups: CanarySetups | None = None,
    ) -> None:
        self.registry = registry
        self._cycle = _Buckets(latency_buckets(max_timeout))
        self._phase = _Buckets(latency_buckets(max_timeout, PHASE_BUCKETS))
        self._visibility = _Buckets(latency_buckets(max_timeout, VISIBILITY_BUCKETS))
        self._lock = threading.Lock()
        self._series: dict[int, _Series] = {}
        """The hub's generation of a target → its numbers."""
        registry.register(_TargetFamilies(self._series, self._lock, ledger, canary_setups))

        self.schedule_lag = Histogram(
            f"{PREFIX}_schedule_lag_seconds",
            "How late cycles start compared with their schedule.",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.targets = Gauge(f"{PREFIX}_targets", "Targets being probed.", registry=registry)
        self.internal_errors = Counter(
            f"{PREFIX}_internal_errors",
            "Times the probe itself broke (its own bug, or an answer it could not handle): "
            "the cycle ended as reason probe_error, which says nothing about Milvus.",
            ("where",),
            registry=registry,
        )
        for where in INTERNAL_ERROR_PLACES:
            self.internal_errors.labels(where)
        self.reload_failures = Counter(
            f"{PREFIX}_config_reload_failures", "Configuration reloads rejected.", registry=registry
        )
        self.reload_success = Gauge(
            f"{PREFIX}_config_last_reload_successful",
            "1 if the last configuration reload succeeded.",
            registry=registry,
        )
        self.reload_success.set(1)
        self.reload_timestamp = Gauge(
            f"{PREFIX}_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            registry=registry,
        )
        self.reload_timestamp.set_to_current_time()
        build = Gauge(
            f"{PREFIX}_build_info",
            "milvus-probe version and runtime; 1.",
            ("version", "python_version", "grpcio_version"),
            registry=registry,
        )
        build.labels(probe.__version__, platform.python_version(), grpc.__version__).set(1)

    @property
    def bucket_top(self) -> float:
        """The highest finite latency bucket: the longest timeout seen."""
        return self._cycle.bounds[-1]

    def follow_timeout(self, max_timeout: float) -> bool:
        """A reload raised the longest timeout: cut new latency buckets at it and start
        every latency histogram again, so cycles longer than the old timeout are not all
        lumped into +Inf (histogram_quantile would report the old timeout). Histograms
        restart from 0, which rate() reads as a counter reset. True if they did."""
        if max_timeout <= self.bucket_top:
            return False  # shorter timeouts: the buckets still tell the truth
        cycle = _Buckets(latency_buckets(max_timeout))
        phase = _Buckets(latency_buckets(max_timeout, PHASE_BUCKETS))
        visibility = _Buckets(latency_buckets(max_timeout, VISIBILITY_BUCKETS))
        with self._lock:
            self._cycle, self._phase, self._visibility = cycle, phase, visibility
            for s in self._series.values():
                s.duration = _Histogram(cycle, exemplars=True)
                s.phase_buckets = phase
                s.phases = {p: _Histogram(phase) for p in s.phases}
                if s.held is not None:
                    s.held.duration = _Histogram(phase)
                if s.visibility is not None:
                    s.visibility = _Histogram(visibility)
                s.text = s.exemplar_text = None
        return True

    def add_target(self, target: Target) -> None:
        """Create the target's series at 0."""
        series = _Series(target.series_labels, self._cycle, self._phase, phases_of(target))
        series.key = (target.alias, target.address)
        if target.canary is not None:
            if target.canary.write:
                series.visibility = _Histogram(self._visibility)
            series.canary_setup = target.canary.create
        if target.management is not None:
            series.management = _Management()
        if target.held:
            series.held = _Held(self._phase)
        with self._lock:
            self._series[target.generation] = series

    def follow(self, diff: TargetDiff) -> None:
        """A hub listener: series for added targets (at 0), none for removed ones."""
        for target in diff.removed:
            self.remove_target(target)
        for target in diff.added:
            self.add_target(target)
        self.targets.set(len(diff.current))

    def remove_target(self, target: Target) -> None:
        """Remove every series of the target."""
        with self._lock:
            self._series.pop(target.generation, None)

    def record(self, target: Target, result: ProbeResult) -> None:
        """A hub sink: the result of `target`'s cycle."""
        with self._lock:
            s = self._series.get(target.generation)
            if s is None:
                return  # not (or no longer) a target: never recreate its series
            s.text = s.exemplar_text = None
            s.attempts += 1
            s.duration.observe(
                result.duration,
                (result.trace_id, result.duration, round(result.started_at, 3)),
            )
            for phase, seconds in result.phases.items():
                histogram = s.phases.get(phase)
                if histogram is None:  # a phase its prober did not declare: count it anyway
                    histogram = s.phases[phase] = _Histogram(s.phase_buckets)
                histogram.observe(seconds)
            if result.success:
                s.success = 1
                s.last_success = result.started_at
            else:
                s.success = 0
                assert result.reason is not None
                s.failures[result.reason] += 1
            if result.healthy is not None:
                s.healthy = 1 if result.healthy else 0
            if result.quota_states is not None:
                present = set(result.quota_states) or {QUOTA_NONE}
                s.quota = {state: 1 if state in present else 0 for state in QUOTA_LABELS}
            if result.version is not None or result.server_info is not None:
                s.info = _server_info(s.info, result)
            if result.management is not None:
                _record_management(s, result.management)
            if result.tls is not None:
                _record_tls(s, result.tls)
            if result.held is not None and s.held is not None:
                s.held.record(result.held)
            if result.visibility is not None and s.visibility is not None:
                s.visibility.observe(result.visibility)

    def record_view(self, target: Target, view: SideView) -> None:
        """A side check's view (management port, certificates, held connection)."""
        with self._lock:
            s = self._series.get(target.generation)
            if s is None:
                return
            s.text = s.exemplar_text = None
            if isinstance(view, ManagementView):
                _record_management(s, view)
            elif isinstance(view, HeldView):
                if s.held is not None:
                    s.held.record(view)
            else:
                _record_tls(s, view)

    def missed_cycle(self, target: Target) -> None:
        with self._lock:
            s = self._series.get(target.generation)
            if s is not None:  # a removed target's series must not come back
                s.text = None
                s.missed += 1


def _record_management(s: _Series, view: ManagementView) -> None:
    if s.management is None:
        return
    s.management.healthy = 1 if view.healthy else 0
    s.management.duration = view.duration
    s.management.components = {c.name: int(c.healthy) for c in view.components}
    if view.reason is not None:
        s.management.failures[view.reason] += 1


def _record_tls(s: _Series, view: TlsView) -> None:
    if view.chain:
        leaf = view.chain[0]
        s.tls_expiry = view.earliest_expiry
        s.tls_info = (view.version, leaf.subject, leaf.issuer, leaf.serial)


def _server_info(previous: tuple[str, ...] | None, result: ProbeResult) -> tuple[str, ...]:
    """Label values of server_info: what this cycle learnt, the rest from before."""
    si = result.server_info
    version = result.version or (previous[0] if previous else "")
    if si is not None:
        return version, si.git_commit, si.go_version, si.deploy_mode, si.build_time
    if previous is not None:
        return version, *previous[1:]
    return version, "", "", "", ""


DISCOVERY_ERROR_KINDS = ("gone", "api", "connection", "service")
EVENT_RESULTS = ("created", "aggregated", "rate_limited", "dropped", "failed")


class KubernetesMetrics:
    """Metrics of discovery and Events; created only when those features are on."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.discovery_targets = Gauge(
            f"{PREFIX}_discovery_targets",
            "Targets found by Kubernetes discovery.",
            registry=registry,
        )
        self.discovery_errors = Counter(
            f"{PREFIX}_discovery_errors",
            "Discovery errors: gone (410, relisted), api, connection, service.",
            ("kind",),
            registry=registry,
        )
        for kind in DISCOVERY_ERROR_KINDS:
            self.discovery_errors.labels(kind)
        self.discovery_last_sync = Gauge(
            f"{PREFIX}_discovery_last_sync_timestamp_seconds",
            "Unix time discovery last heard from the API server.",
            registry=registry,
        )
        self.events = Counter(
            f"{PREFIX}_events", "Kubernetes Events by outcome.", ("result",), registry=registry
        )
        for result in EVENT_RESULTS:
            self.events.labels(result)

    def synced(self, targets: int) -> None:
        self.discovery_targets.set(targets)
        self.discovery_last_sync.set_to_current_time()
