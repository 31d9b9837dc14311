"""probe.charts: the SVG the status pages draw, parsed back and measured.

Pure functions of history columns and cycles, so no server: the inputs are built here
(tests/test_pages.py measures the bars of real cycles with `measure_phase_bars`). Every
chart must be well-formed XML (an inline SVG a browser would otherwise repair or drop),
what it draws must be where the numbers say, and every phase and reason has a colour of
its own.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Mapping

import pytest

from probe import charts
from probe.history import Column, Cycles
from probe.probers import KINDS, phases_of
from probe.probers.canary import CanaryPhase
from probe.probers.grpc import Phase
from probe.result import FailureReason, ProbeResult, RpcMethod
from probe.targets import Canary, Target

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_040.0
SIZE = charts.Size(400, 130, 12)
PHASES = (Phase.RESOLVE, Phase.CONNECT, Phase.RPC, Phase.CLOSE)


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def column(minute: int, p50: float, p99: float, attempts: int = 6, **failures: int) -> Column:
    return Column(T0 + minute * 60, 60.0, attempts, dict(failures), p50, p99)


def test_latency_chart_marks_failed_columns_and_breaks_the_line_there() -> None:
    columns = [column(m, 0.002, 0.004) for m in range(10)]
    columns[4] = column(4, 0.002, 0.004, attempts=6, refused=6)  # all failed: a band, no line
    columns[7] = column(7, 0.003, 0.020, attempts=6, timeout=2)  # partly failed
    svg = parsed(charts.latency_chart(columns, T0, T0 + 600, SIZE, "s", detail=False))
    bands = svg.findall(f"{SVG}rect[@class='failed']")
    assert len(bands) == 2
    titles = [band.findtext(f"{SVG}title") or "" for band in bands]
    assert "6 of 6 failed (refused ×6)" in titles[0] and "2 of 6 failed (timeout ×2)" in titles[1]
    assert bands[0].get("fill") == charts.reason_colour("refused")
    assert float(bands[0].get("fill-opacity", 0)) > float(bands[1].get("fill-opacity", 0))
    lines = svg.findall(f"{SVG}path")
    assert [p.get("stroke") for p in lines] == [charts.P99, charts.P50]
    for line in lines:  # two runs: minutes 0-3, then 5-9 (the failed minute 4 breaks it)
        assert line.get("d", "").count("M") == 2
        assert line.get("d", "").count("h") == 9
    # The overview says it all in one title; no hover target per column.
    assert not svg.findall(f"{SVG}rect[@fill='transparent']")
    summary = svg.findtext(f"{SVG}title") or ""
    assert "60 cycles, 8 failed" in summary and "worst p99 20 ms" in summary


def test_latency_chart_puts_a_value_at_its_height_on_the_log_axis() -> None:
    columns = [column(0, 0.001, 0.001), column(1, 0.1, 0.1)]
    svg = parsed(charts.latency_chart(columns, T0, T0 + 120, SIZE, "wide"))
    labels = {t.text: float(t.get("y", 0)) for t in svg.findall(f"{SVG}text")}
    assert {"1 ms", "10 ms", "100 ms"} <= set(labels)
    d = svg.findall(f"{SVG}path")[0].get("d", "")
    ys = [float(v) for v in re.findall(r"V([\d.]+)", d)]
    font = SIZE.font * 0.35  # a label's baseline sits that far below its grid line
    assert ys == pytest.approx([labels["1 ms"] - font, labels["100 ms"] - font], abs=0.15)
    hovers = svg.findall(f"{SVG}rect[@fill='transparent']")
    assert len(hovers) == 2 and "p99 100 ms" in (hovers[1].findtext(f"{SVG}title") or "")


def test_latency_chart_of_nothing_says_so() -> None:
    svg = charts.latency_chart([], T0, T0 + 3600, SIZE)
    assert "no cycles in this window yet" in svg
    parsed(svg)


def cycles_of(results: list[ProbeResult], width: int = 5) -> Cycles:
    numbers = array("f")
    for r in results:
        values = [r.duration, *r.phases.values()]
        numbers.extend(values + [float("nan")] * (1 + width - len(values)))
    return Cycles([r.started_at for r in results], numbers, width, results)


def result(k: int, seconds: tuple[float, ...], reason: FailureReason | None = None) -> ProbeResult:
    return ProbeResult(
        alias="a", target="t:1", method="check_health", started_at=T0 + k, duration=sum(seconds),
        phases=dict(zip(PHASES, seconds, strict=False)), success=reason is None, reason=reason,
        failed_phase=Phase.CONNECT if reason else None,
    )  # fmt: skip


def test_phase_bars_stack_each_phase_to_where_it_ended() -> None:
    ok = (0.001, 0.002, 0.003, 0.004)  # 10 ms: the axis tops out at 10 ms
    results = [result(k, ok) for k in range(8)]
    results[5] = result(5, (0.001, 0.002), FailureReason.REFUSED)  # two phases, outlined
    svg = parsed(charts.phase_bars(cycles_of(results), SIZE, "s", detail=False))
    plot_h = SIZE.height - SIZE.top - SIZE.bottom
    bottom = SIZE.top + plot_h
    paths = {p.get("stroke"): p.get("d", "") for p in svg.findall(f"{SVG}path")}
    assert set(paths) == {charts.phase_colour(p) for p in PHASES}
    ended = 0.0
    for phase, seconds in zip(PHASES, ok, strict=True):
        ended += seconds
        tops = [float(v) for v in re.findall(r"V([\d.]+)", paths[charts.phase_colour(phase)])]
        ran = 8 if phase in (Phase.RESOLVE, Phase.CONNECT) else 7
        assert len(tops) == ran
        assert tops[0] == pytest.approx(bottom - ended / 0.010 * plot_h, abs=0.11)
    outlines = svg.findall(f"{SVG}rect[@stroke='{charts.reason_colour('refused')}']")
    assert len(outlines) == 1
    tips = [r.findtext(f"{SVG}title") or "" for r in svg.findall(f"{SVG}rect")]
    assert [t for t in tips if t] == [tips[-1]] and "FAILED: refused in connect" in tips[-1]


def test_phase_bars_cut_a_slow_cycle_at_the_top_and_mark_it() -> None:
    results = [result(k, (0.001, 0.001, 0.001, 0.001)) for k in range(20)]
    results[10] = result(10, (0.001, 5.0), FailureReason.TIMEOUT)  # 5 s among 4 ms cycles
    svg = charts.phase_bars(cycles_of(results), SIZE, "wide")
    tree = parsed(svg)
    assert "▲" in svg
    tops = [
        float(v)
        for p in tree.findall(f"{SVG}path")
        for v in re.findall(r"V([\d.]+)", p.get("d", ""))
    ]
    assert min(tops) == pytest.approx(SIZE.top, abs=0.05)  # cut at the top, not off the chart
    hovers = tree.findall(f"{SVG}rect[@fill='transparent']")
    assert len(hovers) == 20 and "connect 5 s · FAILED: timeout" in (
        hovers[10].findtext(f"{SVG}title") or ""
    )


def test_phase_bars_of_nothing_say_so() -> None:
    svg = charts.phase_bars(Cycles((), (), 0, ()), SIZE)
    assert "no cycles yet" in svg
    parsed(svg)


# --------------------------------------------------------------------------- bars measured


def _seconds(label: str) -> float:
    """An axis label back to seconds: `0`, `250 µs`, `2 ms`, `1 s`."""
    if label == "0":
        return 0.0
    number, unit = label.split(" ")
    return float(number) * {"µs": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def measure_phase_bars(svg_text: str, cycles: Cycles) -> int:
    """Assert that a phase-bar chart draws every phase of every cycle as a stroke of the
    phase's colour whose height is its seconds on the axis (within 0.2 px), starting where
    the phases before it ended, cut at the axis's top; the strokes measured."""
    svg = parsed(svg_text)
    children = list(svg)
    grid = [  # each grid line is followed by its label
        (float(line.get("y1", 0)), _seconds(label.text or ""), float(line.get("x1", 0)),
         float(line.get("x2", 0)))
        for line, label in itertools.pairwise(children)
        if line.tag == f"{SVG}line" and line.get("stroke") == "#e8eaed"
    ]  # fmt: skip
    (bottom, _, left, right), (top_y, top_s, _, _) = grid[0], grid[-1]
    per_second = (bottom - top_y) / top_s
    n = len(cycles)
    slot = (right - left) / n
    drawn: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for path in svg.iter(f"{SVG}path"):
        for x, low, high in re.findall(r"M([\d.]+) ([\d.]+)V([\d.]+)", path.get("d", "")):
            k = round((float(x) - left) / slot - 0.5)
            drawn.setdefault((k, path.get("stroke", "")), []).append((float(low), float(high)))
    measured = 0
    for k in range(n):
        ended = 0.0
        for phase, seconds in cycles.phases(k):
            began, ended = ended, ended + seconds
            low = bottom - min(began, top_s) * per_second
            high = bottom - min(ended, top_s) * per_second
            strokes = drawn.pop((k, charts.phase_colour(phase)), [])
            if low - high < 0.2:  # under a fifth of a pixel: drawn or not, never more
                assert all(a - b < 0.3 for a, b in strokes), (k, phase, strokes)
                continue
            assert len(strokes) == 1, (k, phase, strokes)
            (a, b), what = strokes[0], f"cycle {k} {phase} {seconds * 1000:.3f} ms"
            assert a == pytest.approx(low, abs=0.2), what
            assert a - b == pytest.approx(low - high, abs=0.2), what
            measured += 1
    assert not drawn, f"strokes of no phase a cycle ran: {drawn}"
    return measured


