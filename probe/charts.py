"""Inline SVG charts for the status pages: latency over time and the last cycles' phases.

Pure functions from history rows and results to SVG text; no scripts, no external
assets, every label escaped. Sizes are viewBox units: the page's CSS scales an SVG to
its column, so a chart is drawn at the size it will roughly be shown at.
"""

from __future__ import annotations

import functools
import html
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from probe.history import Column, Cycles

PHASE_COLOURS = {
    # Every phase of every prober kind (its `phases`, the canary's included) has its own
    # colour: at least 20 apart in CIEDE2000, and 14 under simulated deuteranopia,
    # protanopia and tritanopia (tests/test_charts.py measures both), so neighbours in a
    # bar stay apart for most readers. `rpc` and `request` are the probe call of gRPC and
    # REST: never in one chart, still not one colour.
    "resolve": "#a8c7fa",
    "connect": "#332288",
    "rpc": "#009e73",
    "request": "#e25822",
    "info": "#dcd300",
    "search": "#cc79a7",
    "query": "#882d17",
    "write": "#000000",
    "close": "#5f6368",
}
OTHER_PHASE = "#7e57c2"
"""A phase no prober declares (tests fail if a declared one ends up here)."""
REASON_COLOURS = {
    # Every FailureReason and `probe_error` (the probe itself broke, counted apart from the
    # target's failures): at least 15 apart in CIEDE2000. Eighteen colours can't all stay
    # apart for colour-blind readers: the legend and every hover title name the reason.
    "refused": "#be0032",
    "timeout": "#d55e00",
    "dns": "#7e57c2",
    "tls": "#654522",
    "unauthenticated": "#e68fac",
    "permission_denied": "#aa3377",
    "db_not_found": "#999933",
    "not_ready": "#f6a600",
    "unimplemented": "#848482",
    "unhealthy": "#f99379",
    "unavailable": "#332288",
    "collection_missing": "#33bbee",
    "not_loaded": "#0072b2",
    "wrong_result": "#117733",
    "rate_limited": "#f0e442",
    "quota_exceeded": "#009988",
    "error": "#2b3d26",
    "probe_error": "#000000",
}
OTHER_REASON = "#a8c7fa"
"""A reason not in the table (tests fail if a FailureReason ends up here)."""
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

    @property
    def columns(self) -> int:
        """Latency columns the chart has room for: about three units wide each."""
        return (self.width - self.left - 8) // 3


