"""Family 7, scrape: how fast /metrics answers, and how big it is, as targets grow.

For each target count (aliases of the same milvus-lite, 10 s interval, the daemon on the
client core), with the request headers Prometheus 2.42 sends (OpenMetrics preferred,
gzip accepted), timed until the whole body has arrived:

* one scraper, one request after another (what a Prometheus server does), up to
  `scrape_sequential` requests or `scrape_budget` seconds (at least 2 requests);
* one scraper while `GET /debug/pprof/profile?seconds=N` runs;
* 50 concurrent scrapers, each a few requests, within `concurrent_budget` seconds
  (requests not answered by then are counted as unfinished, and the p99 is then at
  least the budget). Run last: the daemon keeps rendering what the scrapers gave up on.
"""

from __future__ import annotations

import gzip
import http.client
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Pinning,
    Settings,
    many_targets,
    probe_daemon,
    summary,
    write_config,
)
from kit.net import http_get

MIN_SCRAPES = 2
"""Fewest requests per scenario, whatever the budget (at 1,000 targets one takes seconds)."""
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
}


def scrape(port: int, timeout: float) -> tuple[float, bytes, bool]:
    """(seconds until the whole body arrived, the body as sent, whether it is gzipped)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        start = time.perf_counter()
        conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        return elapsed, body, response.getheader("Content-Encoding") == "gzip"
    finally:
        conn.close()


def _sequential(port: int, count: int, budget: float) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.monotonic() + budget
    while len(latencies) < count and (len(latencies) < MIN_SCRAPES or time.monotonic() < deadline):
        latencies.append(scrape(port, budget + 30)[0])
    return summary(latencies)


def _concurrent(port: int, scrapers: int, each: int, budget: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(scrapers)
    deadline = time.monotonic() + budget

    def run() -> None:
        barrier.wait()
        for _ in range(each):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                elapsed = scrape(port, remaining)[0]
            except RuntimeError as exc:  # answered, not 200: 503 beyond the handler cap
                with lock:
                    errors.append(str(exc))
                return
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(type(exc).__name__)
                return
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(scrapers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(budget + 35)
    wall = time.perf_counter() - started
    requested = scrapers * each
    unfinished = requested - len(latencies)
    out = summary(latencies)
    out.update(
        {
            "scrapers": scrapers,
            "requests": requested,
            "completed": len(latencies),
            "unfinished": unfinished,
            "errors": sorted(set(errors)),
            "budget_seconds": budget,
            "wall_seconds": wall,
            "p99_is_lower_bound": unfinished > 0.01 * requested,
        }
    )
    if out["p99_is_lower_bound"]:
        out["p99"] = max(out["p99"] if latencies else 0.0, budget)
    return out


def _while_profiling(port: int, seconds: int, budget: float) -> dict[str, Any]:
    profile: dict[str, Any] = {}

    def fetch() -> None:
        start = time.perf_counter()
        status, _, body = http_get(
            port, f"/debug/pprof/profile?seconds={seconds}&hz=100", timeout=seconds + 60
        )
        profile.update(status=status, bytes=len(body), seconds=time.perf_counter() - start)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    time.sleep(0.05)  # let the profile begin
    latencies: list[float] = []
    while thread.is_alive() or len(latencies) < MIN_SCRAPES:
        latencies.append(scrape(port, budget + 30)[0])
    thread.join()
    out = summary(latencies)
    out["profile"] = profile
    return out


def measure(
    addresses: list[str], settings: Settings, pinning: Pinning, workdir: Path
) -> dict[str, Any]:
    by_targets: dict[str, Any] = {}
    for count in settings.scrape_targets:
        config = write_config(
            workdir / f"scrape-{count}.yaml", many_targets(addresses, count), interval=10.0
        )
        with probe_daemon(config, pinning, workdir / f"scrape-{count}.log") as daemon:
            daemon.wait_ready(timeout=60 + count / 50)
            time.sleep(1.0)
            _, wire, gzipped = scrape(daemon.port, 120)  # also the first, cold scrape
            plain = gzip.decompress(wire) if gzipped else wire
            sequential = _sequential(
                daemon.port, settings.scrape_sequential, settings.scrape_budget
            )
            profiling = _while_profiling(
                daemon.port, settings.scrape_profile_seconds, settings.scrape_budget
            )
            rss = daemon.status().get("VmRSS")
            # Last: scrapes it gave up on may keep the daemon busy after the budget.
            concurrent = _concurrent(
                daemon.port,
                settings.scrape_concurrency,
                settings.scrape_per_scraper,
                settings.concurrent_budget,
            )
        by_targets[str(count)] = {
            "targets": count,
            "size_bytes": len(plain),
            "size_on_wire_bytes": len(wire),
            "content_type_gzip": gzipped,
            "lines": plain.count(b"\n"),
            "single": sequential,
            "concurrent": concurrent,
            "while_profiling": profiling,
            "rss_bytes_after": rss,
        }
    return {"headers": PROMETHEUS_HEADERS, "by_targets": by_targets}
