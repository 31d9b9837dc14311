"""Fresh gRPC channels, one real TCP connection each, and an account of them.

Three grpcio behaviours decide whether the numbers we report are true
(shared/REFERENCE.md §2), and this module is where each is handled:

* grpcio shares one connection among all channels to a target unless the channel
  has `grpc.use_local_subchannel_pool`; we always set it.
* `grpc.channel-ready future` + `close()` adds ~200 ms (its polling thread); we
  watch the connectivity state ourselves instead (`wait_until_ready`), which
  returns the moment the state changes.
* grpcio resolves names inside the channel; we resolve first (the `resolve`
  phase), dial the addresses, and keep the host name for TLS and `:authority`.
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

import probe
from probe.milvus import grpcio
from probe.targets import Target


class ChannelState(enum.Enum):
    """How the wait for a usable connection ended."""

    READY = "ready"
    FAILED = "failed"
    """TRANSIENT_FAILURE: the attempt failed; a fail-fast RPC will say why."""
    TIMEOUT = "timeout"
    CLOSED = "closed"
    """The channel was closed under us (shutdown)."""


class ResolveError(Exception):
    """The host name did not resolve."""


def resolve(host: str, port: int) -> tuple[str, list[str]]:
    """The gRPC target for `host:port` (`ipv4:a:p,b:p` or `ipv6:[a]:p`) and its addresses."""
    try:
        # An ASCII name goes as bytes: a str makes CPython load the idna codec (0.2 MiB of
        # RSS for the life of the process) to encode it.
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve {host!r}: {exc}") from None
    family = infos[0][0]
    addresses: list[str] = []
    for fam, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if fam == family and address not in addresses:
            addresses.append(address)
    if family == socket.AF_INET6:
        return "ipv6:" + ",".join(f"[{a}]:{port}" for a in addresses), addresses
    return "ipv4:" + ",".join(f"{a}:{port}" for a in addresses), addresses


@dataclass(frozen=True)
class TLSMaterial:
    root_certificates: bytes | None
    private_key: bytes | None
    certificate_chain: bytes | None


def read_tls(target: Target) -> TLSMaterial:
    """Read the target's certificate files (raises OSError naming the file)."""

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as fh:
            return fh.read()

    tls = target.tls
    if tls is None:
        return TLSMaterial(None, None, None)
    return TLSMaterial(
        root_certificates=read(tls.ca_pem_path or tls.server_pem_path),
        private_key=read(tls.client_key_path),
        certificate_chain=read(tls.client_pem_path),
    )


def channel_options(target: Target) -> list[tuple[str, str | int]]:
    options: list[tuple[str, str | int]] = [
        # A connection of our own: never reuse another channel's.
        ("grpc.use_local_subchannel_pool", 1),
        # We dial the addresses we resolved; an HTTP proxy would hide the path.
        ("grpc.enable_http_proxy", 0),
        # One attempt per cycle: retries would blur what happened.
        ("grpc.enable_retries", 0),
        # gRPC's own connection attempt lasts max(this, 20 s) by default, past close():
        # bound it by the cycle's timeout so a silent server can't keep sockets open.
        ("grpc.min_reconnect_backoff_ms", max(int(target.timeout * 1000), 100)),
        ("grpc.default_authority", target.address),
        ("grpc.primary_user_agent", f"milvus-probe/{probe.__version__}"),
    ]
    if target.secure:
        name = (target.tls.server_name if target.tls else None) or target.host
        options.append(("grpc.ssl_target_name_override", name))
    return options


class ChannelFactory:
    """Builds fresh channels for targets; TLS files are re-read when they change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: dict[Target, tuple[tuple[object, ...], grpc.ChannelCredentials]] = {}

    def _tls_credentials(self, target: Target) -> grpc.ChannelCredentials:
        stamp = tls_files_stamp(target)
        with self._lock:
            cached = self._credentials.get(target)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        material = read_tls(target)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=material.root_certificates,
            private_key=material.private_key,
            certificate_chain=material.certificate_chain,
        )
        with self._lock:
            self._credentials[target] = (stamp, credentials)
        return credentials

    def forget(self, target: Target) -> None:
        with self._lock:
            self._credentials.pop(target, None)

    def credentials(self, target: Target) -> grpc.ChannelCredentials:
        """The target's TLS credentials (files re-read when they change; OSError names one)."""
        return self._tls_credentials(target)

    def new_channel(self, target: Target, grpc_target: str) -> grpc.Channel:
        options = channel_options(target)
        if target.secure:
            return grpc.secure_channel(grpc_target, self._tls_credentials(target), options=options)
        return grpc.insecure_channel(grpc_target, options=options)


def tls_files_stamp(target: Target) -> tuple[object, ...]:
    stamp: list[object] = []
    tls = target.tls
    if tls is None:
        return ()
    for path in (tls.server_pem_path, tls.ca_pem_path, tls.client_pem_path, tls.client_key_path):
        if path:
            try:
                st = os.stat(path)
                stamp.append((path, st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append((path, None))
    return tuple(stamp)


_WATCH_SLICE = 0.25
"""Longest single wait on the connectivity state. A state change ends the wait at once,
so this bounds only how late we notice a channel closed by shutdown (which does not
wake the watch), never a measurement."""

_DONE_STATES: dict[Any, ChannelState] = dict(
    zip(
        grpcio.connectivity_states(),
        (ChannelState.READY, ChannelState.FAILED, ChannelState.CLOSED),
        strict=True,
    )
)


def wait_until_ready(
    channel: grpc.Channel, deadline: float, clock: Callable[[], float] = time.monotonic
) -> ChannelState:
    """Start connecting and wait until the channel is usable, failed, or `deadline`.

    `deadline` is on `clock`, a monotonic clock. Uses the channel's own
    connectivity watch (what `channel-ready future` uses, minus its polling thread).
    """
    try:
        state = grpcio.check_state(channel, True)
        while state not in _DONE_STATES:
            remaining = deadline - clock()
            if remaining <= 0:
                return ChannelState.TIMEOUT
            grpcio.watch_state(channel, state, time.time() + min(remaining, _WATCH_SLICE))
            state = grpcio.check_state(channel, False)
    except ValueError:  # "Channel closed!"
        return ChannelState.CLOSED
    return _DONE_STATES[state]


def warm_up() -> None:
    """Pay grpcio's and the resolver's one-time start-up costs before the first real cycle.

    The first channel in a process initialises gRPC's core (~5 ms here) and the first
    getaddrinfo loads the resolver; without this, the first cycle of every target would
    report those costs as Milvus latency. Dials 127.0.0.1:1, which refuses at once.
    """
    with contextlib.suppress(ResolveError):
        resolve("localhost", 1)
    channel = grpc.insecure_channel(
        "ipv4:127.0.0.1:1", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        wait_until_ready(channel, time.monotonic() + 1.0)
    finally:
        channel.close()
