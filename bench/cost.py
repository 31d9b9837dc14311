"""Family 3, cost: CPU per cycle, milvus-probe against the raw cycle and the peers.

The figures come from the runs of families 1, 2 and 4 (same server, same run):

* raw cycle: the worker's process CPU clock around N raw cycles paced on the daemon's
  interval (gRPC threads included);
* milvus-probe: the daemon's utime + stime (/proc/PID/stat) over the steady window,
  divided by the cycles it ran then — everything the daemon does per cycle, scheduler,
  metrics and idle work included; `marginal` takes off the idle share measured by the
  footprint family (one target, 10 s interval);
* pymilvus and blackbox_exporter: per connect/disconnect and per `/probe`.
"""

from __future__ import annotations

from typing import Any

from bench.common import ratio


def summarize(server: dict[str, Any], idle_share: float | None) -> dict[str, Any]:
    if not server.get("measured", True):
        return {"measured": False, "reason": server["reason"]}
    raw = server["limit"]["raw_cycle"]["paced"]["cpu_per_cycle"]
    run = server["probe"]
    probe = run["cpu_per_cycle"]
    out: dict[str, Any] = {
        "raw_cycle_cpu": raw,
        "probe_cpu_per_cycle": probe,
        "probe_over_raw": ratio(probe, raw),
        "probe_cpu_share_of_core": run["cpu_share_of_core"],
        "probe_cycles_per_second": run["cycles_per_second"],
    }
    if idle_share is not None and run["cycles_per_second"]:
        window = run["window_seconds"]
        marginal = (run["cpu_seconds"] - idle_share * window) / (run["cycles_per_second"] * window)
        out["probe_marginal_cpu_per_cycle"] = marginal
        out["probe_marginal_over_raw"] = ratio(marginal, raw)
    pym = server["pymilvus"]
    out["pymilvus_cpu_per_cycle"] = pym["cpu_per_cycle"]
    out["pymilvus_over_raw"] = ratio(pym["cpu_per_cycle"], raw)
    bb = server["blackbox_exporter"]
    if bb.get("measured", True):
        out["blackbox_cpu_per_probe"] = bb["cpu_per_probe"]
        out["blackbox_over_raw"] = ratio(bb["cpu_per_probe"], raw)
    return out
