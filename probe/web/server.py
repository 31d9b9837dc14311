"""The management HTTP server: one threaded WSGI server, dual stack, bounded.

We keep prometheus_client's threaded-WSGI pattern in our own classes, with two rooms:

- the waiting room: one thread reads every connection's request head, threadless and
  with a deadline (READ_TIMEOUT from the accept), so silent, one-byte and slowloris
  clients cost a socket each, never a thread;
- the handlers: a request whose head is in gets one of at most `max_requests` threads;
  when all are busy it gets 503 with Retry-After at once. Kubelet's probes (`/healthz`,
  `/livez`, `/readyz`) are answered by the waiting room's own thread, so they never wait
  for a handler, however busy the handlers are.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import selectors
import socket
import threading
import time
from socketserver import TCPServer, ThreadingMixIn
from typing import TYPE_CHECKING, Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from probe.web.wsgi import WSGIApp, is_kubelet_path

if TYPE_CHECKING:
    from probe.web.security import Security, WebConfigFile

logger = logging.getLogger(__name__)

READ_TIMEOUT = 10.0
"""Seconds a client may take, from its connection, to send its request head."""

MAX_HEAD = 80 * 1024
"""Largest request head read (http.server's own limit is 64 KiB a line, 100 lines)."""

PROBE_ANSWER_TIMEOUT = 1.0
"""Seconds the waiting room gives a kubelet probe's answer to leave (kubelet's timeout)."""


class _Prefixed(io.RawIOBase):
    """The bytes the waiting room read, then the rest of the socket."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self._head = memoryview(head)
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._sock.recv_into(buffer)


class _Handoff(NamedTuple):
    """What the waiting room hands a handler with a connection."""

    head: bytes
    timeout: float
    """Seconds each read or write may take."""
    security: Security | None = None
    """The web config in force when the connection arrived (None: no web config)."""
    verified: bool = False
    """The client presented a certificate the web config verified and allows."""


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT  # each read or write once the head is in
    server: _ThreadingServer

    def setup(self) -> None:
        self.handoff = self.server.take_arrival(self.request)
        super().setup()
        self.connection.settimeout(self.handoff.timeout)
        self.rfile = io.BufferedReader(_Prefixed(self.handoff.head, self.connection))

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        # Long requests (profiles) watch the socket to stop when the client goes away.
        environ["probe.socket"] = self.connection
        if self.handoff.security is not None:
            environ["probe.security"] = self.handoff.security
            environ["probe.client_verified"] = self.handoff.verified
            if self.handoff.security.context is not None:
                environ["wsgi.url_scheme"], environ["HTTPS"] = "https", "on"
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s %s", self.address_string(), format % args)

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError, OSError) as exc:
            logger.debug("http connection from %s ended: %s", self.client_address, exc)


class _Arrival:
    """A connection in the waiting room: who, until when, under which web config, and
    what it has sent so far."""

    __slots__ = ("address", "due", "head", "security", "secured", "verified")

    def __init__(self, address: Any, due: float, security: Security | None) -> None:
        self.address, self.due, self.security = address, due, security
        self.head = bytearray()
        self.secured = security is None or security.context is None
        """No TLS to set up, or its handshake is done."""
        self.verified = False


def _head_end(head: bytearray) -> int:
    """Where the request head ends (after its blank line), or -1 while it is incomplete."""
    for blank in (b"\r\n\r\n", b"\n\n"):
        found = head.find(blank)
        if found >= 0:
            return found + len(blank)
    return -1


def _path(head: bytes) -> str:
    """The request's path, from its request line ("" if it has none)."""
    parts = head.split(b"\n", 1)[0].split()
    if len(parts) < 2:
        return ""
    return parts[1].split(b"?", 1)[0].decode("latin-1")


class _WaitingRoom:
    """Accepted connections wait here, threadless, until their request head is in.

    Thread-per-connection lets 1,000 idle clients hold 1,000 threads (and 300 clients
    that send one byte, 300), and dropping them all at once wakes as many threads that
    fight the probes for the GIL. Here one thread reads every connection's head with a
    selector: a whole head earns a handler (or, for kubelet's probes, an answer right
    here); READ_TIMEOUT from the accept without one earns a close, from this one thread.
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
        request.setblocking(False)
        arrival = _Arrival(client_address, time.monotonic() + READ_TIMEOUT, self._server.security())
        with self._lock:
            self._selector.register(request, selectors.EVENT_READ, arrival)
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
            nearest = min((k.data.due for k in waiting), default=now + 1.0)
            for key, _ in self._selector.select(max(min(nearest - now, 1.0), 0.0)):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                self._read(key.fileobj, key.data)  # type: ignore[arg-type]
            now = time.monotonic()
            with self._lock:
                expired = [
                    k
                    for k in self._selector.get_map().values()
                    if k.data is not None and k.data.due <= now
                ]
                for key in expired:
                    self._selector.unregister(key.fileobj)
            for key in expired:
                self._server.shutdown_request(key.fileobj)  # type: ignore[arg-type]

    def _read(self, sock: socket.socket, arrival: _Arrival) -> None:
        """Read what `sock` has sent; hand it on once its head is in."""
        if not arrival.secured:
            secured = self._handshake(sock, arrival)
            if secured is None:
                return
            sock = secured
        tls = arrival.security is not None and arrival.security.context is not None
        while True:
            try:
                data = sock.recv(MAX_HEAD + 1 - len(arrival.head))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ssl.SSLWantReadError is an OSError too
                if tls and _wants_more(exc):
                    return
                data = b""
            arrival.head += data
            end = _head_end(arrival.head)
            if data and end < 0 and len(arrival.head) <= MAX_HEAD:
                # more to come; TLS may hold decrypted bytes the selector can't see
                if tls and sock.pending():  # type: ignore[attr-defined]
                    continue
                return
            break
        with self._lock:
            self._selector.unregister(sock)
        if not data and end < 0:  # the client hung up (or reset) before a whole head
            self._server.shutdown_request(sock)
        elif end < 0:  # over MAX_HEAD: answered as http.server answers an overlong line
            line_done = b"\n" in arrival.head
            self._server.refuse(
                sock, 431 if line_done else 414, "request head over 80 KiB\n"
            )
        else:
            self._server.dispatch(sock, arrival.address, arrival)

    def _handshake(self, sock: socket.socket, arrival: _Arrival) -> socket.socket | None:
        """Advance `sock`'s TLS handshake; the TLS socket once done, else None (waiting,
        refused or failed)."""
        import ssl

        assert arrival.security is not None and arrival.security.context is not None
        if not isinstance(sock, ssl.SSLSocket):
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                first = b""
            with self._lock:
                self._selector.unregister(sock)
            if first != b"\x16":  # not a TLS handshake record
                if first:  # as Go's net/http answers it
                    self._server.refuse(
                        sock, 400, "Client sent an HTTP request to an HTTPS server.\n"
                    )
                else:
                    self._server.shutdown_request(sock)
                return None
            try:
                sock = arrival.security.context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except OSError:
                self._server.shutdown_request(sock)
                return None
            with self._lock:
                self._selector.register(sock, selectors.EVENT_READ, arrival)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(sock, selectors.EVENT_READ)
            return None
        except ssl.SSLWantWriteError:
            self._watch(sock, selectors.EVENT_WRITE)
            return None
        except OSError as exc:
            logger.debug("http TLS handshake with %s failed: %s", arrival.address, exc)
            with self._lock:
                self._selector.unregister(sock)
            self._server.shutdown_request(sock)
            return None
        arrival.secured = True
        arrival.verified = arrival.security.peer_allowed(sock.getpeercert())
        self._watch(sock, selectors.EVENT_READ)
        return sock

    def _watch(self, sock: socket.socket, events: int) -> None:
        with self._lock:
            key = self._selector.get_key(sock)
            if key.events != events:
                self._selector.modify(sock, events, key.data)


def _wants_more(exc: OSError) -> bool:
    import ssl

    return isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError))


_REFUSALS = {
    400: "Bad Request",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], max_requests: int, web_config: WebConfigFile | None
    ) -> None:
        self.max_requests = max_requests
        self._web_config = web_config
        self._handlers = threading.BoundedSemaphore(max_requests)
        self._arrivals: dict[socket.socket, _Handoff] = {}
        self._arrivals_lock = threading.Lock()
        super().__init__(address, _QuietHandler)

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

    def security(self) -> Security | None:
        """The web config in force now (None: none is configured)."""
        return self._web_config.current() if self._web_config is not None else None

    def dispatch(self, request: socket.socket, client_address: Any, arrival: _Arrival) -> None:
        """A whole head is in: answer a kubelet probe here, else hand it to a handler.

        Kubelet sends no credentials; a probe path asked with some goes to a handler, so
        a flood of guesses costs handlers (bounded), never this thread's time (bcrypt)."""
        head = bytes(arrival.head)
        credentials = arrival.security is not None and b"\nauthorization:" in head.lower()
        if is_kubelet_path(_path(head)) and not credentials:
            self._arrive(request, _Handoff(head, PROBE_ANSWER_TIMEOUT, arrival.security,
                                           arrival.verified))
            self._serve(request, client_address)
            return
        if not self._handlers.acquire(blocking=False):
            self.refuse(
                request,
                503,
                f"busy: {self.max_requests} requests in progress "
                "(--web.max-requests); retry in a second\n",
                retry_after=True,
            )
            return
        self._arrive(request, _Handoff(head, READ_TIMEOUT, arrival.security, arrival.verified))
        try:
            threading.Thread(
                target=self._handle,
                args=(request, client_address),
                name="process_request_thread",
                daemon=True,
            ).start()
        except RuntimeError:  # no thread to be had: the same answer as a full house
            self._handlers.release()
            self.take_arrival(request)
            self.refuse(request, 503, "busy; retry in a second\n", retry_after=True)

    def _arrive(self, request: socket.socket, handoff: _Handoff) -> None:
        with self._arrivals_lock:
            self._arrivals[request] = handoff

    def take_arrival(self, request: socket.socket) -> _Handoff:
        """What the waiting room read from `request` and knows of it."""
        with self._arrivals_lock:
            return self._arrivals.pop(request, _Handoff(b"", READ_TIMEOUT))

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        """Serve the request on this thread, then hang up."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def _handle(self, request: socket.socket, client_address: Any) -> None:
        try:
            self._serve(request, client_address)
        finally:
            self._handlers.release()

    def refuse(
        self, request: socket.socket, status: int, text: str, *, retry_after: bool = False
    ) -> None:
        """Answer `status` from the waiting room (never blocks) and hang up."""
        body = text.encode()
        lines = [
            f"HTTP/1.1 {status} {_REFUSALS[status]}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(["Retry-After: 1"] if retry_after else []),
        ]
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        self.shutdown_request(request)

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
    """Serves a WSGI app on `(host, port)` from a background thread, at most
    `max_requests` requests at once, under the web config file if one is given."""

    def __init__(
        self,
        app: WSGIApp,
        address: tuple[str, int],
        max_requests: int,
        web_config: WebConfigFile | None = None,
    ) -> None:
        host, port = address
        rules = (max_requests, web_config)
        try:
            if host in ("", "::") and socket.has_ipv6:
                try:
                    server: _ThreadingServer = _DualStackServer(("::", port), *rules)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:  # don't mask it with the fallback
                        raise
                    server = _ThreadingServer(("0.0.0.0", port), *rules)
            elif ":" in host:
                server = _IPv6Server((host, port), *rules)
            else:
                server = _ThreadingServer((host or "0.0.0.0", port), *rules)
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
        if web_config is not None:
            from probe.web.security import Guard

            app = Guard(app, web_config.current)
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
