"""Family 4, peers on the same server in the same run: what users would run instead.

* pymilvus `connections.connect` + `connections.disconnect` per cycle (the check most
  scripts do), its latency and its CPU (process CPU clock in a worker of its own), and
  how many TCP connections it really opens (counted by a proxy).
* Prometheus blackbox_exporter's gRPC prober via `/probe?module=grpc&target=...`. It
  speaks only grpc.health.v1, which milvus-lite lacks, so it runs against the embedded
  Milvus standalone; its latency is `probe_duration_seconds` (and the HTTP wall time),
  its CPU per probe is /proc/PID/stat over the probes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    Pinning,
    Settings,
    not_measured,
    ratio,
    run_worker,
    summary,
)
from kit.net import free_port, http_get
from kit.process import stop
from kit.procfs import cpu_seconds
from kit.scrape import Scrape

ALIAS = "bench"


def _pymilvus_cycle(uri: str, timeout: float) -> None:
    from pymilvus import connections  # type: ignore[import-untyped]

    # connections.* is the API the scripts in the field use; 3.0 marks it deprecated.
    warnings.filterwarnings("ignore", message=".*ORM-style PyMilvus API")

    connections.connect(alias=ALIAS, uri=uri, timeout=timeout)
    connections.disconnect(ALIAS)


def measure_pymilvus(
    address: str, cycles: int, warmup: int, timeout: float, pace: float
) -> dict[str, Any]:
    import pymilvus

    from bench.limit import paced
    from kit.proxy import CountingProxy

    uri = f"http://{address}"

    def cycle() -> bool:
        _pymilvus_cycle(uri, timeout)
        return True

    for _ in range(warmup):
        cycle()
    out = paced(cycle, cycles, pace)

    # Does a connect/disconnect cycle open (and close) a TCP connection of its own?
    host, port = address.rsplit(":", 1)
    proxy = CountingProxy((host, int(port)))
    counted = min(cycles, 20)
    try:
        for _ in range(counted):
            _pymilvus_cycle(f"http://{proxy.address}", timeout)
            time.sleep(pace)
        time.sleep(0.2)  # let the proxy see the last close
        accepted, closed = proxy.counts()
    finally:
        proxy.stop()
    out["tcp_connections"] = {"cycles": counted, "accepted": accepted, "closed": closed}
    out["pymilvus"] = pymilvus.__version__
    return out


def pymilvus(address: str, settings: Settings, pinning: Pinning) -> dict[str, Any]:
    return run_worker(
        pinning,
        "pymilvus",
        "--address",
        address,
        "--cycles",
        str(settings.pymilvus_cycles),
        "--pace",
        str(settings.steady_interval),
    )


# --------------------------------------------------------------------------- blackbox_exporter

BLACKBOX_BINARIES = ("prometheus-blackbox-exporter", "blackbox_exporter")


def blackbox_binary() -> str | None:
    for name in BLACKBOX_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def blackbox_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, timeout=10, check=False)
    text = (done.stdout or done.stderr).decode(errors="replace")
    return text.splitlines()[0].strip() if text else "unknown"


def blackbox(address: str, settings: Settings, pinning: Pinning, workdir: Path) -> dict[str, Any]:
    """blackbox_exporter's gRPC probe of `address` (must speak grpc.health.v1)."""
    binary = blackbox_binary()
    if binary is None:
        return not_measured(
            "blackbox_exporter is not installed (apt-get install prometheus-blackbox-exporter)"
        )
    config = workdir / "blackbox.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules": {
                    "grpc": {
                        "prober": "grpc",
                        "timeout": "5s",
                        "grpc": {"tls": False, "service": "", "preferred_ip_protocol": "ip4"},
                    }
                }
            }
        )
    )
    port = free_port()
    log_path = workdir / "blackbox.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                *pinning.client_prefix(),
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                return not_measured(
                    f"blackbox_exporter exited: {log_path.read_text(errors='replace')[-500:]}"
                )
            with contextlib.suppress(OSError):
                if http_get(port, "/-/healthy", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                return not_measured("blackbox_exporter did not start within 20 s")
            time.sleep(0.02)
        path = f"/probe?module=grpc&target={address}"

        def probe() -> tuple[float, float, bool]:
            start = time.perf_counter()
            _, _, body = http_get(port, path, timeout=10)
            wall = time.perf_counter() - start
            samples = Scrape(body.decode())
            found = samples.find("probe_success")
            success = bool(found) and found[0].value == 1.0
            return wall, samples.find("probe_duration_seconds")[0].value, success

        for _ in range(5):
            probe()
        walls: list[float] = []
        durations: list[float] = []
        failures = 0
        pace = settings.steady_interval  # as the daemon and the raw cycles are paced
        cpu0 = cpu_seconds(process.pid)
        due = time.perf_counter()
        for _ in range(settings.blackbox_probes):
            wall, duration, success = probe()
            walls.append(wall)
            durations.append(duration)
            failures += not success
            due += pace
            time.sleep(max(due - time.perf_counter(), 0.0))
        cpu = cpu_seconds(process.pid) - cpu0
        if failures == len(durations):
            return not_measured(f"every blackbox_exporter gRPC probe of {address} failed")
        return {
            "probe_duration_seconds": summary(durations),
            "wall_seconds": summary(walls),
            "failures": failures,
            "cpu_seconds": cpu,
            "cpu_per_probe": cpu / len(durations),
            "pace_seconds": pace,
            "version": blackbox_version(binary),
        }
    finally:
        stop(process, 5)


def summarize(server: dict[str, Any]) -> dict[str, Any]:
    """Peers against the paced raw cycle of the same server (blackbox_exporter against the
    raw grpc.health.v1 cycle too: that is the RPC it makes)."""
    if not server.get("measured", True):
        return {"measured": False, "reason": server["reason"]}
    raw = server["limit"]["raw_cycle"]["paced"]
    out: dict[str, Any] = {}
    pym = server["pymilvus"]
    tcp = pym["tcp_connections"]
    out["pymilvus"] = {
        "median": pym["seconds"]["median"],
        "p99": pym["seconds"]["p99"],
        "cpu_per_cycle": pym["cpu_per_cycle"],
        "median_over_limit": ratio(pym["seconds"]["median"], raw["seconds"]["median"]),
        "cpu_over_raw": ratio(pym["cpu_per_cycle"], raw["cpu_per_cycle"]),
        "tcp_connections_per_cycle": ratio(tcp["accepted"], tcp["cycles"]),
    }
    bb = server["blackbox_exporter"]
    if not bb.get("measured", True):
        out["blackbox_exporter"] = bb
        return out
    health = server["limit"]["raw_cycle"].get("health_v1_paced")
    out["blackbox_exporter"] = {
        "median": bb["probe_duration_seconds"]["median"],
        "p99": bb["probe_duration_seconds"]["p99"],
        "wall_median": bb["wall_seconds"]["median"],
        "wall_p99": bb["wall_seconds"]["p99"],
        "failures": bb["failures"],
        "cpu_per_probe": bb["cpu_per_probe"],
        "median_over_limit": ratio(
            bb["probe_duration_seconds"]["median"], raw["seconds"]["median"]
        ),
        "cpu_over_raw": ratio(bb["cpu_per_probe"], raw["cpu_per_cycle"]),
    }
    if health is not None:
        out["blackbox_exporter"]["median_over_health_v1_limit"] = ratio(
            bb["probe_duration_seconds"]["median"], health["seconds"]["median"]
        )
        out["blackbox_exporter"]["cpu_over_health_v1_raw"] = ratio(
            bb["cpu_per_probe"], health["cpu_per_cycle"]
        )
    return out
