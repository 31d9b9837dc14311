"""probe.history on a fake clock: minute rows, retention, percentiles, traces kept.

No server is needed: results are built here the way the gRPC prober builds them, with
the times a test chooses (`started_at` decides the minute; `clock` decides "now").
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest

from probe.config.settings import HistorySettings
from probe.history import FAILURE_TRACES, History, code_seconds, latency_code
from probe.hub import Hub, TargetDiff
from probe.probers.grpc import GrpcFacts, Phase
from probe.result import FailureReason, ProbeResult, RpcMethod
from probe.targets import Target
from tests.support import target

T0 = 1_700_000_040.0
"""A minute boundary (Unix time), where the tests' days begin."""
STEP = 0.066
"""Relative width of a latency bucket: p50/p99 come back within half of it."""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def cycle(t: Target, at: float, duration: float = 0.002, **fields: Any) -> ProbeResult:
    values: dict[str, Any] = {
        "alias": t.alias,
        "target": t.address,
        "method": RpcMethod.CHECK_HEALTH.value,
        "started_at": at,
        "duration": duration,
        "phases": {Phase.RESOLVE: duration / 4, Phase.CONNECT: duration / 4,
                   Phase.RPC: duration / 4, Phase.CLOSE: duration / 4},  # fmt: skip
        "success": True,
        "addresses": ("127.0.0.1",),
        "healthy": True,
        "quota_states": (),
        "facts": GrpcFacts(rpc=RpcMethod.CHECK_HEALTH),
    }
    if "reason" in fields:
        values.update(success=False, failed_phase=Phase.CONNECT, error=f"{fields['reason']}",
                      healthy=None, quota_states=None)  # fmt: skip
        values["phases"] = {Phase.RESOLVE: duration / 2, Phase.CONNECT: duration / 2}
    values.update(fields)
    return ProbeResult(**values)


def failure(t: Target, at: float, reason: FailureReason = FailureReason.REFUSED) -> ProbeResult:
    return cycle(t, at, 0.0005, reason=reason)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def history_of(clock: Clock, *targets: Target, retention: str = "24h", traces: int = 60) -> History:
    seconds = {"24h": 86400.0, "5m": 300.0}[retention]
    h = History(HistorySettings(retention=seconds, resolution=60.0), traces, clock=clock)
    h.follow(TargetDiff(added=targets, removed=(), current=targets, first_round=True))
    return h


A = target(alias="a", host="10.0.0.1")
B = target(alias="b/pod-0", host="10.0.0.2")


def test_latency_buckets_round_trip_within_half_a_step() -> None:
    for seconds in (1e-5, 3.3e-4, 0.0021, 0.5, 7.0, 99.0):
        back = code_seconds(latency_code(seconds))
        assert back is not None and back == pytest.approx(seconds, rel=STEP / 2)
    assert code_seconds(0) is None
    assert latency_code(0.0) == 1 and latency_code(1e6) == 254


def test_cycles_fall_into_their_minute_and_the_minute_rolls_over(clock: Clock) -> None:
    h = history_of(clock, A)
    for k in range(6):  # minute 0: six cycles, two refused
        h.observe(A, failure(A, T0 + k * 10) if k in (2, 3) else cycle(A, T0 + k * 10))
    h.observe(A, cycle(A, T0 + 61, 0.004))  # minute 1 (still open)
    clock.now = T0 + 70
    rows = h.buckets("a", 3600)
    assert rows is not None and [r.start for r in rows] == [T0, T0 + 60]
    first, second = rows
    assert (first.attempts, first.failures) == (6, {"refused": 2})
    assert (second.attempts, second.failures) == (1, {})
    assert second.latency["total"][0] == pytest.approx(0.004, rel=STEP / 2)
    # The open minute is part of the answer, and a later cycle closes it.
    h.observe(A, failure(A, T0 + 185, FailureReason.TIMEOUT))
    clock.now = T0 + 190
    rows = h.buckets("a", 3600)
    assert rows is not None
    assert [r.start for r in rows] == [T0, T0 + 60, T0 + 180]  # minute 2 had no cycle
    assert rows[-1].failures == {"timeout": 1}


def test_a_minute_with_several_reasons_keeps_them_all(clock: Clock) -> None:
    h = history_of(clock, A)
    h.observe(A, failure(A, T0, FailureReason.REFUSED))
    h.observe(A, failure(A, T0 + 10, FailureReason.DNS))
    h.observe(A, failure(A, T0 + 20, FailureReason.DNS))
    h.observe(A, cycle(A, T0 + 60))  # closes minute 0
    clock.now = T0 + 61
    rows = h.buckets("a", 900)
    assert rows is not None and rows[0].failures == {"refused": 1, "dns": 2}


