"""Go-style `/debug/pprof/*` for a Python process, readable by `go tool pprof`.

Mounted by the management router under `/debug/pprof/`. Profiles reveal code paths and
memory contents, so requests from non-loopback peers are refused (403) unless
`--profiling.allow-remote`; `kubectl port-forward` arrives from loopback inside the pod.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from probe.config.settings import ProfilingSettings
from probe.pprof import views
from probe.pprof.builder import ProfileBuilder, current_stacks
from probe.pprof.heap import HeapTracer, heap_profile, heap_summary
from probe.pprof.sampler import Mode, sample, threads
from probe.web.wsgi import BadRequest, Environ, StartResponse, query, respond

PREFIX = "/debug/pprof"


def _int(
    params: dict[str, str], name: str, default: int, low: int, high: int, hint: str = ""
) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}{hint}, got {raw!r}")
    return int(raw)


def _peer_gone(sock: socket.socket | None) -> bool:
    """True when the client has closed its side (EOF with nothing left to read)."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):
        return True


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def masked_argv(argv: Sequence[str], secret_flags: Iterable[str]) -> list[str]:
    """argv with the values of secret flags replaced by `***`."""
    secret = tuple(secret_flags)
    masked, hide_next = [], False
    for arg in argv:
        if hide_next:
            masked.append("***")
            hide_next = False
        elif arg in secret:
            masked.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{flag}=" for flag in secret)):
            masked.append(arg.split("=", 1)[0] + "=***")
        else:
            masked.append(arg)
    return masked