def canary_result(
    k: int, seconds: Mapping[str, float], reason: FailureReason | None = None
) -> ProbeResult:
    failed = list(seconds)[-2] if reason else None
    return ProbeResult(
        alias="a", target="t:1", method="check_health", started_at=T0 + k,
        duration=sum(seconds.values()), phases=dict(seconds), success=reason is None,
        reason=reason, failed_phase=failed,
    )  # fmt: skip


def test_phase_bars_draw_each_phase_its_own_height_whatever_cycle_came_first() -> None:
    """The oldest cycle kept failed in search (no query, no write) and the next one called
    Connect (info): each phase is still drawn its own seconds tall. Drawn from the axis
    up, in the order phases were first met, `close` once covered query and write here."""
    ms = 0.001
    missing = {"resolve": 0.05 * ms, "connect": 1.7 * ms, "rpc": 1.3 * ms, "info": 1.9 * ms,
               "search": 1.6 * ms, "close": 0.05 * ms}  # fmt: skip
    full = {"resolve": 0.05 * ms, "connect": 1.8 * ms, "rpc": 1.4 * ms, "search": 1.9 * ms,
            "query": 1.2 * ms, "write": 2.4 * ms, "close": 0.06 * ms}  # fmt: skip
    order = ("resolve", "connect", "rpc", "info", "search", "query", "write", "close")
    connected = {phase: {**full, "info": 1.5 * ms}[phase] for phase in order}
    results = [canary_result(0, missing, FailureReason.COLLECTION_MISSING)]
    results += [canary_result(1, connected)] + [canary_result(k, full) for k in range(2, 12)]
    cycles = cycles_of(results, width=8)
    for size in (SIZE, charts.Size(1000, 220, 13), charts.Size(400, 180, 11)):
        for detail in (True, False):
            svg = charts.phase_bars(cycles, size, "c", detail=detail)
            assert measure_phase_bars(svg, cycles) >= 11 * 5