def test_a_minute_of_more_than_255_cycles_keeps_exact_counts(clock: Clock) -> None:
    h = history_of(clock, A)
    for k in range(300):  # one every 200 ms, the last 260 refused
        h.observe(A, failure(A, T0 + k * 0.2) if k >= 40 else cycle(A, T0 + k * 0.2))
    h.observe(A, cycle(A, T0 + 60))  # closes the minute into a row of bytes
    clock.now = T0 + 61
    rows = h.buckets("a", 900)
    assert rows is not None
    assert (rows[0].attempts, rows[0].failures) == (300, {"refused": 260})
    summary = h.summary("a")
    assert summary is not None and summary.ratios["15m"] == pytest.approx(41 / 301)


def test_p50_and_p99_of_a_minute(clock: Clock) -> None:
    h = history_of(clock, A)
    durations = [(k + 1) / 1000 for k in range(100)]  # 1 ms .. 100 ms
    for k, seconds in enumerate(reversed(durations)):
        h.observe(A, cycle(A, T0 + k * 0.5, seconds))
    h.observe(A, cycle(A, T0 + 60))  # close it: the stored row, not the open counts
    clock.now = T0 + 61
    rows = h.buckets("a", 900)
    assert rows is not None
    p50, p99 = rows[0].latency["total"]
    assert p50 == pytest.approx(0.050, rel=STEP / 2)
    assert p99 == pytest.approx(0.099, rel=STEP / 2)
    rpc50, rpc99 = rows[0].latency[Phase.RPC]
    assert rpc50 == pytest.approx(0.0125, rel=STEP / 2)
    assert rpc99 == pytest.approx(0.02475, rel=STEP / 2)
    assert rows[0].latency[Phase.INFO] == (None, None)  # declared, never ran


def test_success_ratios_per_window_and_none_without_cycles(clock: Clock) -> None:
    h = history_of(clock, A, B)
    # Two hours ago: 10 failures; the last 10 minutes: 10 successes, one per minute.
    for k in range(10):
        h.observe(A, failure(A, T0 + k))
    for k in range(10):
        h.observe(A, cycle(A, T0 + 7200 + k * 60))
    clock.now = T0 + 7200 + 9 * 60 + 30
    summary = h.summary("a")
    assert summary is not None
    assert summary.ratios == {"15m": 1.0, "1h": 1.0, "6h": 0.5, "24h": 0.5}
    assert summary.up and summary.since == T0 + 7200
    other = h.summary("b/pod-0")
    assert other is not None
    assert other.ratios == {"15m": None, "1h": None, "6h": None, "24h": None}
    assert other.last is None and other.since is None and not other.up
    # A day later the failures have left every window, the successes too.
    clock.now += 86400 - 300
    summary = h.summary("a")
    assert summary is not None and summary.ratios["24h"] == 1.0
    clock.now += 3600
    assert h.summary("a").ratios["24h"] is None  # type: ignore[union-attr]


def test_retention_keeps_only_the_last_rows(clock: Clock) -> None:
    h = history_of(clock, A, retention="5m")
    for minute in range(12):
        h.observe(A, failure(A, T0 + minute * 60) if minute < 6 else cycle(A, T0 + minute * 60))
    clock.now = T0 + 11 * 60 + 5
    rows = h.buckets("a", 86400)
    assert rows is not None
    # Five minutes, the one in progress (11) included.
    assert [r.start for r in rows] == [T0 + m * 60 for m in range(7, 12)]
    assert all(not r.failures for r in rows)
    assert h.summary("a").ratios["24h"] == 1.0  # type: ignore[union-attr]
    # A silence longer than the retention: nothing old comes back.
    h.observe(A, failure(A, T0 + 30 * 60))
    clock.now = T0 + 30 * 60 + 1
    rows = h.buckets("a", 86400)
    assert rows is not None and [r.start for r in rows] == [T0 + 30 * 60]


