"""The management HTTP server: one small router, one threaded WSGI server.

`prometheus_client.start_http_server` answers every path with metrics, so it can't
host health, status and pprof; we keep its threaded-WSGI pattern in our own classes
and mount the metrics app (probe.exposition: OpenMetrics and gzip negotiation included)
at `/metrics`. Every connection gets a read timeout, and request bodies are capped.
"""

from __future__ import annotations

import contextlib
import logging
import re
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client.exposition import choose_encoder

from probe import pages
from probe.health import Check, TargetState
from probe.result import ProbeResult

logger = logging.getLogger(__name__)

READ_TIMEOUT = 10.0
"""Seconds a client may take to send its request (and between reads) before we hang up."""
MAX_BODY = 64 * 1024
"""Largest request body accepted (only POST /-/reload takes a request, and ignores it)."""

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class UnknownAlias(LookupError):
    """No target has that alias."""


class AliasRequired(ValueError):
    """Several targets exist and the request did not say which."""


class Busy(RuntimeError):
    """No connection slot became free in time."""


class ManagementApi(Protocol):
    """What the router needs from the daemon."""

    metrics_app: WSGIApp

    def live(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, list[Check]]: ...

    def target_check(self, alias: str) -> Check | None: ...

    def probe_now(self, alias: str | None) -> tuple[ProbeResult, TargetState | None]: ...

    def status_page(self) -> str: ...

    def reload(self) -> tuple[bool, str]: ...


def respond(
    start_response: StartResponse,
    status: int,
    body: str | bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    start_response(
        f"{status} {_REASONS.get(status, '')}".rstrip(),
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *(headers or []),
        ],
    )
    return [data]


class BadRequest(ValueError):
    """A query the endpoint can't take; the message says why."""


def query(environ: Environ, allowed: Iterable[str]) -> dict[str, str]:
    """The query string as a dict; BadRequest for unknown, repeated or undecodable keys."""
    raw = environ.get("QUERY_STRING", "")
    try:
        pairs = urllib.parse.parse_qsl(
            raw, keep_blank_values=True, errors="strict", max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"cannot parse the query string: {exc}") from None
    allowed = set(allowed)
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown query parameter {key!r}; this endpoint takes: {names}")
        if key in found:
            raise BadRequest(f"query parameter {key!r} given more than once")
        found[key] = value
    return found


def _path(environ: Environ) -> str:
    # wsgiref decodes %XX as latin-1; aliases are UTF-8.
    raw = environ.get("PATH_INFO", "") or "/"
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


Handler = Callable[[Environ, StartResponse], Iterable[bytes]]


