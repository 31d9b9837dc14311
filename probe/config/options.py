"""The tables of settings: daemon options (flag, environment, file key) and per-target
connection options (named as pymilvus names them). `--help`, the loader and the docs
read these tables; defaults come from probe.config.settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probe.config.settings import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LOG_LEVEL,
    MAX_CONNECTIONS,
    Config,
    DiscoverySettings,
    HistorySettings,
    LogFormat,
    ProbeSettings,
    ProfilingSettings,
    ReadinessPolicy,
    ReadinessSettings,
    WebSettings,
)
from probe.config.values import (
    auto_bool,
    choice,
    int_in,
    log_level,
    parse_bool,
    parse_duration,
    parse_listen_address,
    string,
)
from probe.result import RpcMethod
from probe.targets import Canary


@dataclass(frozen=True)
class Option:
    """One daemon setting, with its flag, environment variable and place in the file."""

    key: str
    """Dotted name; the flag is `--<key>`, e.g. `probe.connect-interval`."""
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str
    file_key: tuple[str, str] | None = None
    """(section, key) in the YAML file, or None for flag/env-only settings."""
    env_aliases: tuple[str, ...] = ()
    """Other environment names read, at lower precedence (the Milvus ecosystem's)."""
    metavar: str = "VALUE"
    switch: bool = False
    """A boolean: the bare flag means true (`--profiling.heap`), or give true/false."""

    @property
    def flag(self) -> str:
        return f"--{self.key}"

    @property
    def env(self) -> str:
        name = self.key.removeprefix("probe.")
        return "MILVUS_PROBE_" + re.sub(r"[.-]", "_", name).upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "web.listen-address",
        parse_listen_address,
        DEFAULT_LISTEN_ADDRESS,
        "address of the management server (metrics, health, status, pprof); "
        "Milvus pods already use 9091, so change it in a sidecar",
        "web",
        metavar="ADDR",
    ),
    Option(
        "web.max-requests",
        int_in(1, 1024),
        WebSettings.max_requests,
        "requests served at once; more get 503 with Retry-After: 1 at once (kubelet's "
        "/healthz, /livez and /readyz are answered apart and never wait)",
        "web",
        metavar="N",
    ),
    Option(
        "web.config.file",
        string,
        WebSettings.config_file,
        "exporter-toolkit web config (TLS, client certificates, basic auth) for the "
        "management port; re-read when it or a file it names changes",
        "web",
        metavar="PATH",
    ),
    Option(
        "config.file",
        string,
        None,
        "YAML file with targets and settings; re-read on SIGHUP and POST /-/reload",
        "config",
        metavar="PATH",
    ),
    Option(
        "log.level",
        log_level,
        DEFAULT_LOG_LEVEL,
        "debug, info, warn or error",
        "log",
        metavar="LEVEL",
    ),
    Option(
        "log.format",
        choice(LogFormat),
        Config.log_format,
        "text (logfmt) or json",
        "log",
        metavar="FORMAT",
    ),
    Option(
        "probe.interval",
        parse_duration,
        ProbeSettings.interval,
        "time between two cycles of one target",
        "probe",
        ("probe", "interval"),
        metavar="DURATION",
    ),
    Option(
        "probe.timeout",
        parse_duration,
        ProbeSettings.timeout,
        "time one cycle may take (resolve, connect, RPC); must be below the interval",
        "probe",
        ("probe", "timeout"),
        ("MILVUS_CONN_TIMEOUT",),
        metavar="DURATION",
    ),
    Option(
        "probe.rpc",
        choice(RpcMethod),
        ProbeSettings.rpc,
        "RPC each cycle makes: check_health or get_version",
        "probe",
        ("probe", "rpc"),
        metavar="RPC",
    ),
    Option(
        "probe.connect-interval",
        parse_duration,
        ProbeSettings.connect_interval,
        "least time between two Milvus Connect calls per target; each Connect registers "
        "a client in the proxy for 24 h",
        "probe",
        ("probe", "connect_interval"),
        metavar="DURATION",
    ),
    Option(
        "probe.max-concurrent",
        int_in(1, MAX_CONNECTIONS),
        ProbeSettings.max_concurrent,
        "most connections open at once across all targets",
        "probe",
        ("probe", "max_concurrent"),
        metavar="N",
    ),
    Option(
        "probe.history",
        int_in(1, 10_000),
        ProbeSettings.history,
        "cycles kept per target for the status page and /probe",
        "probe",
        ("probe", "history"),
        metavar="N",
    ),
    Option(
        "readiness.policy",
        choice(ReadinessPolicy),
        ReadinessSettings.policy,
        "what /readyz requires: self (the daemon works), any or all (targets pass)",
        "readiness",
        ("readiness", "policy"),
        metavar="POLICY",
    ),
    Option(
        "readiness.failure-threshold",
        int_in(1, 1000),
        ReadinessSettings.failure_threshold,
        "consecutive failures before a target counts as failing",
        "readiness",
        ("readiness", "failure_threshold"),
        metavar="N",
    ),
    Option(
        "profiling.enabled",
        parse_bool,
        ProfilingSettings.enabled,
        "serve /debug/pprof/* (CPU, heap and thread profiles)",
        "profiling",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "profiling.allow-remote",
        parse_bool,
        ProfilingSettings.allow_remote,
        "serve profiles to non-loopback peers too (port-forward arrives from loopback)",
        "profiling",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "profiling.max-seconds",
        int_in(1, 3600),
        ProfilingSettings.max_seconds,
        "longest profile a request may ask for",
        "profiling",
        metavar="N",
    ),
    Option(
        "profiling.heap",
        parse_bool,
        ProfilingSettings.heap,
        "trace allocations from start so /debug/pprof/heap shows all live memory",
        "profiling",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "discovery.kubernetes.enabled",
        parse_bool,
        False,
        "probe every pod behind a Service, found through EndpointSlices",
        "discovery",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "discovery.kubernetes.namespace",
        string,
        None,
        "namespace to watch (default: the pod's own)",
        "discovery",
        metavar="NS",
    ),
    Option(
        "discovery.kubernetes.service",
        string,
        None,
        "Service whose endpoints to probe",
        "discovery",
        metavar="NAME",
    ),
    Option(
        "discovery.kubernetes.label-selector",
        string,
        None,
        "or: EndpointSlices matching this label selector",
        "discovery",
        metavar="SELECTOR",
    ),
    Option(
        "discovery.kubernetes.port-name",
        string,
        None,
        "EndpointSlice port to dial (default: the port named for gRPC, else 19530)",
        "discovery",
        metavar="NAME",
    ),
    Option(
        "discovery.kubernetes.management-port",
        int_in(1, 65535),
        DiscoverySettings.management_port,
        "also check each discovered pod's own management port (Milvus: 9091) with GET "
        "/healthz, beside its probe (default off)",
        "discovery",
        metavar="PORT",
    ),
    Option(
        "discovery.kubernetes.include-service",
        parse_bool,
        DiscoverySettings.include_service,
        "probe the Service's DNS name too, as clients reach it",
        "discovery",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "discovery.shard",
        string,
        None,
        "INDEX/TOTAL, or auto/TOTAL (INDEX from the StatefulSet ordinal in POD_NAME): probe "
        "only this replica's share of the discovered pods",
        "discovery",
        metavar="SHARD",
    ),
    Option(
        "kubeconfig",
        string,
        None,
        "kubeconfig file, when not running in a cluster",
        "discovery",
        env_aliases=("KUBECONFIG",),
        metavar="PATH",
    ),
    Option(
        "events.enabled",
        auto_bool,
        Config.events,
        "post Kubernetes Events on target state changes (default: on in a cluster with "
        "discovery or POD_NAME set)",
        "discovery",
        metavar="BOOL|auto",
        switch=True,
    ),
    Option(
        "history.retention",
        parse_duration,
        HistorySettings.retention,
        "how far back the status pages and /api/v1 see, per target (at most 10,080 rows)",
        "history",
        ("history", "retention"),
        metavar="DURATION",
    ),
    Option(
        "history.resolution",
        parse_duration,
        HistorySettings.resolution,
        "time one history row covers (attempts, failures by reason, p50/p99 per phase); "
        "the retention must be a whole number of rows",
        "history",
        ("history", "resolution"),
        metavar="DURATION",
    ),
    Option(
        "readiness.success-threshold",
        int_in(1, 1000),
        ReadinessSettings.success_threshold,
        "consecutive successes before a target counts as passing",
        "readiness",
        ("readiness", "success_threshold"),
        metavar="N",
    ),
)
OPTIONS_BY_KEY = {o.key: o for o in OPTIONS}