def _svg(size: Size, label: str, body: str, cls: str) -> str:
    return (
        f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size.width} '
        f'{size.height}" role="img" aria-label="{html.escape(label)}" '
        f'font-size="{size.font}" font-family="system-ui,sans-serif">'
        f"<title>{html.escape(label)}</title>{body}</svg>"
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
    columns: Sequence[Column],
    start: float,
    end: float,
    size: Size,
    cls: str = "chart",
    detail: bool = True,
) -> str:
    """p50 and p99 per column on a log scale in milliseconds over UTC time; failed columns
    as bands coloured by their main reason, deeper the more of the column failed.

    Every failed band says what failed when hovered; with `detail`, so does every column
    (the target page); without, the chart as a whole (the status page, where a hundred
    targets must draw in milliseconds)."""
    plot_w = size.width - size.left - 8
    plot_h = size.height - size.top - size.bottom
    x0, y0 = size.left, size.top
    span = max(end - start, columns[0].seconds if columns else 60.0)
    per_second = plot_w / span
    low, high, _ = _log_ticks(
        min((c.p50 for c in columns if c.p50), default=0.001),
        max((c.p99 for c in columns if c.p99), default=0.01),
    )
    log_low, per_decade = math.log10(low), plot_h / math.log10(high / low)
    bottom = y0 + plot_h
    across = f"h{(columns[0].seconds if columns else 60.0) * per_second:.2f}"

    def y(seconds: float) -> float:
        return bottom - (math.log10(max(seconds, low)) - log_low) * per_decade

    parts: list[str] = [
        f'<rect x="{x0}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        f'stroke="#dadce0"/>'
    ]
    for c in columns:
        if not c.failures:
            continue
        failed = c.failed
        main = max(c.failures, key=c.failures.__getitem__)
        share = failed / c.attempts if c.attempts else 1.0
        reasons = ", ".join(f"{r} ×{n}" for r, n in sorted(c.failures.items()))
        title = f"{_span(c)} UTC: {failed} of {c.attempts} failed ({reasons})"
        parts.append(
            f'<rect class="failed" x="{x0 + (c.start - start) * per_second:.1f}" y="{y0}" '
            f'width="{max(c.seconds * per_second, 1.0):.1f}" height="{plot_h}" '
            f'fill="{reason_colour(main)}" fill-opacity="{0.25 + 0.55 * share:.2f}">'
            f"<title>{html.escape(title)}</title></rect>"
        )
    parts.append(_log_axis(size, low, high))
    parts.append(_time_axis(size, start, end, span))
    # Each column's p50 and p99 as a step across its width (a minute's figure holds for the
    # minute), one path per run of adjacent columns: a y per distinct value (rows hold one
    # of 254 log-scale values), a fixed step across: no number formatted per point.
    steps = _Steps(lambda value: f"V{y(value):.1f}{across}")
    runs = _runs(columns)
    for index, colour in ((1, P99), (0, P50)):
        d = "".join(
            f"M{x0 + (first - start) * per_second:.1f} {y(values[0]):.1f}"
            + "".join(map(steps.__getitem__, values))
            for first, *pairs in runs
            for values in (pairs[index],)
        )
        if d:
            parts.append(
                f'<path fill="none" stroke="{colour}" stroke-width="1.6" '
                f'stroke-linejoin="round" d="{d}"/>'
            )
    if detail:
        for c in columns:  # hover targets: one per column with a cycle
            title = (
                f"{_span(c)} UTC · {c.attempts} cycle(s), {c.failed} failed · "
                f"p50 {milliseconds(c.p50) if c.p50 else '-'} · "
                f"p99 {milliseconds(c.p99) if c.p99 else '-'}"
            )
            parts.append(
                f'<rect x="{x0 + (c.start - start) * per_second:.1f}" y="{y0}" '
                f'width="{max(c.seconds * per_second, 1.0):.1f}" height="{plot_h}" '
                f'fill="transparent"><title>{html.escape(title)}</title></rect>'
            )
    if not columns:
        parts.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 + plot_h / 2}" text-anchor="middle" '
            f'fill="#80868b">no cycles in this window yet</text>'
        )
    each = columns[0].seconds if columns else 60.0
    label = f"latency p50 and p99 per {_duration(each)}, {len(columns)} columns"
    if columns and not detail:
        attempts = sum(c.attempts for c in columns)
        failed = sum(c.failed for c in columns if c.failures)
        p50s = sorted(c.p50 for c in columns if c.p50)
        worst = max((c.p99 for c in columns if c.p99), default=None)
        label += (
            f": {attempts} cycles, {failed} failed"
            + (f", median p50 {milliseconds(p50s[len(p50s) // 2])}" if p50s else "")
            + (f", worst p99 {milliseconds(worst)}" if worst else "")
        )
    return _svg(size, label, "".join(parts), cls)


@functools.lru_cache(maxsize=16)
def _log_axis(size: Size, low: float, high: float) -> str:
    """The grid and labels of a latency chart's log axis from `low` to `high` seconds."""
    plot_h = size.height - size.top - size.bottom
    bottom = size.top + plot_h
    return _grid(
        size,
        [
            (bottom - math.log10(tick / low) / math.log10(high / low) * plot_h, _tick(tick))
            for tick in _log_ticks(low, high)[2]
        ],
    )


@functools.lru_cache(maxsize=16)
def _time_axis(size: Size, start: float, end: float, span: float) -> str:
    """A latency chart's UTC time ticks from `start` to `end` (every card of a page shares
    them: drawn once a page)."""
    plot_w = size.width - size.left - 8
    bottom = size.height - size.bottom
    per_second = plot_w / span
    parts = []
    step = _time_step(span)
    tick_ts = math.ceil(start / step) * step
    while tick_ts <= end:
        tx = size.left + (tick_ts - start) * per_second
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{bottom}" y2="{bottom + 4}" '
            f'stroke="#9aa0a6"/><text x="{tx:.1f}" y="{bottom + size.font + 4}" '
            f'text-anchor="middle" fill="#5f6368">{clock_time(tick_ts)}</text>'
        )
        tick_ts += step
    parts.append(
        f'<text x="{size.left + plot_w}" y="{size.height - 2}" text-anchor="end" '
        'fill="#80868b">UTC</text>'
    )
    return "".join(parts)


def _span(c: Column) -> str:
    """A column's time: 14:05, or 14:00–14:15 when it holds several rows."""
    if c.seconds <= 60:
        return clock_time(c.start)
    return f"{clock_time(c.start)}–{clock_time(c.start + c.seconds)}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class _Steps(dict[float, str]):
    """A path's step to each value, drawn the first time a chart meets the value."""

    def __init__(self, draw: Callable[[float], str]) -> None:
        super().__init__()
        self._draw = draw

    def __missing__(self, value: float) -> str:
        step = self[value] = self._draw(value)
        return step


