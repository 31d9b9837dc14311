"""Inline SVG charts for the status pages: latency over time and the last cycles' phases.

Pure functions from history rows and results to SVG text; no scripts, no external
assets, every label escaped. Sizes are viewBox units: the page's CSS scales an SVG to
its column, so a chart is drawn at the size it will roughly be shown at.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from probe.history import TOTAL, Bucket
from probe.result import ProbeResult

PHASE_COLOURS = {
    "resolve": "#a8c7fa",
    "connect": "#1a73e8",
    "request": "#0b8043",
    "rpc": "#0b8043",
    "info": "#f9ab00",
    "close": "#9aa0a6",
}
OTHER_PHASE = "#7e57c2"
REASON_COLOURS = {
    "refused": "#d93025",
    "timeout": "#e8710a",
    "dns": "#a142f4",
    "tls": "#b31412",
    "unauthenticated": "#c2185b",
    "permission_denied": "#ad1457",
    "db_not_found": "#6d4c41",
    "not_ready": "#f29900",
    "unimplemented": "#5f6368",
    "unhealthy": "#ea4335",
    "unavailable": "#c5221f",
    "error": "#80868b",
}
OTHER_REASON = "#9c27b0"
P50, P99 = "#1a73e8", "#e37400"


def phase_colour(phase: str) -> str:
    return PHASE_COLOURS.get(str(phase), OTHER_PHASE)


def reason_colour(reason: str) -> str:
    return REASON_COLOURS.get(str(reason), OTHER_REASON)


def milliseconds(seconds: float) -> str:
    """A latency for an axis or a tooltip: 250 µs, 1.5 ms, 12 ms, 1.2 s."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.2g} ms" if seconds * 1000 < 1.0 else f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def clock_time(ts: float, seconds: bool = False) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.gmtime(ts))


@dataclass(frozen=True)
class Size:
    """A chart's viewBox and type size."""

    width: int
    height: int
    font: int = 11

    @property
    def left(self) -> int:
        return 5 * self.font

    @property
    def bottom(self) -> int:
        return 2 * self.font + 4

    @property
    def top(self) -> int:
        return self.font // 2 + 2


def _svg(size: Size, label: str, body: str, cls: str) -> str:
    return (
        f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size.width} '
        f'{size.height}" role="img" aria-label="{html.escape(label)}" '
        f'font-size="{size.font}" font-family="system-ui,sans-serif">{body}</svg>'
    )


def _log_ticks(low: float, high: float) -> tuple[float, float, list[float]]:
    """A log axis from a decade (or 1-2-5 step) at or below `low` to one at or above `high`."""
    bottom = 10 ** math.floor(math.log10(low))
    top = 10 ** math.ceil(math.log10(high))
    if top <= bottom:
        top = bottom * 10
    decades = round(math.log10(top / bottom))
    steps = (1, 2, 5) if decades <= 2 else (1,)
    ticks = [10 ** (math.log10(bottom) + d) * s for d in range(decades + 1) for s in steps]
    ticks = [t for t in ticks if bottom * 0.999 <= t <= top * 1.001]
    # Trim empty decades at the top and bottom, but keep a decade around the data.
    while len(ticks) > 2 and ticks[-2] >= high * 1.0001 and ticks[-2] / ticks[0] >= 10:
        ticks.pop()
    while len(ticks) > 2 and ticks[1] <= low * 0.9999 and ticks[-1] / ticks[1] >= 10:
        ticks.pop(0)
    return ticks[0], ticks[-1], ticks