class ProfilingApp:
    """The WSGI app behind `/debug/pprof/`."""

    def __init__(self, settings: ProfilingSettings, secret_flags: Iterable[str] = ()) -> None:
        self.settings = settings
        self.secret_flags = tuple(secret_flags)
        self.heap = HeapTracer(always=settings.heap)
        self._cpu = threading.Lock()
        self._routes: dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]] = {
            "": self._index,
            "profile": self._profile,
            "heap": self._heap,
            "allocs": self._allocs,
            "goroutine": self._goroutine,
            "threadcreate": self._threadcreate,
            "cmdline": self._cmdline,
            "flamegraph": self._flamegraph,
        }

    def refusal(self, environ: Environ) -> str | None:
        """Why this peer may not have profiles (403), or None when it may."""
        peer = environ.get("REMOTE_ADDR", "")
        if self.settings.allow_remote or _is_loopback(peer):
            return None
        return (
            f"profiles are served to loopback peers only "
            f"(you are {peer}); use kubectl port-forward, or start the probe "
            "with --profiling.allow-remote\n"
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        refused = self.refusal(environ)
        if refused is not None:
            return respond(start_response, 403, refused)
        path = environ.get("PATH_INFO", "")[len(PREFIX) :].strip("/")
        handler = self._routes.get(path)
        if handler is None:
            return respond(start_response, 404, f"no profile {path!r}; see {PREFIX}/\n")
        return handler(environ, start_response)

    def _seconds(self, params: dict[str, str], default: int) -> int:
        high = self.settings.max_seconds
        return _int(params, "seconds", min(default, high), 1, high, " (--profiling.max-seconds)")

    @staticmethod
    def _binary(start_response: StartResponse, name: str, data: bytes) -> list[bytes]:
        return respond(
            start_response,
            200,
            data,
            "application/octet-stream",
            [("Content-Disposition", f'attachment; filename="{name}"')],
        )

    def _index(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ())
        host = environ.get("HTTP_HOST") or "localhost:9091"
        return respond(start_response, 200, views.index_page(host), "text/html; charset=utf-8")

    def _cpu_profile(self, environ: Environ, params: dict[str, str], default_seconds: int) -> Any:
        seconds = self._seconds(params, default_seconds)
        hz = _int(params, "hz", 100, 1, 1000)
        mode_text = params.get("mode", "cpu")
        if mode_text not in ("cpu", "wall"):
            raise BadRequest(f"mode must be cpu or wall, got {mode_text!r}")
        if not self._cpu.acquire(blocking=False):
            return None
        try:
            sock = environ.get("probe.socket")
            return sample(seconds, hz, Mode(mode_text), should_stop=lambda: _peer_gone(sock))
        finally:
            self._cpu.release()

    # ------------------------------------------------ for the diagnostics bundle

    def bundle_seconds(self, params: dict[str, str]) -> int:
        """`?seconds=` of /debug/bundle (default 10, at most --profiling.max-seconds)."""
        return self._seconds(params, 10)

    def try_cpu_profile(self, environ: Environ, seconds: int) -> bytes | None:
        """A CPU profile of `seconds` at 100 Hz in this thread (gzipped profile.proto), or
        None while another CPU profile runs; stops early when the client goes away."""
        if not self._cpu.acquire(blocking=False):
            return None
        try:
            sock = environ.get("probe.socket")
            profile = sample(seconds, 100, Mode.CPU, should_stop=lambda: _peer_gone(sock))
        finally:
            self._cpu.release()
        return profile.encode()

    def cpu_busy(self) -> bool:
        return self._cpu.locked()

    def thread_dump(self) -> str:
        """Every thread's full stack (as goroutine?debug=2)."""
        return views.threads_full(current_stacks(), threads())

    def heap_text(self) -> str:
        """A heap summary in words (heap.heap_summary)."""
        return heap_summary(self.heap)

    def _busy(self, start_response: StartResponse) -> list[bytes]:
        return respond(
            start_response,
            429,
            "a CPU profile is already running; one at a time — retry when it ends\n",
            headers=[("Retry-After", "5")],
        )

    def _profile(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("seconds", "hz", "mode"))
        profile = self._cpu_profile(environ, params, 30)
        if profile is None:
            return self._busy(start_response)
        return self._binary(start_response, "profile", profile.encode())

    def _flamegraph(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("seconds", "hz", "mode"))
        profile = self._cpu_profile(environ, params, 10)
        if profile is None:
            return self._busy(start_response)
        mode = params.get("mode", "cpu")
        samples = [(stack, values[1]) for stack, _, values in profile.builder.samples()]
        title = f"milvus-probe {mode} flame graph, {profile.duration_ns / 1e9:.1f}s"
        page = views.flamegraph_page(samples, title, "ns")
        return respond(start_response, 200, page, "text/html; charset=utf-8")

    def _window(self, environ: Environ, params: dict[str, str]) -> Any:
        seconds = self._seconds(params, 10)
        sock = environ.get("probe.socket")
        self.heap.begin_window()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not _peer_gone(sock):
                time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
        finally:
            snapshot = self.heap.end_window()
        return snapshot

    def _heap(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("seconds", "gc", "debug"))
        if self.heap.always and "seconds" not in params:
            snapshot, kind = self.heap.snapshot(), "inuse"
        else:
            snapshot, kind = self._window(environ, params), "inuse"
        return self._binary(start_response, "heap", heap_profile(snapshot, kind).encode())

    def _allocs(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("seconds", "gc", "debug"))
        snapshot = self._window(environ, params)
        return self._binary(start_response, "allocs", heap_profile(snapshot, "alloc").encode())

    def _goroutine(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("debug",))
        debug = _int(params, "debug", 0, 0, 2)
        stacks = current_stacks()
        infos = threads()
        if debug == 1:
            return respond(start_response, 200, views.threads_grouped(stacks, infos))
        if debug == 2:
            return respond(start_response, 200, views.threads_full(stacks, infos))
        builder = ProfileBuilder(
            [("goroutine", "count")], period_type=("goroutine", "count"), period=1
        )
        for ident, stack in stacks.items():
            info = infos.get(ident)
            builder.add(stack, (1,), {"thread": info.name if info else str(ident)})
        return self._binary(start_response, "goroutine", builder.encode())

    def _threadcreate(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ("debug",))
        builder = ProfileBuilder(
            [("threadcreate", "count")], period_type=("threadcreate", "count"), period=1
        )
        for info in threads().values():
            code = getattr(info.target, "__code__", None)
            if code is not None:
                name = getattr(code, "co_qualname", code.co_name)
                frame = (name, code.co_filename, code.co_firstlineno, code.co_firstlineno)
            else:
                main = info.ident == threading.main_thread().ident
                frame = ("<main thread>" if main else "<unknown entry point>", "<thread>", 0, 0)
            builder.add((frame,), (1,))
        return self._binary(start_response, "threadcreate", builder.encode())

    def _cmdline(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ())
        argv = masked_argv([sys.executable, *sys.argv], self.secret_flags)
        return respond(start_response, 200, "\x00".join(argv))
