"""A real Milvus server: milvus-lite 3.2.2 (`pip install -e .[test]`), on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from kit.net import free_port
from kit.process import stop
from kit.wait import wait_until
from probe.milvus import wire_pb2 as wire

SERVICE = "milvus.proto.milvus.MilvusService"


@dataclass
class MilvusLite:
    """A real Milvus server (milvus-lite) on 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.process, 10)


def milvus_lite_binary() -> str:
    found = Path(sys.executable).parent / "milvus-lite"
    if found.exists():
        return str(found)
    which = shutil.which("milvus-lite")
    if which is None:
        raise RuntimeError(
            "milvus-lite is not installed: `pip install -e .[test]` "
            "(make test does it) installs milvus-lite==3.2.2 and pymilvus"
        )
    return which


def start_milvus_lite(data_dir: Path, port: int | None = None) -> MilvusLite:
    port = port or free_port()
    log_path = data_dir / "milvus-lite.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                milvus_lite_binary(),
                "server",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = MilvusLite(port, process, log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"milvus-lite exited: {log_path.read_text()[-2000:]}")
        channel = grpc.insecure_channel(server.address)
        try:
            call = channel.unary_unary(
                f"/{SERVICE}/CheckHealth",
                request_serializer=wire.CheckHealthRequest.SerializeToString,
                response_deserializer=wire.CheckHealthResponse.FromString,
            )
            return bool(call(wire.CheckHealthRequest(), timeout=1).isHealthy)
        except grpc.RpcError:
            return False
        finally:
            channel.close()

    wait_until(answers, 60, "milvus-lite to answer CheckHealth")
    return server
