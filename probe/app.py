"""The composition root: builds every part, wires them through the hub, owns start/stop.

Data flows one way: target sources → hub → scheduler → probers → hub → sinks (metrics,
health, Events) → HTTP. Nothing here decides anything about targets or results.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from probe import cluster, logs
from probe.cluster import Cluster
from probe.config import SECRET_FLAGS, Config, ConfigError, describe
from probe.exposition import metrics_app
from probe.health import Check, Health, log_change
from probe.history import History
from probe.hub import Hub, TargetDiff
from probe.metrics import ProbeMetrics
from probe.milvus.channel import warm_up
from probe.probers import InfoMode, Probers
from probe.result import ProbeResult
from probe.scheduler import Scheduler
from probe.targets import Target
from probe.targets.static import StaticTargetSource
from probe.web import ManagementServer, Router
from probe.web.api import DaemonApi
from probe.web.profiling import LazyProfiling

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 1.5
"""Seconds shutdown may wait for cycles in flight (after closing their channels)."""


def _longest_timeout(config: Config) -> float:
    """The longest cycle any target may take: where latency buckets end."""
    timeouts = [t.timeout for t in config.targets] + [config.probe.timeout]
    if config.discovery is not None and config.discovery.template is not None:
        timeouts.append(config.discovery.template.timeout)
    return max(timeouts)


class App:
    """The daemon. `start()`, then `reload()` as often as asked, then `stop()`."""

    def __init__(
        self,
        config: Config,
        *,
        load_config: Callable[[], Config] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._load_config = load_config
        self.clock = clock
        self.started = clock()
        logs.keep_recent()  # the bundle's log.jsonl, also when run in-process without setup
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.probers = Probers(
            max_concurrent=config.probe.max_concurrent,
            on_internal_error=lambda where: self.metrics.internal_errors.labels(where).inc(),
        )
        self.ledger = self.probers.ledger
        self.metrics = ProbeMetrics(
            self.registry, self.ledger, _longest_timeout(config), self.probers.canary_setups
        )
        self.metrics_app = metrics_app(self.registry)
        self.health = Health(config.readiness, clock=clock)
        self.history = History(config.history, config.probe.history)
        self.source = StaticTargetSource(config.targets)
        self.scheduler = Scheduler(
            self._run_scheduled,
            workers=config.probe.max_concurrent,
            heartbeat=self.health.heartbeat,
            on_lag=self.metrics.schedule_lag.observe,
            on_missed=self.metrics.missed_cycle,
            on_crash=lambda: self.metrics.internal_errors.labels("scheduler").inc(),
            clock=clock,
        )
        pprof = LazyProfiling(config.profiling, SECRET_FLAGS) if config.profiling.enabled else None
        self.router = Router(DaemonApi(self), pprof)
        self.cluster: Cluster | None = None
        if cluster.wanted(config):  # the only path that imports `kubernetes`
            self.cluster = Cluster(config, self.registry)
            if self.cluster.discovery is not None:
                self.health.extra_checks.append(self.cluster.discovery_check)
        self.discovery = self.cluster.discovery if self.cluster else None
        target_events = self.cluster.target_events if self.cluster else None
        self.server = ManagementServer(self.router, config.listen_address)
        self._reload_lock = threading.Lock()
        self._stopping = False

        # The wiring. Listeners hear of target changes in this order: the scheduler
        # first, so a removed target is never scheduled again once its series are gone.
        self.hub = Hub(on_sink_error=lambda: self.metrics.internal_errors.labels("sink").inc())
        self._table_lock = threading.Lock()
        """Held from reading the target sources to the hub's update: one writer at a time,
        so a slow writer can't put an older list back after a newer one."""
        self.hub.listen(lambda diff: self.scheduler.update(diff.current))
        self.hub.listen(self._forget_removed)
        self.hub.listen(self.metrics.follow)
        self.hub.listen(self.health.follow)
        self.hub.sink(self.metrics.record)
        self.hub.sink(self._health_sink)
        self.hub.view_sink(self.metrics.record_view)
        self.hub.view_sink(self.health.observe_view)
        self.hub.listen(self.history.follow)
        self.hub.sink(self.history.observe)
        self._target_events = target_events
        if target_events is not None:
            self.hub.listen(target_events.follow)
            self.hub.sink(target_events.observe)

    # ----------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self.server.port

    def _current_targets(self) -> list[Target]:
        """Static targets, then discovered ones (a static alias wins a collision)."""
        static = self.source.current()
        taken = {t.alias for t in static}
        discovered = self.cluster.discovered() if self.cluster else []
        return static + [t for t in discovered if t.alias not in taken]

    def _refresh_targets(self, first_round: bool = False) -> None:
        """The one writer of the target table: the sources' lists, merged, to the hub."""
        with self._table_lock:
            self.hub.update(self._current_targets(), first_round=first_round)

    def start(self) -> None:
        warm_up()
        self.source.subscribe(lambda _: self._refresh_targets())
        if self.cluster is not None:
            self.cluster.start(self._refresh_targets)
        self._refresh_targets(first_round=True)
        # What exists now (modules, config, targets and their series) lives as long as
        # the process: keep it out of the collector's full passes (40 ms at 1,000
        # targets), whose pauses would land inside cycles and read as Milvus latency.
        gc.freeze()
        self.source.start()
        self.server.start()
        self.health.server_started()
        self.health.heartbeat()
        self.scheduler.start()
        host, _ = self.config.listen_address
        logger.info(
            "milvus-probe started",
            extra=logs.fields(
                listen=f"{host or '*'}:{self.port}",
                targets=len(self.hub.targets()),
                policy=self.config.readiness.policy,
            ),
        )
        for line in describe(self.config):
            logger.info("probing target", extra=logs.fields(target=line))

    def stop(self) -> None:
        """Stop probing, close every connection, stop serving. Bounded by SHUTDOWN_BUDGET."""
        with self._reload_lock:
            if self._stopping:
                return
            self._stopping = True
        began = self.clock()
        self.hub.close()
        self.health.stopping()
        self.scheduler.stop(timeout=0.5)
        self.probers.close()
        self.source.stop()
        if self.cluster is not None:
            self.cluster.stop()
        closed = self.ledger.close_all()
        finished = self.scheduler.join_workers(SHUTDOWN_BUDGET)
        self.server.stop()
        logger.info(
            "milvus-probe stopped",
            extra=logs.fields(
                closed_in_flight=closed,
                all_cycles_finished=finished,
                took=f"{self.clock() - began:.3f}s",
            ),
        )

    # ----------------------------------------------------------- wiring

    def _forget_removed(self, diff: TargetDiff) -> None:
        for target in diff.removed:
            self.ledger.forget((target.alias, target.address))
            self.probers.forget(target)

    def _run_scheduled(self, target: Target) -> None:
        result = self.probers.run(target, InfoMode.SCHEDULED)
        self.hub.publish(target, result)
        self.probers.beside(target, result, lambda view: self.hub.publish_view(target, view))

    def _health_sink(self, target: Target, result: ProbeResult) -> None:
        change = self.health.observe(target, result)
        if change is None:
            return
        log_change(change)
        if self._target_events is not None:
            self._target_events.changed(target, change)

    # ----------------------------------------------------------- reload

    def reload(self) -> tuple[bool, str]:
        """Re-read the configuration; keep the running one if the new one is bad."""
        if self._load_config is None:
            return False, "reload is not available: the configuration was not loaded from sources"
        with self._reload_lock:
            try:
                new = self._load_config()
            except ConfigError as exc:
                self.metrics.reload_failures.inc()
                self.metrics.reload_success.set(0)
                for issue in exc.issues:
                    logger.error(
                        "reload rejected, keeping the running configuration",
                        extra=logs.fields(problem=str(issue)),
                    )
                return False, "reload rejected, the running configuration stays:\n" + str(exc)
            old = self.config
            for name, before, after in (
                ("web.listen-address", old.listen_address, new.listen_address),
                ("probe.max-concurrent", old.probe.max_concurrent, new.probe.max_concurrent),
                ("discovery.*", old.discovery, new.discovery),
                ("events.enabled", old.events, new.events),
                ("kubeconfig", old.kubeconfig, new.kubeconfig),
                ("profiling.*", old.profiling, new.profiling),
                ("history.*", old.history, new.history),
            ):
                if before != after:
                    logger.warning(
                        "setting changed but takes effect only on restart",
                        extra=logs.fields(setting=name),
                    )
            if new.log_level != old.log_level:
                logs.set_level(new.log_level)
            if self.metrics.follow_timeout(_longest_timeout(new)):
                logger.warning(
                    "a timeout grew past the latency buckets: buckets now end at the new "
                    "timeout and every latency histogram starts again from 0",
                    extra=logs.fields(bucket_top=f"{self.metrics.bucket_top:g}s"),
                )
            self.health.configure(new.readiness)
            self.history.configure(new.probe.history)
            self.config = new
            self.source.replace(new.targets)
            self.metrics.reload_success.set(1)
            self.metrics.reload_timestamp.set_to_current_time()
            logger.info(
                "configuration reloaded",
                extra=logs.fields(targets=len(new.targets), policy=new.readiness.policy),
            )
            return True, f"configuration reloaded: {len(new.targets)} target(s)"

    # ----------------------------------------------------------- the daemon itself

    def live(self) -> tuple[bool, str]:
        return self.health.live()

    def ready(self) -> tuple[bool, list[Check]]:
        return self.health.ready()
