"""A small HTTP/1.1 client for probers: one fresh connection, every read bounded.

The REST prober and the management-port check use it. It opens its own TCP (and TLS)
connection to an address already resolved, so each step can be timed apart, and it
reads answers under the cycle's deadline as a whole: a server that drips one byte a
second, never answers, or sends megabytes hits the deadline or the size cap instead of
holding the cycle. Responses framed by Content-Length, chunked encoding or close are
understood; nothing else of HTTP is needed here.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probe.probers import Failed
from probe.result import FailureReason
from probe.targets import Target, tls_server_name

MAX_HEADER_BYTES = 64 * 1024
"""Status line and headers together."""
MAX_BODY_BYTES = 1024 * 1024
"""A list-collections or /healthz answer is a few KiB; more is not a Milvus answer."""

_RECV = 65536


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Header names in lower case (the last of repeated headers)."""
    body: bytes
    reusable: bool
    """Whether the server left the connection open for another request."""


_made = threading.local()
"""The SSLSocket `wrap_socket` made last in this thread (see `_SSLSocket`)."""


class _SSLSocket(ssl.SSLSocket):
    """`wrap_socket`'s socket, remembered the moment it exists.

    The ssl module takes the socket's descriptor over before it checks the peer: when the
    peer reset the connection before the handshake (a server shutting down, its backlog
    reset), its probe read raises ECONNRESET and the new SSLSocket is dropped unclosed, a
    connection held until the garbage collector comes. `wrap_socket` closes it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _SSLSocket:
        made = super().__new__(cls, *args, **kwargs)
        _made.sock = made
        return made


def wrap_socket(context: ssl.SSLContext, sock: socket.socket, **kwargs: Any) -> ssl.SSLSocket:
    """`context.wrap_socket(sock, **kwargs)` that leaves no socket open when it fails: on
    any exception both the plain socket and the SSLSocket it became are closed."""
    context.sslsocket_class = _SSLSocket
    _made.sock = None
    try:
        return context.wrap_socket(sock, **kwargs)
    except BaseException:
        made, _made.sock = _made.sock, None
        with contextlib.suppress(OSError):
            if made is not None:
                made.close()
            sock.close()
        raise
    finally:
        _made.sock = None


def tls_context(target: Target, phase: str = "connect") -> ssl.SSLContext:
    """A client context verifying the server as the target's TLS settings say (pymilvus'
    names: server_pem_path or ca_pem_path to trust, client pair for mutual TLS).

    Raises Failed (reason `error`, in `phase`) naming the problem when a file can't be loaded.
    """
    tls = target.tls
    cafile = (tls.ca_pem_path or tls.server_pem_path) if tls else None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if tls and tls.client_pem_path and tls.client_key_path:
            context.load_cert_chain(tls.client_pem_path, tls.client_key_path)
    except (OSError, ssl.SSLError) as exc:
        raise Failed(FailureReason.ERROR, phase, f"cannot load the TLS files: {exc}") from None
    return context


class Connection:
    """One TCP (+TLS) connection, opened by `connect` and closed by `close`."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host_header = host_header
        self._buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # ----------------------------------------------------------- request

    def exchange(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        deadline: float,
        clock: Callable[[], float],
        phase: str,
    ) -> Answer:
        """Send one request and read the whole answer before `deadline` (on `clock`)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        try:
            self._set_timeout(deadline, clock, phase)
            self.sock.sendall(request)
            head = self._read_head(deadline, clock, phase)
            status, answer_headers = _parse_head(head, phase)
            payload, reusable = self._read_body(
                status, method, answer_headers, deadline, clock, phase
            )
        except TimeoutError:
            raise Failed(
                FailureReason.TIMEOUT, phase, "no whole answer within the cycle's timeout"
            ) from None
        except ssl.SSLError as exc:
            raise Failed(FailureReason.TLS, phase, f"TLS error: {exc}") from None
        except OSError as exc:
            raise Failed(
                FailureReason.UNAVAILABLE, phase, f"the connection failed: {exc.strerror or exc}"
            ) from None
        return Answer(status, answer_headers, payload, reusable)

    def _set_timeout(self, deadline: float, clock: Callable[[], float], phase: str) -> None:
        remaining = deadline - clock()
        if remaining <= 0:
            raise Failed(FailureReason.TIMEOUT, phase, "no whole answer within the cycle's timeout")
        self.sock.settimeout(remaining)

    def _recv(self, deadline: float, clock: Callable[[], float], phase: str) -> bytes:
        self._set_timeout(deadline, clock, phase)
        return self.sock.recv(_RECV)

    def _read_head(self, deadline: float, clock: Callable[[], float], phase: str) -> bytes:
        while b"\r\n\r\n" not in self._buffer:
            _check_http(self._buffer, phase)
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise Failed(
                    FailureReason.UNIMPLEMENTED,
                    phase,
                    f"no end of HTTP headers within {MAX_HEADER_BYTES} bytes: not an HTTP server",
                )
            data = self._recv(deadline, clock, phase)
            if not data:
                if not self._buffer:
                    raise Failed(
                        FailureReason.UNAVAILABLE,
                        phase,
                        "the server closed the connection without answering",
                    )
                _check_http(self._buffer, phase, complete=True)
                raise Failed(
                    FailureReason.UNIMPLEMENTED,
                    phase,
                    "the server closed the connection in the middle of the HTTP headers",
                )
            self._buffer += data
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head

    def _read_body(
        self,
        status: int,
        method: str,
        headers: dict[str, str],
        deadline: float,
        clock: Callable[[], float],
        phase: str,
    ) -> tuple[bytes, bool]:
        keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b"", keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(deadline, clock, phase), keep
        length_text = headers.get("content-length")
        if length_text is not None:
            length_text = length_text.strip()
            if not _ascii_digits(length_text, 19):
                raise Failed(
                    FailureReason.UNIMPLEMENTED, phase, f"bad Content-Length {length_text[:40]!r}"
                )
            length = int(length_text)
            _check_size(length, phase)
            while len(self._buffer) < length:
                data = self._recv(deadline, clock, phase)
                if not data:
                    raise Failed(
                        FailureReason.UNAVAILABLE,
                        phase,
                        f"the answer was cut off after {len(self._buffer)} of {length} bytes",
                    )
                self._buffer += data
            body, self._buffer = self._buffer[:length], self._buffer[length:]
            return body, keep
        while True:  # delimited by the end of the connection
            data = self._recv(deadline, clock, phase)
            if not data:
                body, self._buffer = self._buffer, b""
                return body, False
            self._buffer += data
            _check_size(len(self._buffer), phase)

    def _read_chunked(self, deadline: float, clock: Callable[[], float], phase: str) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in self._buffer:
                self._more(deadline, clock, phase, len(body))
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise Failed(
                    FailureReason.UNIMPLEMENTED, phase, "a broken chunk in a chunked answer"
                )
            size = int(size_text, 16)
            _check_size(len(body) + size, phase)
            while len(self._buffer) < size + 2:
                self._more(deadline, clock, phase, len(body))
            if size == 0:
                # The last chunk; trailers (rare) end with an empty line.
                while not (self._buffer.startswith(b"\r\n") or b"\r\n\r\n" in self._buffer):
                    self._more(deadline, clock, phase, len(body))
                self._buffer = b""
                return bytes(body)
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2 :]

    def _more(self, deadline: float, clock: Callable[[], float], phase: str, got: int) -> None:
        if len(self._buffer) > MAX_BODY_BYTES + 64:
            _check_size(len(self._buffer), phase)
        data = self._recv(deadline, clock, phase)
        if not data:
            raise Failed(
                FailureReason.UNAVAILABLE,
                phase,
                f"the chunked answer was cut off after {got} bytes",
            )
        self._buffer += data


def _check_http(start: bytes, phase: str, complete: bool = False) -> None:
    """Fail as soon as the first bytes can't begin an HTTP/1.x answer."""
    if start.startswith(b"HTTP/") or (not complete and b"HTTP/".startswith(start)):
        return
    if start[:1] in (b"\x15", b"\x16") and start[1:2] == b"\x03":
        raise Failed(
            FailureReason.TLS,
            phase,
            "the server answered with TLS: the port wants https:// (or secure: true)",
        )
    raise Failed(
        FailureReason.UNIMPLEMENTED,
        phase,
        f"not an HTTP answer: {start[:40]!r}",
    )


