"""What the management server shows people: probe traces, readiness lists, the status page.

Everything is rendered from ProbeResults and health state, which never hold secrets;
everything HTML-bound is escaped; pages load no external assets.
"""

from __future__ import annotations

import html
import json
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import probe
from probe.config.values import format_duration
from probe.health import Check, HistoryEntry, TargetState
from probe.result import ProbeResult


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _phase_note(result: ProbeResult, phase: str) -> str:
    if result.facts is not None:
        return result.facts.phase_note(result, phase)
    return "FAILED" if result.failed_phase == phase else ""


def trace_text(result: ProbeResult, state: TargetState | None = None) -> str:
    """A cycle as text, like blackbox_exporter's `debug=true`."""
    lines = [
        f"Probe of alias={result.alias} target={result.target} "
        + (
            f"rpc={result.method}"
            if result.protocol == "grpc"
            else f"{result.protocol}={result.method}"
        ),
        f"started   {_iso(result.started_at)}",
    ]
    for phase, seconds in result.phases.items():
        note = _phase_note(result, phase)
        lines.append(f"{phase:<9} {_ms(seconds):>12}  {note}".rstrip())
    lines.append(f"{'total':<9} {_ms(result.duration):>12}")
    if result.success:
        lines.append("result    success")
    else:
        lines.append(f"result    failure reason={result.reason} phase={result.failed_phase}")
        lines.append(f"error     {result.error}")
    if result.health_reasons:
        lines.append("health reasons: " + "; ".join(result.health_reasons))
    if result.management is not None:
        m = result.management
        lines.append(f"management {m.uri}/healthz {_ms(m.duration)}: {m.summary()}")
    if result.tls is not None:
        lines.append(f"tls       {result.tls.summary(time.time())}")
        for cert in result.tls.chain:
            lines.append(
                f"  cert    subject={cert.subject or '-'} issuer={cert.issuer or '-'} "
                f"serial={cert.serial or '-'} not_after={_date(cert.not_after)}"
                + (f" sans={','.join(cert.sans)}" if cert.sans else "")
            )
    if result.server_info:
        si = result.server_info
        lines.append(
            f"server    build_tags={si.build_tags or '-'} git_commit={si.git_commit or '-'} "
            f"go_version={si.go_version or '-'} deploy_mode={si.deploy_mode or '-'} "
            f"build_time={si.build_time or '-'}"
        )
    if state is not None and state.history:
        lines.append("")
        lines.append(history_summary(list(state.history)))
    return "\n".join(lines) + "\n"


def history_summary(history: Sequence[HistoryEntry]) -> str:
    ok = [h for h in history if h.success]
    text = f"last {len(history)} scheduled cycles: {len(ok)} succeeded"
    if ok:
        durations = sorted(h.duration for h in ok)
        middle = len(durations) // 2  # sorted: the median without `statistics` (decimal, 0.5 MiB)
        median = (
            durations[middle] if len(durations) % 2 else sum(durations[middle - 1 : middle + 1]) / 2
        )
        text += f", median {_ms(median)}, max {_ms(durations[-1])}"
    return text


def trace_json(result: ProbeResult, state: TargetState | None = None) -> str:
    body: dict[str, Any] = result.to_dict()
    if state is not None:
        body["history"] = [
            {
                "started_at": h.started_at,
                "duration_seconds": h.duration,
                "success": h.success,
                "reason": str(h.reason) if h.reason else None,
            }
            for h in state.history
        ]
    return json.dumps(body, indent=2) + "\n"