def _time_step(span: float) -> float:
    """Seconds between time ticks: about six across the window."""
    for step in (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= 7:
            return step
    return 86400.0


def latency_chart(
    buckets: Sequence[Bucket],
    start: float,
    end: float,
    resolution: float,
    size: Size,
    cls: str = "chart",
) -> str:
    """p50 and p99 per row on a log scale in milliseconds over UTC time; failed rows as
    bands coloured by their main reason, deeper the more of the row failed."""
    plot_w = size.width - size.left - 8
    plot_h = size.height - size.top - size.bottom
    x0, y0 = size.left, size.top
    span = max(end - start, resolution)

    def x(ts: float) -> float:
        return x0 + (ts - start) / span * plot_w

    values = [
        v for b in buckets for v in b.latency.get(TOTAL, (None, None)) if v is not None and v > 0
    ]
    low, high, ticks = _log_ticks(min(values, default=0.001), max(values, default=0.01))
    scale = math.log10(high / low)

    def y(seconds: float) -> float:
        return y0 + plot_h - math.log10(max(seconds, low) / low) / scale * plot_h

    parts: list[str] = [
        f'<rect x="{x0}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        f'stroke="#dadce0"/>'
    ]
    band_w = max(plot_w * resolution / span, 1.0)
    for b in buckets:
        if not b.failed:
            continue
        main = max(b.failures, key=lambda r: b.failures[r])
        share = b.failed / b.attempts if b.attempts else 1.0
        reasons = ", ".join(f"{r} ×{n}" for r, n in sorted(b.failures.items()))
        title = f"{clock_time(b.start)} UTC: {b.failed} of {b.attempts} failed ({reasons})"
        parts.append(
            f'<rect class="failed" x="{x(b.start):.1f}" y="{y0}" width="{band_w:.1f}" '
            f'height="{plot_h}" fill="{reason_colour(main)}" '
            f'fill-opacity="{0.25 + 0.55 * share:.2f}"><title>{html.escape(title)}</title></rect>'
        )
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e8eaed"/>'
            f'<text x="{x0 - 4}" y="{ty + size.font * 0.35:.1f}" text-anchor="end" '
            f'fill="#5f6368">{html.escape(_tick(tick))}</text>'
        )
    step = _time_step(span)
    tick_ts = math.ceil(start / step) * step
    while tick_ts <= end:
        tx = x(tick_ts)
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{y0 + plot_h}" y2="{y0 + plot_h + 4}" '
            f'stroke="#9aa0a6"/><text x="{tx:.1f}" y="{y0 + plot_h + size.font + 4}" '
            f'text-anchor="middle" fill="#5f6368">{clock_time(tick_ts)}</text>'
        )
        tick_ts += step
    parts.append(
        f'<text x="{x0 + plot_w}" y="{size.height - 2}" text-anchor="end" fill="#80868b">UTC</text>'
    )
    for index, colour, dash in ((1, P99, ""), (0, P50, "")):
        for segment in _segments(buckets, index, resolution):
            points = " ".join(f"{x(ts + resolution / 2):.1f},{y(v):.1f}" for ts, v in segment)
            if len(segment) == 1:
                ts, v = segment[0]
                parts.append(
                    f'<circle cx="{x(ts + resolution / 2):.1f}" cy="{y(v):.1f}" r="1.8" '
                    f'fill="{colour}"/>'
                )
            else:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{dash} '
                    f'stroke-linejoin="round" points="{points}"/>'
                )
    for b in buckets:  # hover targets: one per row with a cycle
        p50, p99 = b.latency.get(TOTAL, (None, None))
        title = (
            f"{clock_time(b.start)} UTC · {b.attempts} cycle(s), {b.failed} failed · "
            f"p50 {milliseconds(p50) if p50 else '-'} · p99 {milliseconds(p99) if p99 else '-'}"
        )
        parts.append(
            f'<rect x="{x(b.start):.1f}" y="{y0}" width="{band_w:.1f}" height="{plot_h}" '
            f'fill="transparent"><title>{html.escape(title)}</title></rect>'
        )
    if not buckets:
        parts.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 + plot_h / 2}" text-anchor="middle" '
            f'fill="#80868b">no cycles in this window yet</text>'
        )
    label = f"latency p50 and p99 per {int(resolution)} s, {len(buckets)} rows"
    return _svg(size, label, "".join(parts), cls)


def _segments(
    buckets: Sequence[Bucket], index: int, resolution: float
) -> list[list[tuple[float, float]]]:
    """Runs of consecutive rows with a value: a line never bridges a row without cycles."""
    runs: list[list[tuple[float, float]]] = []
    previous: float | None = None
    for b in buckets:
        value = b.latency.get(TOTAL, (None, None))[index]
        if value is None or (b.attempts and b.failed == b.attempts):  # a band says it all
            previous = None
            continue
        if previous is None or b.start - previous > resolution * 1.5:
            runs.append([])
        runs[-1].append((b.start, value))
        previous = b.start
    return runs