def test_the_last_failures_stay_when_successes_follow(clock: Clock) -> None:
    h = history_of(clock, A, traces=10)
    failed = [failure(A, T0 + k, FailureReason.TIMEOUT) for k in range(FAILURE_TRACES + 5)]
    for result in failed:
        h.observe(A, result)
    ok = [cycle(A, T0 + 100 + k, 0.001 + k / 1e5) for k in range(50)]
    for result in ok:
        h.observe(A, result)
    kept = h.failures("a")
    assert [r.trace_id for r in kept] == [r.trace_id for r in failed[-FAILURE_TRACES:]]
    assert all(r.reason is FailureReason.TIMEOUT and r.error == "timeout" for r in kept)
    recent = h.recent("a")
    assert [r.trace_id for r in recent] == [r.trace_id for r in ok[-10:]]
    # What comes back is the cycle that was observed (seconds kept as 32-bit floats).
    for got, sent in zip(recent, ok[-10:], strict=True):
        assert got.started_at == sent.started_at and got.success
        assert got.duration == pytest.approx(sent.duration, rel=1e-6)
        assert list(got.phases) == list(sent.phases)
        assert all(math.isclose(got.phases[p], sent.phases[p], rel_tol=1e-6) for p in got.phases)
        assert (got.addresses, got.healthy, got.facts) == (sent.addresses, True, sent.facts)
    # Found by id while kept; gone once pushed out of both.
    assert h.trace(failed[-1].trace_id) == kept[-1]
    assert h.trace(ok[-1].trace_id) is not None
    assert h.trace(failed[0].trace_id) is None
    assert h.trace(ok[0].trace_id) is None
    assert h.trace("not-hex") is None
    summary = h.summary("a")
    assert summary is not None and summary.since == T0 + 100 and summary.last is not None
    assert summary.last.trace_id == ok[-1].trace_id


def test_fewer_traces_on_reload_keeps_the_newest(clock: Clock) -> None:
    h = history_of(clock, A, traces=10)
    results = [cycle(A, T0 + k) for k in range(10)]
    for result in results:
        h.observe(A, result)
    h.configure(3)
    assert [r.trace_id for r in h.recent("a")] == [r.trace_id for r in results[-3:]]


def test_the_last_cycles_are_kept_with_their_reasons(clock: Clock) -> None:
    """The one store of recent cycles: what health's own deque used to keep (trace pages
    sum these up)."""
    h = history_of(clock, A, traces=60)
    h.configure(3)
    for k, reason in enumerate((None, FailureReason.DNS, None, FailureReason.TLS)):
        h.observe(A, cycle(A, T0 + k) if reason is None else failure(A, T0 + k, reason))
    assert [e.reason for e in h.recent("a")] == [FailureReason.DNS, None, FailureReason.TLS]


def test_removed_and_replaced_targets_start_over(clock: Clock) -> None:
    """Behind a real hub: a target is its generation, whatever its alias."""
    h = History(HistorySettings(retention=86400.0, resolution=60.0), clock=clock)
    hub = Hub()
    hub.listen(h.follow)
    hub.update([A, B], first_round=True)
    a, b = hub.pick("a"), hub.pick("b/pod-0")
    h.observe(a, failure(a, T0))
    h.observe(b, failure(b, T0))
    moved = target(alias="a", host="10.0.0.9")
    hub.update([moved])
    assert h.aliases() == ["a"] and h.buckets("b/pod-0", 900) is None
    assert h.buckets("a", 900) == [] and h.failures("a") == []
    h.observe(a, failure(a, T0 + 1))  # a late result of the old "a": not the new one's
    assert h.failures("a") == []
    renamed = dataclasses.replace(hub.pick("a"), generation=0)  # same settings, no identity
    h.observe(renamed, failure(renamed, T0 + 2))
    assert h.failures("a") == []
    h.observe(hub.pick("a"), failure(moved, T0 + 3))
    assert len(h.failures("a")) == 1


