"""Family 1, the limit: what a bare grpcio client pays for one fresh-connection check.

A raw cycle is the least any fresh-connection probe in Python can do: a new channel
with its own sub-channel pool (so it really opens a TCP connection, as the probe does),
CheckHealth with `wait_for_ready=True` and a deadline, close. Its CPU is the process's
CPU clock around the N cycles (gRPC's own threads included). Raw TCP connect + close is
the floor under that.

Pacing matters: on this kind of machine a cycle that follows 20 ms of idleness costs
about twice the latency and CPU of one run back to back (caches, CPU power states,
gRPC's own threads going to sleep). The daemon runs its cycles on a schedule, so the
limit it is compared with is paced on the same schedule (`pace`, the steady run's
interval); the back-to-back figures are kept as `hot`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench.common import CoreLoad, Pinning, Settings, run_worker, summary, without_values
from bench.raw import raw_cycle, raw_health_v1_cycle


def paced(cycle: Callable[[], bool], cycles: int, pace: float) -> dict[str, Any]:
    """Run `cycle` `cycles` times, starting one every `pace` seconds (0: back to back)."""
    durations: list[float] = []
    failed = 0
    cpus = os.sched_getaffinity(0)
    load = CoreLoad(next(iter(cpus)) if len(cpus) == 1 else None).start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    due = wall0
    for _ in range(cycles):
        start = time.perf_counter()
        ok = cycle()
        durations.append(time.perf_counter() - start)
        failed += not ok
        due += pace
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "pace_seconds": pace,
        "client_core_other_share": load.other_share(cpu),
        "seconds": summary(durations),
        "failed": failed,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_per_cycle": cpu / cycles,
    }


def measure_raw_cycles(
    address: str, cycles: int, warmup: int, timeout: float, pace: float, health_v1: bool
) -> dict[str, Any]:
    grpc_target = f"ipv4:{address}"
    for _ in range(warmup):  # gRPC's one-time start-up, as the daemon's warm_up() pays it
        raw_cycle(grpc_target, timeout)
    out = {
        "paced": paced(lambda: raw_cycle(grpc_target, timeout), cycles, pace),
        "hot": paced(lambda: raw_cycle(grpc_target, timeout), cycles, 0.0),
        "grpcio": grpc.__version__,
    }
    if health_v1:
        out["health_v1_paced"] = paced(
            lambda: raw_health_v1_cycle(grpc_target, timeout), cycles, pace
        )
    return out


def measure_tcp_connects(address: str, count: int) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    durations: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        sock = socket.create_connection((host, int(port)))
        sock.close()
        durations.append(time.perf_counter() - start)
    return {"seconds": summary(durations)}


def measure(
    address: str, settings: Settings, pinning: Pinning, *, health_v1: bool = False
) -> dict[str, Any]:
    """Both limits against `address` (one round's share of the cycles), measured in a
    worker on the client core."""
    return run_worker(
        pinning,
        "limit",
        "--address",
        address,
        "--cycles",
        str(max(settings.raw_cycles // settings.rounds, 1)),
        "--tcp",
        str(max(settings.tcp_connects // settings.rounds, 1)),
        "--warmup",
        str(settings.warmup_cycles),
        "--pace",
        str(settings.steady_interval),
        *(["--health-v1"] if health_v1 else []),
    )


def _merge_paced(parts: list[dict[str, Any]]) -> dict[str, Any]:
    values = [v for part in parts for v in part["seconds"]["values"]]
    cpu = sum(part["cpu_seconds"] for part in parts)
    wall = sum(part["wall_seconds"] for part in parts)
    shares = [
        (part["client_core_other_share"], part["wall_seconds"])
        for part in parts
        if part.get("client_core_other_share") is not None
    ]
    return {
        "pace_seconds": parts[0]["pace_seconds"],
        "client_core_other_share": (
            sum(share * w for share, w in shares) / sum(w for _, w in shares) if shares else None
        ),
        "seconds": summary(values),
        "failed": sum(part["failed"] for part in parts),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_per_cycle": cpu / len(values),
    }


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the rounds' worker results: every cycle, every CPU second."""
    raw = {
        key: _merge_paced([r["raw_cycle"][key] for r in rounds])
        for key in ("paced", "hot", "health_v1_paced")
        if key in rounds[0]["raw_cycle"]
    }
    raw["grpcio"] = rounds[0]["raw_cycle"]["grpcio"]
    tcp = [v for r in rounds for v in r["tcp_connect"]["seconds"]["values"]]
    return {
        "raw_cycle": raw,
        "tcp_connect": {"seconds": summary(tcp)},
        "rounds": without_values(rounds),
    }


def summarize(server: dict[str, Any]) -> dict[str, Any]:
    if not server.get("measured", True):
        return {"measured": False, "reason": server["reason"]}
    raw, tcp = server["limit"]["raw_cycle"], server["limit"]["tcp_connect"]
    out = {
        "pace": raw["paced"]["pace_seconds"],
        "raw_cycle_median": raw["paced"]["seconds"]["median"],
        "raw_cycle_p99": raw["paced"]["seconds"]["p99"],
        "raw_cycle_cpu": raw["paced"]["cpu_per_cycle"],
        "raw_cycles": raw["paced"]["seconds"]["n"],
        "client_core_other_share": raw["paced"]["client_core_other_share"],
        "hot_cycle_median": raw["hot"]["seconds"]["median"],
        "hot_cycle_p99": raw["hot"]["seconds"]["p99"],
        "hot_cycle_cpu": raw["hot"]["cpu_per_cycle"],
        "tcp_connect_median": tcp["seconds"]["median"],
        "tcp_connect_p99": tcp["seconds"]["p99"],
    }
    if "health_v1_paced" in raw:
        health = raw["health_v1_paced"]
        out["health_v1_cycle_median"] = health["seconds"]["median"]
        out["health_v1_cycle_p99"] = health["seconds"]["p99"]
        out["health_v1_cycle_cpu"] = health["cpu_per_cycle"]
    return out
