"""The three MilvusService calls the probe makes, on a channel it is handed."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message

import probe
from probe.milvus import grpcio
from probe.milvus import wire_pb2 as wire

SERVICE = "milvus.proto.milvus.MilvusService"
CONNECT = f"/{SERVICE}/Connect"
CHECK_HEALTH = f"/{SERVICE}/CheckHealth"
GET_VERSION = f"/{SERVICE}/GetVersion"

Metadata = Sequence[tuple[str, str]]


def metadata(authorization: str | None, db_name: str) -> list[tuple[str, str]]:
    """gRPC metadata Milvus reads: `authorization` (base64 token) and `dbname`."""
    found: list[tuple[str, str]] = []
    if authorization:
        found.append(("authorization", authorization))
    if db_name:
        found.append(("dbname", db_name))
    return found


_Response = TypeVar(
    "_Response", wire.CheckHealthResponse, wire.GetVersionResponse, wire.ConnectResponse
)


def _call(
    channel: grpc.Channel,
    path: str,
    request: Message,
    response_type: type[_Response],
    timeout: float,
    md: Metadata,
) -> _Response:
    """A fail-fast unary call: the caller has already waited for the channel to be ready."""
    stub = grpcio.unary_unary(
        channel, path, type(request).SerializeToString, response_type.FromString
    )
    response: _Response = stub(request, timeout=timeout, metadata=md, wait_for_ready=False)
    return response


def check_health(channel: grpc.Channel, timeout: float, md: Metadata) -> wire.CheckHealthResponse:
    return _call(
        channel, CHECK_HEALTH, wire.CheckHealthRequest(), wire.CheckHealthResponse, timeout, md
    )


def get_version(channel: grpc.Channel, timeout: float, md: Metadata) -> wire.GetVersionResponse:
    return _call(
        channel, GET_VERSION, wire.GetVersionRequest(), wire.GetVersionResponse, timeout, md
    )


def client_info(alias: str, user: str | None) -> wire.ClientInfo:
    """Who we are, as Connect records it: milvus-probe, its version, host and alias."""
    return wire.ClientInfo(
        sdk_type="milvus-probe",
        sdk_version=probe.__version__,
        local_time=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        user=user or "",
        host=socket.gethostname(),
        reserved={"alias": alias},
    )


def connect(
    channel: grpc.Channel, timeout: float, md: Metadata, info: wire.ClientInfo
) -> wire.ConnectResponse:
    return _call(
        channel, CONNECT, wire.ConnectRequest(client_info=info), wire.ConnectResponse, timeout, md
    )
