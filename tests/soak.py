"""Soak: the daemon runs many cycles at a high rate against a real Milvus (milvus-lite);
what it leaves behind is measured.

    python -m tests.soak --cycles 100000          # make soak
    python -m tests.soak --cycles 10000 --json-only

`soak()` starts the real App in this process (20 targets at 100 ms by default, every one a
fresh connection to the same milvus-lite), lets it warm up, then counts cycles until
`cycles` more have run. At checkpoints along the way it takes a *quiescent point*: it
holds the scheduler's lock at a moment when no cycle is in flight, so nothing can start
or finish while it reads the connection ledger, the open file descriptors and the
threads. The figures it returns:

* cycles run, connections opened and closed, open connections at every quiescent point
  and `milvus_probe_open_connections` at the end;
* file descriptors and Python threads after warm-up and at the end (pool workers, which
  ThreadPoolExecutor starts lazily up to the peak concurrency, counted apart);
* RSS after warm-up and at the end;
* schedule lag (p50/p99 from `milvus_probe_schedule_lag_seconds`, Prometheus-style
  interpolation), missed cycles, and the cycle rate against the configured one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from kit.procfs import native_threads, open_fds, rss_bytes
from probe.app import App
from probe.config import Sources, load
from tests.faults import (
    POOL_WORKER_PREFIX,
    bucket_delta,
    histogram_buckets,
    histogram_quantile,
    thread_census,
)
from tests.support import start_milvus_lite, wait_until

MIB = 1024 * 1024


def _family_values(app: App, name: str) -> dict[str, float]:
    """alias → value of a per-target sample, read from the app's registry."""
    found: dict[str, float] = {}
    for family in app.registry.collect():
        for sample in family.samples:
            if sample.name == name and "alias" in sample.labels:
                found[sample.labels["alias"]] = sample.value
    return found


def _ledger_totals(app: App) -> tuple[int, int]:
    snapshot = app.ledger.snapshot()
    return sum(o for o, _ in snapshot.values()), sum(c for _, c in snapshot.values())


@contextmanager
def _quiescent(app: App, timeout: float = 5.0) -> Iterator[None]:
    """Hold the scheduler's lock at a moment no cycle is in flight.

    While held, the scheduler can neither dispatch a cycle nor see one finish, so the
    ledger, fds and threads read inside belong to no cycle.
    """
    with app.scheduler.held_idle(timeout) as idle:
        if idle:
            yield
            return
    # Described after letting go of the lock, or every worker would be seen waiting for it.
    raise NoQuiescentPoint(f"no quiescent point within {timeout}s: {_busy(app)}")


class NoQuiescentPoint(Exception):
    """Cycles overlapped without a gap for the whole wait (a loaded machine, or a hung cycle:
    the message says where the workers were)."""


def _busy(app: App) -> str:
    """Where the scheduler's workers are: the innermost probe function of each."""
    frames = sys._current_frames()
    where: Counter[str] = Counter()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if not thread.name.startswith(POOL_WORKER_PREFIX) or frame is None:
            continue
        mine = f"{os.sep}probe{os.sep}"
        inside = [f.name for f in traceback.extract_stack(frame) if mine in f.filename]
        where[inside[-1] if inside else "idle"] += 1
    return (
        f"{app.scheduler._in_flight} cycle(s) in flight, {app.ledger.open_count()} channel(s) "
        f"open, workers in {dict(where)}"
    )


def _try_point(app: App) -> dict[str, Any] | None:
    try:
        return _point(app)
    except NoQuiescentPoint:
        return None


def _point(app: App) -> dict[str, Any]:
    with _quiescent(app):
        opened, closed = _ledger_totals(app)
        census = thread_census()
        return {
            "open_connections": app.ledger.open_count(),
            "opened": opened,
            "closed": closed,
            "fds": open_fds(),
            "pool_workers": census.workers,
            "other_threads": census.others,
        }


RESTING_SAMPLES = 50


def _resting_fds(app: App, samples: int = RESTING_SAMPLES, patience: float = 120.0) -> int:
    """The fd count at rest: the most common reading over many quiescent points.

    Even with no cycle in flight, gRPC may still hold what the last cycles closed (their
    sockets, a pollset's epoll and eventfd) for a moment, releasing them on its own
    threads; at 200 cycles a second one quiescent reading in five or so carries such a
    transient. A leak would move every reading, so the most common one is what to compare.
    """
    seen: list[int] = []
    deadline = time.monotonic() + patience
    while len(seen) < samples and time.monotonic() < deadline:
        with suppress(NoQuiescentPoint):
            seen.append(int(_point(app)["fds"]))
    if not seen:
        raise NoQuiescentPoint(f"no quiescent point within {patience}s: {_busy(app)}")
    counts = Counter(seen)
    return min(counts, key=lambda fds: (-counts[fds], fds))


