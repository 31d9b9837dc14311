"""A TCP proxy that counts connections: server-side evidence of what a client opened."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class CountingProxy:
    """A TCP proxy that counts the connections it accepts and sees closed by the client.

    Server-side evidence that each probe cycle opened one connection and closed it.
    `delay` holds every server→client chunk back that long (an injected latency). It listens
    on 127.0.0.1:0, or on `listener` (a socket made elsewhere, e.g. in a network namespace,
    bound and not yet listening); upstream connections are made from this process's own.
    """

    def __init__(
        self, upstream: tuple[str, int], delay: float = 0.0, listener: socket.socket | None = None
    ) -> None:
        self.upstream, self.delay = upstream, delay
        self.accepted = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._sock = listener or socket.socket()
        if listener is None:
            self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.accepted, self.closed

    def stop(self) -> None:
        """Stop listening: new connections are refused (established ones go on). Shut
        down first: on Linux, close() alone leaves a blocked accept() listening."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:  # the server is gone: so is this connection
                client.close()
                with self._lock:
                    self.closed += 1
                continue
            pair = _Pair(client, upstream)
            threading.Thread(
                target=self._pipe, args=(client, upstream, True, pair), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, False, pair), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool, pair: _Pair) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not from_client and self.delay:
                    time.sleep(self.delay)  # the injected fault itself, not synchronisation
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            if from_client:
                with self._lock:
                    self.closed += 1
            pair.done()


class _Pair:
    """Both sockets of a proxied connection, closed when both directions have ended."""

    def __init__(self, *sockets: socket.socket) -> None:
        self.sockets, self.remaining, self.lock = sockets, 2, threading.Lock()

    def done(self) -> None:
        with self.lock:
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            for sock in self.sockets:
                sock.close()
