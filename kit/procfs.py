"""Readings of a process from /proc: open fds, memory and thread counts, CPU time.

`pid` is a process id, or "self" for the calling process (the in-process daemon).
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")

Pid = int | str


def open_fds(pid: Pid = "self") -> int:
    """File descriptors open in the process right now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def native_threads(pid: Pid = "self") -> int:
    """Kernel threads of the process, gRPC's C threads included."""
    return len(os.listdir(f"/proc/{pid}/task"))


def proc_status(pid: Pid = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile (bytes) and Threads from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
    return out


def rss_bytes(pid: Pid = "self") -> int:
    """Resident set size of the process (VmRSS)."""
    rss = proc_status(pid).get("VmRSS")
    if rss is None:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return rss


def cpu_seconds(pid: Pid = "self") -> float:
    """User + system CPU of a process, every thread included (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_busy_seconds(cpu: int | None) -> float:
    """CPU time one core (or, for None, every core) spent busy since boot (/proc/stat)."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            fields = line.split()
            if fields[0] == name:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
                return (user + nice + system + irq + softirq + steal) / CLK_TCK
    raise ValueError(f"no {name} line in /proc/stat")
