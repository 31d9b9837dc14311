"""The MilvusService calls the probe makes, on a channel it is handed: the three of every
cycle, and the data-plane canary's (probe/probers/canary.py)."""

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


_Response = TypeVar("_Response", bound=Message)


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


# --------------------------------------------------------------------------- the canary's calls

HAS_COLLECTION = f"/{SERVICE}/HasCollection"
DESCRIBE_COLLECTION = f"/{SERVICE}/DescribeCollection"
CREATE_COLLECTION = f"/{SERVICE}/CreateCollection"
INSERT = f"/{SERVICE}/Insert"
UPSERT = f"/{SERVICE}/Upsert"
CREATE_INDEX = f"/{SERVICE}/CreateIndex"
LOAD_COLLECTION = f"/{SERVICE}/LoadCollection"
GET_LOAD_STATE = f"/{SERVICE}/GetLoadState"
SEARCH = f"/{SERVICE}/Search"
QUERY = f"/{SERVICE}/Query"


def has_collection(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.HasCollectionRequest
) -> wire.BoolResponse:
    return _call(channel, HAS_COLLECTION, request, wire.BoolResponse, timeout, md)


def describe_collection(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.DescribeCollectionRequest
) -> wire.DescribeCollectionResponse:
    return _call(
        channel, DESCRIBE_COLLECTION, request, wire.DescribeCollectionResponse, timeout, md
    )


def create_collection(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.CreateCollectionRequest
) -> wire.Status:
    return _call(channel, CREATE_COLLECTION, request, wire.Status, timeout, md)


def insert(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.InsertRequest
) -> wire.MutationResult:
    return _call(channel, INSERT, request, wire.MutationResult, timeout, md)


def upsert(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.UpsertRequest
) -> wire.MutationResult:
    return _call(channel, UPSERT, request, wire.MutationResult, timeout, md)


def create_index(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.CreateIndexRequest
) -> wire.Status:
    return _call(channel, CREATE_INDEX, request, wire.Status, timeout, md)


def load_collection(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.LoadCollectionRequest
) -> wire.Status:
    return _call(channel, LOAD_COLLECTION, request, wire.Status, timeout, md)


def get_load_state(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.GetLoadStateRequest
) -> wire.GetLoadStateResponse:
    return _call(channel, GET_LOAD_STATE, request, wire.GetLoadStateResponse, timeout, md)


def search(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.SearchRequest
) -> wire.SearchResults:
    return _call(channel, SEARCH, request, wire.SearchResults, timeout, md)


def query(
    channel: grpc.Channel, timeout: float, md: Metadata, request: wire.QueryRequest
) -> wire.QueryResults:
    return _call(channel, QUERY, request, wire.QueryResults, timeout, md)
