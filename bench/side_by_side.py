"""Families 1–4 against one server, back to back in one run: the raw limit and milvus-probe
in alternating rounds (A B A B: both see the same drift in the machine's other work), then
pymilvus and (where the server speaks grpc.health.v1) blackbox_exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import fidelity, limit, peers
from bench.common import Pinning, Settings, log, not_measured


def measure_server(
    name: str,
    address: str,
    settings: Settings,
    pinning: Pinning,
    workdir: Path,
    *,
    delay: bool,
    blackbox: str | None,
) -> dict[str, Any]:
    """`blackbox`: None to measure it, else the reason it is not measured."""
    out: dict[str, Any] = {"measured": True, "address": address}
    raw_rounds, probe_rounds = [], []
    for i in range(settings.rounds):
        log(f"{name}: raw grpcio cycles and TCP connects ({i + 1}/{settings.rounds})")
        raw_rounds.append(limit.measure(address, settings, pinning, health_v1=blackbox is None))
        log(f"{name}: milvus-probe steady run ({i + 1}/{settings.rounds})")
        probe_rounds.append(
            fidelity.steady_run(address, settings, pinning, workdir, delay=delay and i == 0)
        )
    out["limit"] = limit.merge_rounds(raw_rounds)
    out["probe"] = fidelity.merge_rounds(probe_rounds)
    log(f"{name}: pymilvus connect/disconnect")
    out["pymilvus"] = peers.pymilvus(address, settings, pinning)
    if blackbox is None:
        log(f"{name}: blackbox_exporter gRPC probes")
        out["blackbox_exporter"] = peers.blackbox(address, settings, pinning, workdir)
    else:
        out["blackbox_exporter"] = not_measured(blackbox)
    return out
