"""Settings from defaults < YAML file < environment < flags, validated all at once.

`load()` returns a frozen `Config` or raises `ConfigError` carrying *every* problem found,
each with the place it came from (`config.yaml: targets[2].uri: ...`,
`env MILVUS_PROBE_INTERVAL: ...`, `--probe.timeout: ...`).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from probe.milvus.auth import Credentials, Secret, SecretFile
from probe.result import RpcMethod
from probe.targets import Target, TLSFiles

MAX_CONNECTIONS = 65_536
"""Milvus accepts at most this many connections per server."""

DEFAULT_ALIAS = "default"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 19530
DEFAULT_TLS_PORT = 443


class ReadinessPolicy(enum.StrEnum):
    SELF = "self"
    """Ready once the config is loaded, the server is up and the first round is done."""
    ANY = "any"
    """Ready while at least one target passes."""
    ALL = "all"
    """Ready while every target passes."""


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


LOG_LEVELS = ("debug", "info", "warn", "error")


# --------------------------------------------------------------------------- values


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `10s`, `1m30s`, `1h`, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 10s, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{value!r} is far too large for a duration") from None
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"expected a duration like 500ms, 10s, 1m or 1h, got {value!r}")
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * scale[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 10s, got {type(value).__name__}")
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of `500ms`, `10s`, `1m`, `1h` that says `seconds` exactly."""
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= scale and (seconds / scale).is_integer():
            return f"{int(seconds / scale)}{unit}"
    return f"{seconds * 1000:g}ms"


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}–{high}")
        return value

    return parse


