"""A DNS server of the test's own: answers A and AAAA from a table, or never answers.

It serves a UDP socket it is given, so it can live anywhere that socket was made: bound to
127.0.0.53 inside a test's network namespace (`tests.standalone.Netns.socket`), whose own
`resolv.conf` names it (shared/REFERENCE.md §8), it is what the resolver of every process
in that namespace asks.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Collection, Mapping, Sequence

A, AAAA = 1, 28
_NXDOMAIN = 3


class DnsResponder:
    """Answers queries on `sock` from `records` (name → addresses, both families), with
    NXDOMAIN for names it does not know. Queries for a `silent` name (or one under it, as
    search domains make: `dead.test.svc.cluster.local`) are read and never answered: a
    resolver that never answers. `asked()` is every (name, type) asked, in order."""

    def __init__(
        self,
        sock: socket.socket,
        records: Mapping[str, Sequence[str]] | None = None,
        *,
        silent: Collection[str] = (),
    ) -> None:
        self.sock = sock
        self.silent = tuple(name.lower().rstrip(".") for name in silent)
        self.records = {k.lower().rstrip("."): list(v) for k, v in (records or {}).items()}
        self.queries: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def asked(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self.queries)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)

    def __enter__(self) -> DnsResponder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            parsed = _question(query)
            if parsed is None:
                continue
            name, qtype, end = parsed
            with self._lock:
                self.queries.append((name, qtype))
            if any(name == s or name.startswith(s + ".") for s in self.silent):
                continue
            with contextlib.suppress(OSError):
                self.sock.sendto(self._answer(query, name, qtype, end), peer)

    def _answer(self, query: bytes, name: str, qtype: int, end: int) -> bytes:
        addresses = self.records.get(name)
        family = {A: socket.AF_INET, AAAA: socket.AF_INET6}.get(qtype)
        rdatas = [
            socket.inet_pton(family, a)
            for a in addresses or ()
            if family is not None and (":" in a) == (family == socket.AF_INET6)
        ]
        flags = 0x8180 | (_NXDOMAIN if addresses is None else 0)  # response, RD, RA
        header = struct.pack(
            "!HHHHHH", struct.unpack("!H", query[:2])[0], flags, 1, len(rdatas), 0, 0
        )
        answers = b"".join(
            struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(rdata)) + rdata for rdata in rdatas
        )
        return header + query[12:end] + answers


def _question(query: bytes) -> tuple[str, int, int] | None:
    """(name, type, end offset of the question) of a standard query; None if unreadable."""
    if len(query) < 12 or struct.unpack("!H", query[4:6])[0] != 1:
        return None
    labels, at = [], 12
    while at < len(query) and query[at]:
        length = query[at]
        labels.append(query[at + 1 : at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    if at + 5 > len(query):
        return None
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
    return ".".join(labels).lower(), qtype, at + 5