def test_every_phase_of_every_prober_kind_has_its_own_colour() -> None:
    declared: dict[str, str] = {}
    for kind in KINDS:  # what each kind declares, with a writing canary's phases
        for canary in (None, Canary(write=True)):
            target = Target(
                alias="a", host="h", port=1, interval=2.0, timeout=1.0,
                rpc=RpcMethod.CHECK_HEALTH, connect_interval=60.0, protocol=kind, canary=canary,
            )  # fmt: skip
            for phase in phases_of(target):
                declared[str(phase)] = charts.phase_colour(phase)
    assert {str(p) for p in (*Phase, *CanaryPhase)} <= set(declared)
    assert {"request", "search", "query", "write"} <= set(declared)
    fell_back = [p for p, colour in declared.items() if colour == charts.OTHER_PHASE]
    assert not fell_back, f"phases without a colour of their own: {fell_back}"
    assert len(set(declared.values())) == len(declared)
    assert _closest(charts.PHASE_COLOURS) >= 20  # apart at a glance...
    for kind in ("deutan", "protan", "tritan"):  # ...and for colour-blind readers
        assert _closest(charts.PHASE_COLOURS, kind) >= 14, kind
    assert _closest({**charts.PHASE_COLOURS, "(other)": charts.OTHER_PHASE}) >= 15