@dataclass(frozen=True)
class ConnectionOption:
    """A per-target connection setting, named as pymilvus `connections.connect` names it."""

    name: str
    """The key in a config file target and the flag (`db_name` → `--db-name`)."""
    help: str
    env: str | None = None
    """The environment variable; None for the derived `MILVUS_PROBE_<NAME>`."""
    is_flag: bool = False
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or "MILVUS_PROBE_" + self.name.upper()


CONNECTION_OPTIONS: tuple[ConnectionOption, ...] = (
    ConnectionOption(
        "alias", "name of the target in labels and URLs (default default)", "MILVUS_CONN_ALIAS"
    ),
    ConnectionOption(
        "uri",
        "http://host:port, https://host:port (TLS) or host:port; a path names the database",
        "MILVUS_URI",
    ),
    ConnectionOption("host", "Milvus host, when no uri is given (default localhost)"),
    ConnectionOption("port", "Milvus port, when no uri is given (default 19530)"),
    ConnectionOption(
        "token", "user:password or an API key (prefer --token-file)", "MILVUS_TOKEN", secret=True
    ),
    ConnectionOption("token_file", "file holding the token; re-read when it changes"),
    ConnectionOption("user", "user name, with --password or --password-file"),
    ConnectionOption("password", "password (prefer --password-file)", secret=True),
    ConnectionOption("password_file", "file holding the password; re-read when it changes"),
    ConnectionOption("db_name", "database; Connect checks that it exists"),
    ConnectionOption(
        "secure", "use TLS (implied by https:// and the certificate options)", is_flag=True
    ),
    ConnectionOption("server_pem_path", "server certificate or CA to trust (one-way TLS)"),
    ConnectionOption("server_name", "name to verify in the server certificate"),
    ConnectionOption("client_pem_path", "client certificate (mutual TLS)"),
    ConnectionOption("client_key_path", "client private key (mutual TLS)"),
    ConnectionOption("ca_pem_path", "CA certificate that signed the server's (mutual TLS)"),
    ConnectionOption(
        "protocol",
        "which door of Milvus to probe: grpc (default) or rest (the RESTful API; with TLS "
        "on, Milvus serves it on proxy.http.port, not 19530)",
    ),
    ConnectionOption("rest_api", "REST targets: auto (default), v1 (Milvus 2.2/2.3) or v2 (2.4+)"),
    ConnectionOption(
        "management_uri",
        "Milvus's own management port, e.g. http://milvus:9091: its /healthz is checked "
        "beside the probe, on its own connection",
    ),
    ConnectionOption(
        "management_interval",
        "least time between two management checks (default: every cycle)",
    ),
    ConnectionOption(
        "held",
        "also keep one long-lived connection, configured as pymilvus configures its own, "
        "and call the probe RPC on it every cycle (one more connection for the target's life)",
        is_flag=True,
    ),
    ConnectionOption(
        "tls_inspect_interval",
        "least time between two certificate inspections of a gRPC TLS target (default 1h; "
        "REST targets read theirs every cycle)",
    ),
)
CONNECTION_KEYS = {o.name for o in CONNECTION_OPTIONS}
SECRET_FLAGS = tuple(o.flag for o in CONNECTION_OPTIONS if o.secret)