def checks_text(name: str, ok: bool, checks: Sequence[Check]) -> str:
    """kube-apiserver style `?verbose` output."""
    lines = []
    for check in checks:
        mark = "+" if check.ok else "-"
        note = "" if check.counts else " (not required by the readiness policy)"
        lines.append(f"[{mark}]{check.name} {check.message}{note}")
    lines.append(f"{name} check {'passed' if ok else 'failed'}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- status page

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#1d2430}
h1{font-size:1.3em;margin:0 0 .2em}
table{border-collapse:collapse;margin-top:1em}
th,td{padding:.35em .7em;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:middle}
th{font-weight:600;background:#f5f7f9}
.up{color:#137333;font-weight:600}.down{color:#b3261e;font-weight:600}.unknown{color:#6b7280}
td.mono,td.nowrap{white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}
.muted{color:#6b7280}
nav a{margin-right:1em}
"""


def sparkline(history: Sequence[HistoryEntry], width: int = 240, height: int = 36) -> str:
    """An inline SVG of cycle durations: a line for successes, red ticks for failures."""
    if not history:
        return '<span class="muted">no cycles yet</span>'
    durations = [h.duration for h in history]
    top = max(durations) or 1e-9
    step = width / max(len(history) - 1, 1)
    points, marks = [], []
    for i, h in enumerate(history):
        x = i * step if len(history) > 1 else width / 2
        y = height - 2 - (h.duration / top) * (height - 4)
        title = html.escape(
            f"{_iso(h.started_at)} {_ms(h.duration)} {'ok' if h.success else h.reason}"
        )
        if h.success:
            points.append(f"{x:.1f},{y:.1f}")
            marks.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#1a73e8">'
                f"<title>{title}</title></circle>"
            )
        else:
            marks.append(
                f'<rect x="{x - 1.5:.1f}" y="0" width="3" height="{height}" '
                f'fill="#d93025"><title>{title}</title></rect>'
            )
    line = (
        f'<polyline fill="none" stroke="#1a73e8" stroke-width="1.2" points="{" ".join(points)}"/>'
        if len(points) > 1
        else ""
    )
    label = f"max {_ms(top)}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="latency of the last {len(history)} cycles, {label}">'
        f'{line}{"".join(marks)}</svg> <span class="muted">{html.escape(label)}</span>'
    )


def status_page(
    states: Sequence[TargetState], ready: bool, live: bool, started: float, profiling: bool = False
) -> str:
    esc = html.escape
    rows = []
    for state in states:
        t, last = state.target, state.last
        if last is None:
            status, cls, detail = "waiting", "unknown", "no cycle yet"
        elif last.success:
            status, cls, detail = "up", "up", f"{_ms(last.duration)}"
        else:
            status, cls = "down", "down"
            detail = f"{last.reason} in {last.failed_phase}: {last.error[:200]}"
        version = state.server_info.version if state.server_info else None
        beside = []
        if state.management is not None:
            beside.append(f"Milvus /healthz: {state.management.summary()}")
        if state.tls is not None:
            beside.append(f"TLS: {state.tls.summary(time.time())}")
        if beside:
            detail = f"{detail} · " + " · ".join(beside)
        alias_q = esc(_quote(t.alias))
        rows.append(
            "<tr>"
            f"<td class=mono>{esc(t.alias)}</td><td class=mono>{esc(t.address)}"
            f"{' (TLS)' if t.secure else ''} {esc(t.protocol)}</td>"
            f'<td class="{cls}">{status}</td>'
            f"<td>{esc(detail)}</td>"
            f"<td>{'yes' if state.passing else 'no'}</td>"
            f"<td class=mono>{esc(version or '-')}</td>"
            f"<td>{sparkline(list(state.history))}</td>"
            f'<td class=nowrap><a href="probe?alias={alias_q}">probe now</a> · '
            f'<a href="readyz/{alias_q}">readyz</a></td>'
            "</tr>"
        )
    uptime = format_duration(max(round(time.monotonic() - started), 1))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10">
<title>milvus-probe</title><style>{_STYLE}</style></head>
<body>
<h1>milvus-probe</h1>
<div class="muted">version {esc(probe.__version__)} · up {uptime} ·
live: <span class="{"up" if live else "down"}">{"yes" if live else "no"}</span> ·
ready: <span class="{"up" if ready else "down"}">{"yes" if ready else "no"}</span> ·
refreshes every 10 s</div>
<nav style="margin-top:.6em"><a href="metrics">/metrics</a>
<a href="readyz?verbose">/readyz?verbose</a> <a href="healthz">/healthz</a>
{'<a href="debug/pprof/">/debug/pprof/</a>' if profiling else ""}</nav>
<table>
<tr><th>alias</th><th>target</th><th>last</th><th>detail</th><th>passing</th><th>version</th>
<th>latency, last cycles</th><th></th></tr>
{"".join(rows)}
</table>
</body></html>
"""


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")