def _check_size(size: int, phase: str) -> None:
    if size > MAX_BODY_BYTES:
        raise Failed(
            FailureReason.ERROR,
            phase,
            f"the answer is over {MAX_BODY_BYTES // 1024} KiB: not what Milvus sends here",
        )


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
"""A chunk size as HTTP/1.1 writes it: hex digits only (int() would also take `+`, `_`
and spaces)."""


def _ascii_digits(text: str, most: int) -> bool:
    """1 to `most` ASCII digits: numbers on the wire are never `²00` or `٣`, which
    str.isdigit() accepts and int() then refuses or reads."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _parse_head(head: bytes, phase: str) -> tuple[int, dict[str, str]]:
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _ascii_digits(parts[1], 3):
        raise Failed(
            FailureReason.UNIMPLEMENTED,
            phase,
            f"not an HTTP answer: {status_line[:80]!r}",
        )
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def connect(
    target: Target,
    host: str,
    port: int,
    addresses: list[str],
    secure: bool,
    context: ssl.SSLContext | None,
    deadline: float,
    clock: Callable[[], float],
    phase: str,
) -> Connection:
    """A TCP connection to the first address that takes it, TLS on top when `secure`."""
    failure: Failed | None = None
    server_name = ""
    if secure:
        try:
            server_name = tls_server_name((target.tls.server_name if target.tls else None) or host)
        except ValueError as exc:  # before a socket exists: nothing to leak
            raise Failed(FailureReason.TLS, phase, str(exc)) from None
    for address in addresses:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        try:
            sock = socket.create_connection((address, port), timeout=remaining)
        except ConnectionRefusedError:
            failure = Failed(FailureReason.REFUSED, phase, f"{address} port {port} refused")
            continue
        except TimeoutError:
            failure = Failed(
                FailureReason.TIMEOUT, phase, f"no TCP connection to {address}:{port} in time"
            )
            continue
        except OSError as exc:
            failure = Failed(
                FailureReason.UNAVAILABLE,
                phase,
                f"cannot connect to {address}:{port}: {exc.strerror or exc}",
            )
            continue
        shown = f"[{host}]" if ":" in host else host
        host_header = f"{shown}:{port}"
        if not secure:
            return Connection(sock, host_header)
        assert context is not None
        try:
            sock.settimeout(max(deadline - clock(), 0.001))
            tls_sock = wrap_socket(context, sock, server_hostname=server_name)
        except TimeoutError:
            raise Failed(FailureReason.TIMEOUT, phase, "no TLS handshake in time") from None
        except ssl.SSLError as exc:
            raise Failed(FailureReason.TLS, phase, f"TLS handshake failed: {exc}") from None
        except OSError as exc:
            raise Failed(
                FailureReason.TLS,
                phase,
                f"the server dropped the TLS handshake: {exc.strerror or exc}",
            ) from None
        return Connection(tls_sock, host_header)
    if failure is not None:
        raise failure
    raise Failed(FailureReason.TIMEOUT, phase, f"no connection to {host}:{port} in time")
