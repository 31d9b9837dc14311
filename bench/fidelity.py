"""Family 2, fidelity: does milvus-probe report what a connection really costs?

One daemon probes one target every `steady_interval` (a fresh connection each time)
for `steady_window` seconds, in `rounds` parts alternating with the raw cycles' parts
(bench/side_by_side.py). Its reported cycle durations come from the daemon itself:
every cycle's `duration_seconds` in the `/probe` history (exactly what it observed into
`milvus_probe_duration_seconds`), and the histogram's interpolated median as Prometheus
would compute it. The same run gives the daemon's CPU per cycle (family 3, bench/cost.py).

Then a second target reaches the same server through bench/delay_proxy.py, which holds
every server → client chunk back by a known delay: the `rpc` phase should grow by that
delay and nothing else. Both targets are probed with `/probe?alias=...` in turn.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import (
    CoreLoad,
    Pinning,
    Settings,
    bucket_delta,
    buckets_from_json,
    buckets_json,
    histogram_quantile,
    probe_daemon,
    ratio,
    summary,
    without_values,
    write_config,
)
from bench.delay_proxy import DelayProxy
from kit.process import Daemon

STEADY = "steady"
DELAYED = "delayed"
WARMUP = 1.5
"""Seconds after /readyz before the window opens (first round and spread done)."""

_NAMES = (
    "milvus_probe_attempts_total",
    "milvus_probe_failures_total",
    "milvus_probe_missed_cycles_total",
    "milvus_probe_duration_seconds_bucket",
    "milvus_probe_phase_duration_seconds_sum",
    "milvus_probe_phase_duration_seconds_count",
)


def steady_run(
    address: str, settings: Settings, pinning: Pinning, workdir: Path, *, delay: bool = True
) -> dict[str, Any]:
    """One round of the daemon against `address` (`steady_window / rounds` seconds):
    reported durations, phases and its CPU per cycle."""
    proxy = None
    targets = [(STEADY, address)]
    overrides: dict[str, dict[str, Any]] = {}
    if delay:
        host, port = address.rsplit(":", 1)
        proxy = DelayProxy((host, int(port)), delay_to_client=settings.delay)
        targets.append((DELAYED, proxy.address))
        # Probed on demand only (its one scheduled cycle falls in the first round).
        overrides[DELAYED] = {"interval": "1h", "timeout": "5s"}
    config = write_config(
        workdir / "steady.yaml",
        targets,
        interval=settings.steady_interval,
        history=10_000,
        overrides=overrides,
    )
    try:
        with probe_daemon(config, pinning, workdir / "steady.log") as daemon:
            ready_after = daemon.wait_ready()
            time.sleep(WARMUP)
            t_before, before = daemon.metrics(*_NAMES)
            load = CoreLoad(pinning.client).start()
            cpu0, mono0, wall0 = daemon.cpu(), time.monotonic(), time.time()
            time.sleep(settings.steady_window / settings.rounds)
            cpu1, mono1, wall1 = daemon.cpu(), time.monotonic(), time.time()
            other = load.other_share(cpu1 - cpu0)
            t_after, after = daemon.metrics(*_NAMES)
            rss = daemon.status()
            history = daemon.get_json(f"/probe?alias={STEADY}&format=json")["history"]
            delayed = _delay_check(daemon, settings) if proxy is not None else None
    finally:
        if proxy is not None:
            proxy.stop()

    def delta(name: str, **match: str) -> float:
        return after.total(name, alias=STEADY, **match) - before.total(
            name, alias=STEADY, **match
        )

    cycles = delta("milvus_probe_attempts_total")
    rate = cycles / (t_after - t_before)  # the counters' window holds the CPU's
    cpu = cpu1 - cpu0
    window = mono1 - mono0
    in_window = [h for h in history if wall0 <= h["started_at"] <= wall1]
    durations = [h["duration_seconds"] for h in in_window if h["success"]]
    hist = bucket_delta(
        after.buckets("milvus_probe_duration_seconds", alias=STEADY),
        before.buckets("milvus_probe_duration_seconds", alias=STEADY),
    )
    phases = {}
    for phase in ("resolve", "connect", "rpc", "info", "close"):
        count = delta("milvus_probe_phase_duration_seconds_count", phase=phase)
        total = delta("milvus_probe_phase_duration_seconds_sum", phase=phase)
        phases[phase] = {"count": count, "mean": total / count if count else None}
    result: dict[str, Any] = {
        "interval_seconds": settings.steady_interval,
        "window_seconds": window,
        "counter_window_seconds": t_after - t_before,
        "cycles": cycles,
        "failures": delta("milvus_probe_failures_total"),
        "missed": delta("milvus_probe_missed_cycles_total"),
        "ready_after_seconds": ready_after,
        "duration": summary(durations),
        "duration_histogram": {
            "median": histogram_quantile(0.5, hist),
            "p99": histogram_quantile(0.99, hist),
            "buckets": buckets_json(hist),
        },
        "phases": phases,
        "cpu_seconds": cpu,
        "cycles_per_second": rate,
        "cpu_per_cycle": ratio(cpu, rate * window),
        "cpu_share_of_core": ratio(cpu, window),
        "rss_bytes": rss.get("VmRSS"),
        "client_core_other_share": other,
    }
    if delayed is not None:
        result["delay"] = delayed
    return result


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the rounds: every cycle's duration, every CPU second."""
    durations = [v for r in rounds for v in r["duration"]["values"]]
    window = sum(r["window_seconds"] for r in rounds)
    cycles = sum(r["cycles"] for r in rounds)
    cpu = sum(r["cpu_seconds"] for r in rounds)
    hist: dict[float, float] = {}
    for r in rounds:
        for le, count in buckets_from_json(r["duration_histogram"]["buckets"]):
            hist[le] = hist.get(le, 0.0) + count
    cumulative = sorted(hist.items())
    phases = {}
    for phase in rounds[0]["phases"]:
        parts = [r["phases"][phase] for r in rounds if r["phases"][phase]["count"]]
        count = sum(p["count"] for p in parts)
        total = sum(p["count"] * p["mean"] for p in parts)
        phases[phase] = {"count": count, "mean": total / count if count else None}
    shares = [
        (r["client_core_other_share"], r["window_seconds"])
        for r in rounds
        if r["client_core_other_share"] is not None
    ]
    # CPU per cycle: the CPU of the CPU windows over the cycles run in them.
    cycles_in_cpu_windows = sum(r["cycles_per_second"] * r["window_seconds"] for r in rounds)
    merged: dict[str, Any] = {
        "interval_seconds": rounds[0]["interval_seconds"],
        "window_seconds": window,
        "cycles": cycles,
        "failures": sum(r["failures"] for r in rounds),
        "missed": sum(r["missed"] for r in rounds),
        "ready_after_seconds": [r["ready_after_seconds"] for r in rounds],
        "duration": summary(durations),
        "duration_histogram": {
            "median": histogram_quantile(0.5, cumulative),
            "p99": histogram_quantile(0.99, cumulative),
            "buckets": buckets_json(cumulative),
        },
        "phases": phases,
        "cpu_seconds": cpu,
        "cycles_per_second": cycles / sum(r["counter_window_seconds"] for r in rounds),
        "cpu_per_cycle": ratio(cpu, cycles_in_cpu_windows),
        "cpu_share_of_core": ratio(cpu, window),
        "rss_bytes": rounds[-1]["rss_bytes"],
        "client_core_other_share": (
            sum(share * w for share, w in shares) / sum(w for _, w in shares) if shares else None
        ),
        "rounds": without_values(rounds),
    }
    if "delay" in rounds[0]:
        merged["delay"] = rounds[0]["delay"]
    return merged


