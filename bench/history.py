"""Family 9, history: what the per-target history costs, and how fast its pages answer.

* **memory**: a full day of history (`--history.retention` 24h at 1m) per target, fed
  synthetic cycles shaped as the gRPC prober shapes them (fresh phase dicts, addresses,
  facts), in a fresh `python -m bench.history memory` process: its RSS before and after,
  over 1,000 targets; and, exactly, tracemalloc's count for a few targets. Two days: a
  healthy one with two outages (refused for 20 minutes, timeouts for 10), and a
  pessimistic one where 5 % of cycles fail at random (every failure and the success
  after it breaks the packing of traces).
* **render**: in-process, with that full day for 100 and 1,000 targets: the status page
  (1h and 24h windows), `/api/v1/targets`, one target's page and 24h history JSON.
* **http**: a real daemon (`python -m probe serve`, aliases of one milvus-lite), p50/p99
  of `GET /`, `/api/v1/targets`, `/targets/<alias>` and its history JSON, with the
  history the daemon gathered since it started (a few seconds: the render family covers
  the full day); and `/debug/bundle?seconds=1`: its time, size and members.

    python -m bench.history [--quick] [--out DIR]      # this family alone
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import (
    Pinning,
    Settings,
    log,
    many_targets,
    probe_daemon,
    summary,
    without_values,
    write_config,
)
from kit.net import http_get
from kit.process import PYTHON, ROOT
from kit.procfs import rss_bytes
from probe.config.settings import HistorySettings
from probe.history import History
from probe.hub import TargetDiff
from probe.probers.grpc import GrpcFacts, Phase
from probe.result import FailureReason, ProbeResult, RpcMethod
from probe.targets import Target

DAY = 86400
MODES = ("outages", "random5")
BUSY_MINUTES = 10
"""The day's last minutes get a cycle every 10 s, so the trace rings fill as they would;
the rest one cycle a minute (a row costs the same whatever its count)."""


def _targets(count: int) -> tuple[Target, ...]:
    return tuple(
        Target(alias=f"t{i:04d}", host="10.0.0.1", port=19530 + i % 1000, interval=10.0,
               timeout=5.0, rpc=RpcMethod.CHECK_HEALTH, connect_interval=3600.0)  # fmt: skip
        for i in range(count)
    )


def _cycle(t: Target, at: float, rnd: random.Random, reason: FailureReason | None) -> ProbeResult:
    if reason is not None:
        seconds = 5.0 if reason is FailureReason.TIMEOUT else 0.0006
        return ProbeResult(
            alias=t.alias, target=t.address, method="check_health", started_at=at,
            duration=seconds, phases={Phase.RESOLVE: 0.00005, Phase.CONNECT: seconds},
            success=False, reason=reason, failed_phase=Phase.CONNECT,
            error=f"UNAVAILABLE: {reason}", addresses=("10.0.0.1",),
            facts=GrpcFacts(rpc=RpcMethod.CHECK_HEALTH, grpc_code="UNAVAILABLE"),
        )  # fmt: skip
    phases: dict[str, float] = {
        Phase.RESOLVE: rnd.uniform(3e-5, 9e-5),
        Phase.CONNECT: rnd.uniform(5e-4, 2e-3),
        Phase.RPC: rnd.uniform(4e-4, 3e-3),
        Phase.CLOSE: rnd.uniform(2e-5, 6e-5),
    }
    return ProbeResult(
        alias=t.alias, target=t.address, method="check_health", started_at=at,
        duration=sum(phases.values()) * 1.02, phases=phases, success=True,
        addresses=("10.0.0.1",), healthy=True, quota_states=(),
        facts=GrpcFacts(rpc=RpcMethod.CHECK_HEALTH),
    )  # fmt: skip


def _reason(mode: str, minute: int, rnd: random.Random) -> FailureReason | None:
    if mode == "random5":
        return FailureReason.REFUSED if rnd.random() < 0.05 else None
    if 600 <= minute < 620:
        return FailureReason.REFUSED
    if 1000 <= minute < 1010:
        return FailureReason.TIMEOUT
    return None


def fill(history: History, targets: tuple[Target, ...], start: float, mode: str) -> None:
    """A synthetic day for every target, ending at `start + DAY`."""
    rnd = random.Random(7)
    minutes = DAY // 60
    for minute in range(minutes):
        per_minute = 6 if minute >= minutes - BUSY_MINUTES else 1
        for k in range(per_minute):
            at = start + minute * 60 + k * 10 + 1
            for t in targets:
                history.observe(t, _cycle(t, at, rnd, _reason(mode, minute, rnd)))


def _history(targets: tuple[Target, ...], clock: list[float]) -> History:
    history = History(HistorySettings(), traces=60, clock=lambda: clock[0])
    history.follow(TargetDiff(added=targets, removed=(), current=targets, first_round=True))
    return history


def memory_in_process(count: int, mode: str) -> dict[str, Any]:
    """RSS before and after a full day for `count` targets (run in a fresh process)."""
    start = time.time() - DAY
    clock = [start + DAY]
    targets = _targets(count)  # the daemon has its targets anyway: not history's cost
    gc.collect()
    before = rss_bytes()
    history = _history(targets, clock)
    fill(history, targets, start, mode)
    gc.collect()
    after = rss_bytes()
    rows = history.buckets(targets[0].alias, DAY) or []
    return {
        "targets": count,
        "mode": mode,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_per_target_bytes": (after - before) / count,
        "rows_of_first_target": len(rows),
    }


def memory_traced(count: int, mode: str) -> dict[str, Any]:
    """tracemalloc's exact count of what the history holds, per target."""
    start = time.time() - DAY
    clock = [start + DAY]
    targets = _targets(count)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        history = _history(targets, clock)
        fill(history, targets, start, mode)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del history
    return {"targets": count, "mode": mode, "bytes_per_target": held / count}


