"""`make demo`: a local Milvus (milvus-lite server) on 127.0.0.1:19530 and the probe on :9091.

The probe runs the data-plane canary (create: true, write: true): the first cycle starts the
collection's setup in the background and, until it is done, says the canary waits for it
(not a failure); then every cycle shows search, query and write.

Ctrl-C stops both. Ports can be changed with MILVUS_PORT and PROBE_PORT.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MILVUS_PORT = int(os.environ.get("MILVUS_PORT", "19530"))
PROBE_PORT = int(os.environ.get("PROBE_PORT", "9091"))


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(
    what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            sys.exit(f"demo: {what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            sys.exit(f"demo: {what} did not come up within {timeout:g}s")
        time.sleep(0.1)


def http_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> int:
    busy = [
        (p, who)
        for p, who in ((MILVUS_PORT, "Milvus"), (PROBE_PORT, "the probe"))
        if not port_is_free(p)
    ]
    for port, who in busy:
        print(
            f"demo: port {port} (for {who}) is already in use on 127.0.0.1. Stop whatever holds "
            f"it (`ss -ltnp 'sport = :{port}'` shows it), or pick another port: "
            f"make demo MILVUS_PORT=29530 PROBE_PORT=9191",
            file=sys.stderr,
        )
    if busy:
        return 1

    bin_dir = Path(sys.executable).parent
    milvus_lite = shutil.which("milvus-lite", path=str(bin_dir)) or shutil.which("milvus-lite")
    if milvus_lite is None:
        print(
            "demo: milvus-lite is not installed; `make demo` installs it into .venv",
            file=sys.stderr,
        )
        return 1
    data_dir = tempfile.mkdtemp(prefix="milvus-probe-demo-")
    children: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

    try:
        print(f"demo: starting Milvus (milvus-lite server) on 127.0.0.1:{MILVUS_PORT} ...")
        milvus = subprocess.Popen(
            [
                milvus_lite,
                "server",
                "--data-dir",
                data_dir,
                "--host",
                "127.0.0.1",
                "--port",
                str(MILVUS_PORT),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        children.append(milvus)
        wait_for("milvus-lite", lambda: tcp_open(MILVUS_PORT), milvus, 60)

        print(f"demo: starting milvus-probe on :{PROBE_PORT} ...")
        probe = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "probe",
                "serve",
                "--uri",
                f"http://127.0.0.1:{MILVUS_PORT}",
                "--web.listen-address",
                f":{PROBE_PORT}",
                "--canary.create",
                "true",
                "--canary.write",
                "true",
            ]
        )
        children.append(probe)
        wait_for("milvus-probe", lambda: http_ok(PROBE_PORT, "/readyz"), probe, 30)
        base = f"http://localhost:{PROBE_PORT}"
        print(
            f"""
demo: both are up. Try:
  {base}/                 status page (open in a browser)
  curl {base}/metrics     Prometheus metrics
  curl {base}/readyz?verbose
  curl {base}/probe       run one cycle now and show its trace (search, query, write)
  .venv/bin/milvus-probe check -p {MILVUS_PORT} -v --canary.write true
Ctrl-C stops both.
""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("demo: a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping")
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
