"""Per-target history for the status pages and `/api/v1`: minute rows and recent traces.

A hub sink (`observe`) and listener (`follow`). For each target it keeps:

* one row per `--history.resolution` (default 1 m) for `--history.retention` (default
  24 h): attempts, failures (with their reasons), and the p50 and p99 of the whole cycle
  and of every phase the target's prober declares. Rows live in a ring of small integer
  arrays, grown as minutes arrive (nothing is allocated for minutes that never came):
  11 bytes a minute for gRPC's four every-cycle phases, 2 more once the target has
  failed, ~16-19 KiB for a full day. A phase a cycle runs only now and then (gRPC's
  info, once per connect-interval) costs no byte in a row, but 8 bytes each minute it
  ran. Latencies are kept as the index of a log-scale bucket 6.6 % wide (10 µs to
  100 s), which is what a chart or a p99 needs; counts are bytes, with exact counts in a
  small dict for a minute of more than 255 cycles; a minute's reasons are one byte, and
  a small dict only for the rare minute that failed for more than one reason.
* the minute in progress, exactly: counts per latency bucket (sparse), per reason.
* the last `--probe.history` cycles' full results (traces), and the last 20 failures,
  kept even when successes follow; each findable by its `trace_id`.
* when the target's current up/down state began.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from probe.config.settings import HistorySettings
from probe.hub import TargetDiff
from probe.probers import occasional_phases_of, phases_of
from probe.result import FailureReason, ProbeResult
from probe.targets import Target

FAILURE_TRACES = 20
"""Failed cycles kept per target, whatever followed them."""
WINDOWS = {"15m": 900.0, "1h": 3600.0, "6h": 21600.0, "24h": 86400.0}
"""The windows success ratios are given for, and the pages offer."""
TOTAL = "total"
"""The series name of the whole cycle, beside the phases."""

_LOW, _HIGH, _CODES = 1e-5, 100.0, 254
_STEP = math.log(_HIGH / _LOW) / (_CODES - 1)
_REASONS = list(FailureReason)
_REASON_CODE = {reason: i + 1 for i, reason in enumerate(_REASONS)}
_BYTE = 0xFF
"""A row's attempts and failures are bytes; a row with more cycles (one every 235 ms or
faster) keeps its exact counts in `_Track.large`."""


def latency_code(seconds: float) -> int:
    """The log-scale bucket (1..254) holding `seconds`; 0 means "no value"."""
    if not seconds > _LOW:
        return 1
    return 1 + min(round(math.log(seconds / _LOW) / _STEP), _CODES - 1)


_SECONDS: list[float | None] = [None, *(_LOW * math.exp(c * _STEP) for c in range(_CODES))]


def code_seconds(code: int) -> float | None:
    """The seconds a bucket stands for (its centre on the log scale); None for 0."""
    return _SECONDS[code]


def _quantile(counts: dict[int, int], q: float) -> int:
    """The bucket of the q-quantile (nearest rank) of sparse bucket counts; 0 when empty."""
    total = sum(counts.values())
    if not total:
        return 0
    rank, seen = max(1, math.ceil(q * total)), 0
    for code in sorted(counts):
        seen += counts[code]
        if seen >= rank:
            return code
    return max(counts)


@dataclass(frozen=True)
class Bucket:
    """One row of history: what the cycles that started in it came to."""

    start: float
    """Unix time the row begins."""
    attempts: int
    failures: dict[str, int]
    """Failed cycles by reason."""
    latency: dict[str, tuple[float | None, float | None]]
    """p50 and p99 seconds of the whole cycle (`total`) and of each phase."""

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass(frozen=True)
class Summary:
    """Where a target stands: its last cycle, since when, and its success ratios."""

    target: Target
    last: ProbeResult | None
    since: float | None
    """Unix time the current up/down state began (None before the first cycle)."""
    ratios: dict[str, float | None]
    """Success ratio per window name of WINDOWS; None when no cycle ran in it."""

    @property
    def up(self) -> bool:
        return self.last is not None and self.last.success


class Column(NamedTuple):
    """One column of a latency chart: a row of history, or several merged when the chart
    has fewer columns than the window has rows."""

    start: float
    """Unix time the column begins."""
    seconds: float
    """How long it spans."""
    attempts: int
    failures: dict[str, int]
    """Failed cycles by reason (empty when none failed)."""
    p50: float | None
    """The median of its rows' p50 of the whole cycle."""
    p99: float | None
    """The worst of its rows' p99 of the whole cycle."""

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass(frozen=True, slots=True)
class Cycles:
    """The last cycles of a target, oldest first, as the charts read them: no result is
    rebuilt. Cycle k started at `starts[k]`; `numbers[k * (1 + width)]` is its duration,
    then its phases' seconds in the order of `shapes[k].phases`; `shapes[k]` holds every
    other field (success, reason, failed phase)."""

    starts: Sequence[float]
    numbers: Sequence[float]
    width: int
    shapes: Sequence[ProbeResult]

    def __len__(self) -> int:
        return len(self.starts)

    def phases(self, k: int) -> Iterable[tuple[str, float]]:
        """Cycle k's (phase, seconds), in the order they ran."""
        shape = self.shapes[k]
        if len(shape.phases) > self.width:  # kept whole: more phases than the ring holds
            return shape.phases.items()
        at = k * (1 + self.width) + 1
        return zip(shape.phases, self.numbers[at : at + self.width], strict=False)

    def duration(self, k: int) -> float:
        return self.numbers[k * (1 + self.width)]


