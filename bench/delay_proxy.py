"""A TCP proxy that adds a known latency, for checking that the `rpc` phase reports it.

Every chunk read from one side is released to the other side `delay` seconds after it
arrived, whatever else is queued: a response split into several TCP reads is late by
`delay`, not by `delay` per read (tests/support.py's CountingProxy sleeps before each
chunk, which adds up). By default only the server → client direction is delayed, so one
request/response exchange is late by exactly `delay_to_client`.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from types import TracebackType

_EOF = b""


class DelayProxy:
    """Forwards 127.0.0.1:<port> to `upstream`, holding each chunk back by a fixed delay."""

    def __init__(
        self,
        upstream: tuple[str, int],
        delay_to_client: float = 0.0,
        delay_to_server: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.delay_to_client = delay_to_client
        self.delay_to_server = delay_to_server
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="delay-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(2)
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                self._sockets.update((client, server))
            pair = _Pair(self, client, server)
            pair.start(client, server, self.delay_to_server)
            pair.start(server, client, self.delay_to_client)

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._sockets.discard(sock)
        for sock in sockets:
            sock.close()


class _Pair:
    """One proxied connection: two directions, each a reader and a delayed writer."""

    def __init__(self, proxy: DelayProxy, *sockets: socket.socket) -> None:
        self._proxy, self._sockets = proxy, sockets
        self._remaining = 2
        self._lock = threading.Lock()

    def start(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(src, chunks), daemon=True).start()
        threading.Thread(target=self._write, args=(dst, chunks, delay), daemon=True).start()

    @staticmethod
    def _read(src: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        try:
            while True:
                data = src.recv(65536)
                chunks.put((time.monotonic(), data))
                if not data:
                    return
        except OSError:
            chunks.put((time.monotonic(), _EOF))

    def _write(
        self, dst: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]], delay: float
    ) -> None:
        try:
            while True:
                arrived, data = chunks.get()
                if not data:
                    break
                wait = arrived + delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # the injected latency itself
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                self._remaining -= 1
                last = self._remaining == 0
            if last:
                self._proxy._forget(*self._sockets)
