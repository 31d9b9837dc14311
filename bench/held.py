"""What a held connection costs per cycle, against the fresh cycle beside it.

    python -m bench.held [--address HOST:PORT] [--cycles N] [--pace SECONDS]

On one milvus-lite server, in one worker process on the client core, at one cadence
(REFERENCE §6: CPU per cycle depends on the cadence on these VMs), interleaving cycle by
cycle what the daemon does for a target with `held: true`:

    fresh  a milvus-probe cycle (resolve, connect, CheckHealth, close)
    held   the probe RPC on the target's held channel (nothing opened, nothing closed)

Reports latency and process CPU per cycle of each (median, p99) and the ratio held / fresh
(goal ≤ 0.5: the held call opens nothing). Part of `make bench` (family 11); alone, it
starts its own milvus-lite.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Pinning, Settings, log, ratio, run_worker, summary


def cycles(address: str, count: int, warmup: int, pace: float) -> dict[str, Any]:
    """The worker's side: `count` interleaved fresh cycles and held calls, paced."""
    from probe.config import Sources, load
    from probe.milvus.channel import warm_up
    from probe.probers import InfoMode, Probers

    warm_up()
    flags = {"uri": address, "held": "true", "probe.timeout": "5s"}
    target = load(Sources(flags=flags, environ={})).targets[0]
    probers = Probers(max_concurrent=1)
    last = [probers.run(target, InfoMode.NONE)]

    def fresh() -> bool:
        last[0] = probers.run(target, InfoMode.NONE)
        return last[0].success

    def held() -> bool:
        return probers.held.check(target, last[0]).success

    kinds: dict[str, Callable[[], bool]] = {"fresh": fresh, "held": held}
    seen: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in kinds}
    failed = dict.fromkeys(kinds, 0)
    try:
        for n in range(warmup + count):
            for name, run in kinds.items():  # interleaved: the same machine state for each
                cpu, wall = time.process_time(), time.perf_counter()
                ok = run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if n >= warmup:
                    seen[name]["wall"].append(wall)
                    seen[name]["cpu"].append(cpu)
                    failed[name] += not ok
                time.sleep(pace)
        connections = probers.ledger.snapshot()
    finally:
        probers.close()
    out: dict[str, Any] = {
        "cycles": count,
        "pace_seconds": pace,
        "connections_opened": sum(o for o, _ in connections.values()),
    }
    for name, figures in seen.items():
        out[name] = {
            "latency_seconds": summary(figures["wall"]),
            "cpu_seconds": summary(figures["cpu"]),
            "failed": failed[name],
        }
    out["cpu_held_over_fresh"] = ratio(
        out["held"]["cpu_seconds"]["median"], out["fresh"]["cpu_seconds"]["median"]
    )
    out["latency_held_over_fresh"] = ratio(
        out["held"]["latency_seconds"]["median"], out["fresh"]["latency_seconds"]["median"]
    )
    return out


def measure(address: str, settings: Settings, pinning: Pinning) -> dict[str, Any]:
    """Family 11: the worker on the client core, paced on the daemon's interval."""
    return run_worker(
        pinning,
        "held",
        "--address", address,
        "--cycles", str(settings.held_cycles),
        "--warmup", str(settings.warmup_cycles),
        "--pace", str(settings.steady_interval),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from kit.milvus_lite import start_milvus_lite

    parser = argparse.ArgumentParser(prog="python -m bench.held", description=__doc__)
    parser.add_argument("--address", help="a running Milvus (default: start milvus-lite)")
    parser.add_argument("--cycles", type=int, default=Settings.held_cycles)
    parser.add_argument("--pace", type=float, default=Settings.steady_interval)
    args = parser.parse_args(argv)
    settings = Settings(held_cycles=args.cycles, steady_interval=args.pace)
    pinning = Pinning.detect()
    if args.address:
        results = measure(args.address, settings, pinning)
    else:
        with tempfile.TemporaryDirectory(prefix="milvus-probe-bench-held-") as work:
            log("starting milvus-lite")
            server = start_milvus_lite(Path(work))
            try:
                results = measure(server.address, settings, pinning)
            finally:
                server.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
