"""Every grpcio internal milvus-probe relies on, fenced in one place.

grpcio's public API cannot tell a connection attempt's outcome without a polling thread
that adds ~200 ms to `close()` (shared/REFERENCE.md §2), so we use three internals:

* `grpc.Channel._channel` — the Cython core channel, whose `check_connectivity_state` /
  `watch_connectivity_state` wake the moment the connection's state changes;
* `grpc._cython.cygrpc.ConnectivityState` — the states those calls return;
* `unary_unary(..., _registered_method=False)` — a call path that does not register the
  method with the core first (no per-method setup cost on a channel used once).

`check()` runs at start-up and turns a grpcio that lacks any of them into one clear
message; pyproject.toml pins grpcio to the minor version tested with them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc

TESTED = "1.85"
"""The grpcio minor version these internals were read from and tested with."""


class GrpcioMismatch(RuntimeError):
    """The installed grpcio lacks an internal the probe needs."""


def _cygrpc() -> Any:
    from grpc._cython import cygrpc

    return cygrpc


def check() -> None:
    """Raise GrpcioMismatch naming what is missing, if anything is."""
    missing: list[str] = []
    try:
        states = _cygrpc().ConnectivityState
        for name in ("idle", "connecting", "ready", "transient_failure", "shutdown"):
            if not hasattr(states, name):
                missing.append(f"grpc._cython.cygrpc.ConnectivityState.{name}")
    except (ImportError, AttributeError):
        missing.append("grpc._cython.cygrpc.ConnectivityState")
    channel = grpc.insecure_channel("ipv4:127.0.0.1:1")
    try:
        core = getattr(channel, "_channel", None)
        for method in ("check_connectivity_state", "watch_connectivity_state"):
            if not callable(getattr(core, method, None)):
                missing.append(f"grpc.Channel._channel.{method}")
        try:
            params = inspect.signature(channel.unary_unary).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        if "_registered_method" not in params:
            missing.append("grpc.Channel.unary_unary(_registered_method=...)")
    finally:
        channel.close()
    if missing:
        raise GrpcioMismatch(
            f"grpcio {grpc.__version__} lacks internals milvus-probe needs "
            f"({', '.join(missing)}); install grpcio {TESTED}.x, the version it is tested "
            "with (see README, 'Moving the pinned libraries')"
        )


def connectivity_states() -> tuple[Any, Any, Any]:
    """The core's (ready, transient_failure, shutdown) connectivity states."""
    states = _cygrpc().ConnectivityState
    return states.ready, states.transient_failure, states.shutdown


def state_names() -> dict[Any, str]:
    """The core's connectivity states → grpc.ChannelConnectivity names (READY, IDLE, ...)."""
    states = _cygrpc().ConnectivityState
    return {
        states.idle: "IDLE",
        states.connecting: "CONNECTING",
        states.ready: "READY",
        states.transient_failure: "TRANSIENT_FAILURE",
        states.shutdown: "SHUTDOWN",
    }


def check_state(channel: grpc.Channel, try_to_connect: bool) -> Any:
    """The channel's connectivity state; starts connecting if `try_to_connect`.

    Raises ValueError once the channel is closed.
    """
    return channel._channel.check_connectivity_state(try_to_connect)


def watch_state(channel: grpc.Channel, last: Any, until: float) -> None:
    """Block until the state differs from `last` or the wall-clock time `until`."""
    channel._channel.watch_connectivity_state(last, until)


def unary_unary(
    channel: grpc.Channel,
    path: str,
    serialize: Callable[[Any], bytes],
    deserialize: Callable[[bytes], Any],
) -> grpc.UnaryUnaryMultiCallable:
    """An unregistered unary call on a channel used for one cycle."""
    return channel.unary_unary(
        path,
        request_serializer=serialize,
        response_deserializer=deserialize,
        _registered_method=False,
    )