class Router:
    """Maps paths and methods to handlers; unknown path 404, wrong method 405."""

    def __init__(self, api: ManagementApi, pprof: WSGIApp | None = None) -> None:
        self.api = api
        self.pprof = pprof
        self._renders = _SharedRenders()
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._index},
            "/metrics": {"GET": self._metrics},
            "/healthz": {"GET": self._live},
            "/livez": {"GET": self._live},
            "/readyz": {"GET": self._ready},
            "/probe": {"GET": self._probe},
            "/-/reload": {"POST": self._reload, "PUT": self._reload},
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD":
                return self._head(environ, start_response)
            return self._dispatch(environ, start_response)
        except BadRequest as exc:
            return respond(start_response, 400, f"{exc}\n")
        except Exception:
            logger.exception(
                "management request failed: %s %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
            )
            return respond(start_response, 500, "internal error; see the probe's log\n")

    def _head(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """GET without the body, for every GET route and mounted app; headers as GET's."""
        answer: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda data: None

        body = self._dispatch({**environ, "REQUEST_METHOD": "GET"}, capture)
        try:
            size = sum(len(chunk) for chunk in body)
        finally:
            if hasattr(body, "close"):
                body.close()
        status, headers = answer
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(size))]
        start_response(status, headers)
        return []

    def _dispatch(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = _path(environ)
        if environ.get("HTTP_TRANSFER_ENCODING"):
            # We take no request bodies; a chunked one would dodge the size limit.
            return respond(start_response, 411, "send a Content-Length, not Transfer-Encoding\n")
        length = environ.get("CONTENT_LENGTH") or "0"
        if not re.fullmatch(r"[0-9]{1,18}", length):
            raise BadRequest("Content-Length is not a number")
        if int(length) > MAX_BODY:
            return respond(start_response, 413, f"request body over {MAX_BODY} bytes\n")

        if path.startswith("/debug/pprof"):
            if self.pprof is None:
                return respond(
                    start_response, 404, "profiling is off (--profiling.enabled=false)\n"
                )
            return self._only(method, ("GET",), environ, start_response, self.pprof)
        if path.startswith("/readyz/") and len(path) > len("/readyz/"):
            return self._only(method, ("GET",), environ, start_response, self._target_ready)
        handlers = self._routes.get(path)
        if handlers is None:
            return respond(start_response, 404, f"no such page: {path}\nsee / for the index\n")
        allowed = tuple(handlers)
        if method not in handlers:
            return respond(
                start_response,
                405,
                f"{method} is not allowed on {path}; use {' or '.join(allowed)}\n",
                headers=[("Allow", ", ".join(allowed))],
            )
        return handlers[method](environ, start_response)

    @staticmethod
    def _only(
        method: str,
        allowed: tuple[str, ...],
        environ: Environ,
        start_response: StartResponse,
        handler: Handler,
    ) -> Iterable[bytes]:
        if method in allowed:
            return handler(environ, start_response)
        return respond(
            start_response,
            405,
            f"{method} is not allowed here; use {' or '.join(allowed)}\n",
            headers=[("Allow", ", ".join(allowed))],
        )

    # ----------------------------------------------------------- handlers

    def _index(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ())
        return respond(start_response, 200, self.api.status_page(), "text/html; charset=utf-8")

    def _metrics(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            choose_encoder(environ.get("HTTP_ACCEPT", ""))
        except Exception:  # a malformed version= parameter; serve the plain text format
            environ = {**environ, "HTTP_ACCEPT": "text/plain"}
        return self._renders.run(environ, start_response, self.api.metrics_app)

    def _live(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ("verbose",))
        ok, message = self.api.live()
        return respond(start_response, 200 if ok else 500, "OK\n" if ok else f"{message}\n")

    def _ready(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("verbose", "exclude"))
        ok, checks = self.api.ready()
        status = 200 if ok else 503
        if "verbose" in params:
            return respond(start_response, status, pages.checks_text("readyz", ok, checks))
        if ok:
            return respond(start_response, status, "OK\n")
        failed = [f"{c.name}: {c.message}" for c in checks if c.counts and not c.ok]
        if not failed:
            failed = [c.message for c in checks if c.name.startswith("policy:")]
        return respond(start_response, status, "not ready: " + "; ".join(failed) + "\n")

    def _target_ready(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("verbose",))
        alias = _path(environ)[len("/readyz/") :]
        check = self.api.target_check(alias)
        if check is None:
            return respond(start_response, 404, f"no target with alias {alias!r}\n")
        status = 200 if check.ok else 503
        if "verbose" in params:
            return respond(
                start_response, status, pages.checks_text(f"readyz/{alias}", check.ok, [check])
            )
        return respond(start_response, status, "OK\n" if check.ok else f"{check.message}\n")

    def _probe(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("alias", "format"))
        fmt = params.get("format", "")
        if fmt not in ("", "text", "json"):
            raise BadRequest(f"format must be text or json, got {fmt!r}")
        wants_json = fmt == "json" or (
            not fmt and "application/json" in environ.get("HTTP_ACCEPT", "")
        )
        alias = params.get("alias")
        if alias == "":
            raise BadRequest("alias is empty")
        try:
            result, state = self.api.probe_now(alias)
        except UnknownAlias as exc:
            return respond(start_response, 404, f"{exc}\n")
        except AliasRequired as exc:
            raise BadRequest(str(exc)) from None
        except Busy as exc:
            return respond(start_response, 503, f"{exc}\n", headers=[("Retry-After", "1")])
        if wants_json:
            return respond(start_response, 200, pages.trace_json(result, state), "application/json")
        return respond(start_response, 200, pages.trace_text(result, state))

    def _reload(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ())
        ok, message = self.api.reload()
        return respond(start_response, 200 if ok else 500, f"{message}\n")


class _SharedRenders:
    """Concurrent identical scrapes share one render of /metrics (single flight).

    A render costs milliseconds of CPU under the GIL; 100 scrapers at once would otherwise
    queue 100 renders in front of /healthz and the probes. Nothing is cached: a request
    either starts a render or waits for the one in progress.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str, str], _Flight] = {}

    def run(self, environ: Environ, start_response: StartResponse, app: WSGIApp) -> list[bytes]:
        key = (
            environ.get("HTTP_ACCEPT", ""),
            environ.get("HTTP_ACCEPT_ENCODING", ""),
            environ.get("QUERY_STRING", ""),
        )
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            try:
                flight.render(environ, app)
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
        else:
            flight.done.wait()
        if flight.answer is None:
            return respond(start_response, 500, "rendering metrics failed; see the log\n")
        status, headers, body = flight.answer
        start_response(status, headers)
        return [body]


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: tuple[str, list[tuple[str, str]], bytes] | None = None

    def render(self, environ: Environ, app: WSGIApp) -> None:
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return lambda data: None

        try:
            body = b"".join(app(environ, capture))
        except Exception:
            logger.exception("rendering /metrics failed")
            return
        self.answer = (captured[0], captured[1], body)


class _Deadlines:
    """Hangs up on connections that haven't delivered a whole request in READ_TIMEOUT.

    The socket timeout alone bounds each read, so a client trickling a byte at a time
    (slowloris) would never time out; this bounds the request as a whole. One thread
    serves every connection.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[socket.socket, float] = {}
        threading.Thread(target=self._reap, name="http-deadlines", daemon=True).start()

    def watch(self, connection: socket.socket) -> None:
        with self._cond:
            self._due[connection] = time.monotonic() + READ_TIMEOUT
            self._cond.notify()

    def release(self, connection: socket.socket) -> None:
        with self._cond:
            self._due.pop(connection, None)

    def _reap(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for connection, due in list(self._due.items()):
                    if due <= now:
                        del self._due[connection]
                        with contextlib.suppress(OSError):
                            connection.shutdown(socket.SHUT_RDWR)
                nearest = min(self._due.values(), default=now + READ_TIMEOUT)
                self._cond.wait(max(nearest - now, 0.05))


_DEADLINES: _Deadlines | None = None
_DEADLINES_LOCK = threading.Lock()


def _deadlines() -> _Deadlines:
    global _DEADLINES
    with _DEADLINES_LOCK:
        if _DEADLINES is None:
            _DEADLINES = _Deadlines()
        return _DEADLINES


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT  # each read; _Deadlines bounds the whole request

    def setup(self) -> None:
        super().setup()
        _deadlines().watch(self.connection)

    def finish(self) -> None:
        _deadlines().release(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def get_environ(self) -> dict[str, Any]:
        # The request line and headers are in: no more deadline (profiles may run long).
        _deadlines().release(self.connection)
        environ = super().get_environ()
        # Long requests (profiles) watch the socket to stop when the client goes away.
        environ["probe.socket"] = self.connection
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s %s", self.address_string(), format % args)

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError, OSError) as exc:
            logger.debug("http connection from %s ended: %s", self.client_address, exc)


class _WaitingRoom:
    """Accepted connections wait here, threadless, until they send something.

    Thread-per-connection lets 1,000 idle clients hold 1,000 threads, and dropping them
    all at once wakes 1,000 threads that fight the probes for the GIL. Here one thread
    watches every silent connection with a selector: the first bytes earn a handler
    thread; READ_TIMEOUT of silence earns a close, from this one thread.
    """

    def __init__(self, server: _ThreadingServer) -> None:
        self._server = server
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="http-waiting", daemon=True)
        self._thread.start()

    def add(self, request: socket.socket, client_address: Any) -> None:
        with self._lock:
            self._selector.register(
                request, selectors.EVENT_READ, (client_address, time.monotonic() + READ_TIMEOUT)
            )
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(2)
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                self._server.shutdown_request(key.fileobj)  # type: ignore[arg-type]
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                waiting = [k for k in self._selector.get_map().values() if k.data is not None]
            now = time.monotonic()
            nearest = min((k.data[1] for k in waiting), default=now + 1.0)
            for key, _ in self._selector.select(max(min(nearest - now, 1.0), 0.0)):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                with self._lock:
                    self._selector.unregister(key.fileobj)
                self._server.handle_in_thread(key.fileobj, key.data[0])  # type: ignore[arg-type]
            now = time.monotonic()
            with self._lock:
                expired = [
                    k
                    for k in self._selector.get_map().values()
                    if k.data is not None and k.data[1] <= now
                ]
                for key in expired:
                    self._selector.unregister(key.fileobj)
            for key in expired:
                self._server.shutdown_request(key.fileobj)  # type: ignore[arg-type]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_activate(self) -> None:
        super().server_activate()
        self._room = _WaitingRoom(self)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._room.add(request, client_address)

    def handle_in_thread(self, request: socket.socket, client_address: Any) -> None:
        ThreadingMixIn.process_request(self, request, client_address)

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "_room"):
            self._room.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("http connection from %s failed", client_address, exc_info=True)


class _DualStackServer(_ThreadingServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


class ListenError(OSError):
    """The management port could not be opened; the message says what to do."""


class ManagementServer:
    """Serves a WSGI app on `(host, port)` from a background thread."""

    def __init__(self, app: WSGIApp, address: tuple[str, int]) -> None:
        host, port = address
        try:
            if host in ("", "::") and socket.has_ipv6:
                try:
                    server: _ThreadingServer = _DualStackServer(("::", port), _QuietHandler)
                except OSError as exc:
                    if exc.errno in (98, 48):  # EADDRINUSE: don't mask it with the fallback
                        raise
                    server = _ThreadingServer(("0.0.0.0", port), _QuietHandler)
            elif ":" in host:
                server = _IPv6Server((host, port), _QuietHandler)
            else:
                server = _ThreadingServer((host or "0.0.0.0", port), _QuietHandler)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            hint = ""
            if exc.errno in (98, 48):
                hint = (
                    " — another process (Milvus itself uses 9091, or another milvus-probe) "
                    "holds the port; choose another with --web.listen-address"
                )
            raise ListenError(
                exc.errno, f"cannot listen on {shown}: {exc.strerror}{hint}"
            ) from None
        server.set_app(app)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="http", daemon=True, kwargs={"poll_interval": 0.1}
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
