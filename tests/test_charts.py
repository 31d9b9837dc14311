"""probe.charts: the SVG the status pages draw, parsed back and measured.

Pure functions of history columns and cycles, so no server: the inputs are built here.
Every chart must be well-formed XML (an inline SVG a browser would otherwise repair or
drop), and what it draws must be where the numbers say.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from array import array

import pytest

from probe import charts
from probe.history import Column, Cycles
from probe.probers.grpc import Phase
from probe.result import FailureReason, ProbeResult

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
