"""Kubernetes beside the daemon: targets found through EndpointSlices, Events about them.

Built only when discovery or Events are on; this is the path that imports `kubernetes`
(through probe.kube), so the default process never does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from probe.config import Config
from probe.health import Check
from probe.metrics import KubernetesMetrics
from probe.targets import ObjectRef, Target


def wanted(config: Config) -> bool:
    """Whether the configuration needs the Kubernetes API at all."""
    return config.discovery is not None or events_wanted(config)


def events_wanted(config: Config) -> bool:
    if config.events is not None:
        return config.events
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return in_cluster and (config.discovery is not None or bool(os.environ.get("POD_NAME")))


def own_pod() -> ObjectRef | None:
    """Our own pod (downward API), which Events about static targets are attached to."""
    name, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    return ObjectRef("Pod", namespace, name) if name and namespace else None


class Cluster:
    """Discovery (a target source), the Events recorder and their metrics."""

    def __init__(self, config: Config, registry: CollectorRegistry) -> None:
        from probe import kube

        self.metrics = KubernetesMetrics(registry)
        api = kube.api_client(config.kubeconfig)
        self.discovery: Any = None
        self.events: Any = None
        self.target_events: Any = None
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
                    management_port=d.management_port,
                ),
                api=api,
                on_error=lambda kind: self.metrics.discovery_errors.labels(kind).inc(),
                on_sync=self.metrics.synced,
            )
        if events_wanted(config):
            from probe.events import EventRecorder, TargetEvents

            self.events = EventRecorder(
                api,
                instance=os.environ.get("POD_NAME"),
                on_result=lambda result: self.metrics.events.labels(result).inc(),
            )
            self.target_events = TargetEvents(self.events, own_pod())

    def discovered(self) -> list[Target]:
        return self.discovery.current() if self.discovery is not None else []

    def start(self, on_change: Callable[[], None]) -> None:
        if self.discovery is not None:
            self.discovery.subscribe(lambda _: on_change())
            self.discovery.start()
        if self.events is not None:
            self.events.start()

    def stop(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
        if self.events is not None:
            self.events.stop()

    def discovery_check(self) -> Check:
        """The readiness check of discovery: synced, and when it last heard the API."""
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