def test_every_failure_reason_has_its_own_colour() -> None:
    reasons = {str(r) for r in FailureReason} | {"probe_error"}  # the probe itself broke
    fell_back = [r for r in reasons if charts.reason_colour(r) == charts.OTHER_REASON]
    assert not fell_back, f"reasons without a colour of their own: {fell_back}"
    assert len({charts.reason_colour(r) for r in reasons}) == len(reasons)
    assert _closest({**charts.REASON_COLOURS, "(other)": charts.OTHER_REASON}) >= 15


# Colour difference: CIEDE2000 on CIELAB (D65), colour-blindness simulated by Machado,
# Oliveira and Fernandes (2009) at full severity, in linear RGB.
_SIMULATE = {
    "deutan": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
               (-0.011820, 0.042940, 0.968881)),
    "protan": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216),
               (-0.003882, -0.048116, 1.051998)),
    "tritan": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602),
               (0.004733, 0.691367, 0.303900)),
}  # fmt: skip


def _lab(colour: str, vision: str | None = None) -> tuple[float, float, float]:
    rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    if vision is not None:
        m = _SIMULATE[vision]
        r, g, b = [min(max(m[i][0] * r + m[i][1] * g + m[i][2] * b, 0.0), 1.0) for i in range(3)]
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def _ciede2000(one: tuple[float, float, float], two: tuple[float, float, float]) -> float:
    (l1, a1, b1), (l2, a2, b2) = one, two
    c_mean = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_mean**7 / (c_mean**7 + 25**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    h1, h2 = math.degrees(math.atan2(b1, a1)) % 360, math.degrees(math.atan2(b2, a2)) % 360
    dh = 0.0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    d_l, d_c = l2 - l1, c2 - c1
    d_h = 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        h_mean = h1 + h2
    elif abs(h1 - h2) <= 180:
        h_mean = (h1 + h2) / 2
    else:
        h_mean = (h1 + h2 + (360 if h1 + h2 < 360 else -360)) / 2
    t = (1 - 0.17 * math.cos(math.radians(h_mean - 30)) + 0.24 * math.cos(math.radians(2 * h_mean))
         + 0.32 * math.cos(math.radians(3 * h_mean + 6))
         - 0.20 * math.cos(math.radians(4 * h_mean - 63)))  # fmt: skip
    rotation = -math.sin(math.radians(60 * math.exp(-(((h_mean - 275) / 25) ** 2)))) * (
        2 * math.sqrt(c_mean**7 / (c_mean**7 + 25**7))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    d_l, d_c, d_h = d_l / s_l, d_c / s_c, d_h / s_h
    return math.sqrt(d_l**2 + d_c**2 + d_h**2 + rotation * d_c * d_h)


def _closest(palette: Mapping[str, str], vision: str | None = None) -> float:
    """The smallest CIEDE2000 difference between two colours of `palette`."""
    return min(
        _ciede2000(_lab(a, vision), _lab(b, vision))
        for a, b in itertools.combinations(palette.values(), 2)
    )


def test_colour_difference_is_ciede2000() -> None:
    """Sharma, Wu and Dalal (2005), table 1: published pairs and their differences."""
    pairs = [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
        ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ]
    for one, two, expected in pairs:
        assert _ciede2000(one, two) == pytest.approx(expected, abs=1e-4)
