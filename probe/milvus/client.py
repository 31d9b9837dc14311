"""The three MilvusService calls the probe makes, on a channel it is handed."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

import grpc

import probe
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


def check_health(
    channel: grpc.Channel, timeout: float, md: Metadata
) -> wire.CheckHealthResponse:
    call = channel.unary_unary(
        CHECK_HEALTH,
        request_serializer=wire.CheckHealthRequest.SerializeToString,
        response_deserializer=wire.CheckHealthResponse.FromString,
        _registered_method=False,
    )
    return call(wire.CheckHealthRequest(), timeout=timeout, metadata=md, wait_for_ready=False)


def get_version(channel: grpc.Channel, timeout: float, md: Metadata) -> wire.GetVersionResponse:
    call = channel.unary_unary(
        GET_VERSION,
        request_serializer=wire.GetVersionRequest.SerializeToString,
        response_deserializer=wire.GetVersionResponse.FromString,
        _registered_method=False,
    )
    return call(wire.GetVersionRequest(), timeout=timeout, metadata=md, wait_for_ready=False)


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
    call = channel.unary_unary(
        CONNECT,
        request_serializer=wire.ConnectRequest.SerializeToString,
        response_deserializer=wire.ConnectResponse.FromString,
        _registered_method=False,
    )
    return call(
        wire.ConnectRequest(client_info=info), timeout=timeout, metadata=md, wait_for_ready=False
    )
