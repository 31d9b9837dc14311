"""What every measurement family shares: settings, statistics, the daemon under test.

The daemon is always the real thing, `python -m probe serve --config.file F
--web.listen-address 127.0.0.1:PORT`, run as a subprocess (a `kit.process.Daemon`,
pinned to the client core) and measured from the outside: its HTTP endpoints and
/proc/PID (`kit.procfs`); its /metrics parsed by `kit.scrape.Scrape`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kit.process import PYTHON, ROOT, Daemon
from kit.procfs import core_busy_seconds

MIB = 1024 * 1024

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Pinning:
    """Which CPU runs the clients (raw cycles, the daemon, pymilvus) and which the servers.

    With two or more CPUs the clients get one core to themselves and the servers (Milvus,
    proxies, the harness) the rest, so "one core" means one core. None: not pinned.
    """

    client: int | None
    servers: tuple[int, ...] | None

    @classmethod
    def detect(cls) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls(cpus[0], tuple(cpus[1:]))

    def as_env(self) -> dict[str, str]:
        """For a child harness (the netns side) to use the same split."""
        if self.client is None or self.servers is None:
            return {"BENCH_PINNING": ""}
        return {"BENCH_PINNING": f"{self.client}:{','.join(map(str, self.servers))}"}

    @classmethod
    def from_env(cls) -> Pinning:
        raw = os.environ.get("BENCH_PINNING")
        if raw is None:
            return cls.detect()
        if not raw:
            return cls(None, None)
        client, servers = raw.split(":")
        return cls(int(client), tuple(int(c) for c in servers.split(",")))

    def pin_self_to_servers(self) -> None:
        if self.servers is not None:
            os.sched_setaffinity(0, self.servers)

    def client_prefix(self) -> list[str]:
        """Command prefix that runs a process on the client core."""
        if self.client is None or shutil.which("taskset") is None:
            return []
        return ["taskset", "-c", str(self.client)]

    def describe(self) -> dict[str, Any]:
        return {
            "client_cpu": self.client,
            "server_cpus": list(self.servers) if self.servers is not None else None,
            "note": "clients (raw cycles, milvus-probe, pymilvus, blackbox_exporter) on "
            "client_cpu; Milvus servers, proxies and the harness on server_cpus",
        }


@dataclass(frozen=True)
class Settings:
    """How much to measure; `quick()` is for the smoke test."""

    quick: bool = False
    rounds: int = 2
    """Families 1–3 alternate raw cycles and the daemon this many times (A B A B), so
    both see the same drift in whatever else the machine is doing."""
    raw_cycles: int = 200
    tcp_connects: int = 2000
    warmup_cycles: int = 20
    steady_interval: float = 0.05
    """The daemon's interval in families 1–4, and the pace of every client there. The
    timeout is 80 % of it: long enough for a standalone's slow CheckHealth."""
    steady_window: float = 10.0
    delay: float = 0.010
    delay_probes: int = 20
    pymilvus_cycles: int = 100
    blackbox_probes: int = 100
    footprint_starts: int = 3
    footprint_many: int = 1000
    idle_window: float = 5.0
    scale_targets: tuple[int, ...] = (100, 1000, 5000)
    scale_rates: tuple[int, ...] = (150, 300, 600, 900)
    scale_window: float = 5.0
    scale_settle: float = 20.0
    scale_retry_budget: float = 150.0
    scale_climb_max_targets: int = 1000
    """Above this many targets the ladder does not climb past the goal (time budget)."""
    scrape_targets: tuple[int, ...] = (1, 100, 1000)
    scrape_sequential: int = 100
    scrape_concurrency: int = 50
    scrape_per_scraper: int = 2
    scrape_budget: float = 10.0
    concurrent_budget: float = 15.0
    scrape_profile_seconds: int = 5
    profiling_targets: int = 100
    profiling_interval: float = 1.0
    profiling_window: int = 6
    profiling_rounds: int = 5
    history_targets: tuple[int, ...] = (100, 1000)
    history_memory_targets: int = 1000
    history_traced_targets: int = 20
    history_requests: int = 20
    held_cycles: int = 300
    """Family 11: fresh cycles and held calls, interleaved."""

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(
            quick=True,
            raw_cycles=30,
            tcp_connects=100,
            warmup_cycles=5,
            steady_window=2.0,
            delay_probes=3,
            pymilvus_cycles=10,
            blackbox_probes=10,
            footprint_starts=1,
            footprint_many=50,
            idle_window=1.0,
            scale_targets=(20,),
            scale_rates=(100,),
            scale_window=1.5,
            scale_settle=2.0,
            scrape_targets=(1, 20),
            scrape_sequential=5,
            scrape_concurrency=50,
            scrape_per_scraper=1,
            scrape_budget=5.0,
            concurrent_budget=10.0,
            scrape_profile_seconds=1,
            profiling_targets=20,
            profiling_interval=0.5,
            profiling_window=2,
            profiling_rounds=1,
            history_targets=(5,),
            history_memory_targets=10,
            history_traced_targets=2,
            history_requests=3,
            held_cycles=10,
        )


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, median, p99, mean, min, max (seconds unless said otherwise) and every raw value."""
    out: dict[str, Any] = {
        "n": len(values),
        "median": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "mean": statistics.fmean(values) if values else math.nan,
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }
    out["values"] = list(values)
    return out


def without_values(node: Any) -> Any:
    """A copy without the raw `values` lists (kept once, in the merged result)."""
    if isinstance(node, dict):
        return {k: without_values(v) for k, v in node.items() if k != "values"}
    return node


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not denominator or math.isnan(denominator):
        return None
    return numerator / denominator


# --------------------------------------------------------------------------- /proc


@dataclass
class CoreLoad:
    """How busy the client core was with *other* work while we measured something on it.

    The machine may be shared: whatever else runs on the client core competes with the
    process under measurement, and its share is reported with each figure.
    """

    cpu: int | None
    started: float = 0.0
    busy: float = 0.0

    def start(self) -> CoreLoad:
        self.started, self.busy = time.monotonic(), core_busy_seconds(self.cpu)
        return self

    def other_share(self, own_cpu_seconds: float) -> float | None:
        """Share of the core used by others since start(), our own CPU taken off."""
        if self.cpu is None:
            return None
        window = time.monotonic() - self.started
        busy = core_busy_seconds(self.cpu) - self.busy
        return max(busy - own_cpu_seconds, 0.0) / window if window > 0 else None


# --------------------------------------------------------------------------- histograms


def bucket_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def buckets_json(cumulative: list[tuple[float, float]]) -> list[tuple[str, float]]:
    """Buckets as Prometheus writes them: `le` as text ("+Inf" included), then the count."""
    return [("+Inf" if math.isinf(le) else repr(le), count) for le, count in cumulative]


def buckets_from_json(pairs: list[tuple[str, float]]) -> list[tuple[float, float]]:
    return [(float(le), count) for le, count in pairs]  # float("+Inf") is inf


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile: linear inside the bucket the rank falls in."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    rank = q * cumulative[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # the highest finite bound, as Prometheus does
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


# --------------------------------------------------------------------------- the daemon


def write_config(
    path: Path,
    targets: Iterable[tuple[str, str]],
    *,
    interval: float,
    timeout: float | None = None,
    history: int = 60,
    max_concurrent: int = 64,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A config file probing every (alias, host:port) in `targets`; `overrides` adds
    per-target keys (interval, timeout, ...) by alias."""
    timeout = timeout if timeout is not None else min(5.0, interval * 0.8)
    overrides = overrides or {}
    document = {
        "probe": {
            "interval": round(interval, 6),  # plain seconds
            "timeout": round(timeout, 6),
            "history": history,
            "max_concurrent": max_concurrent,
        },
        "targets": [
            {"alias": alias, "uri": f"http://{address}", **overrides.get(alias, {})}
            for alias, address in targets
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def many_targets(addresses: Sequence[str], count: int) -> list[tuple[str, str]]:
    """`count` distinct aliases spread over `addresses` (the same servers, many names)."""
    width = len(str(max(count - 1, 1)))
    return [(f"t{i:0{width}d}", addresses[i % len(addresses)]) for i in range(count)]


def probe_daemon(config: Path, pinning: Pinning, log_path: Path) -> Daemon:
    """`python -m probe serve --config.file CONFIG` on the client core, its log appended to
    `log_path`; `with` starts it, `wait_ready()` waits for /readyz."""
    return Daemon(
        log_path,
        "--config.file",
        str(config),
        "--log.level",
        "warn",
        prefix=pinning.client_prefix(),
        append_log=True,
    )


# --------------------------------------------------------------------------- workers


def run_worker(pinning: Pinning, *args: str, timeout: float = 600.0) -> dict[str, Any]:
    """Run `python -m bench.worker ARGS` on the client core; its JSON answer."""
    command = [*pinning.client_prefix(), PYTHON, "-m", "bench.worker", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"bench.worker {' '.join(args[:1])} failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def not_measured(reason: str) -> dict[str, Any]:
    return {"measured": False, "reason": reason}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
