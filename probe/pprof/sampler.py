"""Statistical profiling of every Python thread, and thread dumps.

CPU mode can't read "running" from the scheduler state at sample time (while the sampler
holds the GIL every other Python thread looks asleep), so it reads each thread's own CPU
clock and charges the CPU used since the previous tick to the stack seen at that tick.
The clock is addressed by the kernel thread id (not pthread_t), so a thread that has
exited meanwhile yields EINVAL instead of undefined behaviour.
"""

from __future__ import annotations

import enum
import inspect
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from probe.pprof.builder import ProfileBuilder, Stack, stack_of

_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class Mode(enum.StrEnum):
    CPU = "cpu"
    """Count only threads that used CPU since the previous sample."""
    WALL = "wall"
    """Count every thread at every sample, running or waiting."""


def thread_cpu_ns(native_id: int) -> int | None:
    """CPU time used by the kernel thread `native_id`, or None if it is gone."""
    clock_id = (~native_id << 3) | 6  # MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)
    try:
        return time.clock_gettime_ns(clock_id)
    except OSError:
        return None


@dataclass(frozen=True)
class ThreadInfo:
    ident: int
    native_id: int | None
    name: str
    daemon: bool
    target: Callable[..., object] | None


def threads() -> dict[int, ThreadInfo]:
    """Python threads by ident."""
    found = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        found[thread.ident] = ThreadInfo(
            thread.ident,
            thread.native_id,
            thread.name,
            thread.daemon,
            _entry_point(thread),
        )
    return found


def _entry_point(thread: threading.Thread) -> Callable[..., object] | None:
    """The function a thread was started to run: its target, or an overridden run()."""
    target = getattr(thread, "_target", None)
    if target is not None:
        return target  # type: ignore[no-any-return]
    run = type(thread).run
    return run if run is not threading.Thread.run else None


@dataclass(frozen=True)
class CpuProfile:
    builder: ProfileBuilder
    started_ns: int
    duration_ns: int
    ticks: int

    def encode(self) -> bytes:
        return self.builder.encode(time_nanos=self.started_ns, duration_nanos=self.duration_ns)


def sample(
    seconds: float,
    hz: int,
    mode: Mode,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> CpuProfile:
    """Sample every other Python thread `hz` times a second for `seconds` (or until stopped)."""
    period_ns = int(1e9 / hz)
    value_type = ("cpu", "nanoseconds") if mode is Mode.CPU else ("wall", "nanoseconds")
    builder = ProfileBuilder(
        [("samples", "count"), value_type],
        period_type=value_type,
        period=period_ns,
        comments=[f"milvus-probe {mode.value} profile at {hz} Hz"],
    )
    me = threading.get_ident()
    known: dict[int, ThreadInfo] = {}
    last_cpu: dict[int, int] = {}
    last_stack: dict[int, Stack] = {}
    last_seen: dict[int, tuple[FrameType, int, Stack]] = {}
    started_ns = time.time_ns()
    start = clock()
    end = start + seconds
    next_tick = start
    next_stop_check = start
    ticks = 0

    def stack_at(ident: int, frame: FrameType) -> Stack:
        # A thread still in the same frame at the same instruction has the same stack (an
        # activation's callers can't change under it; a generator's can, between
        # resumptions): most threads sit in one wait, and walking their stacks every tick
        # was most of the sampler's cost.
        seen = last_seen.get(ident)
        if (
            seen is not None
            and seen[0] is frame
            and seen[1] == frame.f_lasti
            and not frame.f_code.co_flags & _RESUMABLE
        ):
            return seen[2]
        stack = stack_of(frame)
        last_seen[ident] = (frame, frame.f_lasti, stack)
        return stack

    def label(ident: int, info: ThreadInfo | None) -> dict[str, str]:
        return {"thread": info.name if info else f"thread-{ident}"}

    while True:
        now = clock()
        if now >= end:
            break
        if now >= next_stop_check:
            if should_stop():
                break
            next_stop_check = now + 0.25
        if now < next_tick:
            time.sleep(min(next_tick, end) - now)
            continue
        ticks += 1
        frames = sys._current_frames()
        for gone in last_seen.keys() - frames.keys():
            del last_seen[gone]  # don't keep exited threads' frames alive
        if any(ident not in known for ident in frames):
            known = threads()
        for ident, frame in frames.items():
            if ident == me:
                continue
            info = known.get(ident)
            if mode is Mode.WALL:
                builder.add(stack_at(ident, frame), (1, period_ns), label(ident, info))
                continue
            cpu = thread_cpu_ns(info.native_id) if info and info.native_id is not None else None
            if cpu is None:
                continue
            previous = last_cpu.get(ident)
            last_cpu[ident] = cpu
            if cpu == previous:
                continue  # it hasn't run since the last tick: nothing to charge, same stack
            stack = stack_at(ident, frame)
            if previous is not None and cpu > previous:
                # CPU used since the last tick is charged to the stack seen then.
                builder.add(last_stack.get(ident, stack), (1, cpu - previous), label(ident, info))
            last_stack[ident] = stack
        next_tick += period_ns / 1e9
        if next_tick < clock():  # fell behind: skip ticks rather than burst
            next_tick = clock() + period_ns / 1e9
    duration_ns = int((clock() - start) * 1e9)
    return CpuProfile(builder, started_ns, duration_ns, ticks)