@dataclass(frozen=True)
class CanaryOption:
    """A key of a target's `canary:` block; for the flag target also `--canary.<key>`."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str = "VALUE"

    @property
    def key(self) -> str:
        """The flag's key in Sources.flags (`canary.setup_timeout`)."""
        return f"canary.{self.name}"

    @property
    def flag(self) -> str:
        return "--canary." + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return "MILVUS_PROBE_CANARY_" + self.name.upper()


CANARY_OPTIONS: tuple[CanaryOption, ...] = (
    CanaryOption(
        "enabled",
        parse_bool,
        "run the data-plane canary (implied by any other --canary.* flag)",
        "BOOL",
    ),
    CanaryOption(
        "collection",
        string,
        f"collection the canary searches, queries and writes (default {Canary.collection})",
        "NAME",
    ),
    CanaryOption(
        "create",
        parse_bool,
        "create, fill, index and load the collection when missing or not loaded (default false)",
        "BOOL",
    ),
    CanaryOption(
        "dimension", int_in(2, 512), f"vector dimension (default {Canary.dimension})", "N"
    ),
    CanaryOption("rows", int_in(1, 1000), f"known rows (default {Canary.rows})", "N"),
    CanaryOption(
        "write",
        parse_bool,
        "also upsert one fixed row and read it back with strong consistency (default false)",
        "BOOL",
    ),
    CanaryOption(
        "every",
        int_in(1, 10_000),
        "run the canary on every Nth scheduled cycle (default 1)",
        "N",
    ),
    CanaryOption(
        "setup_timeout",
        parse_duration,
        f"time a setup may take (default {Canary.setup_timeout:g}s)",
        "DURATION",
    ),
)
CANARY_KEYS = {o.name for o in CANARY_OPTIONS}
"""Keys of a `canary:` block."""
CANARY_FLAG_KEYS = {o.key for o in CANARY_OPTIONS}
"""`canary.<key>` as flags and the environment name them in Sources.flags."""

TARGET_OVERRIDES = {
    "interval": parse_duration,
    "timeout": parse_duration,
    "rpc": choice(RpcMethod),
    "connect_interval": parse_duration,
}
TARGET_KEYS = CONNECTION_KEYS | set(TARGET_OVERRIDES) | {"canary"}
FILE_SECTIONS = {"probe", "readiness", "history", "targets", "discovery"}


def known_env_names() -> set[str]:
    """Every MILVUS_PROBE_* (and pymilvus) variable the loader reads."""
    return (
        {o.env for o in OPTIONS}
        | {o.env_name for o in CONNECTION_OPTIONS}
        | {o.env_name for o in CANARY_OPTIONS}
    )