class _Traces:
    """The last `size` cycles' results, packed: a result that differs from the one before
    only in its id, times and phase seconds shares that one's "shape" (every other field)
    and costs ~70 bytes; one with a new shape is kept whole."""

    __slots__ = ("size", "width", "ids", "times", "seconds", "shapes", "head", "kinds")

    def __init__(self, size: int, width: int) -> None:
        self.size, self.width = size, width
        self.ids = array("Q")
        self.times = array("d")
        """Per trace: started_at (wall clock)."""
        self.seconds = array("f")
        """Per trace: duration, then up to `width` phase seconds in the shape's phase order."""
        self.shapes: list[ProbeResult] = []
        self.head = 0
        self.kinds: list[ProbeResult] = []
        """The last few distinct shapes, newest first (a success after a failure is
        likely shaped as the success before it)."""

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, result: ProbeResult) -> None:
        n = len(self.ids)
        shape = result
        if len(result.phases) <= self.width:
            key = _shape_key(result)
            for kind in self.kinds:
                if _shape_key(kind) == key:
                    shape = kind
                    break
        if shape is result:
            self.kinds = [result, *self.kinds[: _KINDS - 1]]
        try:
            trace_id = int(result.trace_id, 16)
        except ValueError:
            trace_id = 0  # not one of ours: findable only as the shape itself
            shape = result
        numbers = [result.duration, *result.phases.values()]
        numbers += [math.nan] * (1 + self.width - len(numbers))
        if n < self.size:
            self.ids.append(trace_id)
            self.times.append(result.started_at)
            self.seconds.extend(array("f", numbers[: 1 + self.width]))
            self.shapes.append(shape)
            return
        i = self.head
        self.ids[i], self.times[i], self.shapes[i] = trace_id, result.started_at, shape
        w = 1 + self.width
        self.seconds[i * w : (i + 1) * w] = array("f", numbers[:w])
        self.head = (i + 1) % self.size

    def _result(self, i: int) -> ProbeResult:
        shape, trace_id = self.shapes[i], self.ids[i]
        if shape.trace_id == f"{trace_id:016x}":
            return shape
        w = 1 + self.width
        numbers = self.seconds[i * w : (i + 1) * w]
        return dataclasses.replace(
            shape,
            trace_id=f"{trace_id:016x}",
            started_at=self.times[i],
            duration=numbers[0],
            phases=dict(zip(shape.phases, numbers[1:], strict=False)),
        )

    def last(self) -> ProbeResult | None:
        n = len(self.ids)
        return self._result((self.head - 1) % n) if n else None

    def results(self) -> list[ProbeResult]:
        """Oldest first."""
        n = len(self.ids)
        return [self._result((self.head + k) % n) for k in range(n)]

    def snapshot(self, last: int | None = None) -> Cycles:
        """The `last` cycles (all by default), oldest first, copied as arrays: what a chart
        needs, without rebuilding results."""
        h, w = self.head, 1 + self.width
        keep = len(self.ids) if last is None else min(max(last, 0), len(self.ids))
        skip = len(self.ids) - keep
        return Cycles(
            (self.times[h:] + self.times[:h])[skip:],
            (self.seconds[h * w :] + self.seconds[: h * w])[skip * w :],
            self.width,
            (self.shapes[h:] + self.shapes[:h])[skip:],
        )

    def find(self, trace_id: str) -> ProbeResult | None:
        try:
            wanted = int(trace_id, 16)
        except ValueError:
            return None
        for i, kept in enumerate(self.ids):
            if kept == wanted:
                return self._result(i)
        return None

    def resize(self, size: int) -> _Traces:
        resized = _Traces(size, self.width)
        for result in self.results()[-size:]:
            resized.append(result)
        return resized


