"""The data-plane canary's cost, against the obvious alternative, on one real server.

    python -m bench.canary [--cycles N] [--pace SECONDS] [--out FILE]

On one milvus-lite server, in one run, at one cadence (REFERENCE §6: CPU per cycle depends
on the cadence on these VMs), interleaving cycle by cycle:

    plain    a milvus-probe cycle without the canary (resolve, connect, CheckHealth, close)
    canary   the same cycle with the canary (search, query; and a variant that also writes)
    pymilvus the same search and query with pymilvus MilvusClient, a fresh client per cycle
             (what a hand-written cloudprober script would do)

Reports per-cycle latency (p50, p99) and process CPU, the ratios canary / pymilvus, and the
canary's share of one core at 100 targets every 10 s: (CPU of a canary cycle − CPU of a
plain cycle) × 100 / 10 s. Not run by the tests (a benchmark is not a test); not part of
`make bench`'s table yet.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import log, ratio, summary
from kit.milvus_lite import start_milvus_lite
from probe.milvus.channel import warm_up
from probe.probers import InfoMode
from probe.probers.canary import known_vector
from probe.probers.grpc import GrpcProber
from probe.targets import Target

COLLECTION = "milvus_probe_bench_canary"
TARGETS, INTERVAL = 100, 10.0
"""The fleet the core share is given for."""


def _target(address: str, **canary: str) -> Target:
    from probe.config import Sources, load

    flags: dict[str, Any] = {"uri": address, "probe.timeout": "5s"}
    flags.update({f"canary.{k}": v for k, v in canary.items()})
    return load(Sources(flags=flags)).targets[0]


def _timed(cycle: Callable[[], bool]) -> tuple[float, float, bool]:
    """(wall seconds, process CPU seconds, ok) of one cycle."""
    cpu, wall = time.process_time(), time.perf_counter()
    ok = cycle()
    return time.perf_counter() - wall, time.process_time() - cpu, ok


def measure(address: str, cycles: int, pace: float) -> dict[str, Any]:
    from pymilvus import MilvusClient  # type: ignore[import-untyped]

    plain = _target(address)
    reading = _target(address, collection=COLLECTION)
    writing = _target(address, collection=COLLECTION, write="true")
    prober = GrpcProber()
    prober.set_up(_target(address, collection=COLLECTION, create="true"))
    row = [0]

    def pymilvus_cycle() -> bool:
        row[0] = row[0] % 16 + 1
        client = MilvusClient(uri=f"http://{address}")
        try:
            hits = client.search(
                COLLECTION, data=[known_vector(row[0], 8)], limit=1, anns_field="vector"
            )
            rows = client.query(COLLECTION, filter=f"pk in [{row[0]}]", output_fields=["vector"])
            return bool(hits[0]) and hits[0][0].pk == row[0] and len(rows) == 1
        finally:
            client.close()

    kinds: dict[str, Callable[[], bool]] = {
        "plain": lambda: prober.run(plain, InfoMode.NONE).success,
        "canary": lambda: prober.run(reading, InfoMode.NONE).success,
        "canary_write": lambda: prober.run(writing, InfoMode.NONE).success,
        "pymilvus": pymilvus_cycle,
    }
    for cycle in kinds.values():  # warm every path once (imports, first channel)
        cycle()
    seen: dict[str, dict[str, list[float]]] = {
        k: {"wall": [], "cpu": [], "failed": []} for k in kinds
    }
    for _ in range(cycles):
        for name, cycle in kinds.items():  # interleaved: the same machine state for each
            wall, cpu, ok = _timed(cycle)
            seen[name]["wall"].append(wall)
            seen[name]["cpu"].append(cpu)
            if not ok:
                seen[name]["failed"].append(1.0)
            time.sleep(pace)
    out: dict[str, Any] = {"cycles": cycles, "pace_seconds": pace}
    for name, figures in seen.items():
        out[name] = {
            "latency_seconds": summary(figures["wall"]),
            "cpu_seconds": summary(figures["cpu"]),
            "failed": len(figures["failed"]),
        }

    def p50(name: str, what: str) -> float:
        return float(out[name][what]["median"])

    out["ratios"] = {
        "latency_canary_over_pymilvus": ratio(p50("canary", "latency_seconds"),
                                              p50("pymilvus", "latency_seconds")),
        "cpu_canary_over_pymilvus": ratio(p50("canary", "cpu_seconds"),
                                          p50("pymilvus", "cpu_seconds")),
    }  # fmt: skip
    share = {}
    for name in ("canary", "canary_write"):
        extra = max(p50(name, "cpu_seconds") - p50("plain", "cpu_seconds"), 0.0)
        share[name] = {
            "extra_cpu_seconds_per_cycle": extra,
            "core_share_at_100_targets_10s": extra * TARGETS / INTERVAL,
            "whole_cycle_core_share_at_100_targets_10s": p50(name, "cpu_seconds")
            * TARGETS
            / INTERVAL,
        }
    out["core_share"] = share
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.canary", description=__doc__)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between cycles")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    warm_up()
    with tempfile.TemporaryDirectory(prefix="milvus-probe-bench-canary-") as work:
        log("starting milvus-lite")
        server = start_milvus_lite(Path(work))
        try:
            results = measure(server.address, args.cycles, args.pace)
        finally:
            server.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
