"""`GET /debug/bundle?seconds=N`: the diagnostics bundle, as a .tar.gz download.

Served under the same rules as /debug/pprof/ (loopback peers only unless
--profiling.allow-remote; 404 with --profiling.enabled=false; seconds at most
--profiling.max-seconds), built in-process: the router's own answers for readiness,
metrics and the targets API, the profiler's for threads, CPU and heap, the daemon's
(probe.bundle) for the rest. One bundle at a time; a second request meanwhile gets 429.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from probe.web.wsgi import Environ, StartResponse, WSGIApp, query, respond

logger = logging.getLogger(__name__)


def get(app: WSGIApp, path: str, query_string: str = "", accept: str = "") -> tuple[int, bytes]:
    """GET `path` from `app` in-process, as a loopback peer: (status, body)."""
    environ: Environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query_string,
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "0",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_ACCEPT": accept,
        "wsgi.url_scheme": "http",
    }
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen[:] = [status]
        return lambda data: None

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return int(seen[0].split()[0]), data


class BundleEndpoint:
    """The WSGI handler of /debug/bundle; `profiling` is the LazyProfiling of the port."""

    def __init__(
        self,
        router: WSGIApp,
        profiling: Any,
        daemon_members: Callable[[], Iterable[Any]],
    ) -> None:
        self._router = router
        self._profiling = profiling
        self._daemon_members = daemon_members
        self._building = threading.Lock()
        self._done_by = 0.0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        from probe import bundle

        profiler = self._profiling.app
        refused = profiler.refusal(environ)
        if refused is not None:
            return respond(start_response, 403, refused)
        seconds = profiler.bundle_seconds(query(environ, ("seconds",)))
        if not self._building.acquire(blocking=False):
            wait = math.ceil(self._done_by - time.monotonic())
            return self._busy(
                start_response, "a diagnostics bundle is already being made", max(wait, 1)
            )
        try:
            made_at = time.time()
            began = time.monotonic()
            self._done_by = began + seconds + 2
            profile = profiler.try_cpu_profile(environ, seconds)
            if profile is None:
                return self._busy(start_response, "a CPU profile (/debug/pprof/) is running", 5)
            members = [
                *self._daemon_members(),
                self._served("readyz.txt", "/readyz", "verbose"),
                self._served("metrics.txt", "/metrics", accept="text/plain"),
                self._served("targets.json", "/api/v1/targets"),
                bundle.text_member("goroutine.txt", profiler.thread_dump()),
                bundle.Member("profile.pb.gz", profile),
                bundle.text_member("heap.txt", profiler.heap_text()),
            ]
            stem = f"milvus-probe-bundle-{bundle.file_stamp(made_at)}"
            data = bundle.pack(members, made_at, stem)
        finally:
            self._building.release()
        logger.info(
            "diagnostics bundle made",
            extra={
                "fields": {
                    "peer": environ.get("REMOTE_ADDR", ""),
                    "bytes": len(data),
                    "profile_seconds": seconds,
                    "took": f"{time.monotonic() - began:.1f}s",
                }
            },
        )
        return respond(
            start_response,
            200,
            data,
            "application/gzip",
            [("Content-Disposition", f'attachment; filename="{stem}.tar.gz"')],
        )

    def _served(self, name: str, path: str, query_string: str = "", accept: str = "") -> Any:
        from probe import bundle

        status, body = get(self._router, path, query_string, accept)
        if status >= 500 and status != 503:  # 503 is a not-ready readyz: a real answer
            body = f"GET {path} answered {status}:\n".encode() + body
        return bundle.text_member(name, body)

    @staticmethod
    def _busy(start_response: StartResponse, what: str, retry_after: int) -> list[bytes]:
        return respond(
            start_response,
            429,
            f"{what}; one at a time — retry when it ends\n",
            headers=[("Retry-After", str(retry_after))],
        )
