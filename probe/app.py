"""The composition root: builds every part, wires results to metrics and health, owns start/stop.

Data flows one way: target source → scheduler → prober → result → metrics/health → HTTP.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from probe import logs
from probe.config import SECRET_FLAGS, Config, ConfigError, describe
from probe.exposition import metrics_app
from probe.health import Change, Check, Health, TargetState
from probe.metrics import KubernetesMetrics, ProbeMetrics
from probe.milvus.channel import warm_up
from probe.pages import status_page
from probe.prober import InfoMode, Prober, SlotsBusy
from probe.result import FailureReason, ProbeResult
from probe.scheduler import Scheduler
from probe.targets import ObjectRef, Target
from probe.targets.static import StaticTargetSource
from probe.web import AliasRequired, Busy, ManagementServer, Router, UnknownAlias

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 1.5
"""Seconds shutdown may wait for cycles in flight (after closing their channels)."""


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
        self._clock = clock
        self._started = clock()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.prober = Prober(max_concurrent=config.probe.max_concurrent)
        self.ledger = self.prober.ledger
        max_timeout = max([t.timeout for t in config.targets] + [config.probe.timeout])
        self.metrics = ProbeMetrics(self.registry, self.ledger, max_timeout)
        self.metrics_app = metrics_app(self.registry)
        self.health = Health(config.readiness, config.probe.history, clock=clock)
        self.source = StaticTargetSource(config.targets)
        self.scheduler = Scheduler(
            self._run_scheduled,
            workers=config.probe.max_concurrent,
            heartbeat=self.health.heartbeat,
            on_lag=self.metrics.schedule_lag.observe,
            on_missed=self.metrics.missed_cycle,
            clock=clock,
        )
        pprof = None
        if config.profiling.enabled:
            from probe.pprof import ProfilingApp

            pprof = ProfilingApp(config.profiling, SECRET_FLAGS)
        self.router = Router(self, pprof)
        self.discovery: Any = None
        self.events: Any = None
        self.kube_metrics: KubernetesMetrics | None = None
        self._own_pod = _own_pod()
        self._denying: dict[str, bool] = {}
        if config.discovery is not None or _events_wanted(config):
            self._start_kubernetes(config)
        self.server = ManagementServer(self.router, config.listen_address)
        self._lock = threading.Lock()
        """Guards the target table; held while recording so a removed target stays removed."""
        self._reload_lock = threading.Lock()
        self._targets: dict[str, Target] = {}
        self._connected_at: dict[str, float] = {}
        """alias → when Milvus Connect last succeeded (monotonic)."""
        self._stopping = False

    # ----------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self.server.port

    def _start_kubernetes(self, config: Config) -> None:
        """Build discovery and Events; the only path that imports `kubernetes`."""
        from probe import kube

        self.kube_metrics = KubernetesMetrics(self.registry)
        api = kube.api_client(config.kubeconfig)
        if config.discovery is not None:
            from probe.targets.kubernetes import (
                DiscoveryOptions,
                KubernetesTargetSource,
                Shard,
            )

            d = config.discovery
            assert d.template is not None
            self.discovery = KubernetesTargetSource(
                DiscoveryOptions(
                    namespace=d.namespace or kube.own_namespace(),
                    service=d.service,
                    label_selector=d.label_selector,
                    port_name=d.port_name,
                    include_service=d.include_service,
                    shard=Shard(d.shard_index, d.shard_total),
                    template=d.template,
                ),
                api=api,
                on_error=lambda kind: self.kube_metrics.discovery_errors.labels(kind).inc(),  # type: ignore[union-attr]
                on_sync=self.kube_metrics.synced,
            )
            self.health.extra_checks.append(self._discovery_check)
        if _events_wanted(config):
            from probe.events import EventRecorder

            self.events = EventRecorder(
                api,
                instance=os.environ.get("POD_NAME"),
                on_result=lambda result: self.kube_metrics.events.labels(result).inc(),  # type: ignore[union-attr]
            )

    def _discovery_check(self) -> Check:
        source = self.discovery
        if not source.synced.is_set():
            why = source.last_error or "waiting for the first list"
            return Check("discovery", False, f"not synced yet: {why}")
        ago = time.time() - (source.last_sync or time.time())
        note = f"; last error: {source.last_error}" if source.last_error else ""
        return Check(
            "discovery",
            True,
            f"{len(source.current())} target(s), heard from the API server {ago:.0f}s ago{note}",
        )

    def _current_targets(self) -> list[Target]:
        """Static targets, then discovered ones (a static alias wins a collision)."""
        static = self.source.current()
        if self.discovery is None:
            return static
        taken = {t.alias for t in static}
        return static + [t for t in self.discovery.current() if t.alias not in taken]

    def start(self) -> None:
        warm_up()
        self.source.subscribe(lambda _: self._apply_targets(self._current_targets()))
        if self.discovery is not None:
            self.discovery.subscribe(lambda _: self._apply_targets(self._current_targets()))
            self.discovery.start()
        if self.events is not None:
            self.events.start()
        self._apply_targets(self._current_targets(), first_round=True)
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
                targets=len(self._targets),
                policy=self.config.readiness.policy,
            ),
        )
        for line in describe(self.config):
            logger.info("probing target", extra=logs.fields(target=line))

    def stop(self) -> None:
        """Stop probing, close every connection, stop serving. Bounded by SHUTDOWN_BUDGET."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        began = self._clock()
        self.health.stopping()
        self.scheduler.stop(timeout=0.5)
        self.source.stop()
        if self.discovery is not None:
            self.discovery.stop()
        if self.events is not None:
            self.events.stop()
        closed = self.ledger.close_all()
        finished = self.scheduler.join_workers(SHUTDOWN_BUDGET)
        self.server.stop()
        logger.info(
            "milvus-probe stopped",
            extra=logs.fields(
                closed_in_flight=closed,
                all_cycles_finished=finished,
                took=f"{self._clock() - began:.3f}s",
            ),
        )

    # ----------------------------------------------------------- targets

    def _apply_targets(self, targets: list[Target], first_round: bool = False) -> None:
        with self._lock:
            old, new = self._targets, {t.alias: t for t in targets}
            # Stop scheduling removed targets before their series go, so nothing the
            # scheduler does for them afterwards can bring a series back.
            self.scheduler.update(targets)
            for alias, target in old.items():
                replacement = new.get(alias)
                if replacement is None or _series_key(replacement) != _series_key(target):
                    self.metrics.remove_target(alias, target.address)
                    self.ledger.forget((alias, target.address))
                    self.prober.factory.forget(target)
                    self._connected_at.pop(alias, None)
                    if not first_round:
                        logger.info(
                            "target removed" if replacement is None else "target changed",
                            extra=logs.fields(alias=alias, target=target.address),
                        )
            for alias, target in new.items():
                previous = old.get(alias)
                if previous is None or _series_key(previous) != _series_key(target):
                    self.metrics.add_target(target)
                    if previous is None and not first_round:
                        logger.info(
                            "target added", extra=logs.fields(alias=alias, target=target.address)
                        )
            self._targets = new
            self.metrics.targets.set(len(new))
            self.health.set_targets(targets, first_round=first_round)

    def _info_mode(self, target: Target) -> InfoMode:
        with self._lock:
            last = self._connected_at.get(target.alias)
        if last is None or self._clock() - last >= target.connect_interval:
            return InfoMode.FULL
        return InfoMode.NONE

    def _run_scheduled(self, target: Target) -> None:
        result = self.prober.run(target, self._info_mode(target))
        self._record(target, result)

    def _record(self, target: Target, result: ProbeResult) -> None:
        with self._lock:
            current = self._targets.get(target.alias)
            if self._stopping or current is None or current.address != target.address:
                return  # removed (or shutting down) while the cycle was in flight
            # Connect registered us (or doesn't exist) even if a later step of the cycle
            # failed: calling it again before connect-interval would register again.
            if result.connect_called and (
                result.server_info is not None or not result.connect_supported
            ):
                self._connected_at[target.alias] = self._clock()
            self.metrics.record(result)
            change = self.health.observe(result)
            denying = self._quota_change(result)
        if change is not None:
            _log_change(change)
            if not (change.first and change.up):  # a target that starts healthy changed nothing
                self._post_change(target, change)
        if denying is not None and self.events is not None:
            self._post_quota(target, result, denying)

    def _quota_change(self, result: ProbeResult) -> bool | None:
        """True/False when the target starts/stops denying reads or writes, else None."""
        if result.quota_states is None:
            return None
        denying = any(s.startswith("DenyTo") for s in result.quota_states)
        before = self._denying.get(result.alias, False)
        self._denying[result.alias] = denying
        return denying if denying != before else None

    def _regarding(self, target: Target) -> ObjectRef | None:
        return target.regarding or self._own_pod

    def _post_change(self, target: Target, change: Change) -> None:
        regarding = self._regarding(target)
        if regarding is None or self.events is None:
            return
        from probe.events import EventRequest

        if change.up:
            reason, kind = "MilvusConnectionRecovered", "Normal"
            message = f"{change.alias} ({change.target}) answers again"
            if change.previous_reason:
                message += f"; it failed with {change.previous_reason} before"
        else:
            unhealthy = change.reason is FailureReason.UNHEALTHY
            reason = "MilvusUnhealthy" if unhealthy else "MilvusConnectionFailed"
            kind = "Warning"
            message = (
                f"{change.alias} ({change.target}) failed: {change.reason}: {change.error[:600]}"
            )
        self.events.record(EventRequest(regarding, kind, reason, message, change.alias))

    def _post_quota(self, target: Target, result: ProbeResult, denying: bool) -> None:
        regarding = self._regarding(target)
        if regarding is None or self.events is None:
            return
        from probe.events import EventRequest

        states = ", ".join(result.quota_states or ()) or "none"
        if denying:
            request = EventRequest(
                regarding,
                "Warning",
                "MilvusQuotaDenying",
                f"{target.alias} ({target.address}) quota states: {states}",
                target.alias,
            )
        else:
            request = EventRequest(
                regarding,
                "Normal",
                "MilvusQuotaCleared",
                f"{target.alias} ({target.address}) no longer denies "
                f"reads or writes (quota states: {states})",
                target.alias,
            )
        self.events.record(request)

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
            ):
                if before != after:
                    logger.warning(
                        "setting changed but takes effect only on restart",
                        extra=logs.fields(setting=name),
                    )
            if new.log_level != old.log_level:
                logs.set_level(new.log_level)
            self.health.configure(new.readiness, new.probe.history)
            self.config = new
            self.source.replace(new.targets)
            self.metrics.reload_success.set(1)
            self.metrics.reload_timestamp.set_to_current_time()
            logger.info(
                "configuration reloaded",
                extra=logs.fields(targets=len(new.targets), policy=new.readiness.policy),
            )
            return True, f"configuration reloaded: {len(new.targets)} target(s)"

    # ----------------------------------------------------------- ManagementApi

    def live(self) -> tuple[bool, str]:
        return self.health.live()

    def ready(self) -> tuple[bool, list[Check]]:
        return self.health.ready()

    def target_check(self, alias: str) -> Check | None:
        return self.health.target_check(alias)

    def probe_now(self, alias: str | None) -> tuple[ProbeResult, TargetState | None]:
        """Run one cycle now for `/probe`. It is not recorded in metrics or history."""
        with self._lock:
            targets = dict(self._targets)
        if alias is None:
            if len(targets) != 1:
                raise AliasRequired(
                    "say which target with ?alias=NAME; targets: " + ", ".join(sorted(targets))
                )
            alias = next(iter(targets))
        target = targets.get(alias)
        if target is None:
            raise UnknownAlias(f"no target with alias {alias!r}")
        try:
            result = self.prober.run(target, InfoMode.VERSION, slot_timeout=target.timeout)
        except SlotsBusy as exc:
            raise Busy(str(exc)) from None
        return result, self.health.state(alias)

    def status_page(self) -> str:
        ready, _ = self.health.ready()
        live, _ = self.health.live()
        return status_page(
            self.health.states(),
            ready,
            live,
            self._started,
            profiling=self.router.pprof is not None,
        )


def _series_key(target: Target) -> tuple[str, ...]:
    return (*target.series_labels, target.rpc.value)


def _own_pod() -> ObjectRef | None:
    """Our own pod (downward API), which Events about static targets are attached to."""
    name, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    return ObjectRef("Pod", namespace, name) if name and namespace else None


def _events_wanted(config: Config) -> bool:
    if config.events is not None:
        return config.events
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return in_cluster and (config.discovery is not None or bool(os.environ.get("POD_NAME")))


def _log_change(change: Change) -> None:
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
