"""The scheduler on a fake clock: phases, the first round's spread, missed slots, re-timing.

The scheduler's timer thread runs for real; only time is fake. `Rig.at(t)` moves the
clock to `t`, wakes the timer thread (`update()` with the same targets notifies it), waits
for the pass that sees `t` (the heartbeat marks the top of every pass) and for the cycles
it started (`join_workers`). The random phases come from a scripted `rng`.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Iterator

import pytest

from probe.scheduler import Scheduler
from probe.targets import Target
from tests.support import target, wait_until


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedRng(random.Random):
    """`uniform(a, b)` answers the scripted fractions of [a, b], in order."""

    def __init__(self, *fractions: float) -> None:
        super().__init__(0)
        self.fractions = list(fractions)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fractions.pop(0)


def make(alias: str, interval: float) -> Target:
    return target(alias=alias, uri="127.0.0.1:1",
                  **{"probe.interval": f"{interval}s", "probe.timeout": "100ms"})


class Rig:
    def __init__(self, rng: random.Random, workers: int = 4) -> None:
        self.clock = FakeClock()
        self.runs: list[tuple[float, str]] = []
        self.missed: list[tuple[float, str]] = []
        self.lags: list[float] = []
        self.blocked: dict[str, threading.Event] = {}
        self.passes = 0
        self._seen = 0
        self.targets: list[Target] = []
        self._lock = threading.Lock()
        self.scheduler = Scheduler(
            self._run, workers=workers, heartbeat=self._beat, on_lag=self.lags.append,
            on_missed=lambda t: self.missed.append((self.clock(), t.alias)),
            clock=self.clock, rng=rng)

    def _beat(self) -> None:
        with self._lock:
            self.passes += 1

    def _run(self, t: Target) -> None:
        with self._lock:
            self.runs.append((self.clock(), t.alias))
        gate = self.blocked.get(t.alias)
        if gate is not None:
            gate.wait(10)

    def update(self, targets: list[Target]) -> None:
        self.targets = targets
        self.scheduler.update(targets)

    def at(self, now: float, running: tuple[str, ...] | None = None) -> list[str]:
        """Move the clock to `now`; the aliases run since the last call, sorted.

        Waits for the pass that saw `now`, then for every cycle to finish; or, with
        `running` (cycles that hang), until those have started.
        """
        self.clock.now = now
        with self._lock:
            before = self.passes
        self.scheduler.update(self.targets)  # wakes the timer thread
        wait_until(lambda: self.passes > before, 5, f"a pass at t={now}")
        # The pass holds the scheduler's lock: join_workers gets it once the pass is over.
        if running is None:
            assert self.scheduler.join_workers(5), "cycles still running"
        else:
            self.scheduler.join_workers(0)
            wait_until(lambda: set(running) <= set(self._since()), 5, f"{running} to start")
        with self._lock:
            new, self._seen = self.runs[self._seen:], len(self.runs)
        return sorted(alias for _, alias in new)

    def _since(self) -> list[str]:
        with self._lock:
            return [alias for _, alias in self.runs[self._seen:]]

    def times(self, alias: str) -> list[float]:
        return [t for t, a in self.runs if a == alias]


RigFactory = Callable[[random.Random], Rig]


@pytest.fixture
def rig() -> Iterator[RigFactory]:
    made: list[Rig] = []

    def start(rng: random.Random) -> Rig:
        r = Rig(rng)
        made.append(r)
        r.scheduler.start()
        return r

    yield start
    for r in made:
        for gate in r.blocked.values():
            gate.set()
        r.scheduler.stop()


def test_first_round_within_the_spread_then_every_interval_on_each_phase(rig: RigFactory) -> None:
    # Per target: its phase (fraction of the interval), then its first-round offset
    # (fraction of the spread: 3 targets / 500 = 6 ms).
    r = rig(ScriptedRng(0.2, 0.0, 0.5, 0.5, 0.8, 1.0))
    r.update([make("a", 10), make("b", 10), make("c", 10)])
    assert r.at(0.0) == ["a"]
    assert r.at(0.003) == ["b"]
    assert r.at(0.006) == ["c"]  # the whole first round within 6 ms
    assert r.at(9.0) == []
    # Then on each target's own phase of the interval, not first run + interval.
    assert r.at(12.0) == ["a"]
    assert r.at(15.0) == ["b"]
    assert r.at(17.9) == []
    assert r.at(18.0) == ["c"]
    assert r.at(22.0) == ["a"]
    assert r.times("a") == [0.0, 12.0, 22.0]
    assert r.missed == []
    assert r.lags == [0.0] * len(r.runs)  # every cycle started on its slot


def test_one_target_fires_at_once_a_thousand_spread_over_a_second(rig: RigFactory) -> None:
    one = rig(random.Random(1))
    one.update([make("solo", 30)])
    assert one.at(0.002) == ["solo"]  # spread: 1 target / 500 = 2 ms

    many = rig(random.Random(2))
    many.update([make(f"t{i}", 30) for i in range(1000)])
    by_half = len(many.at(0.5))
    assert 300 < by_half < 700, by_half  # spread over the second, not all at once
    assert by_half + len(many.at(1.0)) == 1000  # and all within it (first_round_spread)
    assert many.missed == []


def test_a_cycle_still_running_misses_its_slots_and_runs_again_after(rig: RigFactory) -> None:
    r = rig(ScriptedRng(0.5, 0.0))
    r.blocked["slow"] = gate = threading.Event()
    r.update([make("slow", 1)])
    assert r.at(0.0, running=("slow",)) == ["slow"]  # the first cycle hangs
    for slot in (1.5, 2.5, 3.5):
        assert r.at(slot, running=()) == []
    assert r.missed == [(1.5, "slow"), (2.5, "slow"), (3.5, "slow")]
    gate.set()
    assert r.scheduler.join_workers(5)
    assert r.at(4.5) == ["slow"]  # back on its slots, no extra run for the missed ones
    assert r.times("slow") == [0.0, 4.5]
    assert len(r.missed) == 3


def test_no_catch_up_burst_after_the_timer_falls_behind(rig: RigFactory) -> None:
    r = rig(ScriptedRng(0.5, 0.0))
    r.update([make("x", 1)])
    assert r.at(0.0) == ["x"]
    assert r.at(1.5) == ["x"]
    # The timer thread wakes 4.3 s late (a stalled process): one cycle, for the slot due
    # at 2.5, and the four slots already past (3.5 … 6.5) are counted missed.
    assert r.at(6.8) == ["x"]
    assert r.missed == [(6.8, "x")] * 4
    assert r.lags[-1] == pytest.approx(6.8 - 2.5)
    assert r.at(7.4) == []
    assert r.at(7.5) == ["x"]  # the phase grid again
    assert len(r.missed) == 4


def test_an_interval_change_re_times_the_target_and_drops_its_queued_slot(rig: RigFactory) -> None:
    r = rig(ScriptedRng(0.2, 0.0, 0.25))
    r.update([make("a", 10)])
    assert r.at(0.0) == ["a"]
    assert r.at(12.0) == ["a"]  # next slot queued for 22
    r.update([dataclasses.replace(make("a", 10), interval=4.0)])
    # A new phase (0.25 × 4 s) from the change on: 13, 17, 21, 25 …; 22 never comes.
    assert r.at(12.9) == []
    assert r.at(13.0) == ["a"]
    assert r.at(17.0) == ["a"]
    assert r.at(21.0) == ["a"]
    assert r.at(22.0) == []
    assert r.at(25.0) == ["a"]
    assert r.times("a") == [0.0, 12.0, 13.0, 17.0, 21.0, 25.0]
    assert r.missed == []


def test_the_same_interval_keeps_the_slot(rig: RigFactory) -> None:
    r = rig(ScriptedRng(0.2, 0.0))
    r.update([make("a", 10)])
    assert r.at(0.0) == ["a"]
    r.update([dataclasses.replace(make("a", 10), timeout=0.5)])  # settings other than interval
    assert r.at(11.9) == []
    assert r.at(12.0) == ["a"]


def test_a_removed_target_never_runs_again_nor_misses_slots(rig: RigFactory) -> None:
    r = rig(ScriptedRng(0.2, 0.0, 0.6, 0.0))
    r.blocked["gone"] = gate = threading.Event()
    r.update([make("keep", 1), make("gone", 1)])
    assert r.at(0.0, running=("gone", "keep")) == ["gone", "keep"]
    assert r.at(1.2, running=("keep",)) == ["keep"]
    r.update([make("keep", 1)])  # gone is removed mid-cycle, its 1.6 slot queued
    gate.set()
    assert r.scheduler.join_workers(5)
    for now in (1.6, 2.2, 2.6, 3.2, 3.6):
        r.at(now)
    assert r.times("gone") == [0.0]
    assert r.times("keep") == [0.0, 1.2, 2.2, 3.2]
    assert r.missed == []
