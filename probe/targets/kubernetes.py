"""Targets from Kubernetes EndpointSlices: every ready Milvus proxy pod, and its Service.

List, then watch from the list's resourceVersion; a watch that ends (timeout, dropped
connection) resumes from the last resourceVersion seen (bookmarks included); `410 Gone`
relists; other errors back off exponentially with jitter. While the API server can't be
reached the last known targets keep being probed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from probe import logs
from probe.kube import Backoff, api_client
from probe.targets import Endpoint, ObjectRef, Target

logger = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_PORT = 19530
WATCH_SECONDS = 240
"""Server-side watch timeout; the watch then resumes from the last resourceVersion."""


@dataclass(frozen=True)
class Shard:
    """This replica's share of the discovered pods: hash(namespace/service/pod) % total."""

    index: int = 0
    total: int = 1

    def owns(self, namespace: str, service: str, pod: str) -> bool:
        if self.total == 1:
            return True
        digest = hashlib.sha256(f"{namespace}/{service}/{pod}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total == self.index


@dataclass(frozen=True)
class DiscoveryOptions:
    namespace: str
    service: str | None
    label_selector: str | None
    port_name: str | None
    include_service: bool
    shard: Shard
    template: Target
    """Connection settings (auth, TLS, db, timing) for every discovered target."""
    management_port: int | None = None
    """Check each pod's own management port (GET /healthz) beside its probe."""


def _pick_port(ports: Iterable[Any] | None, wanted: str | None) -> int | None:
    """The slice port named `wanted`; else one named or typed for gRPC; else 19530."""
    ports = list(ports or [])
    if wanted:
        return next((p.port for p in ports if p.name == wanted), None)
    for p in ports:
        if "grpc" in (p.name or "").lower() or (p.app_protocol or "").lower() == "grpc":
            return int(p.port)
    for p in ports:
        if p.port == DEFAULT_PORT:
            return DEFAULT_PORT
    return int(ports[0].port) if len(ports) == 1 and ports[0].port else None


def targets_from_slices(
    slices: Iterable[Any], options: DiscoveryOptions, service_ports: dict[str, int]
) -> list[Target]:
    """Ready endpoints (and the Services) as targets, sorted, owned by this shard."""
    template, namespace, shard = options.template, options.namespace, options.shard
    found: dict[str, Target] = {}
    services: dict[str, int] = {}
    for piece in sorted(slices, key=lambda s: s.metadata.name or ""):
        service = (piece.metadata.labels or {}).get(SERVICE_NAME_LABEL, "")
        port = _pick_port(piece.ports, options.port_name)
        if not service or port is None:
            continue
        services.setdefault(service, port)
        for endpoint in piece.endpoints or []:
            conditions = endpoint.conditions
            # Per the API, an unset `ready` means ready; terminating endpoints are going.
            if conditions is not None and (
                conditions.ready is False or conditions.terminating is True
            ):
                continue
            if not endpoint.addresses:
                continue
            ref = endpoint.target_ref
            pod = (
                ref.name
                if ref is not None and ref.kind == "Pod" and ref.name
                else (endpoint.hostname or endpoint.addresses[0])
            )
            alias = f"{service}/{pod}"
            if alias in found or not shard.owns(namespace, service, pod):
                continue
            found[alias] = dataclasses.replace(
                template,
                alias=alias,
                host=endpoint.addresses[0],
                port=port,
                namespace=namespace,
                service=service,
                pod=pod,
                regarding=ObjectRef("Pod", namespace, pod, (ref.uid or "") if ref else ""),
                management=(
                    Endpoint(endpoint.addresses[0], options.management_port)
                    if options.management_port
                    else template.management
                ),
            )
    if options.include_service and shard.index == 0:
        for service, port in services.items():
            found[service] = dataclasses.replace(
                template,
                alias=service,
                host=f"{service}.{namespace}.svc",
                port=service_ports.get(service, port),
                namespace=namespace,
                service=service,
                pod="",
                regarding=ObjectRef("Service", namespace, service),
            )
    return [found[a] for a in sorted(found)]


class KubernetesTargetSource:
    """A TargetSource that follows EndpointSlices of one Service or label selector."""

    def __init__(
        self,
        options: DiscoveryOptions,
        *,
        kubeconfig: str | None = None,
        on_error: Callable[[str], None] = lambda kind: None,
        on_sync: Callable[[int], None] = lambda count: None,
        api: Any = None,
    ) -> None:
        self.options = options
        self._api = api if api is not None else api_client(kubeconfig)
        # The client's models are typed loosely (optional metadata); treat answers as Any.
        self._discovery: Any = client.DiscoveryV1Api(self._api)
        self._core: Any = client.CoreV1Api(self._api)
        self._on_error, self._on_sync = on_error, on_sync
        self._lock = threading.Lock()
        self._slices: dict[str, Any] = {}
        """EndpointSlices by name, as last listed or watched."""
        self._service_ports: dict[str, int] = {}
        self._targets: list[Target] = []
        self._subscribers: list[Callable[[list[Target]], None]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
        self.synced = threading.Event()
        """Set once the first list succeeded."""
        self.last_sync: float | None = None
        self.last_error: str | None = None

    @property
    def selector(self) -> str:
        if self.options.service:
            return f"{SERVICE_NAME_LABEL}={self.options.service}"
        return self.options.label_selector or ""

    # ----------------------------------------------------------- TargetSource

    def current(self) -> list[Target]:
        with self._lock:
            return list(self._targets)

    def subscribe(self, callback: Callable[[list[Target]], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    # ----------------------------------------------------------- watching

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        backoff = Backoff()
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                    backoff.reset()
                stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
                for event in stream.stream(
                    self._discovery.list_namespaced_endpoint_slice,
                    self.options.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=(10, WATCH_SECONDS + 30),
                ):
                    if self._stopping.is_set():
                        stream.stop()
                        break
                    version = stream.resource_version or version
                    self._apply(event["type"], event["object"])
                backoff.reset()
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    self._error("gone", f"watch expired (410 Gone), relisting: {exc.reason}")
                    version = None
                    continue
                self._error("api", f"API error {exc.status}: {exc.reason}")
                self._stopping.wait(backoff.next())
            except Exception as exc:  # connection refused, reset, read timeout, bad data
                self._error("connection", f"{type(exc).__name__}: {exc}")
                self._stopping.wait(backoff.next())

    def _list(self) -> str:
        answer = self._discovery.list_namespaced_endpoint_slice(
            self.options.namespace, label_selector=self.selector, _request_timeout=10
        )
        with self._lock:
            self._slices = {s.metadata.name: s for s in answer.items or []}
        self._refresh_service_ports()
        self._publish()
        self.synced.set()
        logger.info(
            "discovery listed EndpointSlices",
            extra=logs.fields(
                namespace=self.options.namespace,
                selector=self.selector,
                slices=len(answer.items or []),
                targets=len(self.current()),
            ),
        )
        return str(answer.metadata.resource_version)

    def _refresh_service_ports(self) -> None:
        """Clients reach the Service on its own port, which may differ from the pods'."""
        if not self.options.include_service:
            return
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            names: set[str] = {
                str((s.metadata.labels or {}).get(SERVICE_NAME_LABEL) or "")
                for s in self._slices.values()
            } - {""}
        for name in sorted(names):
            try:
                service = self._core.read_namespaced_service(
                    name, self.options.namespace, _request_timeout=10
                )
            except ApiException as exc:
                self._error("service", f"cannot read Service {name}: {exc.status}")
                continue
            for port in service.spec.ports or []:
                if self.options.port_name and port.name != self.options.port_name:
                    continue
                if self.options.port_name or "grpc" in (port.name or "") or port.port == 19530:
                    with self._lock:
                        self._service_ports[name] = int(port.port)
                    break

    def _apply(self, kind: str, piece: Any) -> None:
        if kind == "BOOKMARK":
            return
        name = piece.metadata.name
        with self._lock:
            if kind == "DELETED":
                self._slices.pop(name, None)
            elif kind in ("ADDED", "MODIFIED"):
                self._slices[name] = piece
            else:
                return
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            targets = targets_from_slices(
                self._slices.values(), self.options, dict(self._service_ports)
            )
            changed = targets != self._targets
            self._targets = targets
            subscribers = list(self._subscribers)
        self.last_sync = time.time()
        self.last_error = None
        self._on_sync(len(targets))
        if changed:
            for callback in subscribers:
                callback(targets)

    def _error(self, kind: str, message: str) -> None:
        self.last_error = message
        self._on_error(kind)
        logger.warning("discovery: %s", message, extra=logs.fields(kind=kind))
