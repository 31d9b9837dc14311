"""Fresh gRPC channels, one real TCP connection each, and an account of them.

Three grpcio behaviours decide whether the numbers we report are true
(shared/REFERENCE.md §2), and this module is where each is handled:

* grpcio shares one connection among all channels to a target unless the channel
  has `grpc.use_local_subchannel_pool`; we always set it.
* `grpc.channel-ready future` + `close()` adds ~200 ms (its polling thread); we
  watch the connectivity state ourselves instead (`wait_until_ready`), which
  returns the moment the state changes.
* grpcio resolves names inside the channel; we resolve first (the `resolve`
  phase, bounded by the cycle's deadline: probe/resolver.py), dial each address on a
  channel of its own in grpc's order, and keep the host name for TLS and `:authority`.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Callable, Sequence
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
        ("grpc.primary_user_agent", f"milvus-probe/{probe.__version__}"),
    ]
    server_name = target.tls.server_name if target.secure and target.tls else None
    # gRPC checks the call's authority against the certificate unless it is the name TLS
    # verifies: with a server_name, that name is the authority (as in pymilvus).
    options.append(("grpc.default_authority", server_name or target.address))
    if target.secure:
        options.append(("grpc.ssl_target_name_override", server_name or target.host))
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


_RACE_SLICE = 0.005
"""Longest single wait while several channels race (Happy Eyeballs): the watch wakes on the
newest channel's change only, so an older one's is noticed at most this late."""


def wait_until_any(
    channels: Sequence[grpc.Channel],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, ChannelState]:
    """`wait_until_ready` over several channels: (index, state) of the first one ready or
    failed, or (-1, TIMEOUT) at `deadline`, or (-1, CLOSED) when they were closed under us."""
    if len(channels) == 1:
        state = wait_until_ready(channels[0], deadline, clock)
        return (-1 if state in (ChannelState.TIMEOUT, ChannelState.CLOSED) else 0), state
    try:
        while True:
            states = [grpcio.check_state(channel, True) for channel in channels]
            for index, state in enumerate(states):
                if state in _DONE_STATES:
                    return index, _DONE_STATES[state]
            remaining = deadline - clock()
            if remaining <= 0:
                return -1, ChannelState.TIMEOUT
            grpcio.watch_state(channels[-1], states[-1], time.time() + min(remaining, _RACE_SLICE))
    except ValueError:  # "Channel closed!"
        return -1, ChannelState.CLOSED


def warm_up() -> None:
    """Pay grpcio's one-time start-up cost before the first real cycle.

    The first channel in a process initialises gRPC's core (~5 ms here); without this, the
    first cycle of every target would report it as Milvus latency. Dials 127.0.0.1:1, which
    refuses at once. (The resolver's first lookup costs ~0.1 ms, measured: not worth a
    lookup, and a resolver thread, in a process whose targets may all be IP addresses.)
    """
    channel = grpc.insecure_channel(
        "ipv4:127.0.0.1:1", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        wait_until_ready(channel, time.monotonic() + 1.0)
    finally:
        channel.close()
