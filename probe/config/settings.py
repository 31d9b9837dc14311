"""What the daemon runs with: frozen dataclasses, every default written here once.

This module imports no YAML and no loader: health, pages and pprof read their
settings from here without pulling in how settings are found.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from probe.result import RpcMethod
from probe.targets import Target

MAX_CONNECTIONS = 65_536
"""Milvus accepts at most this many connections per server."""

DEFAULT_ALIAS = "default"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 19530
DEFAULT_TLS_PORT = 443
DEFAULT_LISTEN_ADDRESS = ("", 9091)
"""Milvus's own management port: metrics, health and pprof live there too."""
DEFAULT_LOG_LEVEL = "info"
DEFAULT_MANAGEMENT_PORT = 9091
PROTOCOLS = ("grpc", "rest")
REST_APIS = ("auto", "v1", "v2")
DEFAULT_TLS_INSPECT_INTERVAL = 3600.0
"""Seconds between two certificate inspections of a gRPC TLS target (an own handshake)."""


class ReadinessPolicy(enum.StrEnum):
    SELF = "self"
    """Ready once the config is loaded, the server is up and the first round is done."""
    ANY = "any"
    """Ready while at least one target passes."""
    ALL = "all"
    """Ready while every target passes."""
    ANY_HELD = "any-held"
    """As any, and a target with a held connection passes only while its last held call
    succeeded too."""
    ALL_HELD = "all-held"
    """As all, and a target with a held connection passes only while its last held call
    succeeded too."""

    @property
    def counts_held(self) -> bool:
        """Whether held connections decide readiness."""
        return self in (ReadinessPolicy.ANY_HELD, ReadinessPolicy.ALL_HELD)


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class ProbeSettings:
    interval: float = 10.0
    """Seconds between two cycles of one target (default 10 s)."""
    timeout: float = 5.0
    """Seconds one cycle may take before it fails with `timeout` (default 5 s, < interval)."""
    rpc: RpcMethod = RpcMethod.CHECK_HEALTH
    """The RPC each cycle makes (default check_health)."""
    connect_interval: float = 3600.0
    """Least seconds between two Milvus Connect calls per target (default 1 h)."""
    max_concurrent: int = 64
    """Most connections open at once across all targets (default 64, at most 65,536)."""
    history: int = 60
    """Cycles kept per target for the status page and /probe (default 60)."""


@dataclass(frozen=True)
class ReadinessSettings:
    policy: ReadinessPolicy = ReadinessPolicy.SELF
    """What /readyz requires (default self)."""
    failure_threshold: int = 3
    """Consecutive failures before a passing target counts as failing (default 3)."""
    success_threshold: int = 1
    """Consecutive successes before a failing target counts as passing (default 1)."""


@dataclass(frozen=True)
class ProfilingSettings:
    enabled: bool = True
    """Serve /debug/pprof/* at all (default true, as Milvus does)."""
    allow_remote: bool = False
    """Serve profiles to non-loopback peers (default false)."""
    max_seconds: int = 300
    """Longest profile or trace window a request may ask for (default 300)."""
    heap: bool = False
    """Trace allocations from start, so /heap shows all live memory (costs memory and CPU)."""


@dataclass(frozen=True)
class WebSettings:
    """The management port beyond its address (`--web.*`)."""

    max_requests: int = 16
    """Requests served at once (default 16); more get 503 with Retry-After at once.
    Kubelet's probes (/healthz, /livez, /readyz) are answered apart and never wait."""
    config_file: str | None = None
    """The exporter-toolkit web config (TLS, client certificates, basic auth), re-read
    when it changes; None serves plain HTTP to anyone who can connect."""


@dataclass(frozen=True)
class HistorySettings:
    """What the status pages and `/api/v1` remember per target (`--history.*`)."""

    retention: float = 86400.0
    """Seconds of per-minute history kept per target (default 24 h)."""
    resolution: float = 60.0
    """Seconds one history row covers (default 1 m)."""

    @property
    def rows(self) -> int:
        """Rows kept per target: retention / resolution."""
        return round(self.retention / self.resolution)


MAX_HISTORY_ROWS = 10_080
"""Most rows per target (a week at one minute): bounds history memory per target."""


@dataclass(frozen=True)
class DiscoverySettings:
    """Kubernetes EndpointSlice discovery (`--discovery.kubernetes.*`)."""

    namespace: str | None = None
    """Namespace to watch (default: the pod's own)."""
    service: str | None = None
    label_selector: str | None = None
    port_name: str | None = None
    """EndpointSlice port to dial (default: the one named for gRPC, else 19530)."""
    include_service: bool = True
    """Probe the Service's own DNS name too, as clients reach it."""
    management_port: int | None = None
    """Check each pod's management port too (`--discovery.kubernetes.management-port`)."""
    shard_index: int = 0
    shard_total: int = 1
    template: Target | None = None
    """Connection settings for discovered targets (config file `discovery.template`)."""


@dataclass(frozen=True)
class Config:
    """Everything the daemon runs with."""

    listen_address: tuple[str, int] = DEFAULT_LISTEN_ADDRESS
    """Management HTTP server address (default :9091)."""
    web: WebSettings = field(default_factory=WebSettings)
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: LogFormat = LogFormat.TEXT
    config_file: str | None = None
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)
    profiling: ProfilingSettings = field(default_factory=ProfilingSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    targets: tuple[Target, ...] = ()
    discovery: DiscoverySettings | None = None
    """None unless --discovery.kubernetes.enabled."""
    events: bool | None = None
    """Post Kubernetes Events: True, False, or None (auto: in a cluster, with discovery or
    POD_NAME set)."""
    kubeconfig: str | None = None