def soak(
    cycles: int,
    *,
    targets: int = 20,
    interval: str = "100ms",
    timeout: str = "80ms",
    milvus_address: str | None = None,
    warmup_cycles: int | None = None,
    checkpoints: int = 20,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the daemon until `cycles` cycles (after warm-up) have run; return the figures."""
    say = progress or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="milvus-probe-soak-") as tmp:
        work = Path(tmp)
        server = None
        if milvus_address is None:
            (work / "milvus").mkdir()
            server = start_milvus_lite(work / "milvus")
            milvus_address = server.address
        try:
            return _soak(
                cycles,
                work=work,
                address=milvus_address,
                targets=targets,
                interval=interval,
                timeout=timeout,
                warmup_cycles=warmup_cycles if warmup_cycles is not None else 10 * targets,
                checkpoints=checkpoints,
                say=say,
            )
        finally:
            if server is not None:
                server.stop()


def _soak(
    cycles: int,
    *,
    work: Path,
    address: str,
    targets: int,
    interval: str,
    timeout: str,
    warmup_cycles: int,
    checkpoints: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    config_file = work / "probe.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                # One worker per target: at most one cycle per target runs at a time, and
                # ThreadPoolExecutor starts workers lazily up to this bound.
                "probe": {"interval": interval, "timeout": timeout, "max_concurrent": targets},
                "targets": [{"alias": f"soak-{i:03d}", "uri": address} for i in range(targets)],
            }
        )
    )
    config = load(
        Sources(
            flags={"config.file": str(config_file), "web.listen-address": "127.0.0.1:0"},
            environ={},
        )
    )
    interval_s = config.targets[0].interval
    app = App(config)
    app.start()
    try:
        say(f"warming up: {warmup_cycles} cycles over {targets} targets at {interval}")
        wait_until(lambda: _ledger_totals(app)[1] >= warmup_cycles, 120, "warm-up cycles")
        start = wait_until(lambda: _try_point(app), 120, "a quiescent point after warm-up")
        start["fds"] = _resting_fds(app)
        start_rss = rss_bytes()
        start_native = native_threads()
        lag_before = histogram_buckets(app.registry, "milvus_probe_schedule_lag_seconds")
        missed_before = sum(_family_values(app, "milvus_probe_missed_cycles_total").values())
        attempts_before = sum(_family_values(app, "milvus_probe_attempts_total").values())
        began = time.monotonic()

        points = [start]
        segment_lag: list[float] = []
        busy: list[str] = []
        lag_mark = lag_before
        goal = start["closed"] + cycles
        step = max(cycles // checkpoints, 1)
        next_point = start["closed"] + step
        while True:
            target_count = min(next_point, goal)
            # Generous: a stalled daemon fails here rather than hanging.
            wait_until(
                lambda n=target_count: _ledger_totals(app)[1] >= n,  # type: ignore[misc]
                max(60.0, 10 * step * interval_s / targets),
                f"{target_count} cycles",
            )
            point = _try_point(app)
            if point is None:  # cycles kept overlapping: note it, count on
                busy.append(_busy(app))
                if _ledger_totals(app)[1] < goal:
                    next_point += step
                    continue
                point = wait_until(lambda: _try_point(app), 120, "a last quiescent point")
            points.append(point)
            lag_now = histogram_buckets(app.registry, "milvus_probe_schedule_lag_seconds")
            segment_lag.append(round(histogram_quantile(0.99, bucket_delta(lag_now, lag_mark)), 4))
            lag_mark = lag_now
            done = point["closed"] - start["closed"]
            say(f"{done}/{cycles} cycles, open at quiescent point: {point['open_connections']}, "
                f"fds {point['fds']}, rss {rss_bytes() / MIB:.1f} MiB")
            if point["closed"] >= goal:
                break
            next_point += step
        # The window's counts and its length together: the checks below take seconds.
        missed = sum(_family_values(app, "milvus_probe_missed_cycles_total").values())
        attempts = sum(_family_values(app, "milvus_probe_attempts_total").values())
        elapsed = time.monotonic() - began
        lag = bucket_delta(
            histogram_buckets(app.registry, "milvus_probe_schedule_lag_seconds"), lag_before
        )
        end = points[-1]
        end["fds"] = _resting_fds(app)
        end_rss = rss_bytes()
        end_native = native_threads()

        # Stop scheduling, let every cycle finish: the exported gauges at rest.
        app.scheduler.stop(timeout=2.0)
        all_finished = app.scheduler.join_workers(5.0)
        opened_total = sum(_family_values(app, "milvus_probe_connections_opened_total").values())
        closed_total = sum(_family_values(app, "milvus_probe_connections_closed_total").values())
        open_gauge = sum(_family_values(app, "milvus_probe_open_connections").values())
        failures: dict[str, float] = {}
        for family in app.registry.collect():
            for sample in family.samples:
                if sample.name == "milvus_probe_failures_total" and sample.value:
                    reason = sample.labels["reason"]
                    failures[reason] = failures.get(reason, 0) + sample.value
        total_attempts = sum(_family_values(app, "milvus_probe_attempts_total").values())
    finally:
        app.stop()

    window_attempts = attempts - attempts_before
    window_missed = missed - missed_before
    expected = elapsed * targets / interval_s
    return {
        "targets": targets,
        "interval_seconds": interval_s,
        "timeout_seconds": config.targets[0].timeout,
        "max_concurrent": config.probe.max_concurrent,
        "warmup_cycles": start["closed"],
        "cycles": end["closed"] - start["closed"],
        "elapsed_seconds": round(elapsed, 3),
        "cycles_per_second": round((end["closed"] - start["closed"]) / elapsed, 1),
        "expected_cycles_per_second": round(targets / interval_s, 1),
        "rate_ratio": round(window_attempts / expected, 4) if expected else None,
        # Every slot on every target's grid either ran or was counted missed: a schedule
        # that drifted (slots relative to the last cycle's end, catch-up bursts) would not
        # add up to the elapsed time, whatever the machine's load.
        "slots_accounted_ratio": round((window_attempts + window_missed) / expected, 4)
        if expected else None,
        "total_attempts": total_attempts,
        "failures": failures,
        "opened": opened_total,
        "closed": closed_total,
        "open_connections_gauge_at_end": open_gauge,
        "open_connections_at_quiescent_points": [p["open_connections"] for p in points],
        "quiescent_points": len(points),
        "checkpoints_without_a_quiescent_point": busy,
        "all_cycles_finished_after_stop": all_finished,
        "fds_at_quiescent_points": [p["fds"] for p in points],
        "fds_start": start["fds"],
        "fds_end": end["fds"],
        "threads_start": start["pool_workers"] + len(start["other_threads"]),
        "threads_end": end["pool_workers"] + len(end["other_threads"]),
        "pool_workers_start": start["pool_workers"],
        "pool_workers_end": end["pool_workers"],
        "other_threads_start": list(start["other_threads"]),
        "other_threads_end": list(end["other_threads"]),
        "native_threads_start": start_native,
        "native_threads_end": end_native,
        "rss_start_mib": round(start_rss / MIB, 2),
        "rss_end_mib": round(end_rss / MIB, 2),
        "rss_growth_mib": round((end_rss - start_rss) / MIB, 2),
        "lag_observations": lag.get(float("inf"), 0.0),
        "lag_p50_seconds": round(histogram_quantile(0.5, lag), 6),
        "lag_p99_seconds": round(histogram_quantile(0.99, lag), 6),
        "lag_over_10ms": lag.get(float("inf"), 0.0) - lag.get(0.01, 0.0),
        "lag_p99_per_segment_seconds": segment_lag,
        "missed_cycles": window_missed,
    }


def table(figures: dict[str, Any]) -> str:
    rows = []
    for key, value in figures.items():
        if isinstance(value, list) and len(value) > 12:
            shown = f"{value[:6]} … {value[-3:]} ({len(value)} values, min {min(value)}, " \
                    f"max {max(value)})"
        else:
            shown = str(value)
        rows.append((key, shown))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--interval", default="100ms")
    parser.add_argument("--timeout", default="80ms")
    parser.add_argument(
        "--milvus", help="host:port of a running Milvus (default: start a milvus-lite)"
    )
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.ERROR)  # failures are counted in the figures

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    figures = soak(
        args.cycles,
        targets=args.targets,
        interval=args.interval,
        timeout=args.timeout,
        milvus_address=args.milvus,
        progress=None if args.json_only else say,
    )
    if not args.json_only:
        print(table(figures))
        print()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
