"""Where the daemon's memory above the floor goes: side by side, then stage by stage.

    python -m bench.breakdown [--address HOST:PORT] [--repeat 3] [--cycles 30]
                              [--interval 0.2] [--env NAME=VALUE ...] [--json FILE]

* **Side by side**: the default process (`milvus-probe serve --uri ADDR
  --web.listen-address 127.0.0.1:0`, one static target) and the floor (`bench.raw.floor`:
  grpc, protobuf, prometheus_client, the same cycles, the registry written once), each
  run for `--cycles` cycles at `--interval`, then read from outside: VmRSS, RssAnon,
  RssFile, USS (Private_Clean + Private_Dirty of smaps_rollup), threads.
* **Stages**: a fresh process imports what the floor imports, then, one stage at a time
  and in the order the daemon loads them, every further module the default daemon loads;
  then builds the config, the App, starts it and runs the cycles, reading /proc/self after
  each stage. The floor is staged the same way. The daemon's stages past the floor's
  imports, minus the floor's runtime, add up to the side-by-side gap.

Every figure is the median of `--repeat` fresh processes (alternating daemon and floor).
Without `--address` a milvus-lite server is started. `--env` sets variables for both
processes (e.g. `--env MALLOC_ARENA_MAX=2`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.stages import (
    DAEMON_IMPORTS,
    FLOOR_IMPORTS,
    http_get,
    poll_ready,
    read_memory,
    serve_args,
)

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
KEYS = ("rss", "anon", "file", "uss")
LAST_IMPORT = len(FLOOR_IMPORTS) + len(DAEMON_IMPORTS)
"""Index of the daemon's last import stage (row 0 is the interpreter)."""

# --------------------------------------------------------------------------- side by side


def _python() -> str:
    return sys.executable


def side_by_side_daemon(
    address: str, cycles: int, interval: float, env: dict[str, str]
) -> dict[str, Any]:
    """The real CLI process, read from outside after `cycles` cycles past /readyz."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "log"
        with open(port_file, "wb") as log:
            process = subprocess.Popen(
                [_python(), "-m", "probe", *serve_args(address, interval)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            port = _wait_for_port(process, port_file)
            poll_ready(port)
            time.sleep(cycles * interval)
            figures = read_memory(process.pid)
            body = http_get(port, "/metrics")[1]
            attempts = sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.decode().splitlines()
                if line.startswith("milvus_probe_attempts_total{")
            )
        finally:
            process.terminate()
            process.wait(10)
    return {**figures, "cycles": attempts}


def _wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    """The daemon logs `listen=HOST:PORT` once it serves."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited: {log.read_text()[-2000:]}")
        for word in log.read_text().split():
            if word.startswith("listen="):
                return int(word.rsplit(":", 1)[1])
        time.sleep(0.01)
    raise RuntimeError(f"daemon never said where it listens: {log.read_text()[-2000:]}")