def _runs(columns: Sequence[Column]) -> list[tuple[float, list[float], list[float]]]:
    """(start, p50s, p99s) of runs of adjacent columns with values: a line never bridges a
    column without cycles, nor one where every cycle failed (its band says it all)."""
    runs: list[tuple[float, list[float], list[float]]] = []
    previous: float | None = None
    for c in columns:
        p50, p99 = c.p50, c.p99
        if p50 is None or p99 is None or (c.failures and c.failed == c.attempts):
            previous = None
            continue
        if previous is None or c.start - previous > c.seconds * 1.5:
            runs.append((c.start, [], []))
        run = runs[-1]
        run[1].append(p50)
        run[2].append(p99)
        previous = c.start
    return runs


def phase_bars(cycles: Cycles, size: Size, cls: str = "chart", detail: bool = True) -> str:
    """The last cycles as bars stacked by phase (oldest left); a failed cycle is outlined
    in its reason's colour; bars taller than the axis are cut and marked ▲.

    Each phase is one path for all its bars. Every failed cycle says why when hovered;
    with `detail`, every cycle gives its phases' times."""
    plot_w = size.width - size.left - 8
    plot_h = size.height - size.top - size.bottom
    x0, y0 = size.left, size.top
    parts: list[str] = [
        f'<rect x="{x0}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        f'stroke="#dadce0"/>'
    ]
    n = len(cycles)
    if not n:
        parts.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 + plot_h / 2}" text-anchor="middle" '
            f'fill="#80868b">no cycles yet</text>'
        )
        return _svg(size, "no cycles yet", "".join(parts), cls)
    durations = [cycles.duration(k) for k in range(n)]
    ranked = sorted(durations)
    # The axis fits most bars: a few slow ones (timeouts) must not flatten the rest.
    top = ranked[-1]
    typical = ranked[int(0.9 * (n - 1))]
    if top > 4 * typical > 0:
        top = 2 * typical
    top_tick = _nice(top)
    per_second = plot_h / top_tick
    bottom = y0 + plot_h
    parts.append(_linear_axis(size, top_tick))
    slot = plot_w / n
    bar = max(slot * 0.72, 1.0)
    # A phase's bars are one path of vertical strokes, each from where the phase began to
    # where it ended: its height is its seconds on the axis, whatever else a cycle ran and
    # in whichever order the paths are drawn. A hundred cards draw in milliseconds.
    paths = _strokes(cycles, _moves(size, n), _heights(bottom, plot_h), 10 * per_second)
    shapes, starts = cycles.shapes, cycles.starts
    for k in range(n):
        shape, duration = shapes[k], durations[k]
        if shape.success and duration <= top_tick and not detail:
            continue
        bx = x0 + k * slot + (slot - bar) / 2
        if not shape.success:
            colour = reason_colour(str(shape.reason))
            ty = bottom - min(duration, top_tick) * per_second
            parts.append(
                f'<rect x="{bx - 0.5:.1f}" y="{ty:.1f}" width="{bar + 1:.1f}" '
                f'height="{max(bottom - ty, 2):.1f}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5"/><rect x="{bx:.1f}" y="{bottom + 2}" '
                f'width="{bar:.1f}" height="4" fill="{colour}"/>'
            )
        if duration > top_tick:
            parts.append(
                f'<text x="{bx + bar / 2:.1f}" y="{y0 + size.font * 0.8:.1f}" '
                f'text-anchor="middle" fill="#b3261e" font-size="{size.font * 0.8:.0f}">▲</text>'
            )
        if detail or not shape.success:
            tip = [f"{clock_time(starts[k], seconds=True)} UTC · {milliseconds(duration)}"]
            tip += [f"{phase} {milliseconds(seconds)}" for phase, seconds in cycles.phases(k)]
            if not shape.success:
                tip.append(f"FAILED: {shape.reason} in {shape.failed_phase}")
            parts.append(
                f'<rect x="{x0 + k * slot:.1f}" y="{y0}" width="{slot:.1f}" height="{plot_h}" '
                f'fill="transparent"><title>{html.escape(" · ".join(tip))}</title></rect>'
            )
    parts[2:2] = [
        f'<path fill="none" stroke="{phase_colour(phase)}" stroke-width="{bar:.1f}" '
        f'd="{"".join(segments)}"/>'
        for phase, segments in paths.items()
        if segments
    ]  # under the outlines and hover targets
    first, last = starts[0], starts[-1]
    parts.append(
        f'<text x="{x0}" y="{size.height - 3}" fill="#5f6368">'
        f"{clock_time(first, seconds=True)}</text>"
        f'<text x="{x0 + plot_w}" y="{size.height - 3}" text-anchor="end" fill="#5f6368">'
        f"{clock_time(last, seconds=True)} UTC</text>"
        f'<text x="{x0 + plot_w / 2}" y="{size.height - 3}" text-anchor="middle" '
        f'fill="#80868b">last {n} cycles</text>'
    )
    label = f"phases of the last {n} cycles"
    if not detail:
        failed = sum(1 for shape in shapes if not shape.success)
        label += (
            f": median {milliseconds(ranked[n // 2])}, slowest {milliseconds(ranked[-1])}"
            f", {failed} failed"
        )
    return _svg(size, label, "".join(parts), cls)