def columns_from_rows(rows: list[Any], per: int) -> list[tuple[Any, ...]]:
    """What the chart's columns must be, worked out from the rows (`buckets`) instead."""
    groups: dict[int, list[Any]] = {}
    for row in rows:
        groups.setdefault(int(row.start // 60) // per, []).append(row)
    out = []
    for group, members in groups.items():
        failures: dict[str, int] = {}
        for row in members:
            for reason, count in row.failures.items():
                failures[reason] = failures.get(reason, 0) + count
        p50s = sorted(row.latency["total"][0] for row in members)
        p99 = max(row.latency["total"][1] for row in members)
        out.append((group * per * 60.0, per * 60.0, sum(r.attempts for r in members), failures,
                    p50s[len(p50s) // 2], p99))  # fmt: skip
    return out


@pytest.mark.parametrize(("window", "columns", "per"), [
    (900, 300, 1), (3600, 300, 1), (10800, 300, 1), (10800, 20, 10), (10800, 7, 30),
    (86400, 96, 15),
])  # fmt: skip
def test_chart_columns_are_the_rows_merged(
    clock: Clock, window: float, columns: int, per: int
) -> None:
    """The status page reads columns straight from the row arrays; they must say what the
    rows (the JSON API's buckets) say, merged `per` to a column: counts added, the worst
    p99, the median p50, failures by reason; the open minute in its column."""
    h = history_of(clock, A)
    rnd = random.Random(5)
    reasons = [FailureReason.REFUSED, FailureReason.TIMEOUT, FailureReason.DNS]
    minute = latest = 0
    while minute < 200:
        if rnd.random() < 0.08:  # minutes without a cycle, alone or in a run
            minute += rnd.choice((1, 1, 7))
            continue
        busy = 300 if minute == 123 else rnd.choice((1, 3, 6))  # one row a byte can't hold
        for k in range(busy):
            at = T0 + minute * 60 + k * 60 / busy
            if rnd.random() < 0.15 and minute < 180:  # the last 20 minutes all succeed
                h.observe(A, failure(A, at, rnd.choice(reasons)))
            else:
                h.observe(A, cycle(A, at, rnd.uniform(0.0005, 0.05)))
        latest = minute
        minute += 1
    h.observe(A, cycle(A, T0 + latest * 60 + 58, 0.09))  # the slowest, in the open minute
    clock.now = T0 + latest * 60 + 59  # the last minute is still open
    rows = h.buckets("a", window)
    assert rows is not None and rows[-1].start == T0 + latest * 60
    got = h.columns("a", window, columns)
    assert {c.seconds for c in got} == {per * 60.0}
    assert [tuple(c) for c in got] == columns_from_rows(rows, per)
    if window > 1200:
        assert any(c.failures for c in got)
    if window >= 10800:
        assert any(sum(c.failures.values()) and c.attempts > 255 for c in got)  # exact counts
    assert h.columns("nope", window, columns) == []


def test_chart_cycles_are_the_traces_without_rebuilding_them(clock: Clock) -> None:
    h = history_of(clock, A, traces=10)
    sent = [
        failure(A, T0 + k, FailureReason.DNS) if k % 7 == 3 else cycle(A, T0 + k, 0.001 + k / 1e4)
        for k in range(25)
    ]  # the ring wraps twice; failures have fewer phases than successes
    for result in sent:
        h.observe(A, result)
    for last, expected in ((None, sent[-10:]), (4, sent[-4:]), (0, [])):
        cycles = h.cycles("a", last)
        assert len(cycles) == len(expected)
        for k, result in enumerate(expected):
            assert cycles.starts[k] == result.started_at
            assert cycles.duration(k) == pytest.approx(result.duration, rel=1e-6)
            assert [p for p, _ in cycles.phases(k)] == list(result.phases)
            assert [s for _, s in cycles.phases(k)] == pytest.approx(
                list(result.phases.values()), rel=1e-6
            )
            shape = cycles.shapes[k]
            assert (shape.success, shape.reason) == (result.success, result.reason)
    assert len(h.cycles("nope")) == 0


def test_an_occasional_phase_is_kept_aside_and_read_back_in_its_rows(clock: Clock) -> None:
    """gRPC's info phase runs once per connect-interval: rows keep no bytes for it, yet
    the minutes it ran show its p50/p99 and the others none; old entries leave with
    their rows."""
    h = history_of(clock, A, retention="5m")
    for minute in range(12):
        at = T0 + minute * 60
        if minute % 4 == 0:  # an info phase in minutes 0, 4 and 8
            phases = {Phase.RESOLVE: 0.0001, Phase.CONNECT: 0.001, Phase.RPC: 0.001,
                      Phase.INFO: 0.004, Phase.CLOSE: 0.0001}  # fmt: skip
            h.observe(A, cycle(A, at, 0.0062, phases=phases))
        h.observe(A, cycle(A, at + 30))
    clock.now = T0 + 11 * 60 + 40
    rows = h.buckets("a", 86400)
    assert rows is not None and [r.start for r in rows] == [T0 + m * 60 for m in range(7, 12)]
    info = {int((r.start - T0) // 60): r.latency[Phase.INFO] for r in rows}
    assert info[8][0] == pytest.approx(0.004, rel=STEP / 2)
    assert all(info[m] == (None, None) for m in (7, 9, 10, 11))
    assert rows[1].latency[Phase.RPC] == pytest.approx((0.0005, 0.001), rel=STEP / 2)
    track = h._tracks["a"]
    assert len(track.codes) == 5 * 5 * 2  # five rows of p50, p99 of total and four phases
    assert [entry >> 24 for entry in track.rare_codes] == [int(T0 // 60) + 8]  # 0, 4: gone
    h.observe(A, cycle(A, T0 + 11 * 60 + 50, 0.0062, phases=phases))  # in the open minute
    rows = h.buckets("a", 900)
    assert rows is not None and rows[-1].latency[Phase.INFO][1] == pytest.approx(0.004, rel=STEP)
