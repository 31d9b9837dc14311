"""Configuration: settings (what the daemon runs with) and how they are found.

    settings.py   frozen dataclasses and every default; no YAML, no loader
    values.py     parsers for durations, booleans, addresses, ...
    issues.py     ConfigIssue / ConfigError: every problem, with where it came from
    options.py    the flag / environment / file-key tables (read by --help and the loader)
    targets.py    target validation (uri, auth, TLS, per-target overrides)
    discovery.py  Kubernetes discovery settings and the discovered targets' template
    loader.py     defaults < YAML file < environment < flags

Importing `probe.config` costs only the settings; the loader's names are resolved on first
use, so health, pages and pprof never pull it in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from probe.config.issues import ConfigError, ConfigIssue
from probe.config.settings import (
    Config,
    DiscoverySettings,
    HistorySettings,
    LogFormat,
    ProbeSettings,
    ProfilingSettings,
    ReadinessPolicy,
    ReadinessSettings,
)
from probe.config.values import format_duration, parse_duration

if TYPE_CHECKING:
    from probe.config.loader import Sources, describe, load
    from probe.config.options import (
        CANARY_OPTIONS,
        CONNECTION_OPTIONS,
        OPTIONS,
        OPTIONS_BY_KEY,
        SECRET_FLAGS,
        ConnectionOption,
        Option,
    )

_LAZY = {
    "Sources": "probe.config.loader",
    "describe": "probe.config.loader",
    "load": "probe.config.loader",
    "CANARY_OPTIONS": "probe.config.options",
    "CONNECTION_OPTIONS": "probe.config.options",
    "OPTIONS": "probe.config.options",
    "OPTIONS_BY_KEY": "probe.config.options",
    "SECRET_FLAGS": "probe.config.options",
    "ConnectionOption": "probe.config.options",
    "Option": "probe.config.options",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'probe.config' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CANARY_OPTIONS",
    "CONNECTION_OPTIONS",
    "OPTIONS",
    "OPTIONS_BY_KEY",
    "SECRET_FLAGS",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConnectionOption",
    "DiscoverySettings",
    "HistorySettings",
    "LogFormat",
    "Option",
    "ProbeSettings",
    "ProfilingSettings",
    "ReadinessPolicy",
    "ReadinessSettings",
    "Sources",
    "describe",
    "format_duration",
    "load",
    "parse_duration",
]
