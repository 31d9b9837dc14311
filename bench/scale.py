"""Family 6, scale: the highest fresh-connection probe rate one core sustains.

For each target count N, the daemon (pinned to the client core) probes N aliases of
the milvus-lite server(s) at an offered rate R, i.e. every N/R seconds. The window
opens once the daemon is in its steady state (the first round, spread over a second,
is followed by each target's own phase, so steady state starts one interval after
start, once the first round's backlog has drained: one second's p99 lag within bounds,
waited for up to `scale_settle` seconds) and lasts `scale_window` seconds. Read at both
ends through `/metrics?name[]=`, so reading costs the daemon little: the unlabelled
`milvus_probe_schedule_lag_seconds` (its count is the cycles started) just around the
window, the per-target missed cycles and failures before the settling and after the
window; the process CPU from /proc.

A rate is *sustained* when the daemon ran at least 95 % of the offered cycles, missed
none, failed under 1 %, and the p99 schedule lag (histogram-interpolated) stayed under
100 ms. The ladder starts at the goal rate and climbs while sustained, or steps down
when not.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CoreLoad,
    Pinning,
    Settings,
    bucket_delta,
    buckets_json,
    histogram_quantile,
    log,
    many_targets,
    probe_daemon,
    ratio,
    write_config,
)
from kit.process import Daemon

GOAL_RATE = 300
MAX_LAG_P99 = 0.1
MIN_ACHIEVED = 0.95
MAX_FAILED = 0.01
RETRY_OTHER_SHARE = 0.25
"""A failed level is measured once more when other work used this share of the client
core (the machine may be shared), while the family is within `scale_retry_budget`."""

_TOTALS = ("milvus_probe_failures_total", "milvus_probe_missed_cycles_total")
"""Per-target series: thousands of them, read only outside the lag window."""
_LAG = ("milvus_probe_schedule_lag_seconds_bucket", "milvus_probe_schedule_lag_seconds_count")
"""One unlabelled histogram: cheap to read, so reading it hardly delays a cycle. Its
count is the number of cycles started (each cycle observes its lag as it starts)."""
SETTLE_STEP = 1.0


def _lag(daemon: Daemon) -> tuple[float, list[tuple[float, float]]]:
    when, samples = daemon.metrics(*_LAG)
    return when, samples.buckets("milvus_probe_schedule_lag_seconds")


def _settle(daemon: Daemon, limit: float) -> float:
    """Wait until one second's lag p99 is within bounds (the start-up backlog drained)."""
    began = time.monotonic()
    _, previous = _lag(daemon)
    while time.monotonic() - began < limit:
        time.sleep(SETTLE_STEP)
        _, current = _lag(daemon)
        p99 = histogram_quantile(0.99, bucket_delta(current, previous))
        previous = current
        if not math.isnan(p99) and p99 <= MAX_LAG_P99:
            break
    return time.monotonic() - began


