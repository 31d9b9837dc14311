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
from probe import held_views
from probe.config.values import format_duration, parse_duration
from probe.health import Check, TargetState
from probe.history import TOTAL, Bucket, Column, Cycles, History, Summary
from probe.milvus.auth import SecretFile
from probe.result import ProbeResult
from probe.targets import Target


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


def trace_text(result: ProbeResult, recent: Cycles | None = None) -> str:
    """A cycle as text, like blackbox_exporter's `debug=true`; with the target's `recent`
    scheduled cycles (probe.history) summed up at the end."""
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
    lines.extend(held_views.trace_lines(result))
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
    if recent:
        lines.append("")
        lines.append(history_summary(recent))
    return "\n".join(lines) + "\n"


def history_summary(recent: Cycles) -> str:
    ok = [k for k in range(len(recent)) if recent.shapes[k].success]
    text = f"last {len(recent)} scheduled cycles: {len(ok)} succeeded"
    if ok:
        durations = sorted(recent.duration(k) for k in ok)
        middle = len(durations) // 2  # sorted: the median without `statistics` (decimal, 0.5 MiB)
        median = (
            durations[middle] if len(durations) % 2 else sum(durations[middle - 1 : middle + 1]) / 2
        )
        text += f", median {_ms(median)}, max {_ms(durations[-1])}"
    return text


