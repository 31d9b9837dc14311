"""The embedded Milvus standalone 2.3.5 (PyPI `milvus`) in a private network namespace.

It binds 19530, 9091 and several internal ports on every interface, so it runs in a
namespace of its own, and so do its clients: the host side creates the namespace and
runs `python -m bench.standalone` inside it, which starts the server with a fresh data
directory, reads its ports back (it may move a busy one), runs families 1–4 against it
(blackbox_exporter included: the standalone speaks grpc.health.v1) and writes JSON.
Anything that fails becomes "not measured: <reason>" rather than failing the run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import Pinning, Settings, log, not_measured
from bench.raw import raw_cycle, server_version
from kit.process import PYTHON, ROOT

MILVUS_PACKAGE = "milvus==2.3.5"
START_TIMEOUT = 180.0


def _ensure_package() -> str | None:
    """Install the embedded server into this venv if missing; the reason if impossible."""
    if importlib.util.find_spec("milvus") is not None:
        return None
    log(f"standalone: pip install {MILVUS_PACKAGE}")
    done = subprocess.run(
        [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", MILVUS_PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return f"pip install {MILVUS_PACKAGE} failed: {done.stderr.strip()[-300:]}"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def run(
    settings: Settings, pinning: Pinning, workdir: Path, *, skip_blackbox: bool
) -> dict[str, Any]:
    """Host side: a namespace, the inner harness in it, its JSON back."""
    if os.geteuid() != 0:
        return not_measured("needs root for a private network namespace (ip netns)")
    if shutil.which("ip") is None:
        return not_measured("the ip command (iproute2) is not installed")
    reason = _ensure_package()
    if reason is not None:
        return not_measured(reason)
    namespace = f"milvus-bench-{os.getpid()}"
    out = workdir / "standalone.json"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        return not_measured(f"ip netns add failed: {exc.stderr.decode(errors='replace').strip()}")
    try:
        _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        command = [
            "ip", "netns", "exec", namespace,
            PYTHON, "-m", "bench.standalone",
            "--out", str(out),
            "--workdir", str(workdir),
        ]  # fmt: skip
        if settings.quick:
            command.append("--quick")
        if skip_blackbox:
            command.append("--skip-blackbox")
        env = {**os.environ, **pinning.as_env()}
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, timeout=1200, check=False)
        except subprocess.TimeoutExpired:
            return not_measured("the standalone run took longer than 20 minutes")
        if out.exists():
            result: dict[str, Any] = json.loads(out.read_text())
            return result
        return not_measured(f"the standalone harness exited {done.returncode} without results")
    finally:
        _kill_namespace_processes(namespace)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", namespace)


def _kill_namespace_processes(namespace: str) -> None:
    """Our namespace is private: whatever still runs in it was started by this run."""
    done = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


# --------------------------------------------------------------------------- inside the netns


def _start_server(base: Path) -> Any:
    from milvus import MilvusServer  # type: ignore[import-untyped]

    server = MilvusServer(wait_for_started=False)
    server.set_base_dir(str(base))
    server.start()
    return server


def _wait_grpc(address: str, server: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.server_proc is None or server.server_proc.poll() is not None:
            raise RuntimeError("the milvus process exited during start-up")
        try:
            if raw_cycle(f"ipv4:{address}", 2.0):
                return
        except Exception:  # noqa: BLE001 - grpc.RpcError while it starts
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Milvus standalone did not answer CheckHealth within {timeout:g}s")
        time.sleep(0.2)


def inside(settings: Settings, workdir: Path, skip_blackbox: bool) -> dict[str, Any]:
    from bench.side_by_side import measure_server

    pinning = Pinning.from_env()
    pinning.pin_self_to_servers()  # the server inherits the server core(s)
    base = Path(tempfile.mkdtemp(prefix="milvus-standalone-", dir=workdir))
    log("standalone: starting the embedded Milvus 2.3.5 (fresh data dir)")
    started = time.perf_counter()
    server = _start_server(base)
    try:
        address = f"127.0.0.1:{server.listen_port}"
        _wait_grpc(address, server, START_TIMEOUT)
        startup = time.perf_counter() - started
        log(f"standalone: up at {address} after {startup:.1f}s")
        result = measure_server(
            "standalone",
            address,
            settings,
            pinning,
            workdir,
            delay=False,
            blackbox="skipped (--skip-blackbox)" if skip_blackbox else None,
        )
        log("standalone: REST prober against raw http.client cycles")
        try:
            from bench import rest

            result["rest"] = rest.measure(address, settings)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the run goes on
            result["rest"] = not_measured(f"{type(exc).__name__}: {exc}")
        result.update(
            {
                "server": "milvus standalone (PyPI milvus 2.3.5, embedded)",
                "server_version": server_version(address),
                "startup_seconds": startup,
                "ports": {"grpc": server.listen_port, "http": server.webservice_port},
                "rss_bytes": _rss(server.server_proc.pid),
            }
        )
        return result
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _rss(pid: int) -> int | None:
    from kit.procfs import proc_status

    return proc_status(pid).get("VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.standalone")
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-blackbox", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings.quick_settings() if args.quick else Settings()
    try:
        result = inside(settings, Path(args.workdir), args.skip_blackbox)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the run goes on
        traceback.print_exc()
        result = not_measured(f"{type(exc).__name__}: {exc}")
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