def level(
    addresses: list[str],
    targets: int,
    rate: float,
    settings: Settings,
    pinning: Pinning,
    workdir: Path,
) -> dict[str, Any]:
    """One (targets, rate) point."""
    interval = targets / rate
    config = write_config(
        workdir / f"scale-{targets}-{rate:g}.yaml",
        many_targets(addresses, targets),
        interval=interval,
        timeout=min(5.0, interval * 0.8),
    )
    with probe_daemon(config, pinning, workdir / f"scale-{targets}.log") as daemon:
        ready_after = daemon.wait_ready(timeout=60 + targets / 50)
        # Steady state: every target is on its own phase one interval after start...
        steady_at = daemon.started_at + ready_after + interval + 1.0
        time.sleep(max(steady_at - time.perf_counter(), 0.5))
        # ... once the first round's backlog (every target within ~1 s) has drained;
        settle = _settle(daemon, max(settings.scale_settle, interval))
        _, totals_before = daemon.metrics(*_TOTALS)
        # ... and the cycles that reading thousands of series delayed have started.
        settle += _settle(daemon, settings.scale_settle / 2)
        t_before, lag_before = _lag(daemon)
        load = CoreLoad(pinning.client).start()
        cpu0, t0 = daemon.cpu(), time.monotonic()
        time.sleep(settings.scale_window)
        cpu1, t1 = daemon.cpu(), time.monotonic()
        other = load.other_share(cpu1 - cpu0)
        t_after, lag_after = _lag(daemon)
        _, totals_after = daemon.metrics(*_TOTALS)
        rss = daemon.status().get("VmRSS")

    def delta(name: str) -> float:
        return totals_after.total(name) - totals_before.total(name)

    window = t_after - t_before  # the lag histogram's window; the CPU's is t0..t1, inside it
    lag = bucket_delta(lag_after, lag_before)
    started = lag[-1][1] if lag else 0.0  # the +Inf bucket: cycles started in the window
    missed = delta("milvus_probe_missed_cycles_total")
    failures = delta("milvus_probe_failures_total")
    reasons: dict[str, float] = {}
    for sample in totals_after.find("milvus_probe_failures_total"):
        reason = sample.labels["reason"]
        reasons[reason] = reasons.get(reason, 0.0) + sample.value
    for sample in totals_before.find("milvus_probe_failures_total"):
        reason = sample.labels["reason"]
        reasons[reason] = reasons.get(reason, 0.0) - sample.value
    achieved = started / window
    cpu, cpu_window = cpu1 - cpu0, t1 - t0
    lag_p50, lag_p99 = histogram_quantile(0.5, lag), histogram_quantile(0.99, lag)
    sustained = (
        achieved >= MIN_ACHIEVED * rate
        and missed == 0
        and failures <= MAX_FAILED * max(started, 1)
        and not math.isnan(lag_p99)
        and lag_p99 <= MAX_LAG_P99
    )
    return {
        "targets": targets,
        "interval_seconds": interval,
        "offered_rate": rate,
        "achieved_rate": achieved,
        "window_seconds": window,
        "settle_seconds": settle,
        "cycles_started": started,
        "missed": missed,
        "failures": failures,
        "failures_by_reason": {k: v for k, v in sorted(reasons.items()) if v},
        "lag_p50_seconds": lag_p50,
        "lag_p99_seconds": lag_p99,
        "lag_buckets": buckets_json(lag),
        "cpu_seconds": cpu,
        "cpu_window_seconds": cpu_window,
        "cpu_share_of_core": cpu / cpu_window,
        "cpu_per_cycle": ratio(cpu, achieved * cpu_window),
        "rate_at_full_core": ratio(achieved, cpu / cpu_window),
        "ready_after_seconds": ready_after,
        "rss_bytes": rss,
        "client_core_other_share": other,
        "sustained": sustained,
    }


def _worth_retrying(point: dict[str, Any]) -> bool:
    """A level that failed while other work took a big share of the client core."""
    other = point.get("client_core_other_share")
    return not point["sustained"] and other is not None and other >= RETRY_OTHER_SHARE


def measure(
    addresses: list[str], settings: Settings, pinning: Pinning, workdir: Path
) -> dict[str, Any]:
    began = time.monotonic()
    rates = sorted(settings.scale_rates)
    start = min(range(len(rates)), key=lambda i: abs(rates[i] - GOAL_RATE))
    by_targets: dict[str, Any] = {}
    for targets in settings.scale_targets:
        levels: list[dict[str, Any]] = []
        best: float = 0.0
        i = start
        step = 0
        while 0 <= i < len(rates):
            log(f"scale: {targets} targets at {rates[i]}/s")
            point = level(addresses, targets, rates[i], settings, pinning, workdir)
            if _worth_retrying(point) and time.monotonic() - began < settings.scale_retry_budget:
                log(f"scale: again, others used {point['client_core_other_share']:.0%} of the core")
                point = {
                    **level(addresses, targets, rates[i], settings, pinning, workdir),
                    "earlier_try": point,
                }
            levels.append(point)
            if point["sustained"]:
                best = max(best, rates[i])
                if step < 0:
                    break  # stepped down to a sustained rate: that is the answer
                if targets > settings.scale_climb_max_targets and rates[i] >= GOAL_RATE:
                    break  # the goal holds; climbing costs minutes at this size
                step = 1
            else:
                if step > 0:
                    break  # climbed past the limit
                step = -1
            i += step
        loaded = [p["rate_at_full_core"] for p in levels if p["cpu_share_of_core"] >= 0.5]
        by_targets[str(targets)] = {
            "levels": levels,
            "max_sustained_rate": best,
            "max_sustained_is_lower_bound": bool(
                levels[-1]["sustained"] and levels[-1]["offered_rate"] == best
            ),
            "rate_at_full_core": statistics.median(loaded) if loaded else None,
        }
    return {
        "servers": addresses,
        "criteria": {
            "min_achieved_over_offered": MIN_ACHIEVED,
            "max_missed": 0,
            "max_failed_fraction": MAX_FAILED,
            "max_lag_p99_seconds": MAX_LAG_P99,
        },
        "by_targets": by_targets,
        "max_sustained_rate": min(v["max_sustained_rate"] for v in by_targets.values()),
    }