def _delay_check(daemon: Daemon, settings: Settings) -> dict[str, Any]:
    phases: dict[str, dict[str, list[float]]] = {
        alias: {"connect": [], "rpc": [], "duration": []} for alias in (STEADY, DELAYED)
    }
    failures = 0
    for _ in range(settings.delay_probes):
        for alias in (STEADY, DELAYED):
            trace = daemon.get_json(f"/probe?alias={alias}&format=json")
            if not trace["success"]:
                failures += 1
                continue
            phases[alias]["connect"].append(trace["phases"]["connect"])
            phases[alias]["rpc"].append(trace["phases"]["rpc"])
            phases[alias]["duration"].append(trace["duration_seconds"])
    out: dict[str, Any] = {
        "injected_seconds": settings.delay,
        "direction": "server to client, every chunk",
        "probes_per_target": settings.delay_probes,
        "failures": failures,
    }
    for alias, label in ((STEADY, "direct"), (DELAYED, "delayed")):
        out[label] = {name: summary(values) for name, values in phases[alias].items()}
    for name in ("rpc", "connect", "duration"):
        added = out["delayed"][name]["median"] - out["direct"][name]["median"]
        out[f"{name}_added"] = added
        out[f"{name}_added_over_injected"] = ratio(added, settings.delay)
    return out


def summarize(server: dict[str, Any]) -> dict[str, Any]:
    """Reported durations against the limit measured in the same run."""
    if not server.get("measured", True):
        return {"measured": False, "reason": server["reason"]}
    run, raw = server["probe"], server["limit"]["raw_cycle"]["paced"]["seconds"]
    out: dict[str, Any] = {
        "probe_median": run["duration"]["median"],
        "probe_p99": run["duration"]["p99"],
        "probe_histogram_median": run["duration_histogram"]["median"],
        "probe_cycles": run["cycles"],
        "client_core_other_share": run["client_core_other_share"],
        "probe_connect_mean": run["phases"]["connect"]["mean"],
        "probe_rpc_mean": run["phases"]["rpc"]["mean"],
        "probe_failures": run["failures"],
        "limit_median": raw["median"],
        "limit_p99": raw["p99"],
        "ratio": ratio(run["duration"]["median"], raw["median"]),
        "histogram_ratio": ratio(run["duration_histogram"]["median"], raw["median"]),
        "p99_ratio": ratio(run["duration"]["p99"], raw["p99"]),
    }
    delay = run.get("delay")
    if delay is not None:
        out["delay"] = {
            "injected": delay["injected_seconds"],
            "rpc_direct_median": delay["direct"]["rpc"]["median"],
            "rpc_delayed_median": delay["delayed"]["rpc"]["median"],
            "rpc_added": delay["rpc_added"],
            "rpc_added_over_injected": delay["rpc_added_over_injected"],
            "connect_added": delay["connect_added"],
            "connect_added_over_injected": delay["connect_added_over_injected"],
        }
    return out
