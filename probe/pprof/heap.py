"""Python memory by allocation site, from tracemalloc, as pprof heap/allocs profiles."""

from __future__ import annotations

import threading
import tracemalloc
from collections import deque
from types import CodeType

from probe.pprof.builder import Frame, ProfileBuilder

TRACE_FRAMES = 32
"""Frames kept per allocation traceback."""


class HeapTracer:
    """Owns tracemalloc: on from start (`always`), or for one window at a time."""

    def __init__(self, always: bool) -> None:
        self.always = always
        self._lock = threading.Lock()
        self._windows = 0
        if always:
            tracemalloc.start(TRACE_FRAMES)

    def begin_window(self) -> None:
        with self._lock:
            if not self.always and self._windows == 0:
                tracemalloc.start(TRACE_FRAMES)
            self._windows += 1

    def end_window(self) -> tracemalloc.Snapshot:
        with self._lock:
            snapshot = tracemalloc.take_snapshot()
            self._windows -= 1
            if not self.always and self._windows == 0:
                tracemalloc.stop()
            return snapshot

    def snapshot(self) -> tracemalloc.Snapshot:
        """Live allocations now; only when tracing is always on."""
        return tracemalloc.take_snapshot()


def _stack(trace: tracemalloc.Traceback) -> tuple[Frame, ...]:
    # tracemalloc lists the oldest frame first; pprof wants the leaf first.
    frames: list[Frame] = []
    for frame in reversed(trace):
        name = _names_in(frame.filename).get(frame.lineno) or f"{frame.filename}:{frame.lineno}"
        frames.append((name, frame.filename, 0, frame.lineno))
    return tuple(frames)


_NAME_CACHE: dict[str, dict[int, str]] = {}


def _names_in(filename: str) -> dict[int, str]:
    """line → qualified name of the innermost function there (tracemalloc keeps no names)."""
    cached = _NAME_CACHE.get(filename)
    if cached is not None:
        return cached
    names: dict[int, str] = {}
    try:
        with open(filename, encoding="utf-8") as fh:
            code = compile(fh.read(), filename, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        code = None
    queue = deque([code] if code is not None else [])
    while queue:  # breadth first: inner functions overwrite their parents' lines
        current = queue.popleft()
        qualname = getattr(current, "co_qualname", current.co_name)
        for _, _, line in current.co_lines():
            if line is not None:
                names[line] = qualname
        queue.extend(c for c in current.co_consts if isinstance(c, CodeType))
    _NAME_CACHE[filename] = names
    return names


def heap_profile(snapshot: tracemalloc.Snapshot, kind: str) -> ProfileBuilder:
    """`kind` "inuse" (live now) or "alloc" (allocated in the window and still live)."""
    builder = ProfileBuilder(
        [(f"{kind}_objects", "count"), (f"{kind}_space", "bytes")],
        period_type=("space", "bytes"),
        period=1,
        comments=["milvus-probe heap profile from tracemalloc"],
    )
    ignore = (tracemalloc.__file__, __file__)
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, f) for f in ignore])
    for stat in snapshot.statistics("traceback"):
        builder.add(_stack(stat.traceback), (stat.count, stat.size))
    return builder


SUMMARY_TOP = 30
"""Rows of each table in the heap summary."""


def _proc_status() -> dict[str, str]:
    """The memory lines of /proc/self/status (empty where there is none)."""
    found = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.startswith("Vm") or key.startswith("Rss"):
                    found[key] = " ".join(value.split())
    except OSError:
        pass
    return found


def heap_summary(tracer: HeapTracer) -> str:
    """The heap in words: process memory, the collector's counts, live objects by type and,
    when tracemalloc is on (`--profiling.heap`), the biggest allocation sites."""
    import gc
    import sys
    from collections import Counter

    lines = ["# milvus-probe heap summary", ""]
    lines.append("## process memory (/proc/self/status)")
    lines += [f"{key}: {value}" for key, value in _proc_status().items()] or ["(unavailable)"]
    lines += ["", "## Python allocator and collector"]
    lines.append(f"allocated blocks: {sys.getallocatedblocks()}")
    lines.append(f"gc counts (gen0, gen1, gen2): {gc.get_count()}")
    lines.append(f"gc thresholds: {gc.get_threshold()}")
    lines.append(f"objects frozen at start (gc.freeze, not counted below): {gc.get_freeze_count()}")
    for generation, counts in enumerate(gc.get_stats()):
        lines.append(f"gen{generation}: {counts}")
    by_type: Counter[str] = Counter()
    objects = gc.get_objects()
    for obj in objects:
        by_type[type(obj).__qualname__] += 1
    del objects
    lines += ["", f"## objects tracked by the collector, by type (top {SUMMARY_TOP})"]
    lines += [f"{count:>10}  {name}" for name, count in by_type.most_common(SUMMARY_TOP)]
    lines += ["", "## allocation sites (tracemalloc)"]
    if tracer.always and tracemalloc.is_tracing():
        snapshot = tracer.snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
        )
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        lines.append(f"live traced: {total} bytes in {sum(s.count for s in stats)} blocks")
        for stat in stats[:SUMMARY_TOP]:
            frame = stat.traceback[0]
            lines.append(f"{stat.size:>12} B {stat.count:>8}  {frame.filename}:{frame.lineno}")
    else:
        lines.append(
            "off: start the probe with --profiling.heap to trace allocations from start, or "
            "take /debug/pprof/heap?seconds=N for a window"
        )
    return "\n".join(lines) + "\n"
