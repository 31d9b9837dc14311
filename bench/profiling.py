"""Family 8, profiling overhead: the daemon's CPU with the 100 Hz CPU sampler on and off.

A daemon probes `profiling_targets` aliases every `profiling_interval` (a steady load).
Windows alternate: off (nothing asked), on (`GET /debug/pprof/profile?seconds=W&hz=100`,
the window being the whole request: sampling, encoding and sending the profile). The
overhead is the median, over the rounds, of the difference of the daemon's CPU share of
a core (/proc/PID/stat) between an "on" window and the "off" window before it.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import CoreLoad, Pinning, Settings, many_targets, probe_daemon, write_config
from kit.net import http_get


def measure(
    addresses: list[str], settings: Settings, pinning: Pinning, workdir: Path
) -> dict[str, Any]:
    count, interval, window = (
        settings.profiling_targets,
        settings.profiling_interval,
        settings.profiling_window,
    )
    config = write_config(
        workdir / "profiling.yaml", many_targets(addresses, count), interval=interval
    )
    windows: list[dict[str, Any]] = []
    with probe_daemon(config, pinning, workdir / "profiling.log") as daemon:
        daemon.wait_ready()
        time.sleep(interval + 1.0)  # steady state
        for _ in range(settings.profiling_rounds):
            for mode in ("off", "on"):
                load = CoreLoad(pinning.client).start()
                cpu0, t0 = daemon.cpu(), time.monotonic()
                if mode == "on":
                    status, _, body = http_get(
                        daemon.port,
                        f"/debug/pprof/profile?seconds={window}&hz=100",
                        timeout=window + 60,
                    )
                    if status != 200:
                        raise RuntimeError(f"profile answered {status}: {body[:200]!r}")
                    size = len(body)
                else:
                    time.sleep(window)
                    size = 0
                cpu, elapsed = daemon.cpu() - cpu0, time.monotonic() - t0
                windows.append(
                    {
                        "mode": mode,
                        "seconds": elapsed,
                        "cpu_seconds": cpu,
                        "cpu_share_of_core": cpu / elapsed,
                        "profile_bytes": size,
                        "client_core_other_share": load.other_share(cpu),
                    }
                )
    off = [w["cpu_share_of_core"] for w in windows if w["mode"] == "off"]
    on = [w["cpu_share_of_core"] for w in windows if w["mode"] == "on"]
    # Each "on" window against the "off" window just before it; the median of the pairs
    # resists what other work on the core does to single windows.
    pairs = [b - a for a, b in zip(off, on, strict=True)]
    return {
        "targets": count,
        "interval_seconds": interval,
        "hz": 100,
        "windows": windows,
        "cpu_share_off": statistics.median(off),
        "cpu_share_on": statistics.median(on),
        "pair_differences": pairs,
        "overhead_share_of_core": statistics.median(pairs),
    }
