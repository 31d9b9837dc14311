"""The raw grpcio cycle, in a module of its own that imports only grpc and the wire messages.

Family 1 (the limit) times it; family 5 runs it in a process that imports nothing else
but prometheus_client (`floor`), to measure the memory any Python Milvus probe built on
the required libraries carries before a line of its own code.
"""

from __future__ import annotations

import sys
import time

import grpc

from probe.milvus import wire_pb2 as wire

CHECK_HEALTH = "/milvus.proto.milvus.MilvusService/CheckHealth"
GET_VERSION = "/milvus.proto.milvus.MilvusService/GetVersion"
HEALTH_V1 = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"
"""grpc.health.v1.HealthCheckResponse{status: SERVING}, serialised."""


def raw_cycle(grpc_target: str, timeout: float) -> bool:
    """One fresh channel, one CheckHealth, close; True when Milvus said healthy."""
    channel = grpc.insecure_channel(grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        call = channel.unary_unary(
            CHECK_HEALTH,
            request_serializer=None,  # the request is empty: b""
            response_deserializer=wire.CheckHealthResponse.FromString,
        )
        response = call(b"", timeout=timeout, wait_for_ready=True)
        return bool(response.isHealthy)
    finally:
        channel.close()


def raw_health_v1_cycle(grpc_target: str, timeout: float) -> bool:
    """The same with grpc.health.v1 Check(service=""), what blackbox_exporter calls."""
    channel = grpc.insecure_channel(grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        call = channel.unary_unary(HEALTH_V1, request_serializer=None, response_deserializer=None)
        return bool(call(b"", timeout=timeout, wait_for_ready=True) == SERVING)
    finally:
        channel.close()


def server_version(address: str) -> str:
    """What GetVersion says (e.g. `milvus_lite-3.2.2`, `v2.3.5`)."""
    channel = grpc.insecure_channel(f"ipv4:{address}")
    try:
        call = channel.unary_unary(
            GET_VERSION,
            request_serializer=None,
            response_deserializer=wire.GetVersionResponse.FromString,
        )
        return str(call(b"", timeout=5).version)
    finally:
        channel.close()


def floor(address: str, cycles: int, timeout: float, pace: float) -> dict[str, int]:
    """Be the smallest probe process: `cycles` raw cycles on `address`, the default
    prometheus_client registry written once (process, GC and platform collectors, as the
    daemon exports), then say `ready` on stdout and hold until stdin closes, so the parent
    reads this process's RSS from outside (reading it here would import more)."""
    import prometheus_client

    grpc_target = f"ipv4:{address}"
    healthy = 0
    for _ in range(cycles):
        healthy += raw_cycle(grpc_target, timeout)
        time.sleep(pace)
    prometheus_client.generate_latest()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()
    return {"cycles": cycles, "healthy": healthy}
