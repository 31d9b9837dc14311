"""The stage workers of `bench.breakdown`, in a module that imports nothing else.

    python -m bench.stages daemon|floor|modules ADDRESS CYCLES INTERVAL [LOADED]

A fresh process reads /proc/self after every stage: the floor's imports, then (daemon)
every further module the default daemon loads, in its load order, then the runtime steps
of `serve`. It prints one JSON list. The daemon imports a group only when a real daemon
loads it (LOADED, comma-separated, from the `modules` kind): a lazy import costs nothing.
Only what the interpreter loads at start (os, sys, time, typing, ...) is loaded before
the first reading, the same in both kinds, so every module either process imports shows
up in some stage.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

FLOOR_IMPORTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("grpc", ("grpc",)),
    ("protobuf + wire_pb2", ("probe.milvus.wire_pb2",)),
    ("prometheus_client", ("prometheus_client",)),
    ("argparse, json (a CLI: bench.worker's, the daemon's)", ("argparse", "json")),
)
"""What the floor process (`bench.worker floor`, `bench.raw.floor`) imports."""

DAEMON_IMPORTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("yaml (+ _yaml)", ("yaml",)),
    ("dataclasses", ("dataclasses",)),
    ("probe.result, .milvus.auth, .targets", ("probe.result", "probe.targets")),
    ("probe.logs", ("probe.logs",)),
    ("probe.config", ("probe.config",)),
    ("probe.cli", ("probe.cli",)),
    ("isal", ("isal.isal_zlib",)),
    ("statistics (decimal, fractions)", ("statistics",)),
    ("concurrent.futures.thread", ("concurrent.futures.thread",)),
    ("probe.milvus.channel, .client", ("probe.milvus.channel", "probe.milvus.client")),
    ("probe.prober", ("probe.prober",)),
    ("probe.exposition, .metrics", ("probe.exposition", "probe.metrics")),
    ("probe.health", ("probe.health",)),
    ("probe.pages", ("probe.pages",)),
    ("probe.web", ("probe.web",)),
    ("probe.scheduler, .targets.static", ("probe.scheduler", "probe.targets.static")),
    ("probe.app", ("probe.app",)),
    ("tracemalloc", ("tracemalloc",)),
    ("probe.pprof (profiling.enabled)", ("probe.pprof",)),
)
"""Every module the default daemon loads beyond the floor's, in load order, in groups."""


# --------------------------------------------------------------------------- /proc


def read_memory(pid: int | str = "self") -> dict[str, int]:
    """rss, anon, file (status) and uss (smaps_rollup private) in bytes; threads."""
    out: dict[str, int] = {}
    names = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in names:
                out[names[key]] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out["threads"] = int(value)
    uss = 0
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss += int(line.split()[1]) * 1024
    out["uss"] = uss
    return out


# --------------------------------------------------------------------------- stage workers


class _Stages:
    """Reads /proc/self after each stage; lists the modules each stage added."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._modules = set(sys.modules)
        self.mark("interpreter")

    def mark(self, stage: str, **extra: Any) -> None:
        now = set(sys.modules)
        added = sorted(now - self._modules)
        self._modules = now
        self.rows.append({"stage": stage, **read_memory(), "modules": added, **extra})

    def imports(
        self, groups: Sequence[tuple[str, tuple[str, ...]]], loaded: set[str] | None = None
    ) -> None:
        """Import each group, then read; with `loaded` (what the real daemon has in
        sys.modules), only the modules it loads: a lazy import shows as `not loaded`."""
        import importlib

        for stage, modules in groups:
            wanted = [m for m in modules if loaded is None or m in loaded]
            for module in wanted:
                importlib.import_module(module)
            self.mark(stage if wanted else f"{stage}: not loaded")


def _threads() -> dict[str, Any]:
    import threading

    names = sorted(t.name for t in threading.enumerate())
    return {"python_threads": names, "native_threads": len(os.listdir("/proc/self/task"))}


def stage_floor(address: str, cycles: int, interval: float) -> list[dict[str, Any]]:
    stages = _Stages()
    stages.imports(FLOOR_IMPORTS)
    import prometheus_client

    from bench.raw import raw_cycle

    for _ in range(cycles):
        raw_cycle(f"ipv4:{address}", 5.0)
        time.sleep(interval)
    prometheus_client.generate_latest()
    stages.mark(f"runtime: {cycles} raw cycles + registry written", **_threads())
    return stages.rows


def stage_daemon(
    address: str, cycles: int, interval: float, loaded: set[str] | None = None
) -> list[dict[str, Any]]:
    """`loaded`: the modules of a real daemon (`loaded_modules`); None imports every group."""
    stages = _Stages()
    stages.imports(FLOOR_IMPORTS)
    stages.imports(DAEMON_IMPORTS, loaded)
    from probe import logs
    from probe.app import App
    from probe.cli import build_parser, sources_from
    from probe.config import load

    args = build_parser().parse_args(serve_args(address, interval))
    config = load(sources_from(args, dict(os.environ)))
    logs.setup(config.log_level, config.log_format.value)
    stages.mark("runtime: config parsed and loaded, logging set up")
    app = App(config)
    stages.mark("runtime: App() (registry, collectors, pools, pprof app, socket)")
    app.start()
    stages.mark("runtime: start() (warm-up, first round queued, gc.freeze, threads)")
    requests = poll_ready(app.port)
    stages.mark(f"runtime: /readyz polled over HTTP until 200 ({requests} requests)")
    time.sleep(cycles * interval)
    stages.mark(f"runtime: {cycles} more cycles", **_threads())
    app.stop()
    return stages.rows


def loaded_modules(address: str, interval: float) -> list[str]:
    """sys.modules of a daemon that started and ran a few cycles, nothing imported ahead."""
    stage_daemon(address, 3, interval, loaded=set())
    return sorted(sys.modules)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """Status and body over a plain socket: http.client's getaddrinfo("127.0.0.1") would
    load encodings.idna into the measured process (connect() to an IP does not)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(None, 2)[1]), body


def poll_ready(port: int) -> int:
    """GET /readyz every 10 ms until 200, as side_by_side_daemon does; how many requests."""
    deadline = time.monotonic() + 30
    requests = 0
    while time.monotonic() < deadline:
        requests += 1
        try:
            if http_get(port, "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.01)
    return requests


def serve_args(address: str, interval: float) -> list[str]:
    timeout = min(5.0, interval * 0.75)
    return [
        "serve",
        "--uri",
        address,
        "--web.listen-address",
        "127.0.0.1:0",
        "--probe.interval",
        f"{interval * 1000:g}ms",
        "--probe.timeout",
        f"{timeout * 1000:g}ms",
    ]


def main() -> int:
    kind, address, cycles, interval = sys.argv[1:5]
    rows: Any
    if kind == "modules":
        rows = loaded_modules(address, float(interval))
    elif kind == "floor":
        rows = stage_floor(address, int(cycles), float(interval))
    else:
        loaded = set(sys.argv[5].split(",")) if len(sys.argv) > 5 else None
        rows = stage_daemon(address, int(cycles), float(interval), loaded)
    import json

    sys.stdout.write(json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
