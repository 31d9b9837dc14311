"""TLS inspection: the certificates a server presents, and when they expire.

grpcio never shows a client the server's chain, so for gRPC targets we make a TLS
handshake of our own — one more connection, counted in the ledger — at most once per
`tls_inspect_interval` (and again when the target or its TLS files change). The REST
prober reads the chain from its own connection instead.

The chain as presented comes from the ssl module's `get_unverified_chain()` (public in
Python 3.13; on 3.10-3.12 it exists on the internal SSL object and is fenced here). When
it is missing, the verified leaf from `getpeercert()` stands in.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from probe.milvus.channel import tls_files_stamp
from probe.probers import Failed
from probe.probers.http import connect, tls_context
from probe.probers.ledger import ConnectionLedger
from probe.resolver import ResolveError, resolve
from probe.result import Certificate, TlsView
from probe.targets import Target


def _name(parts: Any) -> str:
    """`CN=milvus,O=example` from the ssl module's nested tuples."""
    names = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}  # fmt: skip
    out = []
    for rdn in parts or ():
        for key, value in rdn:
            out.append(f"{names.get(key, key)}={value}")
    return ",".join(out)


def _certificate(info: dict[str, Any]) -> Certificate | None:
    not_after = info.get("notAfter")
    if not not_after:
        return None
    try:
        expiry = float(ssl.cert_time_to_seconds(not_after))
    except ValueError:
        return None
    sans = tuple(f"{kind}:{value}" for kind, value in info.get("subjectAltName", ())[:32])
    return Certificate(
        subject=_name(info.get("subject"))[:512],
        issuer=_name(info.get("issuer"))[:512],
        serial=str(info.get("serialNumber", ""))[:128],
        not_after=expiry,
        sans=sans,
    )


def view_of(sock: ssl.SSLSocket, wall: Callable[[], float] = time.time) -> TlsView | None:
    """The chain `sock`'s server presented (leaf first), or None if nothing readable."""
    chain: list[Certificate] = []
    native = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
    if callable(native):
        with contextlib.suppress(Exception):
            for cert in native()[:16] or ():
                parsed = _certificate(cert.get_info())
                if parsed is not None:
                    chain.append(parsed)
    if not chain:
        leaf = sock.getpeercert()
        parsed = _certificate(leaf) if leaf else None
        if parsed is not None:
            chain.append(parsed)
    if not chain:
        return None
    return TlsView(version=sock.version() or "", chain=tuple(chain), inspected_at=wall())


class TlsInspector:
    """Handshakes of its own with gRPC targets' servers, at most once per interval each."""

    def __init__(
        self,
        ledger: ConnectionLedger,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, tuple[object, ...]]] = {}

    def due(self, target: Target) -> bool:
        with self._lock:
            last = self._last.get((target.alias, target.address))
        if last is None:
            return True
        at, stamp = last
        return self._clock() - at >= target.tls_inspect_interval or stamp != tls_files_stamp(target)

    def forget(self, target: Target) -> None:
        with self._lock:
            self._last.pop((target.alias, target.address), None)

    def inspect(self, target: Target) -> TlsView | None:
        """One handshake; None when it fails (the probe itself reports why)."""
        with self._lock:
            self._last[target.alias, target.address] = (self._clock(), tls_files_stamp(target))
        clock = time.perf_counter
        deadline = clock() + target.timeout
        try:
            resolved = resolve(target.host, target.port, deadline - clock())
            context = tls_context(target)
            context.set_alpn_protocols(["h2"])  # a gRPC server may insist on it
            connection, _ = connect(target, resolved, True, context, deadline, clock, "tls")
        except (ResolveError, Failed, OSError, ssl.SSLError):
            return None
        if not self._ledger.opened((target.alias, target.address), connection):
            return None
        try:
            sock = connection.sock
            return view_of(sock, self._wall) if isinstance(sock, ssl.SSLSocket) else None
        finally:
            connection.close()
            self._ledger.closed(connection)
