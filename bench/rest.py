"""The REST prober against the raw limit: a `http.client` cycle on the same server.

Both open a fresh TCP connection, send the same request (the v1 list-collections call the
prober settled on), read the whole answer and close, paced alike and alternated cycle by
cycle in one process, so both see the same machine. Reported: latency (the prober's own
figure against wall time around the raw cycle) and CPU per cycle (this thread's CPU clock
around each cycle), medians and the ratios prober / raw.
"""

from __future__ import annotations

import http.client
import time
from typing import Any

from bench.common import Settings, summary


def _raw_cycle(host: str, port: int, path: str, token: str | None) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status == 200 and b'"code":200' in body.replace(b" ", b"")
    finally:
        connection.close()


def measure(address: str, settings: Settings, token: str | None = None) -> dict[str, Any]:
    """Interleaved REST prober and raw http.client cycles against `address` (host:port)."""
    from probe.config import Sources, load
    from probe.probers.rest import RestProber

    host, _, port_text = address.rpartition(":")
    flags: dict[str, Any] = {"uri": f"http://{address}", "protocol": "rest"}
    if token:
        flags["token"] = token
    target = load(Sources(flags=flags, environ={})).targets[0]
    prober = RestProber()
    first = prober.run(target)  # settles auto on the API the server speaks
    if not first.success:
        return {"measured": False, "reason": f"the REST probe fails: {first.error}"}
    path = "/v1/vector/collections" if first.facts.api == "v1" else ""  # type: ignore[union-attr]
    if not path:
        return {"measured": False, "reason": f"the server speaks {first.facts.api}"}  # type: ignore[union-attr]
    probe_latency, probe_cpu, raw_latency, raw_cpu = [], [], [], []
    failures = 0
    cycles = max(settings.raw_cycles // 2, 10)
    for _ in range(settings.warmup_cycles):
        prober.run(target)
        _raw_cycle(host, int(port_text), path, token)
    for _ in range(cycles):
        time.sleep(settings.steady_interval)
        cpu = time.thread_time()
        result = prober.run(target)
        probe_cpu.append(time.thread_time() - cpu)
        probe_latency.append(result.duration)
        failures += not result.success
        time.sleep(settings.steady_interval)
        cpu, wall = time.thread_time(), time.perf_counter()
        ok = _raw_cycle(host, int(port_text), path, token)
        raw_latency.append(time.perf_counter() - wall)
        raw_cpu.append(time.thread_time() - cpu)
        failures += not ok
    out = {
        "measured": True,
        "cycles": cycles,
        "failures": failures,
        "api": first.facts.api,  # type: ignore[union-attr]
        "probe_latency": summary(probe_latency),
        "raw_latency": summary(raw_latency),
        "probe_cpu": summary(probe_cpu),
        "raw_cpu": summary(raw_cpu),
    }
    out["latency_ratio"] = out["probe_latency"]["median"] / out["raw_latency"]["median"]
    out["cpu_ratio"] = out["probe_cpu"]["median"] / out["raw_cpu"]["median"]
    return out