def side_by_side_floor(
    address: str, cycles: int, interval: float, env: dict[str, str]
) -> dict[str, Any]:
    worker = subprocess.Popen(
        [_python(), "-m", "bench.worker", "floor", "--address", address]
        + ["--cycles", str(cycles), "--pace", str(interval)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        said = worker.stdout.readline()
        if said != b"ready\n":
            raise RuntimeError(f"floor worker said {said!r}")
        time.sleep(1.0)  # the daemon is read at least this long after its last start step
        figures = read_memory(worker.pid)
        out, _ = worker.communicate(b"", timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return {**figures, "cycles": json.loads(out)["cycles"]}


# --------------------------------------------------------------------------- driver


def _run_stage_worker(kind: str, args: argparse.Namespace, env: dict[str, str], *extra: str) -> Any:
    done = subprocess.run(
        [_python(), "-m", "bench.stages", kind, args.address, str(args.cycles), str(args.interval)]
        + list(extra),
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.decode().splitlines()[-1])


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def _median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per stage: the median of each delta over the runs, and the first run's modules."""
    out = []
    for i, first in enumerate(runs[0]):
        row: dict[str, Any] = {"stage": first["stage"], "modules": first["modules"]}
        for key in KEYS:
            row[key] = _median([r[i][key] for r in runs])
            row[f"d_{key}"] = _median([r[i][key] - r[i - 1][key] for r in runs]) if i else row[key]
        row["threads"] = first["threads"]
        for extra in ("python_threads", "native_threads"):
            if extra in first:
                row[extra] = first[extra]
        out.append(row)
    return out


def precompile() -> None:
    """Write the .pyc files of probe/, bench/ and tests/ as the image does (compileall).

    The dev venv installs probe/ editable and PYTHONDONTWRITEBYTECODE=1 is common, so
    without this every start compiles probe/ from source, whose transient memory stays in
    the heap (about 1.2 MiB here) and is not in what the image runs. A stale .pyc is
    ignored, so this runs before every measurement."""
    import compileall

    for name in ("probe", "bench", "tests"):
        compileall.compile_dir(ROOT / name, quiet=1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if not args.no_compile:
        precompile()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **dict(e.split("=", 1) for e in args.env)}
    daemon: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    stages_daemon: list[list[dict[str, Any]]] = []
    stages_floor: list[list[dict[str, Any]]] = []
    loaded: list[str] = []
    if not args.no_stages:
        loaded = _run_stage_worker("modules", args, env)
    for _ in range(args.repeat):
        daemon.append(side_by_side_daemon(args.address, args.cycles, args.interval, env))
        floor.append(side_by_side_floor(args.address, args.cycles, args.interval, env))
        if not args.no_stages:
            stages_daemon.append(_run_stage_worker("daemon", args, env, ",".join(loaded)))
            stages_floor.append(_run_stage_worker("floor", args, env))
    result: dict[str, Any] = {
        "settings": {
            "cycles": args.cycles,
            "interval": args.interval,
            "repeat": args.repeat,
            "env": args.env,
            "precompiled": not args.no_compile,
        },
        "daemon": {k: _median([d[k] for d in daemon]) for k in (*KEYS, "threads", "cycles")},
        "floor": {k: _median([f[k] for f in floor]) for k in (*KEYS, "threads", "cycles")},
        "daemon_runs": daemon,
        "floor_runs": floor,
    }
    result["gap"] = {
        k: _median([d[k] - f[k] for d, f in zip(daemon, floor, strict=True)]) for k in KEYS
    }
    if stages_daemon:
        watched = ("kubernetes", "yaml", "isal", "statistics", "tracemalloc", "probe.pprof")
        result["daemon_loads"] = {m: m in loaded for m in watched}
        result["stages_daemon"] = _median_rows(stages_daemon)
        result["stages_floor"] = _median_rows(stages_floor)
    return result


def _mib(value: float) -> str:
    return f"{value / MIB:+6.2f}"


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"side by side ({s['cycles']} cycles at {s['interval']} s, median of {s['repeat']}"
        + (f", env {' '.join(s['env'])}" if s["env"] else "")
        + ("" if s["precompiled"] else ", probe/ compiled from source")
        + "), MiB:",
        f"  {'':34} {'RSS':>7} {'anon':>7} {'file':>7} {'USS':>7} threads cycles",
    ]
    for name in ("daemon", "floor"):
        f = result[name]
        lines.append(
            f"  {name:34} "
            + " ".join(f"{f[k] / MIB:7.2f}" for k in KEYS)
            + f" {f['threads']:7.0f} {f['cycles']:6.0f}"
        )
    lines.append(
        f"  {'gap (median of paired runs)':34} "
        + " ".join(f"{result['gap'][k] / MIB:+7.2f}" for k in KEYS)
    )
    if "stages_daemon" not in result:
        return "\n".join(lines)
    for name, rows in (("daemon", result["stages_daemon"]), ("floor", result["stages_floor"])):
        lines.append(f"\n{name} stage by stage (deltas, MiB; median of {s['repeat']}):")
        lines.append(f"  {'stage':66} {'RSS':>6} {'anon':>6} {'file':>6} {'USS':>6}  modules")
        for row in rows:
            top = sorted({m.split(".")[0] for m in row["modules"]})
            lines.append(
                f"  {row['stage'][:66]:66} "
                + " ".join(_mib(row[f"d_{k}"]) for k in KEYS)
                + f"  {len(row['modules'])}: {' '.join(top)[:60]}"
            )
            if "python_threads" in row:
                lines.append(
                    f"  {'':66} threads: {row['native_threads']} native, "
                    f"python {row['python_threads']}"
                )
    loads = ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in result["daemon_loads"].items())
    lines.append(f"\nthe default daemon loads: {loads}")
    d, f = result["stages_daemon"], result["stages_floor"]
    floor_last = len(FLOOR_IMPORTS)
    extra_imports = {k: d[LAST_IMPORT][k] - d[floor_last][k] for k in KEYS}
    runtime_d = {k: d[-1][k] - d[LAST_IMPORT][k] for k in KEYS}
    runtime_f = {k: f[-1][k] - f[floor_last][k] for k in KEYS}
    lines.append("\nreconciliation (MiB):               RSS   anon   file    USS")
    for label, values in (
        ("daemon's imports beyond the floor", extra_imports),
        ("daemon runtime", runtime_d),
        ("minus floor runtime", {k: -v for k, v in runtime_f.items()}),
        ("= staged gap", {k: extra_imports[k] + runtime_d[k] - runtime_f[k] for k in KEYS}),
        ("side-by-side gap", result["gap"]),
    ):
        lines.append(f"  {label:33} " + " ".join(_mib(values[k]) for k in KEYS))
    return "\n".join(lines)


@contextmanager
def _server(address: str | None) -> Iterator[str]:
    if address:
        yield address
        return
    sys.path.insert(0, str(ROOT))
    from tests.support import start_milvus_lite

    with tempfile.TemporaryDirectory() as tmp:
        lite = start_milvus_lite(Path(tmp))
        try:
            yield lite.address
        finally:
            lite.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--address", help="HOST:PORT of a Milvus (default: start milvus-lite)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--no-stages", action="store_true", help="side by side only")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="don't write .pyc files first (measure compiling probe/ from source too)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    with _server(args.address) as address:
        args.address = address
        result = measure(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