def _choice(enum_type: type[enum.StrEnum]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        text = str(value).strip().lower() if isinstance(value, str) else value
        try:
            return enum_type(text)
        except ValueError:
            allowed = ", ".join(m.value for m in enum_type)
            raise ValueError(f"expected one of {allowed}, got {value!r}") from None

    return parse


def _auto_bool(value: Any) -> bool | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return parse_bool(value)


def _log_level(value: Any) -> str:
    text = str(value).strip().lower()
    text = "warn" if text == "warning" else text
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return text


def parse_listen_address(value: Any) -> tuple[str, int]:
    """`host:port`, `:port` (every interface) or `[v6]:port`."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.%\w]+)\]|([^:\[\]]*)):(\d+)", text)
    if not match:
        raise ValueError(f"expected host:port or :port, got {value!r}")
    host = match.group(1) if match.group(1) is not None else match.group(2)
    port = int(match.group(3))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0–65535")
    return host, port


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


# --------------------------------------------------------------------------- settings


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
    shard_index: int = 0
    shard_total: int = 1
    template: Target | None = None
    """Connection settings for discovered targets (config file `discovery.template`)."""


@dataclass(frozen=True)
class Config:
    """Everything the daemon runs with."""

    listen_address: tuple[str, int] = ("", 9091)
    """Management HTTP server address (default :9091)."""
    log_level: str = "info"
    log_format: LogFormat = LogFormat.TEXT
    config_file: str | None = None
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)
    profiling: ProfilingSettings = field(default_factory=ProfilingSettings)
    targets: tuple[Target, ...] = ()
    discovery: DiscoverySettings | None = None
    """None unless --discovery.kubernetes.enabled."""
    events: bool | None = None
    """Post Kubernetes Events: True, False, or None (auto: in a cluster, with discovery or
    POD_NAME set)."""
    kubeconfig: str | None = None


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
        ("", 9091),
        "address of the management server (metrics, health, status, pprof); "
        "Milvus pods already use 9091, so change it in a sidecar",
        "web",
        metavar="ADDR",
    ),
    Option(
        "config.file",
        _string,
        None,
        "YAML file with targets and settings; re-read on SIGHUP and POST /-/reload",
        "config",
        metavar="PATH",
    ),
    Option("log.level", _log_level, "info", "debug, info, warn or error", "log", metavar="LEVEL"),
    Option(
        "log.format",
        _choice(LogFormat),
        LogFormat.TEXT,
        "text (logfmt) or json",
        "log",
        metavar="FORMAT",
    ),
    Option(
        "probe.interval",
        parse_duration,
        10.0,
        "time between two cycles of one target",
        "probe",
        ("probe", "interval"),
        metavar="DURATION",
    ),
    Option(
        "probe.timeout",
        parse_duration,
        5.0,
        "time one cycle may take (resolve, connect, RPC); must be below the interval",
        "probe",
        ("probe", "timeout"),
        ("MILVUS_CONN_TIMEOUT",),
        metavar="DURATION",
    ),
    Option(
        "probe.rpc",
        _choice(RpcMethod),
        RpcMethod.CHECK_HEALTH,
        "RPC each cycle makes: check_health or get_version",
        "probe",
        ("probe", "rpc"),
        metavar="RPC",
    ),
    Option(
        "probe.connect-interval",
        parse_duration,
        3600.0,
        "least time between two Milvus Connect calls per target; each Connect registers "
        "a client in the proxy for 24 h",
        "probe",
        ("probe", "connect_interval"),
        metavar="DURATION",
    ),
    Option(
        "probe.max-concurrent",
        _int_in(1, MAX_CONNECTIONS),
        64,
        "most connections open at once across all targets",
        "probe",
        ("probe", "max_concurrent"),
        metavar="N",
    ),
    Option(
        "probe.history",
        _int_in(1, 10_000),
        60,
        "cycles kept per target for the status page and /probe",
        "probe",
        ("probe", "history"),
        metavar="N",
    ),
    Option(
        "readiness.policy",
        _choice(ReadinessPolicy),
        ReadinessPolicy.SELF,
        "what /readyz requires: self (the daemon works), any or all (targets pass)",
        "readiness",
        ("readiness", "policy"),
        metavar="POLICY",
    ),
    Option(
        "readiness.failure-threshold",
        _int_in(1, 1000),
        3,
        "consecutive failures before a target counts as failing",
        "readiness",
        ("readiness", "failure_threshold"),
        metavar="N",
    ),
    Option(
        "profiling.enabled",
        parse_bool,
        True,
        "serve /debug/pprof/* (CPU, heap and thread profiles)",
        "profiling",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "profiling.allow-remote",
        parse_bool,
        False,
        "serve profiles to non-loopback peers too (port-forward arrives from loopback)",
        "profiling",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "profiling.max-seconds",
        _int_in(1, 3600),
        300,
        "longest profile a request may ask for",
        "profiling",
        metavar="N",
    ),
    Option(
        "profiling.heap",
        parse_bool,
        False,
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
        _string,
        None,
        "namespace to watch (default: the pod's own)",
        "discovery",
        metavar="NS",
    ),
    Option(
        "discovery.kubernetes.service",
        _string,
        None,
        "Service whose endpoints to probe",
        "discovery",
        metavar="NAME",
    ),
    Option(
        "discovery.kubernetes.label-selector",
        _string,
        None,
        "or: EndpointSlices matching this label selector",
        "discovery",
        metavar="SELECTOR",
    ),
    Option(
        "discovery.kubernetes.port-name",
        _string,
        None,
        "EndpointSlice port to dial (default: the port named for gRPC, else 19530)",
        "discovery",
        metavar="NAME",
    ),
    Option(
        "discovery.kubernetes.include-service",
        parse_bool,
        True,
        "probe the Service's DNS name too, as clients reach it",
        "discovery",
        metavar="BOOL",
        switch=True,
    ),
    Option(
        "discovery.shard",
        _string,
        None,
        "INDEX/TOTAL, or auto/TOTAL (INDEX from the StatefulSet ordinal in POD_NAME): probe "
        "only this replica's share of the discovered pods",
        "discovery",
        metavar="SHARD",
    ),
    Option(
        "kubeconfig",
        _string,
        None,
        "kubeconfig file, when not running in a cluster",
        "discovery",
        env_aliases=("KUBECONFIG",),
        metavar="PATH",
    ),
    Option(
        "events.enabled",
        _auto_bool,
        None,
        "post Kubernetes Events on target state changes (default: on in a cluster with "
        "discovery or POD_NAME set)",
        "discovery",
        metavar="BOOL|auto",
        switch=True,
    ),
    Option(
        "readiness.success-threshold",
        _int_in(1, 1000),
        1,
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
)
CONNECTION_KEYS = {o.name for o in CONNECTION_OPTIONS}
SECRET_FLAGS = tuple(o.flag for o in CONNECTION_OPTIONS if o.secret)

_TARGET_OVERRIDES = {
    "interval": parse_duration,
    "timeout": parse_duration,
    "rpc": _choice(RpcMethod),
    "connect_interval": parse_duration,
}
_TARGET_KEYS = CONNECTION_KEYS | set(_TARGET_OVERRIDES)
_FILE_SECTIONS = {"probe", "readiness", "targets", "discovery"}


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    where: str
    """The source and path: `config.yaml: targets[0].port`, `--probe.timeout`, ..."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in the configuration."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class _Issues:
    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, where: str, message: str) -> None:
        # One line per problem, whatever a key or value contains: control characters are
        # shown escaped (a key "a\nb" must not forge a second line).
        self.items.append(ConfigIssue(_printable(where), _printable(message)))

    def parse(self, where: str, parse: Callable[[Any], Any], value: Any) -> Any:
        """`parse(value)`, or None with the error recorded under `where`."""
        try:
            return parse(value)
        except ValueError as exc:
            self.add(where, str(exc))
            return None


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Sources:
    """What the user gave: flags that were set, the environment, and nothing else."""

    flags: Mapping[str, Any] = field(default_factory=dict)
    """Daemon options by key (`probe.interval`) and connection options by name (`db_name`)."""
    environ: Mapping[str, str] = field(default_factory=dict)


