"""The daemon under test as a subprocess, and stopping any subprocess.

`Daemon` is the real `python -m probe serve ... --web.listen-address 127.0.0.1:PORT`,
its output in a file, observed from the outside: its HTTP endpoints and /proc/PID. A
command prefix runs it elsewhere (`taskset -c N` for the benchmarks, `ip netns exec NS`
for the end-to-end suite), and a request function reaches it there.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from kit import procfs
from kit.net import free_port, http_get
from kit.scrape import Scrape

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

Request = Callable[..., tuple[int, dict[str, str], bytes]]
"""`request(port, path, method=, headers=, timeout=)` → (status, lower-cased headers, body)."""


def stop(process: subprocess.Popen[Any], grace: float = 10.0) -> int:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; the exit code.

    `grace=0` kills at once (a test's teardown, when the shutdown is not under test).
    """
    if process.poll() is None:
        if grace <= 0:
            process.kill()
        else:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
    return process.returncode


def clean_env() -> dict[str, str]:
    """This environment without MILVUS_* (the probe reads them) and BENCH_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS_", "BENCH_"))}


class DaemonError(RuntimeError):
    """The daemon exited, or did not serve in time; the message carries its log's tail."""


class Daemon:
    """`python -m probe serve ARGS` as a subprocess on 127.0.0.1:`port`.

    `with Daemon(...) as d` starts it and stops it (SIGTERM, then SIGKILL after
    `grace` seconds); `serving()` also waits until it answers /healthz.
    """

    def __init__(
        self,
        log_path: Path,
        *args: str,
        port: int | None = None,
        prefix: Sequence[str] = (),
        request: Request = http_get,
        append_log: bool = False,
        grace: float = 10.0,
    ) -> None:
        self.log_path, self.args = log_path, args
        self.port = port if port is not None else free_port()
        self.prefix, self._request = tuple(prefix), request
        self.append_log, self.grace = append_log, grace
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        """perf_counter() when the process was spawned."""
        self.serving_after: float | None = None
        """Seconds from spawning the process to its first HTTP answer (any status)."""
        self.ready_after: float | None = None
        """Seconds from spawning the process to its first `/readyz` 200."""

    # ----------------------------------------------------------- lifecycle

    def command(self) -> list[str]:
        return [
            *self.prefix,
            PYTHON,
            "-m",
            "probe",
            "serve",
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            *self.args,
        ]

    def start(self) -> Daemon:
        assert self.process is None, "already started"
        with open(self.log_path, "ab" if self.append_log else "wb") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self, grace: float | None = None) -> int:
        """Stop it (see `kit.process.stop`); the exit code."""
        assert self.process is not None, "never started"
        return stop(self.process, self.grace if grace is None else grace)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.stop()

    @contextlib.contextmanager
    def serving(self, timeout: float = 30.0) -> Iterator[Daemon]:
        """Start, wait until /healthz answers 200, yield, stop."""
        with self:
            self.wait_serving(timeout)
            yield self

    @property
    def pid(self) -> int:
        assert self.process is not None, "never started"
        return self.process.pid

    def _alive(self) -> None:
        assert self.process is not None, "never started"
        if self.process.poll() is not None:
            raise DaemonError(f"the daemon exited {self.process.returncode}: {self.log_tail()}")

    def wait_serving(self, timeout: float = 30.0, poll: float = 0.005) -> None:
        """Poll /healthz until 200; DaemonError if it exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            self._alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("/healthz", timeout=2)[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise DaemonError(f"the daemon did not serve /healthz within {timeout:g}s")
            time.sleep(poll)

    def wait_ready(self, timeout: float = 60.0, poll: float = 0.002) -> float:
        """Poll /readyz until 200; the seconds since the process was spawned."""
        deadline = self.started_at + timeout
        while True:
            self._alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                status = self.request("/readyz", timeout=2.0)[0]
                if self.serving_after is None:
                    self.serving_after = time.perf_counter() - self.started_at
                if status == 200:
                    self.ready_after = time.perf_counter() - self.started_at
                    return self.ready_after
            if time.perf_counter() > deadline:
                raise DaemonError(f"not ready after {timeout:g}s: {self.log_tail()}")
            time.sleep(poll)

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    # ----------------------------------------------------------- HTTP

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        return self._request(self.port, path, method=method, headers=headers, timeout=timeout)

    def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        """(status, body as text)."""
        status, _, body = self.request(path, **kwargs)
        return status, body.decode("utf-8", errors="replace")

    def fetch(self, path: str, timeout: float = 60.0) -> bytes:
        """The body of a 200 answer; DaemonError for any other status."""
        status, _, body = self.request(path, timeout=timeout)
        if status != 200:
            raise DaemonError(f"GET {path} answered {status}: {body[:300]!r}")
        return body

    def get_json(self, path: str) -> Any:
        return json.loads(self.fetch(path))

    def scrape(self) -> Scrape:
        status, body = self.get("/metrics")
        assert status == 200, body
        return Scrape(body)

    def metrics(self, *names: str) -> tuple[float, Scrape]:
        """(when, /metrics) restricted to the sample `names` (`name[]=`, as Prometheus can
        ask: a full page of thousands of targets costs the daemon seconds per scrape).

        `when` is the monotonic middle of the request, when the daemon read its counters;
        parsing happens after, so it never stretches a window.
        """
        query = "&".join(f"name[]={n}" for n in names)
        before = time.monotonic()
        body = self.fetch("/metrics" + (f"?{query}" if query else ""))
        when = (before + time.monotonic()) / 2
        return when, Scrape(body.decode())

    def threads(self) -> list[str]:
        """The daemon's Python threads, by name, as its /debug/pprof/goroutine?debug=2 lists."""
        return thread_names(self.port, self._request)

    # ----------------------------------------------------------- /proc

    def cpu(self) -> float:
        return procfs.cpu_seconds(self.pid)

    def status(self) -> dict[str, int]:
        return procfs.proc_status(self.pid)

    def open_fds(self) -> int:
        return procfs.open_fds(self.pid)


def thread_names(port: int, request: Request = http_get) -> list[str]:
    """A daemon's Python threads, by name, as its /debug/pprof/goroutine?debug=2 lists.

    (Python does not name its native threads, so /proc/PID/task can't tell them apart.)
    """
    status, _, body = request(port, "/debug/pprof/goroutine?debug=2", timeout=15)
    assert status == 200
    return re.findall(r'^thread \d+ "([^"]*)"', body.decode("utf-8"), re.M)
