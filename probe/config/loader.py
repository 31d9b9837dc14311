"""Loading: defaults < YAML file < environment < flags, validated all at once.

`load()` returns a frozen `Config` or raises `ConfigError` carrying *every* problem found,
each with the place it came from (`config.yaml: targets[2].uri: ...`,
`env MILVUS_PROBE_INTERVAL: ...`, `--probe.timeout: ...`). YAML is imported only when a
config file is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from probe.config.discovery import discovery_settings
from probe.config.issues import ConfigError, Issues
from probe.config.options import FILE_SECTIONS, OPTIONS, OPTIONS_BY_KEY, Option, known_env_names
from probe.config.settings import (
    MAX_HISTORY_ROWS,
    Config,
    HistorySettings,
    ProbeSettings,
    ProfilingSettings,
    ReadinessSettings,
    WebSettings,
)
from probe.config.targets import check_pool_and_handler, file_and_flag_targets
from probe.config.values import format_duration
from probe.milvus.auth import SecretFile
from probe.targets import Target


@dataclass(frozen=True)
class Sources:
    """What the user gave: flags that were set, the environment, and nothing else."""

    flags: Mapping[str, Any] = field(default_factory=dict)
    """Daemon options by key (`probe.interval`) and connection options by name (`db_name`)."""
    environ: Mapping[str, str] = field(default_factory=dict)


def read_file(path: str, issues: Issues) -> dict[str, Any]:
    """The YAML document at `path` as a mapping ({} with the problem recorded if not)."""
    import yaml  # only when there is a file: the default process never needs it

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


def _check_file_shape(doc: Mapping[Any, Any], file_name: str, issues: Issues) -> None:
    check_pool_and_handler(doc, f"{file_name}: ", issues)
    for key in doc:
        if key in ("handler",) or (isinstance(key, str) and key.lower().startswith("pool")):
            continue
        if key not in FILE_SECTIONS:
            issues.add(
                f"{file_name}: {key}",
                f"unknown key; expected one of {', '.join(sorted(FILE_SECTIONS))}",
            )
    for section in ("probe", "readiness", "history"):
        block = doc.get(section)
        if block is None:
            continue
        if not isinstance(block, dict):
            issues.add(f"{file_name}: {section}", "expected a mapping")
            continue
        known = {o.file_key[1] for o in OPTIONS if o.file_key and o.file_key[0] == section}
        if section == "probe":
            check_pool_and_handler(block, f"{file_name}: probe.", issues)
        for key in block:
            if key == "handler" or (isinstance(key, str) and key.lower().startswith("pool")):
                continue
            if key not in known:
                issues.add(
                    f"{file_name}: {section}.{key}",
                    f"unknown key; expected one of {', '.join(sorted(known))}",
                )


def load(sources: Sources) -> Config:
    """Build and validate the configuration; raise ConfigError listing every problem."""
    issues = Issues()
    environ, flags = sources.environ, sources.flags

    for name in sorted(environ):
        if name.startswith("MILVUS_PROBE_") and name not in known_env_names():
            issues.add(
                f"env {name}",
                "unknown setting; see `milvus-probe serve --help` for the MILVUS_PROBE_* variables",
            )

    def pick(option: Option, file_doc: Mapping[str, Any], file_name: str) -> Any:
        """The option's value from the highest source that has it (a bad value is recorded
        and stands in as the default, so later checks still run)."""
        if option.key in flags:
            return issues.parse(option.flag, option.parse, flags[option.key], option.default)
        for env_name in (option.env, *option.env_aliases):
            if environ.get(env_name, "") != "":
                return issues.parse(
                    f"env {env_name}", option.parse, environ[env_name], option.default
                )
        if option.file_key is not None:
            section, key = option.file_key
            block = file_doc.get(section)
            if isinstance(block, dict) and key in block:
                return issues.parse(
                    f"{file_name}: {section}.{key}", option.parse, block[key], option.default
                )
        return option.default

    config_file = pick(OPTIONS_BY_KEY["config.file"], {}, "")
    file_doc: dict[str, Any] = read_file(config_file, issues) if config_file else {}
    file_name = config_file or ""
    _check_file_shape(file_doc, file_name, issues)

    values = {o.key: pick(o, file_doc, file_name) for o in OPTIONS}
    probe = ProbeSettings(
        interval=values["probe.interval"],
        timeout=values["probe.timeout"],
        rpc=values["probe.rpc"],
        connect_interval=values["probe.connect-interval"],
        max_concurrent=values["probe.max-concurrent"],
        history=values["probe.history"],
    )
    readiness = ReadinessSettings(
        policy=values["readiness.policy"],
        failure_threshold=values["readiness.failure-threshold"],
        success_threshold=values["readiness.success-threshold"],
    )
    if probe.timeout >= probe.interval:
        issues.add(
            "probe.timeout",
            f"the timeout ({format_duration(probe.timeout)}) must be "
            f"shorter than the interval ({format_duration(probe.interval)})",
        )

    history = _history_settings(values, issues)

    discovery = None
    if values["discovery.kubernetes.enabled"]:
        discovery = discovery_settings(values, file_doc, file_name, environ, probe, issues)
    elif isinstance(file_doc.get("discovery"), dict):
        issues.add(f"{file_name}: discovery", "set, but --discovery.kubernetes.enabled is off")
    targets = file_and_flag_targets(
        file_doc, file_name, flags, environ, probe, issues, default=discovery is None
    )
    # A static target's `namespace` label is the probe's own (downward API), which is what
    # a ServiceMonitor would attach anyway; with honorLabels an empty one would erase it.
    own_namespace = environ.get("POD_NAMESPACE", "")
    if own_namespace:
        targets = [dataclasses.replace(t, namespace=own_namespace) for t in targets]
    if issues.items:
        raise ConfigError(issues.items)
    return Config(
        listen_address=values["web.listen-address"],
        web=WebSettings(
            max_requests=values["web.max-requests"], config_file=values["web.config.file"]
        ),
        log_level=values["log.level"],
        log_format=values["log.format"],
        config_file=config_file,
        probe=probe,
        readiness=readiness,
        profiling=ProfilingSettings(
            enabled=values["profiling.enabled"],
            allow_remote=values["profiling.allow-remote"],
            max_seconds=values["profiling.max-seconds"],
            heap=values["profiling.heap"],
        ),
        history=history,
        targets=tuple(targets),
        discovery=discovery,
        events=values["events.enabled"],
        kubeconfig=values["kubeconfig"],
    )


def _history_settings(values: Mapping[str, Any], issues: Issues) -> HistorySettings:
    """`--history.*`, checked: at least a second a row, a whole number of rows, bounded."""
    history = HistorySettings(
        retention=values["history.retention"], resolution=values["history.resolution"]
    )
    retention, resolution = history.retention, history.resolution
    if resolution < 1:
        issues.add(
            "--history.resolution", f"must be at least 1s, got {format_duration(resolution)}"
        )
    elif retention < resolution:
        issues.add(
            "--history.retention",
            f"the retention ({format_duration(retention)}) must be at least the resolution "
            f"({format_duration(resolution)})",
        )
    elif abs(retention / resolution - history.rows) > 1e-9:
        issues.add(
            "--history.retention",
            f"the retention ({format_duration(retention)}) must be a whole number of "
            f"resolution steps ({format_duration(resolution)})",
        )
    elif history.rows > MAX_HISTORY_ROWS:
        issues.add(
            "--history.retention",
            f"{format_duration(retention)} at {format_duration(resolution)} is {history.rows} "
            f"rows per target; at most {MAX_HISTORY_ROWS} (raise --history.resolution)",
        )
    return history


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
            f"timeout={format_duration(t.timeout)} "
            + (f"protocol=rest api={t.rest_api}" if t.protocol == "rest" else f"rpc={t.rpc}")
            + (f" management={t.management.uri}" if t.management else "")
            + (_describe_canary(t) if t.canary else "")
            + (" held=on" if t.held else "")
        )
    return lines


def _describe_canary(target: Target) -> str:
    c = target.canary
    assert c is not None
    return (
        f" canary={c.collection} create={str(c.create).lower()} write={str(c.write).lower()} "
        f"rows={c.rows} dimension={c.dimension} every={c.every}"
    )