def _read_file(path: str, issues: _Issues) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            document = yaml.safe_load(fh)
    except OSError as exc:
        issues.add(path, f"cannot read the config file: {exc.strerror or exc}")
        return {}
    except UnicodeDecodeError:
        issues.add(path, "the config file is not UTF-8 text")
        return {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        issues.add(where, "not valid YAML: " + " ".join(str(problem).split()))
        return {}
    except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        issues.add(path, "cannot load the config file: " + " ".join(reason.split())[:200])
        return {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        issues.add(path, f"expected a mapping at the top level, got {type(document).__name__}")
        return {}
    return document


def _check_pool_and_handler(raw: Mapping[Any, Any], where: str, issues: _Issues) -> None:
    handler = raw.get("handler")
    if handler is not None and str(handler).upper() != "GRPC":
        issues.add(
            f"{where}handler",
            f"only the GRPC handler is supported (got {handler!r}), as in the Milvus SDK",
        )
    for key in raw:
        if isinstance(key, str) and key.lower().startswith("pool"):
            issues.add(
                f"{where}{key}",
                "connection pool settings are not supported, as in the "
                "Milvus SDK: every cycle opens and closes its own connection",
            )


def _env_target(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for option in CONNECTION_OPTIONS:
        value = environ.get(option.env_name)
        if value is not None and value != "":
            found[option.name] = value
    return found


def _known_env_names() -> set[str]:
    names = {o.env for o in OPTIONS}
    names |= {o.env_name for o in CONNECTION_OPTIONS}
    return names


def load(sources: Sources) -> Config:
    """Build and validate the configuration; raise ConfigError listing every problem."""
    issues = _Issues()
    environ, flags = sources.environ, sources.flags

    for name in sorted(environ):
        if name.startswith("MILVUS_PROBE_") and name not in _known_env_names():
            issues.add(
                f"env {name}",
                "unknown setting; see `milvus-probe serve --help` for the MILVUS_PROBE_* variables",
            )

    def pick(option: Option, file_doc: Mapping[str, Any], file_name: str) -> Any:
        if option.key in flags:
            return issues.parse(option.flag, option.parse, flags[option.key])
        for env_name in (option.env, *option.env_aliases):
            if environ.get(env_name, "") != "":
                return issues.parse(f"env {env_name}", option.parse, environ[env_name])
        if option.file_key is not None:
            section, key = option.file_key
            block = file_doc.get(section)
            if isinstance(block, dict) and key in block:
                return issues.parse(f"{file_name}: {section}.{key}", option.parse, block[key])
        return option.default

    config_file = pick(OPTIONS_BY_KEY["config.file"], {}, "")
    file_doc: dict[str, Any] = _read_file(config_file, issues) if config_file else {}
    file_name = config_file or ""
    _check_file_shape(file_doc, file_name, issues)

    values = {o.key: pick(o, file_doc, file_name) for o in OPTIONS}
    probe = ProbeSettings(
        interval=values["probe.interval"] or ProbeSettings.interval,
        timeout=values["probe.timeout"] or ProbeSettings.timeout,
        rpc=values["probe.rpc"] or ProbeSettings.rpc,
        connect_interval=values["probe.connect-interval"] or ProbeSettings.connect_interval,
        max_concurrent=values["probe.max-concurrent"] or ProbeSettings.max_concurrent,
        history=values["probe.history"] or ProbeSettings.history,
    )
    readiness = ReadinessSettings(
        policy=values["readiness.policy"] or ReadinessSettings.policy,
        failure_threshold=values["readiness.failure-threshold"]
        or ReadinessSettings.failure_threshold,
        success_threshold=values["readiness.success-threshold"]
        or ReadinessSettings.success_threshold,
    )
    if probe.timeout >= probe.interval:
        issues.add(
            "probe.timeout",
            f"the timeout ({format_duration(probe.timeout)}) must be "
            f"shorter than the interval ({format_duration(probe.interval)})",
        )

    discovery = None
    if values["discovery.kubernetes.enabled"]:
        discovery = _discovery(values, file_doc, file_name, environ, probe, issues)
    elif isinstance(file_doc.get("discovery"), dict):
        issues.add(f"{file_name}: discovery", "set, but --discovery.kubernetes.enabled is off")
    targets = _targets(
        file_doc, file_name, flags, environ, probe, issues, default=discovery is None
    )
    # A static target's `namespace` label is the probe's own (downward API), which is what
    # a ServiceMonitor would attach anyway; with honorLabels an empty one would erase it.
    own_namespace = environ.get("POD_NAMESPACE", "")
    if own_namespace:
        targets = [dataclasses.replace(t, namespace=own_namespace) for t in targets]
    if issues.items:
        raise ConfigError(issues.items)
    profiling = ProfilingSettings(
        enabled=_given(values["profiling.enabled"], True),
        allow_remote=_given(values["profiling.allow-remote"], False),
        max_seconds=values["profiling.max-seconds"] or 300,
        heap=_given(values["profiling.heap"], False),
    )
    return Config(
        profiling=profiling,
        listen_address=values["web.listen-address"] or ("", 9091),
        log_level=values["log.level"] or "info",
        log_format=values["log.format"] or LogFormat.TEXT,
        config_file=config_file,
        probe=probe,
        readiness=readiness,
        targets=tuple(targets),
        discovery=discovery,
        events=values["events.enabled"],
        kubeconfig=values["kubeconfig"],
    )


_ORDINAL = re.compile(r"-(\d+)$")


def _discovery(
    values: Mapping[str, Any],
    file_doc: Mapping[str, Any],
    file_name: str,
    environ: Mapping[str, str],
    probe: ProbeSettings,
    issues: _Issues,
) -> DiscoverySettings:
    service = values["discovery.kubernetes.service"]
    selector = values["discovery.kubernetes.label-selector"]
    if bool(service) == bool(selector):
        issues.add(
            "--discovery.kubernetes.service",
            "discovery needs exactly one of --discovery.kubernetes.service and "
            "--discovery.kubernetes.label-selector",
        )
    index, total = 0, 1
    shard = values["discovery.shard"]
    if shard:
        match = re.fullmatch(r"(\d{1,6}|auto)/(\d{1,6})", shard.strip())
        if not match:
            issues.add("--discovery.shard", f"expected INDEX/TOTAL or auto/TOTAL, got {shard!r}")
        else:
            total = int(match.group(2))
            if match.group(1) == "auto":
                pod = environ.get("POD_NAME") or environ.get("HOSTNAME", "")
                ordinal = _ORDINAL.search(pod)
                if not ordinal:
                    issues.add(
                        "--discovery.shard",
                        f"auto needs a StatefulSet pod name ending "
                        f"in -<ordinal> in POD_NAME, got {pod!r}",
                    )
                index = int(ordinal.group(1)) if ordinal else 0
            else:
                index = int(match.group(1))
            if total < 1 or index >= total:
                issues.add("--discovery.shard", f"shard {index} is outside 0–{total - 1}")
    template = None
    block = file_doc.get("discovery")
    raw_template: dict[str, Any] = {}
    if block is not None:
        if not isinstance(block, dict) or set(block) - {"template"}:
            issues.add(f"{file_name}: discovery", "expected a mapping with one key, template")
        elif block.get("template") is not None:
            if not isinstance(block["template"], dict):
                issues.add(f"{file_name}: discovery.template", "expected a mapping")
            else:
                raw_template = dict(block["template"])
    where = f"{file_name}: discovery.template"
    for key in ("alias", "uri", "host", "port"):
        if key in raw_template:
            issues.add(
                f"{where}.{key}",
                "discovered targets take their alias and address from "
                "the EndpointSlices; remove it",
            )
            raw_template.pop(key)
    template = _target(
        {**raw_template, "alias": "template", "host": "template.invalid"}, where, probe, issues
    )
    return DiscoverySettings(
        namespace=values["discovery.kubernetes.namespace"],
        service=service,
        label_selector=selector,
        port_name=values["discovery.kubernetes.port-name"],
        include_service=_given(values["discovery.kubernetes.include-service"], True),
        shard_index=index,
        shard_total=total,
        template=template,
    )


def _given(value: Any, default: bool) -> bool:
    return default if value is None else bool(value)


def _check_file_shape(doc: Mapping[Any, Any], file_name: str, issues: _Issues) -> None:
    _check_pool_and_handler(doc, f"{file_name}: ", issues)
    for key in doc:
        if key in ("handler",) or (isinstance(key, str) and key.lower().startswith("pool")):
            continue
        if key not in _FILE_SECTIONS:
            issues.add(
                f"{file_name}: {key}",
                f"unknown key; expected one of {', '.join(sorted(_FILE_SECTIONS))}",
            )
    for section in ("probe", "readiness"):
        block = doc.get(section)
        if block is None:
            continue
        if not isinstance(block, dict):
            issues.add(f"{file_name}: {section}", "expected a mapping")
            continue
        known = {o.file_key[1] for o in OPTIONS if o.file_key and o.file_key[0] == section}
        if section == "probe":
            _check_pool_and_handler(block, f"{file_name}: probe.", issues)
        for key in block:
            if key == "handler" or (isinstance(key, str) and key.lower().startswith("pool")):
                continue
            if key not in known:
                issues.add(
                    f"{file_name}: {section}.{key}",
                    f"unknown key; expected one of {', '.join(sorted(known))}",
                )


def _targets(
    file_doc: Mapping[str, Any],
    file_name: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    probe: ProbeSettings,
    issues: _Issues,
    default: bool = True,
) -> list[Target]:
    """File targets, overlaid by connection flags/env; the pymilvus default if `default`."""
    raw_list = file_doc.get("targets")
    file_targets: list[tuple[str, dict[str, Any]]] = []
    if raw_list is not None and not isinstance(raw_list, list):
        issues.add(f"{file_name}: targets", "expected a list of targets")
    elif raw_list:
        for index, raw in enumerate(raw_list):
            where = f"{file_name}: targets[{index}]"
            if not isinstance(raw, dict):
                issues.add(where, "expected a mapping with uri or host/port")
                continue
            file_targets.append((where, dict(raw)))

    # Connection settings from the environment and flags describe one target, the
    # one named by --alias / MILVUS_CONN_ALIAS, as in pymilvus; flags win over env.
    overlay = _env_target(environ)
    flag_target = {k: v for k, v in flags.items() if k in CONNECTION_KEYS}
    _drop_other_address_form(overlay, flag_target)
    overlay.update(flag_target)
    overlay_where = "flags/environment"
    alias = overlay.get("alias", DEFAULT_ALIAS)
    has_connection = any(k != "alias" for k in overlay)
    if has_connection or (not file_targets and default):
        for index, (where, raw) in enumerate(file_targets):
            if raw.get("alias", DEFAULT_ALIAS) == alias:
                merged = dict(raw)
                _drop_other_address_form(merged, overlay)
                merged.update(overlay)
                file_targets[index] = (f"{where} (with flags/environment)", merged)
                break
        else:
            file_targets.append((overlay_where, overlay))

    targets: list[Target] = []
    seen: dict[str, str] = {}
    for where, raw in file_targets:
        # The alias the target ends up with (1 → "1", null or "" → "default").
        raw_alias = raw.get("alias")
        alias = str(raw_alias) if raw_alias not in (None, "") else DEFAULT_ALIAS
        if alias in seen:
            issues.add(f"{where}.alias", f"duplicate alias {alias!r} (also used by {seen[alias]})")
        else:
            seen[alias] = where
        target = _target(raw, where, probe, issues)
        if target is not None:
            targets.append(target)
    return targets


def _drop_other_address_form(lower: dict[str, Any], higher: Mapping[str, Any]) -> None:
    """A higher-precedence source that gives uri (or host/port) replaces the other form."""
    if "uri" in higher:
        lower.pop("host", None)
        lower.pop("port", None)
    if "host" in higher or "port" in higher:
        lower.pop("uri", None)


_HOST = re.compile(r"[A-Za-z0-9._:%\-\[\]]{1,253}")
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_ALIAS = re.compile(r"[^\s\x00-\x1f\x7f]{1,128}")


def _target(
    raw: dict[str, Any], where: str, probe: ProbeSettings, issues: _Issues
) -> Target | None:
    before = len(issues.items)
    _check_pool_and_handler(raw, f"{where}.", issues)
    for key in raw:
        if key == "handler" or (isinstance(key, str) and key.lower().startswith("pool")):
            continue
        if key not in _TARGET_KEYS:
            issues.add(
                f"{where}.{key}", f"unknown key; expected one of {', '.join(sorted(_TARGET_KEYS))}"
            )

    def get(key: str, parse: Callable[[Any], Any] = _string) -> Any:
        if key not in raw or raw[key] is None:
            return None
        return issues.parse(f"{where}.{key}", parse, raw[key])

    alias = get("alias") or DEFAULT_ALIAS
    if not _ALIAS.fullmatch(alias):
        issues.add(f"{where}.alias", "must be 1–128 printable characters without spaces")

    secure = get("secure", parse_bool)
    host, port, uri_db, uri_secure = DEFAULT_HOST, DEFAULT_PORT, None, False
    uri = get("uri")
    if uri is not None and ("host" in raw or "port" in raw):
        issues.add(f"{where}.uri", "set either uri or host/port, not both")
    elif uri is not None:
        parsed = _parse_uri(uri)
        if isinstance(parsed, str):
            issues.add(f"{where}.uri", parsed)
        else:
            host, port, uri_db, uri_secure = parsed
    else:
        host = get("host") or DEFAULT_HOST
        port_value = get("port", _int_in(1, 65535))
        port = port_value if port_value is not None else DEFAULT_PORT
    if uri_secure and secure is False:
        issues.add(f"{where}.secure", "the uri is https:// but secure is false")

    if not _HOST.fullmatch(host):
        issues.add(f"{where}.host", f"{host!r} is not a host name or address")
    db_name = get("db_name") or ""
    if db_name and not _DB_NAME.fullmatch(db_name):
        issues.add(
            f"{where}.db_name",
            f"{db_name!r} is not a Milvus database name (a letter or "
            "_, then letters, digits or _; at most 255)",
        )
    if uri_db and db_name and uri_db != db_name:
        issues.add(
            f"{where}.db_name", f"the uri names database {uri_db!r} but db_name is {db_name!r}"
        )
    db_name = db_name or uri_db or ""

    credentials = _credentials(raw, where, get, issues)

    tls_values = {
        k: get(k)
        for k in (
            "server_pem_path",
            "server_name",
            "client_pem_path",
            "client_key_path",
            "ca_pem_path",
        )
    }
    tls_files = {k: v for k, v in tls_values.items() if v and k != "server_name"}
    use_tls = bool(secure) or uri_secure or (secure is None and bool(tls_files))
    if tls_files and secure is False:
        issues.add(f"{where}.secure", f"{', '.join(sorted(tls_files))} set but secure is false")
    if bool(tls_values["client_pem_path"]) != bool(tls_values["client_key_path"]):
        issues.add(
            f"{where}.client_key_path", "mutual TLS needs both client_pem_path and client_key_path"
        )
    for key, path in tls_files.items():
        _check_readable(path, f"{where}.{key}", issues)

    interval = get("interval", parse_duration) or probe.interval
    timeout = get("timeout", parse_duration) or probe.timeout
    if timeout >= interval and ("interval" in raw or "timeout" in raw):
        issues.add(
            f"{where}.timeout",
            f"the timeout ({format_duration(timeout)}) must be "
            f"shorter than the interval ({format_duration(interval)})",
        )

    rpc = get("rpc", _TARGET_OVERRIDES["rpc"]) or probe.rpc
    connect_interval = get("connect_interval", parse_duration) or probe.connect_interval
    if len(issues.items) > before:
        return None
    return Target(
        alias=alias,
        host=host,
        port=port,
        interval=interval,
        timeout=timeout,
        rpc=rpc,
        connect_interval=connect_interval,
        secure=use_tls,
        db_name=db_name,
        credentials=credentials,
        tls=TLSFiles(**tls_values) if use_tls else None,
    )


def _credentials(
    raw: Mapping[str, Any], where: str, get: Callable[..., Any], issues: _Issues
) -> Credentials | None:
    token, token_file = get("token"), get("token_file")
    user, password, password_file = get("user"), get("password"), get("password_file")
    if token and token_file:
        issues.add(f"{where}.token_file", "set either token or token_file, not both")
    if password and password_file:
        issues.add(f"{where}.password_file", "set either password or password_file, not both")
    if (token or token_file) and (user or password or password_file):
        issues.add(f"{where}.token", "set either token or user/password, not both")
    if (password or password_file) and not user:
        issues.add(f"{where}.user", "a password needs a user")
    if user and not (password or password_file):
        issues.add(f"{where}.password", f"user {user!r} needs a password or password_file")
    for key, path in (("token_file", token_file), ("password_file", password_file)):
        if path:
            _check_readable(path, f"{where}.{key}", issues)
    if token or token_file:
        return Credentials(token=Secret(token) if token else SecretFile(token_file))
    if user:
        secret = Secret(password) if password else SecretFile(password_file)
        return Credentials(user=user, password=secret)
    return None


def _check_readable(path: str, where: str, issues: _Issues) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issues.add(where, f"cannot read {path!r}: {reason}")


def _parse_uri(uri: str) -> tuple[str, int, str | None, bool] | str:
    """(host, port, database, secure) from a pymilvus-style uri, or an error message.

    Messages never echo credentials a uri may carry (`user:password@`).
    """
    shown = re.sub(r"(//)?[^/@\s]*@", r"\1***@", uri)
    text = uri.strip()
    if not text:
        return "must not be empty"
    if "://" not in text:
        if text.endswith(".db") or text.startswith(("/", ".")):
            return (
                f"{shown!r} looks like a milvus-lite local file; the probe needs a server: "
                "run `milvus-lite server` and give its host:port"
            )
        text = "http://" + text
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        return f"cannot parse {shown!r}: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "tcp", "grpc"):
        return f"unsupported scheme {parts.scheme!r}; use http://, https:// or host:port"
    if parts.username or parts.password:
        return "credentials in the uri are not supported; use token or token_file"
    if parts.query or parts.fragment:
        return "a query or fragment is not allowed in the uri"
    try:
        port = parts.port
    except ValueError:
        return f"the port in {shown!r} is not a number in 1–65535"
    host = parts.hostname
    if not host:
        return f"no host in {shown!r}"
    secure = scheme == "https"
    if port is None:
        port = DEFAULT_TLS_PORT if secure else DEFAULT_PORT
    if not 1 <= port <= 65535:
        return f"port {port} is outside 1–65535"
    path = parts.path.strip("/")
    if "/" in path:
        return f"the uri path names a database and may have one segment, got {parts.path!r}"
    return host, port, path or None, secure


def describe(config: Config) -> list[str]:
    """One secret-free line per target, for start-up and reload logs."""
    lines = []
    for t in config.targets:
        auth = "none"
        if t.credentials is not None:
            if t.credentials.user:
                auth = f"user {t.credentials.user}"
            elif isinstance(t.credentials.token, SecretFile):
                auth = f"token from {t.credentials.token.path}"
            else:
                auth = "token"
        lines.append(
            f"alias={t.alias} target={t.address} tls={'on' if t.secure else 'off'} "
            f"db={t.db_name or '-'} auth={auth} interval={format_duration(t.interval)} "
            f"timeout={format_duration(t.timeout)} rpc={t.rpc}"
        )
    return lines


def environment_help() -> dict[str, str]:
    """Flag → environment variable, for --help."""
    names = {o.flag: o.env for o in OPTIONS}
    names.update({o.flag: o.env_name for o in CONNECTION_OPTIONS})
    return names


def read_environ() -> dict[str, str]:
    return dict(os.environ)
