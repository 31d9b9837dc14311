"""The diagnostics bundle (`/debug/bundle`): what the daemon knows, in one .tar.gz.

This module builds the members the daemon holds itself (version, the redacted
configuration, history, traces, recent logs and Events) and packs members into the
archive; probe/web/bundle.py adds what the management port serves (readiness, metrics,
the targets API) and the profiles. Every member is bounded; none holds a secret: targets
are shown as the status page shows them (pages.target_config), and results, logs and
Events never carry one.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import importlib.metadata
import io
import json
import platform
import re
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import probe
from probe import logs, pages
from probe.config.settings import Config
from probe.config.values import format_duration
from probe.history import History
from probe.targets import Target

MEMBER_LIMIT = 8 * 2**20
"""Largest text member (bytes); a longer one is cut and says so at its end."""
HISTORY_BUDGET = 24 * 2**20
"""All history/<alias>.json members together (bytes); targets past it are listed instead."""
TRACES_BUDGET = 8 * 2**20
"""traces.json (bytes); targets past it are listed instead."""
HISTORY_WINDOW = 86400.0
"""How far back history/<alias>.json goes (never past --history.retention)."""

README = """\
milvus-probe diagnostics bundle
===============================

Made by GET /debug/bundle (or `milvus-probe bundle`). No member holds a token or a
password: targets show only that a secret is set (<set>, <from file PATH>).

README.txt          this file
version.txt         milvus-probe, Python, grpcio and prometheus_client versions, platform,
                    start time and uptime
config.yaml         the effective configuration, redacted: every target and the daemon's
                    settings
readyz.txt          GET /readyz?verbose: every readiness check
metrics.txt         GET /metrics in the Prometheus text format
targets.json        GET /api/v1/targets: where every target stands
history/ALIAS.json  GET /api/v1/targets/ALIAS/history over the last 24 h (or the retention),
                    one per target; ALIAS is percent-encoded (`/` is %2F)
traces.json         every target's recent cycles and last failures, as /probe?format=json
goroutine.txt       every thread's stack (as /debug/pprof/goroutine?debug=2)
profile.pb.gz       a CPU profile of the daemon while the bundle was made:
                    `go tool pprof -top profile.pb.gz`, or `-http :8080 profile.pb.gz`
heap.txt            process memory, the collector's counts, objects by type, and the
                    biggest allocation sites when --profiling.heap is on
log.jsonl           the last log records at every level the daemon logged, one JSON object
                    a line
events.json         the last Kubernetes Events the probe posted (or tried to), when Events
                    are on
"""


@dataclasses.dataclass(frozen=True)
class Member:
    """One file of the bundle."""

    name: str
    data: bytes


def text_member(name: str, text: str | bytes) -> Member:
    """A text member, cut at MEMBER_LIMIT with a note saying so."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > MEMBER_LIMIT:
        note = f"\n[cut: {len(data)} bytes, the bundle keeps {MEMBER_LIMIT}]\n".encode()
        data = data[: MEMBER_LIMIT - len(note)] + note
    return Member(name, data)


def json_member(name: str, value: Any, indent: int | None = 1) -> Member:
    return Member(name, (json.dumps(value, indent=indent, ensure_ascii=False) + "\n").encode())


def alias_file_name(alias: str) -> str:
    """`alias` as one safe file name: percent-encoded (no `/`, no leading dot), at most
    ~200 characters (a long alias keeps its head and a hash of the whole)."""
    quoted = urllib.parse.quote(alias, safe="-_~@+=,")
    if quoted.startswith("."):
        quoted = "%2E" + quoted[1:]
    if len(quoted) > 200:
        digest = hashlib.sha256(alias.encode()).hexdigest()[:16]
        head = quoted[:180]
        cut = head.rfind("%", len(head) - 2)  # never split a %XX escape
        quoted = (head[:cut] if cut >= 0 else head) + "~" + digest
    return quoted or "%00empty"


def utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def file_stamp(ts: float) -> str:
    """UTC time for file names: 20261204T175912Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


# ------------------------------------------------------------------- members


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def version_text(started_at: float, uptime: float) -> str:
    rows = [
        ("milvus-probe", probe.__version__),
        ("python", sys.version.replace("\n", " ")),
        ("grpcio", _version("grpcio")),
        ("prometheus_client", _version("prometheus_client")),
        ("platform", platform.platform()),
        ("started", utc(started_at)),
        ("uptime", format_duration(round(uptime, 3))),
        ("bundle made", utc(time.time())),
    ]
    return "".join(f"{key}: {value}\n" for key, value in rows)


_SECRET_KEY = re.compile(r"token|password|secret|credential", re.IGNORECASE)


def _target(t: Target) -> dict[str, Any]:
    """A target as the status page shows it (secrets say only <set> / <from file ...>)."""
    shown: dict[str, Any] = dict(pages.target_config(t))
    if t.canary is not None:
        shown["canary"] = _plain(t.canary)
    return shown


def _plain(value: Any, key: str = "") -> Any:
    """Settings as YAML-ready values; targets redacted, secret-named fields only say <set>."""
    if _SECRET_KEY.search(key) and not isinstance(value, bool):
        return "<none>" if value is None else "<set>"
    if isinstance(value, Target):
        return _target(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v, key) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, str(k)) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def config_yaml(config: Config) -> str:
    """The effective configuration, redacted: the daemon's settings, then every target."""
    import yaml

    daemon = {
        f.name: _plain(getattr(config, f.name), f.name)
        for f in dataclasses.fields(config)
        if f.name != "targets"
    }
    host, port = config.listen_address
    daemon["listen_address"] = f"{host}:{port}"
    document = {
        "daemon": daemon,
        "targets": [_target(t) for t in config.targets],
    }
    header = (
        "# The effective configuration (defaults < file < environment < flags), redacted:\n"
        "# secrets only say <set> or <from file PATH>. Discovered targets are in targets.json.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def history_members(history: History) -> list[Member]:
    """history/<alias>.json for every target, oldest row first, within HISTORY_BUDGET."""
    settings = history.settings
    window = min(HISTORY_WINDOW, settings.retention)
    members: list[Member] = []
    omitted: list[str] = []
    used = 0
    for alias in history.aliases():
        buckets = history.buckets(alias, window)
        if buckets is None:
            continue  # removed meanwhile
        if used >= HISTORY_BUDGET:
            omitted.append(alias)
            continue
        body = pages.history_json(alias, window, settings.resolution, buckets)
        member = json_member(f"history/{alias_file_name(alias)}.json", body, indent=None)
        used += len(member.data)
        members.append(member)
    if omitted:
        note = {"note": f"history past {HISTORY_BUDGET} bytes left out", "aliases": omitted}
        members.append(json_member("history/_omitted.json", note))
    return members


def traces_json(history: History) -> Member:
    """Every target's recent cycles and last failures, within TRACES_BUDGET."""
    targets: list[dict[str, Any]] = []
    omitted: list[str] = []
    used = 0
    for alias in history.aliases():
        if used >= TRACES_BUDGET:
            omitted.append(alias)
            continue
        entry = {
            "alias": alias,
            "recent": [r.to_dict() for r in history.recent(alias)],
            "failures": [r.to_dict() for r in history.failures(alias)],
        }
        used += len(json.dumps(entry))
        targets.append(entry)
    body: dict[str, Any] = {"targets": targets}
    if omitted:
        body["omitted"] = {"note": f"traces past {TRACES_BUDGET} bytes left out",
                           "aliases": omitted}  # fmt: skip
    return json_member("traces.json", body)


def log_jsonl(lines: Sequence[str]) -> Member:
    return text_member("log.jsonl", "".join(f"{line}\n" for line in lines))


def events_json(recorder: Any) -> Member:
    """The recorder's recent Events, or an empty list saying Events are off."""
    if recorder is None:
        body: dict[str, Any] = {
            "enabled": False,
            "note": "Kubernetes Events are off (--events.enabled, or not in a cluster)",
            "events": [],
        }
    else:
        body = {"enabled": True, "events": recorder.recent()}
    return json_member("events.json", body)


def daemon_members(
    config: Config, history: History, started_at: float, uptime: float, events: Any
) -> list[Member]:
    """What the daemon holds itself: version, configuration, history, traces, logs, Events."""
    return [
        text_member("version.txt", version_text(started_at, uptime)),
        text_member("config.yaml", config_yaml(config)),
        *history_members(history),
        traces_json(history),
        log_jsonl(logs.RECENT.lines()),
        events_json(events),
    ]


# ------------------------------------------------------------------- the archive


def pack(members: Iterable[Member], made_at: float, folder: str) -> bytes:
    """The members as a gzipped tar under `folder/` (so extracting it spills nothing),
    README.txt first, each a regular 0644 file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for member in [Member("README.txt", README.encode()), *members]:
            info = tarfile.TarInfo(f"{folder}/{member.name}")
            info.size = len(member.data)
            info.mtime = int(made_at)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(member.data))
    return buffer.getvalue()