def trace_json(result: ProbeResult, recent: Cycles | None = None) -> str:
    body: dict[str, Any] = result.to_dict()
    if recent is not None:
        body["history"] = [
            {
                "started_at": recent.starts[k],
                "duration_seconds": recent.duration(k),
                "success": shape.success,
                "reason": str(shape.reason) if shape.reason else None,
            }
            for k, shape in enumerate(recent.shapes)
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


# ------------------------------------------------------------------- status pages

WINDOWS = ("15m", "1h", "6h", "24h")
"""The windows the pages offer (any duration within the retention works as ?window=)."""
DEFAULT_WINDOW = 3600.0
OVERVIEW_CYCLES = 30
"""The status page's phase bars show the last 30 cycles (five minutes at the default
interval); a target's own page shows every one kept (`--probe.history`)."""
REFRESH_SECONDS = 10

_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:14px 16px 32px}
h1{font-size:1.35em;margin:0 0 .15em}h2{font-size:1.05em;margin:1.3em 0 .4em}
a{color:#1a5fc8}
.muted{color:#5f6368}.small{font-size:.88em}
code,.mono,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
nav{margin:.5em 0;display:flex;flex-wrap:wrap;gap:.1em .9em}nav a{white-space:nowrap}
.summary{margin:.6em 0;font-size:1.05em}
.windows{display:inline-flex;border:1px solid #c4c9d0;border-radius:6px;overflow:hidden;
vertical-align:middle}
.windows a,.windows b{padding:.2em .7em;text-decoration:none;border-left:1px solid #c4c9d0}
.windows :first-child{border-left:0}.windows b{background:#1a5fc8;color:#fff}
.card{background:#fff;border:1px solid #dde1e6;border-left:5px solid #9aa0a6;border-radius:8px;
padding:10px 14px;margin:12px 0}
.card.up{border-left-color:#188038}.card.down{border-left-color:#d93025}
.head{display:flex;flex-wrap:wrap;gap:.2em .8em;align-items:baseline}
.alias{font-weight:650;font-size:1.08em;overflow-wrap:anywhere}
.badge{font-weight:700;font-size:.8em;padding:.1em .55em;border-radius:4px;color:#fff;
background:#80868b;letter-spacing:.03em}
.badge.up{background:#188038}.badge.down{background:#d93025}
.why{margin:.3em 0;overflow-wrap:anywhere}.why b{color:#b3261e}
.ratios{display:flex;flex-wrap:wrap;gap:6px;margin:.45em 0}
.ratio{border:1px solid #e1e4e8;border-radius:5px;padding:.05em .5em;white-space:nowrap}
.ratio .v{font-weight:650}.good{color:#137333}.warn{color:#b06000}.bad{color:#b3261e}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:6px 18px}
.charts figure{margin:0}figcaption{font-size:.85em;color:#5f6368}
svg{display:block;width:100%;height:auto}
svg.s{max-width:560px}
.legend{display:flex;flex-wrap:wrap;gap:.2em .9em;font-size:.85em;color:#3c4043}
.key{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.3em;
vertical-align:-.05em}
.line{display:inline-block;width:1.2em;height:3px;margin-right:.3em;vertical-align:.2em}
.narrow{display:none}
@media (max-width:640px){main{padding:10px}.wide{display:none}.narrow{display:block}
.charts{grid-template-columns:1fr}}
pre{background:#f8f9fa;border:1px solid #e1e4e8;border-radius:6px;padding:8px 10px;
overflow-x:auto;margin:.3em 0 .8em;white-space:pre}
details{margin:.2em 0}summary{cursor:pointer}
table.kv{border-collapse:collapse}table.kv td{padding:.15em .8em .15em 0;vertical-align:top;
overflow-wrap:anywhere}table.kv td:first-child{color:#5f6368;white-space:nowrap}
"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><main>
{body}
</main></body></html>
"""


def _age(seconds: float) -> str:
    """42s, 5m, 3h 2m, 2d 3h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _since(ts: float, now: float) -> str:
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    return f"{charts.clock_time(ts, seconds=True)} UTC ({_age(now - ts)} ago)"


def _window_nav(window: float, link: str) -> str:
    """The window switch: links that keep the page, each with its `?window=`."""
    items = []
    current = format_duration(window)
    for name in WINDOWS:
        if name == current:
            items.append(f"<b>{name}</b>")
        else:
            items.append(f'<a href="{html.escape(link)}?window={name}">{name}</a>')
    if current not in WINDOWS:
        items.append(f"<b>{html.escape(current)}</b>")
    return f'<span class="windows" role="group" aria-label="window">{"".join(items)}</span>'


def _ratios(ratios: dict[str, float | None]) -> str:
    cells = []
    for name, ratio in ratios.items():
        if ratio is None:
            value, cls = "–", "muted"
        else:
            value = f"{ratio * 100:.3g} %" if ratio < 1 else "100 %"
            cls = "good" if ratio >= 0.999 else "warn" if ratio >= 0.95 else "bad"
        cells.append(f'<span class="ratio">{name} <span class="v {cls}">{value}</span></span>')
    return f'<div class="ratios" title="share of cycles that succeeded">{"".join(cells)}</div>'


def _state(summary: Summary) -> tuple[str, str]:
    """(css class, badge text)."""
    if summary.last is None:
        return "unknown", "WAITING"
    return ("up", "UP") if summary.up else ("down", "DOWN")


def _why(summary: Summary, now: float) -> str:
    """The current state in words: why it is down, or how fast it is."""
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    last, esc = summary.last, html.escape
    if last is None:
        return '<div class="why muted">no cycle has finished yet</div>'
    since = f" since {_since(summary.since, now)}" if summary.since is not None else ""
    if last.success:
        return (
            f'<div class="why">up{esc(since)} · last cycle '
            f"{esc(charts.milliseconds(last.duration))}</div>"
        )
    return (
        f'<div class="why"><b>{esc(str(last.reason))}</b> in {esc(str(last.failed_phase))}'
        f"{esc(since)}<br><span class=mono>{esc(last.error[:300])}</span></div>"
    )


def _legend(columns: Sequence[Column], resolution: float) -> str:
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    p99 = "p99"
    if columns and columns[0].seconds > resolution:  # rows merged: say which p99 is drawn
        p99 += " (its worst minute)" if resolution == 60 else " (its worst row)"
    items = [
        f'<span><span class="line" style="background:{charts.P50}"></span>p50</span>',
        f'<span><span class="line" style="background:{charts.P99}"></span>{p99}</span>',
    ]
    reasons = sorted({r for c in columns for r in c.failures})
    for reason in reasons:
        items.append(
            f'<span><span class="key" style="background:{charts.reason_colour(reason)};'
            f'opacity:.6"></span>failed: {html.escape(reason)}</span>'
        )
    return f'<div class="legend">{"".join(items)}</div>'


def _phases_legend(phases: Sequence[str]) -> str:
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    items = [
        f'<span><span class="key" style="background:{charts.phase_colour(p)}"></span>'
        f"{html.escape(str(p))}</span>"
        for p in phases
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def _phases_seen(cycles: Cycles, series: Sequence[str]) -> list[str]:
    """The phases the cycles ran, in the order the target's prober declares them (`series`),
    not the order the kept cycles happened to show them in."""
    seen: dict[str, None] = {}
    for shape in {id(s): s for s in cycles.shapes}.values():
        seen.update(dict.fromkeys(str(p) for p in shape.phases))
    declared = [str(p) for p in series if str(p) in seen]
    return declared + [p for p in seen if p not in declared]


def _order(summary: Summary) -> tuple[int, str]:
    """Failing first, then waiting, then up; by alias within each."""
    rank = 2 if summary.last is None else 1 if summary.up else 0
    rank = {0: 0, 2: 1, 1: 2}[rank]
    return rank, summary.target.alias


def _headline(summaries: Sequence[Summary], now: float) -> str:
    up = [s for s in summaries if s.last is not None and s.up]
    down = [s for s in summaries if s.last is not None and not s.up]
    waiting = len(summaries) - len(up) - len(down)
    parts = [
        f'<b class="good">{len(up)} up</b>',
        f'<b class="{"bad" if down else "muted"}">{len(down)} down</b>',
    ]
    if waiting:
        parts.append(f"{waiting} waiting")
    text = f"{len(summaries)} target(s): " + ", ".join(parts)
    if down:
        first = min(s.since for s in down if s.since is not None)
        text += f" · failing since {_since(first, now)}"
    elif up and not waiting:
        latest = max(s.since for s in up if s.since is not None)
        text += f" · all up since {_since(latest, now)}"
    return f'<div class="summary">{text}</div>'


def _header(ready: bool, live: bool, started: float, profiling: bool, links: str) -> str:
    uptime = format_duration(max(round(time.monotonic() - started), 1))
    yes = '<span class="good">yes</span>'
    no = '<span class="bad">no</span>'
    return (
        f'<div class="muted small">version {html.escape(probe.__version__)} · up {uptime} · '
        f"live: {yes if live else no} · ready: {yes if ready else no} · "
        f"refreshes every {REFRESH_SECONDS} s · times in UTC</div>"
        f'<nav>{links}<a href="{{root}}metrics">/metrics</a>'
        f'<a href="{{root}}readyz?verbose">/readyz?verbose</a>'
        f'<a href="{{root}}api/v1/targets">/api/v1/targets</a>'
        + ('<a href="{root}debug/pprof/">/debug/pprof/</a>' if profiling else "")
        + "</nav>"
    )


def status_page(
    history: History,
    states: Sequence[TargetState],
    ready: bool,
    live: bool,
    started: float,
    window: float = DEFAULT_WINDOW,
    profiling: bool = False,
) -> str:
    """`/`: every target, failing first, with its ratios, latency and last cycles."""
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    esc = html.escape
    now = history.clock()
    overview = charts.Size(400, 130, 12)
    shown = format_duration(window)
    versions = {s.target.alias: s.server_info.version for s in states if s.server_info is not None}
    summaries = sorted(history.summaries(), key=_order)
    by_alias = {s.target.alias: s for s in states}
    cards = []
    for summary in summaries:
        t = summary.target
        cls, badge = _state(summary)
        alias_q = esc(_quote(t.alias))
        columns = history.columns(t.alias, window, overview.columns)
        cycles = history.cycles(t.alias, OVERVIEW_CYCLES)
        version = versions.get(t.alias)
        cards.append(
            f'<section class="card {cls}"><div class="head">'
            f'<span class="badge {cls}">{badge}</span>'
            f'<a class="alias" href="targets/{alias_q}?window={shown}">'
            f"{esc(t.alias)}</a>"
            f'<span class="mono muted">{esc(t.protocol)}://{esc(t.address)}'
            f"{' (TLS)' if t.secure else ''}</span>"
            + (f'<span class="muted small">Milvus {esc(version)}</span>' if version else "")
            + "</div>"
            + _why(summary, now)
            + _beside(by_alias.get(t.alias))
            + _ratios(summary.ratios)
            + '<div class="charts"><figure>'
            + charts.latency_chart(columns, now - window, now, overview, "s", detail=False)
            + f"<figcaption>latency, last {shown}</figcaption>"
            + _legend(columns, history.settings.resolution)
            + "</figure><figure>"
            + charts.phase_bars(cycles, overview, "s", detail=False)
            + "<figcaption>phases of the last cycles</figcaption>"
            + _phases_legend(_phases_seen(cycles, history.series(t.alias)))
            + "</figure></div>"
            f'<nav class="small"><a href="targets/{alias_q}?window={shown}">'
            f'details and failures</a><a href="probe?alias={alias_q}">probe now</a>'
            f'<a href="readyz/{alias_q}">readyz</a>'
            f'<a href="api/v1/targets/{alias_q}/history?window={shown}">'
            "history JSON</a></nav></section>"
        )
    body = (
        "<h1>milvus-probe</h1>"
        + _header(ready, live, started, profiling, "").replace("{root}", "")
        + _headline(summaries, now)
        + f"<div>window {_window_nav(window, './')}</div>"
        + "".join(cards)
    )
    return _page("milvus-probe", body)


def target_page(
    history: History,
    alias: str,
    state: TargetState | None,
    ready: bool,
    live: bool,
    started: float,
    window: float = DEFAULT_WINDOW,
    profiling: bool = False,
    events: Sequence[dict[str, Any]] | None = None,
) -> str | None:
    """`/targets/<alias>`: one target's charts, last failures' traces, redacted config and
    the Kubernetes Events posted about it (None: the daemon posts none)."""
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    summary = history.summary(alias)
    if summary is None:
        return None
    esc = html.escape
    now = history.clock()
    t = summary.target
    cls, badge = _state(summary)
    cycles = history.cycles(alias)
    failures = history.failures(alias)
    wide = charts.Size(1000, 300, 13)
    narrow = charts.Size(400, 220, 11)
    alias_q = esc(_quote(alias))
    start = now - window
    columns = history.columns(alias, window, wide.columns)
    phase_table = _phase_table(history.buckets(alias, window) or [], history.series(alias))
    failure_list: list[str] = []
    for r in reversed(failures):
        failure_list.append(
            f"<details{' open' if not failure_list else ''}><summary>"
            f"<span class=mono>{esc(_iso(r.started_at))}</span> · <b>{esc(str(r.reason))}</b> in "
            f"{esc(str(r.failed_phase))} · {esc(charts.milliseconds(r.duration))} · "
            f'<a href="../probe?trace={esc(r.trace_id)}">trace {esc(r.trace_id)}</a>'
            f"</summary><pre>{esc(trace_text(r))}</pre></details>"
        )
    last = summary.last
    version = state.server_info.version if state and state.server_info else None
    body = (
        '<nav class="small"><a href="../">← all targets</a></nav>'
        f'<div class="head"><span class="badge {cls}">{badge}</span>'
        f'<h1 class="alias">{esc(alias)}</h1>'
        f'<span class="mono muted">{esc(t.protocol)}://{esc(t.address)}</span>'
        + (f'<span class="muted small">Milvus {esc(version)}</span>' if version else "")
        + "</div>"
        + _header(ready, live, started, profiling, "").replace("{root}", "../")
        + _why(summary, now)
        + _beside(state)
        + _ratios(summary.ratios)
        + f"<div>window {_window_nav(window, alias_q)}</div>"
        + f"<h2>Latency, last {format_duration(window)}</h2>"
        + charts.latency_chart(columns, start, now, wide, "wide")
        + charts.latency_chart(
            history.columns(alias, window, narrow.columns), start, now, narrow, "narrow"
        )
        + _legend(columns, history.settings.resolution)
        + phase_table
        + f"<h2>Last {len(cycles)} cycles, by phase</h2>"
        + charts.phase_bars(cycles, charts.Size(1000, 220, 13), "wide")
        + charts.phase_bars(cycles, charts.Size(400, 180, 11), "narrow")
        + _phases_legend(_phases_seen(cycles, history.series(alias)))
        + f"<h2>Last failures ({len(failures)})</h2>"
        + ("".join(failure_list) or '<p class="muted">none kept</p>')
        + "<h2>Last cycle</h2>"
        + (f"<pre>{esc(trace_text(last))}</pre>" if last else '<p class="muted">none yet</p>')
        + "<h2>Configuration (effective, secrets hidden)</h2><table class=kv>"
        + "".join(
            f"<tr><td>{esc(k)}</td><td class=mono>{esc(v)}</td></tr>" for k, v in target_config(t)
        )
        + "</table>"
        + _events_table(events)
        + f'<nav class="small"><a href="../api/v1/targets/{alias_q}/history?window='
        f'{format_duration(window)}">history JSON</a>'
        f'<a href="../probe?alias={alias_q}">probe now</a>'
        f'<a href="../readyz/{alias_q}?verbose">readyz</a></nav>'
    )
    return _page(f"{alias} · milvus-probe", body)


def _events_table(events: Sequence[dict[str, Any]] | None) -> str:
    """The Events about a target this daemon posted (or tried to), newest first."""
    esc = html.escape
    if events is None:
        return (
            '<h2>Kubernetes Events</h2><p class="muted">Events are off (<code>--events.enabled'
            "</code>, or not in a cluster).</p>"
        )
    rows = "".join(
        f"<tr><td class=mono>{esc(str(e.get('time', ''))[:19].replace('T', ' '))}</td>"
        f"<td>{esc(str(e.get('type', '')))}</td><td><b>{esc(str(e.get('reason', '')))}</b></td>"
        f"<td>{esc(str(e.get('message', '')))}</td><td class=muted>{esc(str(e.get('result', '')))}"
        f"</td></tr>"
        for e in reversed(events)
    )
    return f"<h2>Kubernetes Events ({len(events)})</h2>" + (
        '<table class="kv small"><tr><td>time (UTC)</td><td>type</td><td>reason</td>'
        f"<td>message</td><td>posted</td></tr>{rows}</table>"
        if events
        else '<p class="muted">none posted about this target since the probe started</p>'
    )


def _phase_table(buckets: Sequence[Bucket], series: Sequence[str]) -> str:
    """p50/p99 of each phase over the window: the worst minute's p99, the median p50."""
    from probe import charts  # only when a page is drawn: 0.5 MiB otherwise

    rows = []
    for name in series:
        p50s = sorted(v for b in buckets if (v := b.latency.get(name, (None, None))[0]))
        p99s = [v for b in buckets if (v := b.latency.get(name, (None, None))[1])]
        if not p50s:
            continue
        rows.append(
            f"<tr><td>{html.escape(str(name))}</td>"
            f"<td>{charts.milliseconds(p50s[len(p50s) // 2])}</td>"
            f"<td>{charts.milliseconds(max(p99s))}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<table class="kv small"><tr><td></td><td>median p50</td><td>worst p99</td></tr>'
        + "".join(rows)
        + "</table>"
    )


def target_config(t: Target) -> list[tuple[str, str]]:
    """The target's effective settings, for people: secrets only say that they are set."""

    def secret(value: object) -> str:
        if isinstance(value, SecretFile):
            return f"<from file {value.path}>"
        return "<set>" if value is not None else "<none>"

    rows = [
        ("alias", t.alias),
        ("protocol", t.protocol),
        ("address", t.address),
        ("tls", "on" if t.secure else "off"),
        ("db_name", t.db_name or "(default)"),
        ("rpc", str(t.rpc)),
        ("interval", format_duration(t.interval)),
        ("timeout", format_duration(t.timeout)),
        ("connect_interval", format_duration(t.connect_interval)),
    ]
    c = t.credentials
    if c is None:
        rows.append(("auth", "none"))
    elif c.token is not None:
        rows.append(("token", secret(c.token)))
    else:
        rows.append(("user", c.user or ""))
        rows.append(("password", secret(c.password)))
    if t.tls is not None:
        for name in ("server_pem_path", "server_name", "client_pem_path", "client_key_path",
                     "ca_pem_path"):  # fmt: skip
            value = getattr(t.tls, name)
            if value:
                rows.append((name, value))
    if t.protocol == "rest":
        rows.append(("rest_api", t.rest_api))
    if t.management is not None:
        rows.append(("management_uri", t.management.uri))
        rows.append(("management_interval", format_duration(t.management_interval or t.interval)))
    if t.secure:
        rows.append(("tls_inspect_interval", format_duration(t.tls_inspect_interval)))
    for name in ("namespace", "service", "pod"):
        value = getattr(t, name)
        if value:
            rows.append((name, value))
    return rows


# ------------------------------------------------------------------- JSON API


def targets_json(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """`/api/v1/targets`: where every target stands."""
    out = []
    for s in summaries:
        last = s.last
        out.append(
            {
                "alias": s.target.alias,
                "protocol": s.target.protocol,
                "target": s.target.address,
                "up": s.up,
                "reason": None if last is None or last.success else str(last.reason),
                "success_ratio": dict(s.ratios),
                "last_duration_seconds": last.duration if last else None,
                "since": s.since,
                "last_trace_id": last.trace_id if last else None,
            }
        )
    return out


def history_json(
    alias: str, window: float, resolution: float, buckets: Sequence[Bucket]
) -> dict[str, Any]:
    """`/api/v1/targets/<alias>/history`: the rows of the window, oldest first."""

    def quantiles(pair: tuple[float | None, float | None]) -> dict[str, float | None]:
        return {"p50": pair[0], "p99": pair[1]}

    return {
        "alias": alias,
        "window": format_duration(window),
        "window_seconds": window,
        "resolution_seconds": resolution,
        "buckets": [
            {
                "start": b.start,
                "attempts": b.attempts,
                "failures": dict(b.failures),
                "latency_seconds": quantiles(b.latency.get(TOTAL, (None, None))),
                "phases": {
                    str(name): quantiles(pair) for name, pair in b.latency.items() if name != TOTAL
                },
            }
            for b in buckets
        ],
    }


def parse_window(text: str | None, retention: float, resolution: float) -> float:
    """`?window=` in seconds (default 1 h, never past the retention); ValueError says why."""
    if text is None:
        return min(DEFAULT_WINDOW, retention)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"window: {exc} (try {', '.join(WINDOWS)})") from None
    if seconds < resolution:
        raise ValueError(
            f"window: {text!r} is shorter than one history row ({format_duration(resolution)})"
        )
    if seconds > retention * 1.000001:
        raise ValueError(
            f"window: {text!r} is longer than the history kept "
            f"(--history.retention={format_duration(retention)})"
        )
    return seconds


def _beside(state: TargetState | None) -> str:
    """Milvus's own view and the server's certificate, when the target has them."""
    if state is None:
        return ""
    parts = []
    if state.management is not None:
        cls = "up" if state.management.healthy else "down"
        parts.append(
            f'Milvus /healthz: <span class="{cls}">{html.escape(state.management.summary())}</span>'
        )
    if state.tls is not None:
        parts.append(f"TLS: {html.escape(state.tls.summary(time.time()))}")
    side = f'<div class="small muted">{" · ".join(parts)}</div>' if parts else ""
    return side + held_views.status_html(state)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")
