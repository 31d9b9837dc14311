"""Every metric milvus-probe exports, defined in one place on a registry the app owns.

Per-target series carry `alias` and `target` (`host:port`) and are created when the
target is added (so they start at 0) and removed when it goes away. A sample::

    milvus_probe_attempts_total{alias="default",target="localhost:19530"} 42.0
    milvus_probe_failures_total{alias="default",reason="refused",target="localhost:19530"} 3.0
    milvus_probe_success{alias="default",target="localhost:19530"} 1.0
    milvus_probe_phase_duration_seconds_bucket{alias="default",phase="connect",...,le="0.001"} 40.0
    milvus_probe_connections_opened_total{alias="default",target="localhost:19530"} 42.0
    milvus_probe_server_info{alias="default",deploy_mode="STANDALONE",...,version="v2.3.5"} 1.0
"""

from __future__ import annotations

import contextlib
import platform
import threading
from collections.abc import Iterable, Iterator

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import probe
from probe.milvus.channel import ConnectionLedger
from probe.result import QUOTA_NONE, QUOTA_STATES, FailureReason, Phase, ProbeResult, RpcMethod
from probe.targets import Target

PREFIX = "milvus_probe"
TARGET_LABELS = ("alias", "target", "namespace", "service", "pod")
"""Every per-target series; namespace/service/pod are empty for static targets."""
QUOTA_LABELS = (QUOTA_NONE, *QUOTA_STATES.values())
SERVER_INFO_LABELS = ("version", "git_commit", "go_version", "deploy_mode", "build_time")

_BASE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


def latency_buckets(max_timeout: float) -> list[float]:
    """Buckets from 100 µs up to the longest timeout (a cycle can't take longer)."""
    buckets = [b for b in _BASE_BUCKETS if b < max_timeout]
    return [*buckets, max_timeout]


class _ConnectionCollector(Collector):
    """Connection counts read from the ledger at scrape time, so they are never stale."""

    def __init__(
        self,
        ledger: ConnectionLedger,
        known: dict[tuple[str, str], tuple[str, ...]],
        lock: threading.Lock,
    ) -> None:
        self._ledger, self._known, self._lock = ledger, known, lock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        opened = CounterMetricFamily(
            f"{PREFIX}_connections_opened",
            "Channels (fresh connections) opened.",
            labels=TARGET_LABELS,
        )
        closed = CounterMetricFamily(
            f"{PREFIX}_connections_closed", "Channels (connections) closed.", labels=TARGET_LABELS
        )
        open_now = GaugeMetricFamily(
            f"{PREFIX}_open_connections", "Channels open right now.", labels=TARGET_LABELS
        )
        counts = self._ledger.snapshot()
        with self._lock:
            known = sorted(self._known.items())
        for key, labels in known:
            o, c = counts.get(key, (0, 0))
            opened.add_metric(labels, o)
            closed.add_metric(labels, c)
            open_now.add_metric(labels, o - c)
        yield opened
        yield closed
        yield open_now


# `_created` samples double the lines of every counter and histogram and say nothing a
# scrape needs (series are created with their target); rendering cost is per line.
disable_created_metrics()  # type: ignore[no-untyped-call]