def render(count: int, repeats: int) -> dict[str, Any]:
    """In-process render times with a full day for `count` targets. Between two renders the
    clock moves 10 s on and every target has one more cycle, as between two refreshes of
    a page (10 s) at the default interval: nothing drawn before is still current."""
    from probe import pages

    start = time.time() - DAY
    clock = [start + DAY]
    targets = _targets(count)
    history = _history(targets, clock)
    fill(history, targets, start, "outages")
    alias = targets[0].alias
    rnd = random.Random(11)

    def timed(fn: Any) -> dict[str, Any]:
        values, size = [], 0
        for _ in range(repeats):
            clock[0] += 10.0
            for t in targets:
                history.observe(t, _cycle(t, clock[0] - 1.0, rnd, None))
            began = time.perf_counter()
            size = len(fn())
            values.append(time.perf_counter() - began)
        out: dict[str, Any] = without_values(summary(values))
        return out | {"values": values, "bytes": size}

    return {
        "targets": count,
        "status_page_1h": timed(lambda: pages.status_page(history, [], True, True, 0.0, 3600)),
        "status_page_24h": timed(lambda: pages.status_page(history, [], True, True, 0.0, DAY)),
        "api_targets": timed(lambda: json.dumps(pages.targets_json(history.summaries()))),
        "target_page_24h": timed(
            lambda: pages.target_page(history, alias, None, True, True, 0.0, DAY) or ""
        ),
        "api_history_24h": timed(
            lambda: json.dumps(
                pages.history_json(alias, DAY, 60.0, history.buckets(alias, DAY) or [])
            )
        ),
    }


def http(addresses: list[str], count: int, settings: Settings, pinning: Pinning,
         workdir: Path) -> dict[str, Any]:  # fmt: skip
    config = write_config(
        workdir / f"history-{count}.yaml", many_targets(addresses, count), interval=10.0
    )
    alias = many_targets(addresses, count)[0][0]
    paths = {
        "status_page": "/",
        "api_targets": "/api/v1/targets",
        "target_page": f"/targets/{alias}",
        "api_history": f"/api/v1/targets/{alias}/history?window=24h",
    }
    out: dict[str, Any] = {"targets": count}
    with probe_daemon(config, pinning, workdir / f"history-{count}.log") as daemon:
        daemon.wait_ready(timeout=60 + count / 50)
        time.sleep(1.0)
        for name, path in paths.items():
            latencies = []
            for _ in range(settings.history_requests):
                began = time.perf_counter()
                code, _, body = http_get(daemon.port, path, timeout=120)
                latencies.append(time.perf_counter() - began)
                if code != 200:
                    raise RuntimeError(f"{path} answered {code}: {body[:200]!r}")
            out[name] = summary(latencies) | {"bytes": len(body)}
        out["bundle"] = bundle(daemon.port)
    return out


BUNDLE_SECONDS = 1
BUNDLE_REPEATS = 3


def bundle(port: int) -> dict[str, Any]:
    """`GET /debug/bundle?seconds=1`: its time (the 1 s CPU profile included, and reported
    apart), its size and how many members it has."""
    import io
    import tarfile

    times, size, members = [], 0, 0
    for _ in range(BUNDLE_REPEATS):
        began = time.perf_counter()
        code, _, body = http_get(port, f"/debug/bundle?seconds={BUNDLE_SECONDS}", timeout=300)
        times.append(time.perf_counter() - began)
        if code != 200:
            raise RuntimeError(f"/debug/bundle answered {code}: {body[:200]!r}")
        size = len(body)
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            members = len(tar.getmembers())
    return summary(times) | {
        "profile_seconds": BUNDLE_SECONDS,
        "bytes": size,
        "members": members,
        "beyond_profile_median": summary(times)["median"] - BUNDLE_SECONDS,
    }


def _memory_worker(count: int, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, "-m", "bench.history", "memory", "--targets", str(count), "--mode", mode],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.history memory failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(
    addresses: list[str], settings: Settings, pinning: Pinning, workdir: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {"memory": {}, "render": {}, "http": {}}
    for mode in MODES:
        log(f"history memory ({mode})")
        results["memory"][mode] = {
            "rss": _memory_worker(settings.history_memory_targets, mode),
            "traced": memory_traced(settings.history_traced_targets, mode),
        }
    for count in settings.history_targets:
        log(f"history render ({count} targets, a full day)")
        results["render"][str(count)] = render(count, settings.history_requests)
    if addresses:
        for count in settings.history_targets:
            log(f"history pages over HTTP ({count} targets)")
            results["http"][str(count)] = http(addresses, count, settings, pinning, workdir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument("what", nargs="?", choices=("all", "memory"), default="all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--mode", choices=MODES, default="outages")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.what == "memory":
        print(json.dumps(memory_in_process(args.targets, args.mode)))
        return 0
    import tempfile

    from kit.milvus_lite import start_milvus_lite

    settings = Settings.quick_settings() if args.quick else Settings()
    workdir = Path(tempfile.mkdtemp(prefix="milvus-probe-bench-history-"))
    (workdir / "milvus-lite").mkdir()
    lite = start_milvus_lite(workdir / "milvus-lite")
    try:
        results = measure([lite.address], settings, Pinning.detect(), workdir)
    finally:
        lite.stop()
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "history.json").write_text(text + "\n")
    print(json.dumps(without_values(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