_KINDS = 4
"""Distinct shapes a trace ring compares a new result with."""


def _shape_key(r: ProbeResult) -> tuple[object, ...]:
    """Everything of a result but its id, times and phase seconds."""
    return (
        r.alias, r.target, r.method, r.success, r.protocol, r.reason, r.failed_phase, r.error,
        r.status_code, r.addresses, r.dials, r.healthy, r.health_reasons, r.quota_states, r.version,
        r.server_info, r.facts, r.management, r.tls, r.visibility, tuple(r.phases),
    )  # fmt: skip


class _Track:
    """One target's history. Not thread-safe: History holds the lock.

    Rows are a ring of parallel arrays, oldest at `head`, newest the minute `latest`; a
    minute without cycles is a row of zeros, so row j of the ring (oldest first) is minute
    `latest - (len - 1 - j)` and no minute needs storing.
    """

    __slots__ = (
        "target", "series", "capacity", "attempts", "failures", "reason", "codes", "head",
        "latest", "mixed", "large", "open_minute", "open_attempts", "open_failures", "open_codes",
        "recent", "failed", "since", "up", "closed", "_totals", "dense", "rare", "rare_codes",
    )  # fmt: skip

    def __init__(self, target: Target, capacity: int, traces: int) -> None:
        self.target = target
        self.series: tuple[str, ...] = (TOTAL, *phases_of(target))
        self.capacity = capacity
        self.attempts = array("B")
        self.failures: array[int] | None = None
        """Failed cycles per row; None until a row has one (most targets never fail)."""
        self.reason: array[int] | None = None
        """The reason code of the row's failures (0: none, or several: see `mixed`)."""
        occasional = set(occasional_phases_of(target))
        self.dense = tuple(i for i, name in enumerate(self.series) if name not in occasional)
        """Indexes in `series` of the names every row keeps codes for."""
        self.rare = tuple(i for i, name in enumerate(self.series) if name in occasional)
        """Indexes of the phases a cycle runs only now and then (gRPC's info, once per
        connect-interval): a row keeps no bytes for them..."""
        self.rare_codes = array("Q")
        """...their codes are here, one entry per row and phase that had one, oldest first:
        minute << 24 | series index << 16 | p50 code << 8 | p99 code."""
        self.codes = array("B")
        """Per row, p50 then p99 latency codes for every `dense` series in turn."""
        self.head = 0
        self.latest: int | None = None
        """The minute of the newest row."""
        self.mixed: dict[int, dict[str, int]] = {}
        """Row minute → failures by reason, only for rows that failed for several reasons."""
        self.large: dict[int, tuple[int, int]] = {}
        """Row minute → exact (attempts, failures), only for rows of more than 255 cycles."""
        self.open_minute: int | None = None
        self.open_attempts = 0
        self.open_failures: dict[str, int] = {}
        self.open_codes: dict[int, int] = {}
        """Cycles of the open minute per (series index << 8 | latency code)."""
        width = len(self.series) - 1
        self.recent = _Traces(traces, width)
        self.failed = _Traces(FAILURE_TRACES, width)
        self.since: float | None = None
        self.up: bool | None = None
        self.closed = 0
        """Rows closed so far: the cache of window totals is good while it stays."""
        self._totals: tuple[int, int, dict[float, tuple[int, int]]] | None = None

    # ------------------------------------------------------------ writing

    def observe(self, result: ProbeResult, resolution: float) -> None:
        if self.up is None or self.up != result.success:
            self.since = result.started_at
        self.up = result.success
        self.recent.append(result)
        if not result.success:
            self.failed.append(result)
        minute = int(result.started_at // resolution)
        if self.open_minute is None:
            self._open(minute)
        elif minute > self.open_minute:
            self._close()
            self._open(minute)
        # An earlier minute (the wall clock stepped back) counts in the open one.
        self.open_attempts += 1
        if not result.success:
            reason = str(result.reason or FailureReason.ERROR)
            self.open_failures[reason] = self.open_failures.get(reason, 0) + 1
        counts = self.open_codes
        for index, name in enumerate(self.series):
            seconds = result.duration if index == 0 else result.phases.get(name)
            if seconds is not None:
                key = index << 8 | latency_code(seconds)
                counts[key] = counts.get(key, 0) + 1

    def _open(self, minute: int) -> None:
        self.open_minute = minute
        self.open_attempts = 0
        self.open_failures = {}
        self.open_codes = {}

    def _open_quantiles(self, series: int | None = None) -> list[int]:
        """p50 and p99 codes of the open minute, for every series in turn (or one)."""
        per_series: list[dict[int, int]] = [{} for _ in self.series]
        for key, count in self.open_codes.items():
            per_series[key >> 8][key & 0xFF] = count
        if series is not None:
            per_series = per_series[series : series + 1]
        return [_quantile(c, q) for c in per_series for q in (0.5, 0.99)]

    def _push(self, attempts: int, failures: int, reason: int, codes: array[int]) -> None:
        if failures and self.failures is None:
            self.failures = array("B", bytes(len(self.attempts)))
            self.reason = array("B", bytes(len(self.attempts)))
        if len(self.attempts) < self.capacity:
            self.attempts.append(attempts)
            self.codes.extend(codes)
            if self.failures is not None and self.reason is not None:
                self.failures.append(failures)
                self.reason.append(reason)
            if len(self.attempts) == self.capacity:  # full for good: drop the growth slack
                self.attempts, self.codes = array("B", self.attempts), array("B", self.codes)
                if self.failures is not None and self.reason is not None:
                    self.failures, self.reason = array("B", self.failures), array("B", self.reason)
            return
        i, w = self.head, len(codes)
        self.attempts[i] = attempts
        self.codes[i * w : (i + 1) * w] = codes
        if self.failures is not None and self.reason is not None:
            self.failures[i], self.reason[i] = failures, reason
        self.head = (i + 1) % self.capacity

    def _close(self) -> None:
        """Write the open minute into the ring, after a row of zeros for each minute skipped."""
        minute = self.open_minute
        assert minute is not None
        width = 2 * len(self.dense)
        if self.latest is not None:
            gap = minute - self.latest - 1
            if gap >= self.capacity:  # nothing kept is recent enough: start over
                self.attempts, self.codes, self.head = array("B"), array("B"), 0
                self.failures = self.reason = None
                self.rare_codes = array("Q")
            else:
                empty = array("B", bytes(width))
                for _ in range(max(gap, 0)):
                    self._push(0, 0, 0, empty)
        failures = sum(self.open_failures.values())
        reason = 0
        if len(self.open_failures) == 1:
            reason = _REASON_CODE.get(FailureReason(next(iter(self.open_failures))), 0)
        quantiles = self._open_quantiles()
        codes = array("B", [quantiles[2 * i + q] for i in self.dense for q in (0, 1)])
        for i in self.rare:
            if quantiles[2 * i]:
                self.rare_codes.append(
                    minute << 24 | i << 16 | quantiles[2 * i] << 8 | quantiles[2 * i + 1]
                )
        self._push(min(self.open_attempts, _BYTE), min(failures, _BYTE), reason, codes)
        if self.open_attempts > _BYTE:
            self.large[minute] = (self.open_attempts, failures)
        self.latest = minute
        if len(self.open_failures) > 1:
            self.mixed[minute] = dict(self.open_failures)
        oldest = minute - self.capacity + 1
        for kept in (self.mixed, self.large):
            for old in [m for m in kept if m < oldest]:
                del kept[old]
        gone = 0
        while gone < len(self.rare_codes) and self.rare_codes[gone] >> 24 < oldest:
            gone += 1
        if gone:
            del self.rare_codes[:gone]
        self.closed += 1

    # ------------------------------------------------------------ reading

    def _first(self, now_minute: int, window: float, resolution: float) -> int:
        """The first minute of a window ending now, never before the retention."""
        return now_minute - min(round(window / resolution), self.capacity) + 1

    def _ordered(self, values: array[int]) -> array[int]:
        """A copy of one of the row arrays, oldest row first."""
        return values[self.head :] + values[: self.head]

    def buckets(self, since_minute: int, resolution: float) -> list[Bucket]:
        """Rows with cycles from `since_minute` on, oldest first, the open minute last."""
        width = 2 * len(self.dense)
        out = []
        n = len(self.attempts)
        rare: dict[int, dict[int, tuple[int, int]]] = {}
        for entry in self.rare_codes:
            if entry >> 24 >= since_minute:
                rare.setdefault(entry >> 24, {})[entry >> 16 & 0xFF] = (
                    entry >> 8 & 0xFF,
                    entry & 0xFF,
                )
        if self.latest is not None:
            first = self.latest - n + 1
            for j in range(max(since_minute - first, 0), n):
                i = (self.head + j) % n
                if not self.attempts[i]:
                    continue
                minute = first + j
                failures: dict[str, int] = {}
                attempts = self.attempts[i]
                failed = self.failures[i] if self.failures is not None else 0
                if minute in self.large:
                    attempts, failed = self.large[minute]
                if failed and self.reason is not None:
                    mixed = self.mixed.get(minute)
                    if mixed is not None:
                        failures = dict(mixed)
                    else:
                        code = self.reason[i]
                        name = str(_REASONS[code - 1]) if code else str(FailureReason.ERROR)
                        failures = {name: failed}
                codes = self.codes[i * width : (i + 1) * width]
                pairs = {s: (codes[2 * k], codes[2 * k + 1]) for k, s in enumerate(self.dense)}
                pairs.update(rare.get(minute, {}))
                latency = {
                    name: (_SECONDS[pair[0]], _SECONDS[pair[1]])
                    for k, name in enumerate(self.series)
                    for pair in (pairs.get(k, (0, 0)),)
                }
                out.append(Bucket(minute * resolution, attempts, failures, latency))
        if self.open_minute is not None and self.open_minute >= since_minute:
            open_codes = self._open_quantiles()
            latency = {
                name: (_SECONDS[open_codes[2 * k]], _SECONDS[open_codes[2 * k + 1]])
                for k, name in enumerate(self.series)
            }
            out.append(
                Bucket(
                    self.open_minute * resolution,
                    self.open_attempts,
                    dict(self.open_failures),
                    latency,
                )
            )
        return out

    def columns(self, since_minute: int, per: int, resolution: float) -> list[Column]:
        """The whole cycle's latency from `since_minute` on, `per` rows to a column (aligned
        to multiples of `per` minutes, so a column holds the same rows from one page to
        the next), columns without cycles left out, the open minute in the last.

        Merged, counts add up, the p50 is the median of the rows' p50s and the p99 the
        worst row's (a wide column must not hide a bad minute). Read straight from the row
        arrays, a slice per column: this is what every status page draws for every target.
        """
        width = 2 * len(self.dense)  # the whole cycle is the first dense series
        n = len(self.attempts)
        out: list[Column] = []
        now: tuple[int, int, dict[str, int], int, int] | None = None
        """The open minute: its group, attempts, failures, p50 and p99 codes."""
        if self.open_minute is not None and self.open_minute >= since_minute:
            p50, p99 = self._open_quantiles(0)
            group = self.open_minute // per
            now = (group, self.open_attempts, dict(self.open_failures), p50, p99)
        if self.latest is not None and n:
            first = self.latest - n + 1
            h = self.head
            attempts = self.attempts[h:] + self.attempts[:h]
            codes = self.codes[h * width :] + self.codes[: h * width]
            p50s, p99s = codes[0::width], codes[1::width]
            failed = None if self.failures is None else self.failures[h:] + self.failures[:h]
            reasons = None if self.reason is None else self.reason[h:] + self.reason[:h]
            j = max(since_minute - first, 0)
            if (
                per == 1
                and not (failed is not None and any(failed[j:]))
                and not any(m >= first + j for m in self.large)
            ):
                out = [  # a row a column, no failure: the default page's case, in one go
                    _column(first + k, 1, resolution, count, _NONE, p50, p99)
                    for k, count, p50, p99 in zip(
                        range(j, n), attempts[j:], p50s[j:], p99s[j:], strict=True
                    )
                    if count
                ]
                j = n
            while j < n:
                group = (first + j) // per
                end = min((group + 1) * per - first, n)
                count = sum(attempts[j:end])
                if count:
                    failures: dict[str, int] = _NONE
                    if (failed is not None and any(failed[j:end])) or (
                        self.large and any(m in self.large for m in range(first + j, first + end))
                    ):
                        count, failures = self._exact(first, j, end, attempts, failed, reasons)
                    ranked, p99 = list(filter(None, p50s[j:end])), max(p99s[j:end])
                    if now is not None and now[0] == group:  # the open minute joins its rows
                        count += now[1]
                        failures = _added(failures, now[2])
                        ranked.append(now[3])
                        p99 = max(p99, now[4])
                        now = None
                    ranked.sort()
                    p50 = ranked[len(ranked) // 2] if ranked else 0
                    out.append(_column(group, per, resolution, count, failures, p50, p99))
                j = end
        if now is not None:
            out.append(_column(now[0], per, resolution, *now[1:]))
        return out

    def _exact(
        self,
        first: int,
        begin: int,
        end: int,
        attempts: array[int],
        failed: array[int] | None,
        reasons: array[int] | None,
    ) -> tuple[int, dict[str, int]]:
        """Cycles and failures by reason of rows `begin:end`, from the byte arrays and the
        exact counts of the rows a byte could not hold."""
        count, failures = 0, dict[str, int]()
        for j in range(begin, end):
            minute = first + j
            row_count = attempts[j]
            row_failed = failed[j] if failed is not None else 0
            if minute in self.large:
                row_count, row_failed = self.large[minute]
            count += row_count
            if not row_failed:
                continue
            mixed = self.mixed.get(minute)
            if mixed is None:
                code = reasons[j] if reasons is not None else 0
                name = str(_REASONS[code - 1] if code else FailureReason.ERROR)
                mixed = {name: row_failed}
            failures = _added(failures, mixed)
        return count, failures

    def totals(
        self, now_minute: int, windows: Iterable[float], resolution: float
    ) -> dict[float, tuple[int, int]]:
        """(attempts, failures) per window ending now: closed rows cached, the open one live."""
        windows = tuple(windows)
        cached = self._totals
        if cached is None or cached[0] != self.closed or cached[1] != now_minute:
            sums: dict[float, tuple[int, int]] = {}
            attempts = self._ordered(self.attempts)
            failures = self._ordered(self.failures) if self.failures is not None else array("B")
            n = len(attempts)
            for window in windows:
                first_wanted = self._first(now_minute, window, resolution)
                if self.latest is None:
                    sums[window] = (0, 0)
                    continue
                start = max(first_wanted - (self.latest - n + 1), 0)
                a, f = sum(attempts[start:]), sum(failures[start:])
                for minute, (exact_a, exact_f) in self.large.items():  # what a byte can't hold
                    if minute >= first_wanted:
                        a += exact_a - _BYTE
                        f += exact_f - min(exact_f, _BYTE)
                sums[window] = (a, f)
            cached = self._totals = (self.closed, now_minute, sums)
        out = dict(cached[2])
        if self.open_minute is not None:
            failed = sum(self.open_failures.values())
            for window in windows:
                if self.open_minute >= self._first(now_minute, window, resolution):
                    a, f = out.get(window, (0, 0))
                    out[window] = (a + self.open_attempts, f + failed)
        return out


_PER = (1, 2, 3, 5, 10, 15, 20, 30, 60, 120, 180, 360, 720, 1440)
"""Rows to a chart column: numbers of minutes a clock divides evenly."""
_NONE: dict[str, int] = {}
"""The failures of a row without any (shared: never written to)."""


def _column(
    group: int, per: int, resolution: float, count: int, failures: dict[str, int], p50: int,
    p99: int,
) -> Column:  # fmt: skip
    """Column `group` of `per` rows, its latencies given as bucket codes."""
    return Column(
        group * per * resolution, per * resolution, count, failures, _SECONDS[p50], _SECONDS[p99]
    )


def _added(failures: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Failures by reason of two counts together (a new dict: `_NONE` is never written)."""
    if not more:
        return failures
    out = dict(failures)
    for reason, count in more.items():
        out[reason] = out.get(reason, 0) + count
    return out


class History:
    """Every target's history. Thread-safe; `observe` is a few increments under a lock.

    `clock` is wall time (Unix seconds): rows are minutes of the day, as a person reads them.
    """

    def __init__(
        self,
        settings: HistorySettings,
        traces: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.traces = traces
        self.clock = clock
        self._lock = threading.Lock()
        self._tracks: dict[str, _Track] = {}

    # ------------------------------------------------------------ hub

    def follow(self, diff: TargetDiff) -> None:
        """A hub listener: a fresh history for added (and replaced) targets, none for removed."""
        with self._lock:
            came = {t.alias for t in diff.added}
            for target in diff.removed:
                if target.alias not in came:
                    self._tracks.pop(target.alias, None)
            for target in diff.added:
                self._tracks[target.alias] = _Track(target, self.settings.rows, self.traces)

    def observe(self, target: Target, result: ProbeResult) -> None:
        """A hub sink: count the cycle in its minute and keep its trace."""
        with self._lock:
            track = self._tracks.get(target.alias)
            if track is None or track.target.generation != target.generation:
                return
            track.target = target
            track.observe(result, self.settings.resolution)

    def configure(self, traces: int) -> None:
        """Keep `traces` recent cycles per target from now on (`--probe.history` reloaded)."""
        with self._lock:
            if traces == self.traces:
                return
            self.traces = traces
            for track in self._tracks.values():
                track.recent = track.recent.resize(traces)

    # ------------------------------------------------------------ reading

    def aliases(self) -> list[str]:
        with self._lock:
            return list(self._tracks)

    def summaries(self) -> list[Summary]:
        """Every target's summary, in the order targets came."""
        now_minute = int(self.clock() // self.settings.resolution)
        with self._lock:
            return [self._summary(t, now_minute) for t in self._tracks.values()]

    def summary(self, alias: str) -> Summary | None:
        now_minute = int(self.clock() // self.settings.resolution)
        with self._lock:
            track = self._tracks.get(alias)
            return None if track is None else self._summary(track, now_minute)

    def _summary(self, track: _Track, now_minute: int) -> Summary:
        totals = track.totals(now_minute, WINDOWS.values(), self.settings.resolution)
        ratios: dict[str, float | None] = {}
        for name, window in WINDOWS.items():
            attempts, failures = totals[window]
            ratios[name] = (attempts - failures) / attempts if attempts else None
        last = track.recent.last()
        return Summary(track.target, last, track.since, ratios)

    def buckets(self, alias: str, window: float) -> list[Bucket] | None:
        """The rows of the last `window` seconds, oldest first; None for an unknown alias."""
        resolution = self.settings.resolution
        now_minute = int(self.clock() // resolution)
        with self._lock:
            track = self._tracks.get(alias)
            if track is None:
                return None
            return track.buckets(track._first(now_minute, window, resolution), resolution)

    def columns(self, alias: str, window: float, columns: int) -> list[Column]:
        """The whole cycle's latency over the last `window` seconds in at most `columns`
        columns (rows merged by a whole number of minutes); [] for an unknown alias."""
        resolution = self.settings.resolution
        now_minute = int(self.clock() // resolution)
        rows = min(round(window / resolution), self.settings.rows)
        per = next((p for p in _PER if rows <= p * columns), math.ceil(rows / columns))
        with self._lock:
            track = self._tracks.get(alias)
            if track is None:
                return []
            return track.columns(track._first(now_minute, window, resolution), per, resolution)

    def cycles(self, alias: str, last: int | None = None) -> Cycles:
        """The last cycles kept (at most `last`), oldest first, for the charts (none for an
        unknown alias)."""
        with self._lock:
            track = self._tracks.get(alias)
            if track is None:
                return Cycles((), (), 0, ())
            return track.recent.snapshot(last)

    def series(self, alias: str) -> tuple[str, ...]:
        """`total` and the phases a target's rows carry (empty for an unknown alias)."""
        with self._lock:
            track = self._tracks.get(alias)
            return () if track is None else track.series

    def recent(self, alias: str) -> list[ProbeResult]:
        """The last cycles' results, oldest first."""
        with self._lock:
            track = self._tracks.get(alias)
            return [] if track is None else track.recent.results()

    def failures(self, alias: str) -> list[ProbeResult]:
        """The last failed cycles' results (at most FAILURE_TRACES), oldest first."""
        with self._lock:
            track = self._tracks.get(alias)
            return [] if track is None else track.failed.results()

    def trace(self, trace_id: str) -> ProbeResult | None:
        """The cycle with `trace_id`, while some target still keeps it."""
        with self._lock:
            for track in self._tracks.values():
                for kept in (track.recent, track.failed):
                    found = kept.find(trace_id)
                    if found is not None:
                        return found
        return None
