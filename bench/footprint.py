"""Family 5, footprint: memory after start, time to ready, and what the process imports.

* RSS (`VmRSS` of /proc/PID/status) of the daemon one second after its first `/readyz`
  200, with one target and with many (1,000 by default) under distinct aliases.
* The floor under it: RSS of a process that imports only the required libraries (grpc,
  protobuf, prometheus_client), runs a few raw cycles on the same server, writes the
  default registry once and waits as long (`bench.raw.floor`). The daemon's RSS minus
  the floor is what milvus-probe's own code and state cost.
* Every figure with the .pyc files of probe/ written first, as the image runs.
* Time from spawning `python -m probe serve` to the first `/readyz` 200 (polled every
  2 ms), over a few starts: interpreter start, imports, config, warm-up, the first round.
* Idle CPU of the one-target daemon (default 10 s interval) as a share of a core.
* `kubernetes` must never be imported by the core daemon: a worker process builds and
  starts the App exactly as `serve` does and reports `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.breakdown import precompile
from bench.common import (
    MIB,
    Pinning,
    Settings,
    many_targets,
    probe_daemon,
    run_worker,
    summary,
    write_config,
)
from kit.process import PYTHON, ROOT, Daemon, stop
from kit.procfs import proc_status

SETTLE = 1.0
"""Seconds after /readyz before RSS is read."""
WATCHED_MODULES = ("kubernetes", "pymilvus", "numpy", "pandas", "grpc", "prometheus_client", "yaml")


def modules_after_start(config_path: str) -> dict[str, Any]:
    """In a worker: start the App from `config_path` as `serve` would; which modules loaded."""
    started = time.perf_counter()
    from probe.app import App
    from probe.config import Sources, load

    flags = {"config.file": config_path, "web.listen-address": "127.0.0.1:0"}
    app = App(load(Sources(flags=flags, environ={})))
    app.start()
    try:
        deadline = time.monotonic() + 15
        while not app.ready()[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = app.ready()[0]
        loaded = sorted(sys.modules)
    finally:
        app.stop()
    kubernetes = [m for m in loaded if m == "kubernetes" or m.startswith("kubernetes.")]
    return {
        "ready": ready,
        "seconds_to_ready_in_process": time.perf_counter() - started,
        "kubernetes_imported": bool(kubernetes),
        "kubernetes_modules": kubernetes[:20],
        "modules_loaded": len(loaded),
        "watched": {name: name in sys.modules for name in WATCHED_MODULES},
    }


def _start_once(config: Path, pinning: Pinning, log: Path) -> tuple[Daemon, dict[str, Any]]:
    daemon = probe_daemon(config, pinning, log)
    daemon.start()
    try:
        ready_after = daemon.wait_ready()
        time.sleep(SETTLE)
        status = daemon.status()
    except BaseException:
        daemon.stop()
        raise
    return daemon, {
        "ready_after_seconds": ready_after,
        "serving_after_seconds": daemon.serving_after,
        "rss_bytes": status.get("VmRSS"),
        "rss_anon_bytes": status.get("RssAnon"),
        "rss_file_bytes": status.get("RssFile"),
        "rss_mib": status.get("VmRSS", 0) / MIB,
        "hwm_bytes": status.get("VmHWM"),
        "threads": status.get("Threads"),
    }


def floor(address: str, pinning: Pinning) -> dict[str, Any]:
    """RSS of the smallest probe process on the required libraries, after SETTLE."""
    worker = subprocess.Popen(
        [*pinning.client_prefix(), PYTHON, "-m", "bench.worker", "floor", "--address", address],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        said = worker.stdout.readline()
        status: dict[str, int] = {}
        if said == b"ready\n":
            time.sleep(SETTLE)  # as long as the daemon's figures wait after /readyz
            status = proc_status(worker.pid)
        out, err = worker.communicate(b"", timeout=30)
        if not status or worker.returncode != 0:
            raise RuntimeError(
                f"bench.worker floor failed ({worker.returncode}, said {said!r}): "
                f"{err.decode(errors='replace')[-2000:]}"
            )
    finally:
        stop(worker, 0)
    return {
        "rss_bytes": status.get("VmRSS"),
        "rss_anon_bytes": status.get("RssAnon"),
        "rss_file_bytes": status.get("RssFile"),
        "threads": status.get("Threads"),
        **json.loads(out),
    }


def measure(address: str, settings: Settings, pinning: Pinning, workdir: Path) -> dict[str, Any]:
    # As the image (compileall): else every start compiles the editable probe/ from source
    # under PYTHONDONTWRITEBYTECODE=1, ~1.2 MiB of heap the image never pays.
    precompile()
    one = write_config(workdir / "footprint-1.yaml", [("default", address)], interval=10.0)
    starts: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
    for i in range(settings.footprint_starts):
        daemon, figures = _start_once(one, pinning, workdir / "footprint-1.log")
        try:
            if i == settings.footprint_starts - 1:
                cpu0, t0 = daemon.cpu(), time.monotonic()
                time.sleep(settings.idle_window)
                cpu, window = daemon.cpu() - cpu0, time.monotonic() - t0
                idle = {
                    "window_seconds": window,
                    "cpu_seconds": cpu,
                    "cpu_share_of_core": cpu / window,
                }
        finally:
            daemon.stop()
        starts.append(figures)

    count = settings.footprint_many
    many = write_config(
        workdir / f"footprint-{count}.yaml", many_targets([address], count), interval=10.0
    )
    daemon, many_figures = _start_once(many, pinning, workdir / f"footprint-{count}.log")
    daemon.stop()

    ready = [s["ready_after_seconds"] for s in starts]
    rss = [s["rss_bytes"] for s in starts]
    return {
        "one_target": {
            "starts": starts,
            "ready_after_seconds": summary(ready),
            "serving_after_seconds": summary([s["serving_after_seconds"] for s in starts]),
            "rss_bytes_median": sorted(rss)[len(rss) // 2],
            "rss_mib_median": sorted(rss)[len(rss) // 2] / MIB,
            "idle": idle,
        },
        "floor": floor(address, pinning),
        "many_targets": {"targets": count, **many_figures},
        "imports": run_worker(pinning, "imports", "--config", str(one)),
    }
