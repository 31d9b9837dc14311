"""Smoke test of the benchmark harness (`make bench`): a tiny run writes well-formed JSON.

Benchmarks are not tests: nothing here asserts a timing or a goal, only that every
section is there, with numbers where numbers belong and the ratios computed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def assert_numeric(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert numeric(section.get(key)), f"{key} is not a number: {section.get(key)!r}"


def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "bench", "--quick",
            "--skip-standalone", "--skip-blackbox", "--out", str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "goals" in done.stdout  # the table was printed
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    results = json.loads(files[0].read_text())

    # The machine, the software and the settings the figures belong to.
    assert results["host"] and results["date"]
    assert_numeric(results["machine"], "cpus_online", "memory_bytes")
    assert results["versions"]["grpcio"] and results["versions"]["milvus-probe"]
    assert results["settings"]["quick"] is True

    # 1–4 against milvus-lite, with every raw figure kept.
    lite = results["servers"]["milvus_lite"]
    assert lite["measured"] is True
    paced = lite["limit"]["raw_cycle"]["paced"]
    assert len(paced["seconds"]["values"]) == paced["seconds"]["n"] > 0
    assert len(lite["probe"]["duration"]["values"]) > 0
    assert_numeric(
        results["limit"]["milvus_lite"],
        "raw_cycle_median", "raw_cycle_p99", "raw_cycle_cpu", "hot_cycle_median",
        "tcp_connect_median",
    )  # fmt: skip
    fidelity = results["fidelity"]["milvus_lite"]
    assert_numeric(fidelity, "probe_median", "limit_median", "ratio", "histogram_ratio")
    assert fidelity["ratio"] == fidelity["probe_median"] / fidelity["limit_median"]
    assert_numeric(fidelity["delay"], "injected", "rpc_added", "rpc_added_over_injected")
    cost = results["cost"]["milvus_lite"]
    assert_numeric(cost, "raw_cycle_cpu", "probe_cpu_per_cycle", "probe_over_raw")
    assert cost["probe_over_raw"] == cost["probe_cpu_per_cycle"] / cost["raw_cycle_cpu"]
    peers = results["peers"]["milvus_lite"]
    assert_numeric(peers["pymilvus"], "median", "p99", "cpu_per_cycle", "cpu_over_raw")
    assert peers["blackbox_exporter"]["measured"] is False

    # What was skipped says so, with the reason.
    assert results["servers"]["standalone"] == {
        "measured": False,
        "reason": "skipped (--skip-standalone)",
    }
    skipped = {item["what"] for item in results["not_measured"]}
    assert {"servers.standalone", "servers.milvus_lite.blackbox_exporter"} <= skipped

    # 5–8.
    footprint = results["footprint"]
    assert_numeric(footprint["one_target"], "rss_mib_median")
    assert_numeric(footprint["one_target"]["ready_after_seconds"], "median", "max")
    assert_numeric(footprint["many_targets"], "rss_bytes", "ready_after_seconds")
    floor = footprint["floor"]  # the smallest process on the required libraries...
    assert_numeric(floor, "rss_bytes", "rss_anon_bytes")
    assert floor["healthy"] == floor["cycles"] > 0  # ...really talked to Milvus
    assert isinstance(footprint["imports"]["kubernetes_imported"], bool)
    assert numeric(results["scale"]["max_sustained_rate"])
    for by_targets in results["scale"]["by_targets"].values():
        for level in by_targets["levels"]:
            assert_numeric(
                level, "offered_rate", "achieved_rate", "lag_p50_seconds", "lag_p99_seconds",
                "cpu_share_of_core",
            )  # fmt: skip
            assert isinstance(level["sustained"], bool)
    assert results["scrape"]["by_targets"]
    for scrape in results["scrape"]["by_targets"].values():
        assert_numeric(scrape, "size_bytes", "size_on_wire_bytes")
        for mode in ("single", "concurrent", "while_profiling"):
            assert_numeric(scrape[mode], "median", "p99")
    assert_numeric(results["profiling"], "cpu_share_off", "cpu_share_on", "overhead_share_of_core")
    assert_history(results["history"])
    held = results["held"]
    for kind in ("fresh", "held"):
        assert held[kind]["failed"] == 0
        assert_numeric(held[kind]["cpu_seconds"], "median", "p99")
    assert_numeric(held, "cpu_held_over_fresh", "latency_held_over_fresh")
    # One fresh connection per cycle (warm-up included) and the one held connection.
    assert held["connections_opened"] == held["cycles"] + 5 + 2

    # Every goal has a measurement, a verdict and its ratio to the threshold.
    assert len(results["goals"]) == 10
    for goal in results["goals"]:
        assert_numeric(goal, "measured", "threshold", "measured_over_threshold")
        assert isinstance(goal["met"], bool)


def assert_history(history: dict[str, Any]) -> None:
    """Family 9: memory per target for a full day, render and HTTP latencies."""
    for mode in ("outages", "random5"):
        memory = history["memory"][mode]
        assert_numeric(memory["rss"], "rss_per_target_bytes", "rss_before_bytes")
        assert memory["rss"]["rows_of_first_target"] >= 1439  # a full day of rows
        assert_numeric(memory["traced"], "bytes_per_target")
    for render in history["render"].values():
        for name in ("status_page_1h", "status_page_24h", "api_targets", "target_page_24h",
                     "api_history_24h"):  # fmt: skip
            assert_numeric(render[name], "median", "p99")
    for http in history["http"].values():
        for name in ("status_page", "api_targets", "target_page", "api_history"):
            assert_numeric(http[name], "median", "p99", "bytes")
        assert_numeric(http["bundle"], "median", "bytes", "beyond_profile_median")
        assert http["bundle"]["members"] >= 12  # README.txt, config, metrics, ... a history each


def test_history_family_alone_writes_its_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.history", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_history(json.loads((tmp_path / "history.json").read_text()))
