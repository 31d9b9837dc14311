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
import errno
import os
import re
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probe.probers import Failed
from probe.resolver import ATTEMPT_DELAY, Resolved
from probe.result import Dial, FailureReason, dials_note
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
    resolved: Resolved,
    secure: bool,
    context: ssl.SSLContext | None,
    deadline: float,
    clock: Callable[[], float],
    phase: str,
) -> tuple[Connection, tuple[Dial, ...]]:
    """A TCP connection to the first of `resolved`'s addresses that takes it (`dial`), TLS
    on top when `secure`; and what each address did."""
    host, port = resolved.host, resolved.port
    server_name = ""
    if secure:
        try:
            server_name = tls_server_name((target.tls.server_name if target.tls else None) or host)
        except ValueError as exc:  # before a socket exists: nothing to leak
            raise Failed(FailureReason.TLS, phase, str(exc)) from None
    sock, dials = dial(resolved, deadline, clock, phase)
    shown = f"[{host}]" if ":" in host else host
    host_header = f"{shown}:{port}"
    if not secure:
        return Connection(sock, host_header), dials
    assert context is not None
    try:
        sock.settimeout(max(deadline - clock(), 0.001))
        tls_sock = wrap_socket(context, sock, server_hostname=server_name)
    except (OSError, ssl.SSLError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
        if isinstance(exc, TimeoutError):
            reason, text = FailureReason.TIMEOUT, "no TLS handshake in time"
        elif isinstance(exc, ssl.SSLError):
            reason, text = FailureReason.TLS, f"TLS handshake failed: {exc}"
        else:
            reason = FailureReason.TLS
            text = f"the server dropped the TLS handshake: {exc.strerror or exc}"
        dials = tuple(d._replace(outcome=str(reason)) if d.outcome == "ready" else d for d in dials)
        raise Failed(reason, phase, text, dials=dials) from None
    return Connection(tls_sock, host_header), dials


def dial(
    resolved: Resolved, deadline: float, clock: Callable[[], float], phase: str
) -> tuple[socket.socket, tuple[Dial, ...]]:
    """A TCP connection to the first of `resolved`'s addresses that accepts, dialled as
    grpc's pick_first dials (probe/resolver.py): in order, the next one at once when one
    fails or after ATTEMPT_DELAY beside it; the first to connect wins and the others are
    closed here, so only the returned socket is left open. Raises the last failure."""
    port = resolved.port
    waiting = list(resolved.addresses)
    racing: dict[socket.socket, str] = {}
    outcomes: dict[str, str] = {}
    failures: dict[str, Failed] = {}
    selector = selectors.DefaultSelector()
    next_at = clock()
    try:
        while True:
            now = clock()
            if now >= deadline:
                for address in racing.values():
                    failures[address] = Failed(
                        FailureReason.TIMEOUT,
                        phase,
                        f"no TCP connection to {resolved.endpoint(address)} in time",
                    )
                break
            if waiting and (not racing or now >= next_at):
                address = waiting.pop(0)
                next_at = now + ATTEMPT_DELAY
                try:
                    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
                except OSError as exc:  # no IPv6 here, out of descriptors
                    failures[address] = _dial_failure(
                        resolved, address, exc.errno or errno.EAFNOSUPPORT, phase
                    )
                    continue
                sock.setblocking(False)
                code = sock.connect_ex((address, port))
                if code in (0, errno.EINPROGRESS):
                    racing[sock] = address
                    selector.register(sock, selectors.EVENT_WRITE)
                else:
                    sock.close()
                    failures[address] = _dial_failure(resolved, address, code, phase)
                continue
            if not racing:
                break
            wait = deadline - now if not waiting else min(deadline, next_at) - now
            for key, _ in selector.select(max(wait, 0.0)):
                sock = key.fileobj  # type: ignore[assignment]
                address = racing.pop(sock)
                selector.unregister(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    sock.setblocking(True)
                    outcomes[address] = "ready"
                    for other, lost in racing.items():
                        outcomes[lost] = "abandoned"
                        other.close()
                    racing.clear()
                    return sock, _dials(resolved, outcomes, failures)
                sock.close()
                failures[address] = _dial_failure(resolved, address, code, phase)
                next_at = clock()  # the next address at once
    finally:
        for sock, address in racing.items():
            outcomes.setdefault(address, "abandoned")
            sock.close()
        selector.close()
    dials = _dials(resolved, outcomes, failures)
    if not failures:
        raise Failed(
            FailureReason.TIMEOUT,
            phase,
            f"no connection to {resolved.host}:{port} in time",
            dials=dials,
        )
    last = failures[list(failures)[-1]]
    text = last.error
    if len(resolved.addresses) > 1:
        text += f" (every address failed: {dials_note(dials)})"
    raise Failed(last.reason, phase, text, dials=dials)


def _dial_failure(resolved: Resolved, address: str, code: int, phase: str) -> Failed:
    endpoint = resolved.endpoint(address)
    if code == errno.ECONNREFUSED:
        return Failed(FailureReason.REFUSED, phase, f"{endpoint} refused the connection")
    if code == errno.ETIMEDOUT:
        return Failed(FailureReason.TIMEOUT, phase, f"no TCP connection to {endpoint} in time")
    return Failed(
        FailureReason.UNAVAILABLE, phase, f"cannot connect to {endpoint}: {os.strerror(code)}"
    )


def _dials(
    resolved: Resolved, outcomes: dict[str, str], failures: dict[str, Failed]
) -> tuple[Dial, ...]:
    for address, failed in failures.items():
        outcomes[address] = str(failed.reason)
    return tuple(
        Dial(resolved.endpoint(a), outcomes.get(a, "not tried")) for a in resolved.addresses
    )