def _strokes(
    cycles: Cycles, moves: list[str], heights: list[str], tenths: float
) -> dict[str, list[str]]:
    """Per phase, the path of its bars: for every cycle that ran it, a stroke from where the
    phase began (`moves[k]` and `heights`, one per tenth of a unit) to where it ended.

    Both ends are the cycle's running total rounded to a tenth, so a stroke is its phase's
    seconds within a tenth of a unit, and a phase shorter than that may draw nothing: it
    never lends its height to another. Cycles are taken a shape at a time (its phases are
    the same) and a phase at a time across them: a hundred cards of sixty cycles must draw
    in milliseconds."""
    groups: dict[int, list[int]] = {}
    for k, shape in enumerate(cycles.shapes):
        groups.setdefault(id(shape), []).append(k)
    every = 1 + cycles.width
    numbers = cycles.numbers
    highest = len(heights) - 1
    paths: dict[str, list[str]] = {}
    for ks in groups.values():
        phases = cycles.shapes[ks[0]].phases
        starts = moves if len(groups) == 1 else [moves[k] for k in ks]
        level: Sequence[float] = [0.0] * len(ks)
        below: Sequence[int] = [0] * len(ks)
        for j, phase in enumerate(phases):
            seconds: Sequence[float]
            if len(phases) > cycles.width:  # kept whole: its own numbers
                seconds = [phases[phase]] * len(ks)
            elif len(groups) == 1:  # one shape (a healthy target): every cycle's, at once
                seconds = numbers[1 + j :: every]
            else:
                seconds = [numbers[k * every + 1 + j] for k in ks]
            level = list(map(operator.add, level, seconds))
            if max(level) * tenths + 0.5 < highest:  # no bar reaches the top: none to cut
                above = [int(top * tenths + 0.5) for top in level]
            else:
                above = [min(int(top * tenths + 0.5), highest) for top in level]
            paths.setdefault(phase, []).extend(
                f"{move}{heights[low]}V{heights[high]}"
                for move, low, high in zip(starts, below, above, strict=True)
                if high > low
            )
            below = above
    return paths


@functools.lru_cache(maxsize=16)
def _linear_axis(size: Size, top_tick: float) -> str:
    """The grid and labels of a bar chart's axis from 0 to `top_tick` in quarters."""
    plot_h = size.height - size.top - size.bottom
    bottom = size.top + plot_h
    return _grid(
        size,
        [
            (bottom - k / 4 * plot_h, _tick(top_tick * k / 4) if k else "0")
            for k in range(5)
        ],
    )


def _grid(size: Size, lines: list[tuple[float, str]]) -> str:
    """Horizontal grid lines across the plot at the given y, each labelled on the left."""
    plot_w = size.width - size.left - 8
    return "".join(
        f'<line x1="{size.left}" x2="{size.left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
        f'stroke="#e8eaed"/><text x="{size.left - 4}" y="{ty + size.font * 0.35:.1f}" '
        f'text-anchor="end" fill="#5f6368">{html.escape(label)}</text>'
        for ty, label in lines
    )


@functools.lru_cache(maxsize=16)
def _moves(size: Size, n: int) -> list[str]:
    """The x of each of `n` bars (the middle of its slot), as a path's move."""
    plot_w = size.width - size.left - 8
    return [f"M{size.left + (k + 0.5) * plot_w / n:.1f} " for k in range(n)]


@functools.cache
def _heights(bottom: int, plot_h: int) -> list[str]:
    """The y of every tenth of a unit above the axis, as text: bars are drawn to a tenth."""
    return [f"{bottom - tenth / 10:.1f}" for tenth in range(plot_h * 10 + 1)]


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