class ProbeMetrics:
    """The exported metrics; `record()` turns a ProbeResult into samples."""

    def __init__(
        self, registry: CollectorRegistry, ledger: ConnectionLedger, max_timeout: float = 5.0
    ) -> None:
        self.registry = registry
        labels = TARGET_LABELS
        buckets = latency_buckets(max_timeout)
        self.attempts = Counter(
            f"{PREFIX}_attempts", "Probe cycles run.", labels, registry=registry
        )
        self.failures = Counter(
            f"{PREFIX}_failures",
            "Failed probe cycles, by reason.",
            (*labels, "reason"),
            registry=registry,
        )
        self.success = Gauge(
            f"{PREFIX}_success", "1 if the last cycle succeeded, else 0.", labels, registry=registry
        )
        self.duration = Histogram(
            f"{PREFIX}_duration_seconds",
            "Whole cycle: resolve, connect, RPC(s) and close.",
            labels,
            buckets=buckets,
            registry=registry,
        )
        self.phase_duration = Histogram(
            f"{PREFIX}_phase_duration_seconds",
            "Time spent in each phase of a cycle.",
            (*labels, "phase"),
            buckets=buckets,
            registry=registry,
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time the last successful cycle started.",
            labels,
            registry=registry,
        )
        self.healthy = Gauge(
            f"{PREFIX}_healthy",
            "CheckHealth's isHealthy in the last answer (check_health only).",
            labels,
            registry=registry,
        )
        self.quota_state = Gauge(
            f"{PREFIX}_quota_state",
            '1 for each quota state in CheckHealth\'s last answer (state="none": no quota state).',
            (*labels, "state"),
            registry=registry,
        )
        self.server_info = Gauge(
            f"{PREFIX}_server_info",
            "What Milvus says about itself (Connect, GetVersion); 1.",
            (*labels, *SERVER_INFO_LABELS),
            registry=registry,
        )
        self.missed = Counter(
            f"{PREFIX}_missed_cycles",
            "Cycles skipped because the previous one had not finished or no worker was free.",
            labels,
            registry=registry,
        )
        self.schedule_lag = Histogram(
            f"{PREFIX}_schedule_lag_seconds",
            "How late cycles start compared with their schedule.",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.targets = Gauge(f"{PREFIX}_targets", "Targets being probed.", registry=registry)
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

        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[str, ...]] = {}
        """(alias, address) → the target's label values."""
        self._server_info: dict[tuple[str, str], tuple[str, ...]] = {}
        self._rpc: dict[tuple[str, str], RpcMethod] = {}
        registry.register(_ConnectionCollector(ledger, self._known, self._lock))

    def add_target(self, target: Target) -> None:
        """Create the target's series at 0."""
        key = target.alias, target.address
        labels = target.series_labels
        with self._lock:
            self._known[key] = labels
        self.attempts.labels(*labels)
        for reason in FailureReason:
            self.failures.labels(*labels, reason.value)
        self.success.labels(*labels)
        self.duration.labels(*labels)
        for phase in Phase:
            self.phase_duration.labels(*labels, phase.value)
        self.last_success.labels(*labels)
        self.missed.labels(*labels)
        # healthy and quota_state appear with the first CheckHealth answer: a 0 before
        # it would claim an answer nobody gave.

    def remove_target(self, alias: str, address: str) -> None:
        """Remove every series of the target."""
        with self._lock:
            labels = self._known.pop((alias, address), None)
            info = self._server_info.pop((alias, address), None)
        if labels is None:
            return
        for metric in (
            self.attempts,
            self.success,
            self.duration,
            self.last_success,
            self.missed,
            self.healthy,
        ):
            _remove(metric, labels)
        for reason in FailureReason:
            _remove(self.failures, (*labels, reason.value))
        for phase in Phase:
            _remove(self.phase_duration, (*labels, phase.value))
        for state in QUOTA_LABELS:
            _remove(self.quota_state, (*labels, state))
        if info is not None:
            _remove(self.server_info, (*labels, *info))

    def _labels(self, alias: str, address: str) -> tuple[str, ...] | None:
        with self._lock:
            return self._known.get((alias, address))

    def record(self, result: ProbeResult) -> None:
        key = self._labels(result.alias, result.target)
        if key is None:
            return  # not (or no longer) a target: never recreate its series
        self.attempts.labels(*key).inc()
        self.duration.labels(*key).observe(result.duration)
        for phase, seconds in result.phases.items():
            self.phase_duration.labels(*key, phase.value).observe(seconds)
        if result.success:
            self.success.labels(*key).set(1)
            self.last_success.labels(*key).set(result.started_at)
        else:
            self.success.labels(*key).set(0)
            assert result.reason is not None
            self.failures.labels(*key, result.reason.value).inc()
        if result.healthy is not None:
            self.healthy.labels(*key).set(1 if result.healthy else 0)
        if result.quota_states is not None:
            present = set(result.quota_states) or {QUOTA_NONE}
            for state in QUOTA_LABELS:
                self.quota_state.labels(*key, state).set(1 if state in present else 0)
        if result.version is not None or result.server_info is not None:
            self._set_server_info((result.alias, result.target), key, result)

    def _set_server_info(
        self, key: tuple[str, str], labels: tuple[str, ...], result: ProbeResult
    ) -> None:
        si = result.server_info
        with self._lock:
            previous = self._server_info.get(key)
        version = result.version or (previous[0] if previous else "")
        values: tuple[str, ...]
        if si is not None:
            values = (version, si.git_commit, si.go_version, si.deploy_mode, si.build_time)
        elif previous is not None:
            values = (version, *previous[1:])
        else:
            values = (version, "", "", "", "")
        if values == previous:
            return
        if previous is not None:
            _remove(self.server_info, (*labels, *previous))
        self.server_info.labels(*labels, *values).set(1)
        with self._lock:
            self._server_info[key] = values

    def missed_cycle(self, target: Target) -> None:
        labels = self._labels(target.alias, target.address)
        if labels is not None:  # a removed target's series must not come back
            self.missed.labels(*labels).inc()


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


def _remove(metric: Counter | Gauge | Histogram, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
