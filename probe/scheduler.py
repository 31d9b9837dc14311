"""When each target is probed: one timer thread, a bounded pool of workers.

Each target runs every `interval` on its own phase (a random offset inside the
interval), so targets don't fire together. The first round runs within
`first_round_spread` seconds of start, so readiness doesn't wait a whole interval.
A target whose previous cycle is still running skips a slot rather than queueing
(counted as missed); a hung cycle never delays other targets, because every cycle
is bounded by its timeout and the pool has a worker per connection slot.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from probe.targets import Target

logger = logging.getLogger(__name__)

HEARTBEAT_PERIOD = 1.0
"""The timer thread wakes at least this often, and beats the liveness heartbeat."""


@dataclass
class _Entry:
    target: Target
    generation: int
    phase: float
    """Offset of this target's slot inside its interval."""
    next_due: float
    second_due: float | None = None
    """After the (spread) first run, the first slot on the target's own phase."""
    running: bool = False


class Scheduler:
    """Runs `run(target)` for every target on its schedule, on at most `workers` threads."""

    def __init__(
        self,
        run: Callable[[Target], None],
        *,
        workers: int,
        heartbeat: Callable[[], None] = lambda: None,
        on_lag: Callable[[float], None] = lambda seconds: None,
        on_missed: Callable[[Target], None] = lambda target: None,
        on_crash: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        first_round_spread: float = 1.0,
    ) -> None:
        self._run = run
        self._heartbeat = heartbeat
        self._on_lag = on_lag
        self._on_missed = on_missed
        self._on_crash = on_crash
        self._clock = clock
        self._rng = rng or random.Random()
        self._spread = first_round_spread
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._generation = 0
        self._stopping = False
        self._in_flight = 0
        self._joiners = 0
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    # ----------------------------------------------------------- targets

    def update(self, targets: Iterable[Target]) -> None:
        """Follow a new target list: add, drop, or re-time targets by alias."""
        now = self._clock()
        with self._cond:
            wanted = {t.alias: t for t in targets}
            for alias in list(self._entries):
                if alias not in wanted:
                    del self._entries[alias]
            for alias, target in wanted.items():
                entry = self._entries.get(alias)
                if entry is not None and entry.target.interval == target.interval:
                    entry.target = target
                    continue
                self._generation += 1
                phase = self._rng.uniform(0, target.interval)
                if entry is None:
                    # Spread the first round by how many targets arrive together
                    # (2 ms each, at most first_round_spread): one target fires at once,
                    # thousands don't all fire in the same second.
                    spread = min(self._spread, target.interval, len(wanted) / 500)
                    first = now + self._rng.uniform(0, spread)
                    entry = _Entry(
                        target, self._generation, phase, first, now + phase + target.interval
                    )
                    self._entries[alias] = entry
                else:  # the interval changed: a new slot; old queued slots go stale
                    entry.target, entry.generation = target, self._generation
                    entry.phase, entry.next_due, entry.second_due = phase, now + phase, None
                self._push(entry)
            self._cond.notify()

    def _push(self, entry: _Entry) -> None:
        self._seq += 1
        heapq.heappush(
            self._heap, (entry.next_due, self._seq, entry.target.alias, entry.generation)
        )

    # ----------------------------------------------------------- running

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop scheduling; don't wait for cycles in flight beyond `timeout`."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def join_workers(self, timeout: float) -> bool:
        """Wait until no cycle is running; False if some still are after `timeout`."""
        with self._cond:
            return self._wait_idle(timeout)

    @contextlib.contextmanager
    def held_idle(self, timeout: float) -> Iterator[bool]:
        """Hold the schedule at a moment no cycle runs: inside, nothing is dispatched and
        nothing finishes, so whatever is counted there belongs to no cycle (the soak test's
        leak checks). Yields whether such a moment came within `timeout`."""
        with self._cond:
            yield self._wait_idle(timeout)

    def _wait_idle(self, timeout: float) -> bool:
        """With the lock held: wait until no cycle runs; False after `timeout`."""
        deadline = self._clock() + timeout
        self._joiners += 1  # _finish notifies only while someone waits here
        try:
            while self._in_flight:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
        finally:
            self._joiners -= 1

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                self._heartbeat()
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    due, _, alias, generation = heapq.heappop(self._heap)
                    entry = self._entries.get(alias)
                    if entry is None or entry.generation != generation:
                        continue  # removed or re-timed since it was queued
                    self._dispatch(entry, due, now)
                wait = HEARTBEAT_PERIOD
                if self._heap:
                    wait = min(wait, max(self._heap[0][0] - self._clock(), 0.0))
                self._cond.wait(wait)

    def _dispatch(self, entry: _Entry, due: float, now: float) -> None:
        interval = entry.target.interval
        if entry.running:
            self._on_missed(entry.target)
        else:
            entry.running = True
            self._in_flight += 1
            future = self._pool.submit(self._work, entry, due)
            # A cycle cancelled before it started (shutdown) never runs _work.
            future.add_done_callback(lambda f: self._finish(entry) if f.cancelled() else None)
        # Next slot: on the target's phase grid, never in the past (no catch-up bursts).
        next_due = entry.second_due if entry.second_due is not None else due + interval
        entry.second_due = None
        if next_due <= now:
            skipped = int((now - next_due) // interval) + 1
            for _ in range(skipped):
                self._on_missed(entry.target)
            next_due += skipped * interval
        entry.next_due = next_due
        self._push(entry)

    def _work(self, entry: _Entry, due: float) -> None:
        self._on_lag(max(self._clock() - due, 0.0))
        try:
            self._run(entry.target)
        except Exception:  # a bug in one cycle must not stop the schedule
            logger.exception("probe cycle for alias=%s crashed", entry.target.alias)
            self._on_crash()
        finally:
            self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        with self._cond:
            entry.running = False
            self._in_flight -= 1
            if self._joiners:  # waking the timer thread after every cycle costs CPU for nothing
                self._cond.notify_all()
