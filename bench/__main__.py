"""`make bench`: milvus-probe against the limit and its peers, on real Milvus servers.

    python -m bench [--quick] [--skip-standalone] [--skip-blackbox] [--out DIR]

Prints one table and writes every raw figure to DIR/<date>-<host>.json (default
bench/results). See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import (
    cost,
    environment,
    fidelity,
    footprint,
    held,
    history,
    limit,
    peers,
    profiling,
    raw,
    report,
    scale,
    scrape,
    standalone,
)
from bench.common import Pinning, Settings, log, not_measured
from bench.side_by_side import measure_server
from kit.milvus_lite import start_milvus_lite
from kit.process import ROOT

NO_HEALTH_V1 = "milvus-lite has no grpc.health.v1 (blackbox's only gRPC check)"
DERIVED = ("limit", "fidelity", "peers", "cost", "rest")
"""Families summarised from `servers`: their gaps are the servers' gaps, listed once."""


def _attempt(what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A family's result, or "not measured" with the reason when it broke."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - reported in the table and JSON
        traceback.print_exc()
        log(f"{what} failed: {exc}")
        return not_measured(f"{what} failed: {type(exc).__name__}: {exc}")


def _unmeasured(node: Any, path: str = "") -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if node.get("measured") is False:
            yield {"what": path.lstrip("."), "reason": str(node.get("reason", ""))}
            return
        for key, value in node.items():
            yield from _unmeasured(value, f"{path}.{key}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.quick_settings() if args.quick else Settings()
    pinning = Pinning.detect()
    results: dict[str, Any] = environment.describe(pinning)
    pinning.pin_self_to_servers()  # servers inherit it; clients are pinned to the client core
    began = time.monotonic()
    results["settings"] = {k: v for k, v in vars(settings).items()}
    results["settings"]["skip_standalone"] = args.skip_standalone
    results["settings"]["skip_blackbox"] = args.skip_blackbox
    workdir = Path(tempfile.mkdtemp(prefix="milvus-probe-bench-"))
    servers: dict[str, Any] = {}
    try:
        (workdir / "milvus-lite").mkdir()
        log("starting milvus-lite")
        lite = start_milvus_lite(workdir / "milvus-lite")
        try:
            address = lite.address
            servers["milvus_lite"] = _attempt(
                "milvus-lite side by side",
                lambda: {
                    **measure_server(
                        "milvus-lite",
                        address,
                        settings,
                        pinning,
                        workdir,
                        delay=True,
                        blackbox=NO_HEALTH_V1,
                    ),
                    "server": "milvus-lite 3.2.2",
                    "server_version": raw.server_version(address),
                },
            )
            log("footprint")
            results["footprint"] = _attempt(
                "footprint", lambda: footprint.measure(address, settings, pinning, workdir)
            )
            results["scale"] = _attempt(
                "scale", lambda: scale.measure([address], settings, pinning, workdir)
            )
            log("scrape")
            results["scrape"] = _attempt(
                "scrape", lambda: scrape.measure([address], settings, pinning, workdir)
            )
            log("profiling overhead")
            results["profiling"] = _attempt(
                "profiling", lambda: profiling.measure([address], settings, pinning, workdir)
            )
            log("history (memory per target, pages and /api/v1 latency)")
            results["history"] = _attempt(
                "history", lambda: history.measure([address], settings, pinning, workdir)
            )
            log("held connection (CPU per cycle against the fresh cycle)")
            results["held"] = _attempt(
                "held", lambda: held.measure(address, settings, pinning)
            )
        finally:
            lite.stop()
        if args.skip_standalone:
            servers["standalone"] = not_measured("skipped (--skip-standalone)")
        else:
            log("standalone (network namespace)")
            servers["standalone"] = _attempt(
                "standalone",
                lambda: standalone.run(
                    settings, pinning, workdir, skip_blackbox=args.skip_blackbox
                ),
            )
    finally:
        if args.keep_workdir:
            log(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    results["servers"] = servers
    standalone_result = servers.get("standalone") or {}
    results["rest"] = standalone_result.get("rest") or not_measured(
        "needs the standalone (milvus-lite has no REST API)"
    )
    footprint_ok = results["footprint"].get("measured", True)
    idle = (
        results["footprint"]["one_target"]["idle"].get("cpu_share_of_core")
        if footprint_ok
        else None
    )
    for family, summarize in (
        ("limit", limit.summarize),
        ("fidelity", fidelity.summarize),
        ("peers", peers.summarize),
    ):
        results[family] = {name: summarize(server) for name, server in servers.items()}
    results["cost"] = {name: cost.summarize(server, idle) for name, server in servers.items()}
    results["goals"] = report.goals(results)
    results["not_measured"] = list(
        _unmeasured({k: v for k, v in results.items() if k not in DERIVED})
    )
    results["machine"]["load_average_at_end"] = environment.load_average()
    results["elapsed_seconds"] = time.monotonic() - began
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny N: a smoke run, not figures")
    parser.add_argument(
        "--skip-standalone",
        action="store_true",
        help="do not run the embedded Milvus standalone (needs root for a netns)",
    )
    parser.add_argument("--skip-blackbox", action="store_true", help="do not run blackbox_exporter")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    args = parser.parse_args(argv)
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    path = args.out / f"{stamp}-{socket.gethostname()}.json"
    path.write_text(json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
    print(report.table(results))
    print(f"\nraw figures: {path}")
    return 0


def _finite(node: Any) -> Any:
    """JSON has no NaN: an empty statistic is written as null."""
    if isinstance(node, dict):
        return {str(k): _finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_finite(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node


if __name__ == "__main__":
    sys.exit(main())
