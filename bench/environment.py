"""The machine and software a run measured: kept with every result file."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
from typing import Any

import probe
from bench.common import Pinning
from bench.peers import blackbox_binary, blackbox_version
from kit.process import ROOT

PACKAGES = (
    "grpcio",
    "protobuf",
    "prometheus_client",
    "PyYAML",
    "pymilvus",
    "milvus-lite",
    "milvus",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip()

    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty": bool(run("status", "--porcelain", "probe")),
    }


def load_average() -> list[float]:
    return list(os.getloadavg())


def describe(pinning: Pinning) -> dict[str, Any]:
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "milvus-probe": probe.__version__,
    }
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    binary = blackbox_binary()
    versions["blackbox_exporter"] = blackbox_version(binary) if binary else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "machine": {
            "cpu_model": _cpu_model(),
            "cpus_online": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_bytes": _memory_bytes(),
            "kernel": platform.release(),
            "os": _os_name(),
            "arch": platform.machine(),
            "load_average_at_start": load_average(),
            "root": os.geteuid() == 0,
        },
        "versions": versions,
        "source": _git(),
        "pinning": pinning.describe(),
    }
