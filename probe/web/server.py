"""The management HTTP server: one threaded WSGI server, dual stack, with deadlines.

We keep prometheus_client's threaded-WSGI pattern in our own classes. Every connection
gets a read timeout and a whole-request deadline; silent connections wait threadless.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from socketserver import TCPServer, ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from probe.web.wsgi import WSGIApp

logger = logging.getLogger(__name__)

READ_TIMEOUT = 10.0
"""Seconds a client may take to send its request (and between reads) before we hang up."""


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

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks socket.getfqdn(host): a reverse DNS lookup at start-up,
        # and the idna codec for the process's life, for SERVER_NAME, which we never read.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

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
                    if exc.errno == errno.EADDRINUSE:  # don't mask it with the fallback
                        raise
                    server = _ThreadingServer(("0.0.0.0", port), _QuietHandler)
            elif ":" in host:
                server = _IPv6Server((host, port), _QuietHandler)
            else:
                server = _ThreadingServer((host or "0.0.0.0", port), _QuietHandler)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            hint = ""
            if exc.errno == errno.EADDRINUSE:
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