def phase_bars(results: Sequence[ProbeResult], size: Size, cls: str = "chart") -> str:
    """The last cycles as bars stacked by phase (oldest left); a failed cycle is outlined
    in its reason's colour; bars taller than the axis are cut and marked ▲."""
    plot_w = size.width - size.left - 8
    plot_h = size.height - size.top - size.bottom
    x0, y0 = size.left, size.top
    parts: list[str] = [
        f'<rect x="{x0}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        f'stroke="#dadce0"/>'
    ]
    if not results:
        parts.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 + plot_h / 2}" text-anchor="middle" '
            f'fill="#80868b">no cycles yet</text>'
        )
        return _svg(size, "no cycles yet", "".join(parts), cls)
    durations = sorted(r.duration for r in results)
    # The axis fits most bars: a few slow ones (timeouts) must not flatten the rest.
    top = durations[-1]
    typical = durations[int(0.9 * (len(durations) - 1))]
    if top > 4 * typical > 0:
        top = 2 * typical
    top_tick = _nice(top)
    ticks = [top_tick * k / 4 for k in range(5)]

    def y(seconds: float) -> float:
        return y0 + plot_h - min(seconds / top_tick, 1.0) * plot_h

    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e8eaed"/>'
            f'<text x="{x0 - 4}" y="{ty + size.font * 0.35:.1f}" text-anchor="end" '
            f'fill="#5f6368">{html.escape(_tick(tick) if tick else "0")}</text>'
        )
    slot = plot_w / len(results)
    bar = max(slot * 0.72, 1.0)
    for k, r in enumerate(results):
        bx = x0 + k * slot + (slot - bar) / 2
        level = 0.0
        tip = [f"{clock_time(r.started_at, seconds=True)} UTC · {milliseconds(r.duration)}"]
        for phase, seconds in r.phases.items():
            ya, yb = y(level), y(level + seconds)
            level += seconds
            tip.append(f"{phase} {milliseconds(seconds)}")
            if ya - yb >= 0.05:
                parts.append(
                    f'<rect x="{bx:.1f}" y="{yb:.1f}" width="{bar:.1f}" height="{ya - yb:.1f}" '
                    f'fill="{phase_colour(phase)}"/>'
                )
        if not r.success:
            tip.append(f"FAILED: {r.reason} in {r.failed_phase}")
            colour = reason_colour(str(r.reason))
            parts.append(
                f'<rect x="{bx - 0.5:.1f}" y="{y(r.duration):.1f}" width="{bar + 1:.1f}" '
                f'height="{max(y(0) - y(r.duration), 2):.1f}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5"/><rect x="{bx:.1f}" y="{y0 + plot_h + 2}" '
                f'width="{bar:.1f}" height="4" fill="{colour}"/>'
            )
        if r.duration > top_tick:
            parts.append(
                f'<text x="{bx + bar / 2:.1f}" y="{y0 + size.font * 0.8:.1f}" '
                f'text-anchor="middle" fill="#b3261e" font-size="{size.font * 0.8:.0f}">▲</text>'
            )
        parts.append(
            f'<rect x="{x0 + k * slot:.1f}" y="{y0}" width="{slot:.1f}" height="{plot_h}" '
            f'fill="transparent"><title>{html.escape(" · ".join(tip))}</title></rect>'
        )
    first, last = results[0].started_at, results[-1].started_at
    parts.append(
        f'<text x="{x0}" y="{size.height - 3}" fill="#5f6368">'
        f"{clock_time(first, seconds=True)}</text>"
        f'<text x="{x0 + plot_w}" y="{size.height - 3}" text-anchor="end" fill="#5f6368">'
        f"{clock_time(last, seconds=True)} UTC</text>"
        f'<text x="{x0 + plot_w / 2}" y="{size.height - 3}" text-anchor="middle" '
        f'fill="#80868b">last {len(results)} cycles</text>'
    )
    return _svg(size, f"phases of the last {len(results)} cycles", "".join(parts), cls)


def _tick(seconds: float) -> str:
    """An axis label: 100 µs, 2 ms, 50 ms, 1 s."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.4g} µs"
    if seconds < 1:
        return f"{seconds * 1000:.4g} ms"
    return f"{seconds:.4g} s"


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n at or above `value`."""
    if value <= 0:
        return 0.001
    power: float = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * 0.999:
            return step * power
    return 10 * power
