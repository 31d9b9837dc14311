"""Test helpers: real servers to probe, and doubles for what real servers can't be made to do.

What benchmarks need too lives in `kit` (processes, scrapes, /proc, milvus-lite, the
counting proxy) and is re-exported here for the tests' convenience.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import queue
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kit.milvus_lite import MilvusLite as MilvusLite
from kit.milvus_lite import milvus_lite_binary as milvus_lite_binary
from kit.milvus_lite import start_milvus_lite as start_milvus_lite
from kit.net import free_port as free_port
from kit.net import http_get as http_get
from kit.process import Daemon
from kit.procfs import open_fds as open_fds
from kit.proxy import CountingProxy as CountingProxy
from kit.scrape import Sample as Sample
from kit.scrape import Scrape as Scrape
from kit.scrape import scrape as scrape
from kit.wait import wait_until as wait_until
from probe.config import Sources, load
from probe.milvus import wire_pb2 as wire
from probe.probers import Probers
from probe.result import ProbeResult, SideView
from probe.targets import Target

SERVICE = "milvus.proto.milvus.MilvusService"


def target(**fields: Any) -> Target:
    """A validated Target from pymilvus-style connection settings (and probe.* overrides)."""
    flags = {k: v for k, v in fields.items() if "." not in k}
    flags.update({k: v for k, v in fields.items() if "." in k})
    config = load(Sources(flags=flags, environ={}))
    assert len(config.targets) == 1
    return config.targets[0]


def side_views(
    probers: Probers, t: Target, result: ProbeResult, timeout: float = 10.0
) -> list[SideView]:
    """Start the side checks due after a scheduled cycle's `result`, as the daemon does,
    and wait for the views they bring (each check delivers one)."""
    views: queue.Queue[SideView] = queue.Queue()
    started = probers.beside(t, result, views.put)
    return [views.get(timeout=timeout) for _ in range(started)]


def attempts(port: int, alias: str) -> float:
    """milvus_probe_attempts_total of `alias` on the daemon at PORT (0 before its first)."""
    return scrape(port).value("milvus_probe_attempts_total", alias=alias) or 0.0


@contextmanager
def serve_process(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m probe serve ARGS` (a `kit.process.Daemon`) on a free port, once it serves
    /healthz; killed afterwards if still running (tests of the shutdown signal it themselves)."""
    with Daemon(tmp_path / "daemon.log", *args, grace=0).serving() as daemon:
        assert daemon.process is not None
        yield daemon.process, daemon.port


# --------------------------------------------------------------------------- Milvus double


@dataclass
class Behaviour:
    """What the double does. Defaults: a healthy Milvus that needs no auth."""

    token: str | None = None
    """If set, every call must carry authorization=base64(token), else UNAUTHENTICATED."""
    databases: set[str] = field(default_factory=lambda: {"default"})
    check_health_delay: float = 0.0
    status_code: int = 0
    """Non-zero: CheckHealth/GetVersion answer with this common.Status code."""
    healthy: bool = True
    reasons: list[str] = field(default_factory=list)
    quota_states: list[int] = field(default_factory=list)
    version: str = "v2.5.0-double"
    get_version_delay: float = 0.0


class MilvusDouble:
    """A gRPC server speaking MilvusService's three methods, to inject faults and errors.

    The real server (milvus-lite) can't be made to delay, refuse a token or report
    quota states on demand; this double can. It records the metadata it receives.
    """

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        tls: Any = None,
        services: bool = True,
        connect: bool = True,
        port: int = 0,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        if services:
            handlers = {
                "Connect": grpc.unary_unary_rpc_method_handler(
                    self._connect,
                    wire.ConnectRequest.FromString,
                    wire.ConnectResponse.SerializeToString,
                ),
                "CheckHealth": grpc.unary_unary_rpc_method_handler(
                    self._check_health,
                    wire.CheckHealthRequest.FromString,
                    wire.CheckHealthResponse.SerializeToString,
                ),
                "GetVersion": grpc.unary_unary_rpc_method_handler(
                    self._get_version,
                    wire.GetVersionRequest.FromString,
                    wire.GetVersionResponse.SerializeToString,
                ),
            }
            if not connect:  # Milvus before 2.3 has no Connect RPC
                del handlers["Connect"]
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE, handlers),)
            )
        if tls is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", tls)
        self.server.start()
        self.connect_requests: list[wire.ConnectRequest] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0).wait()

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.calls if m == method)

    def _enter(self, method: str, context: grpc.ServicerContext) -> dict[str, str]:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.calls.append((method, md))
        token = self.behaviour.token
        if token is not None:
            expected = base64.b64encode(token.encode()).decode()
            if md.get("authorization") != expected:
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "auth check failure, please check username and password are correct",
                )
        return md

    def _connect(self, request: wire.ConnectRequest, context: grpc.ServicerContext) -> Any:
        md = self._enter("Connect", context)
        with self._lock:
            self.connect_requests.append(request)
        db = md.get("dbname", "default")
        if db not in self.behaviour.databases:
            return wire.ConnectResponse(
                status=wire.Status(code=800, reason=f"database not found[database={db}]")
            )
        return wire.ConnectResponse(
            status=wire.Status(),
            server_info=wire.ServerInfo(
                build_tags=self.behaviour.version,
                git_commit="abc123",
                go_version="go1.22",
                deploy_mode="STANDALONE",
                build_time="2026-01-01",
            ),
            identifier=42,
        )

    def _check_health(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("CheckHealth", context)
        if self.behaviour.check_health_delay:
            time.sleep(self.behaviour.check_health_delay)
        b = self.behaviour
        if b.status_code:
            return wire.CheckHealthResponse(
                status=wire.Status(code=b.status_code, reason="service not ready")
            )
        return wire.CheckHealthResponse(
            status=wire.Status(),
            isHealthy=b.healthy,
            reasons=b.reasons,
            quota_states=b.quota_states,
        )

    def _get_version(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("GetVersion", context)
        if self.behaviour.get_version_delay:
            time.sleep(self.behaviour.get_version_delay)  # the injected fault
        if self.behaviour.status_code:
            return wire.GetVersionResponse(
                status=wire.Status(code=self.behaviour.status_code, reason="service not ready")
            )
        return wire.GetVersionResponse(status=wire.Status(), version=self.behaviour.version)


@contextmanager
def milvus_double(behaviour: Behaviour | None = None, **kwargs: Any) -> Iterator[MilvusDouble]:
    double = MilvusDouble(behaviour, **kwargs)
    try:
        yield double
    finally:
        double.stop()


# --------------------------------------------------------------------------- canary double


@dataclass
class CanaryFaults:
    """What the canary double gets wrong on purpose. Defaults: nothing."""

    search_status: tuple[int, int, str] | None = None
    """(code, legacy error_code, reason) Search answers with."""
    query_status: tuple[int, int, str] | None = None
    upsert_status: tuple[int, int, str] | None = None
    search_wrong_id: bool = False
    """Search answers the primary key of another row."""
    search_delay: float = 0.0
    upsert_ignored: bool = False
    """Upsert answers success but keeps the old row."""


class CanaryDouble(MilvusDouble):
    """A MilvusDouble that also answers the canary's Search, Query and Upsert from a table of
    its own, and fails them on demand.

    Real servers (milvus-lite, 2.3.5) can't be made to rate-limit, answer a quota error,
    return the wrong row or stall a search; this double can. `rows` holds pk → vector.
    """

    def __init__(self, faults: CanaryFaults | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = faults or CanaryFaults()
        self.rows: dict[int, list[float]] = {}
        handlers = {
            "Search": grpc.unary_unary_rpc_method_handler(
                self._search, wire.SearchRequest.FromString, wire.SearchResults.SerializeToString
            ),
            "Query": grpc.unary_unary_rpc_method_handler(
                self._query, wire.QueryRequest.FromString, wire.QueryResults.SerializeToString
            ),
            "Upsert": grpc.unary_unary_rpc_method_handler(
                self._upsert, wire.UpsertRequest.FromString, wire.MutationResult.SerializeToString
            ),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )

    def fill(self, rows: int, dimension: int) -> None:
        from probe.probers.canary import known_vector

        self.rows = {r: known_vector(r, dimension) for r in range(1, rows + 1)}

    @staticmethod
    def _status(fault: tuple[int, int, str] | None) -> wire.Status:
        if fault is None:
            return wire.Status()
        code, error_code, reason = fault
        return wire.Status(code=code, error_code=error_code, reason=reason)

    def _search(self, request: wire.SearchRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Search", context)
        if self.faults.search_delay:
            time.sleep(self.faults.search_delay)  # the injected fault
        if self.faults.search_status is not None:
            return wire.SearchResults(status=self._status(self.faults.search_status))
        group = wire.PlaceholderGroup.FromString(request.placeholder_group)
        raw = group.placeholders[0].values[0]
        vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        ranked = sorted(
            self.rows,
            key=lambda pk: sum((a - b) ** 2 for a, b in zip(self.rows[pk], vector, strict=True)),
        )
        ids = ranked[:1]
        if self.faults.search_wrong_id and ids:
            ids = [ids[0] + 1]
        return wire.SearchResults(
            status=wire.Status(),
            results=wire.SearchResultData(
                num_queries=1, top_k=1, ids=wire.IDs(int_id=wire.LongArray(data=ids)), topks=[1]
            ),
        )

    def _query(self, request: wire.QueryRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Query", context)
        if self.faults.query_status is not None:
            return wire.QueryResults(status=self._status(self.faults.query_status))
        pks = [int(x) for x in request.expr.split("[", 1)[1].rstrip("]").split(",")]
        found = [pk for pk in pks if pk in self.rows]
        dim = len(next(iter(self.rows.values()))) if self.rows else 0
        return wire.QueryResults(
            status=wire.Status(),
            fields_data=[
                wire.FieldData(
                    type=5,
                    field_name="pk",
                    scalars=wire.ScalarField(long_data=wire.LongArray(data=found)),
                ),
                wire.FieldData(
                    type=101,
                    field_name="vector",
                    vectors=wire.VectorField(
                        dim=dim,
                        float_vector=wire.FloatArray(
                            data=[x for pk in found for x in self.rows[pk]]
                        ),
                    ),
                ),
            ],
        )

    def _upsert(self, request: wire.UpsertRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Upsert", context)
        if self.faults.upsert_status is not None:
            return wire.MutationResult(status=self._status(self.faults.upsert_status))
        if self.faults.upsert_ignored:
            return wire.MutationResult(status=wire.Status(), upsert_cnt=1)
        pks = list(request.fields_data[0].scalars.long_data.data)
        flat = list(request.fields_data[1].vectors.float_vector.data)
        dim = len(flat) // len(pks)
        for i, pk in enumerate(pks):
            self.rows[pk] = flat[i * dim : (i + 1) * dim]
        return wire.MutationResult(status=wire.Status(), upsert_cnt=len(pks))


# --------------------------------------------------------------------------- TCP proxy


class SilentServer:
    """Accepts TCP connections and never says a word (a half-dead server)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.05)
        self.port = int(self._sock.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._sock.close()
        for conn in self.connections:
            conn.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- TLS


@dataclass
class Certs:
    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing we use: trusting it must fail verification."""
    server_not_after: float = 0.0
    """When the server certificate expires (Unix time, whole seconds): TLS inspection
    must report exactly this."""
    stranger_cert: Path = Path()
    """A client certificate signed by `other_ca`: verification against `ca` must fail."""
    stranger_key: Path = Path()

    def server_credentials(self, mutual: bool = False) -> grpc.ServerCredentials:
        pair = (self.server_key.read_bytes(), self.server_cert.read_bytes())
        if mutual:
            return grpc.ssl_server_credentials(
                [pair], root_certificates=self.ca.read_bytes(), require_client_auth=True
            )
        return grpc.ssl_server_credentials([pair])


def make_certs(directory: Path, server_names: tuple[str, ...] = ("localhost",)) -> Certs:
    """A CA, a server certificate for `server_names` and 127.0.0.1, a client certificate,
    another CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(k, hashes.SHA256())
        )
        return cert, k

    def leaf(
        cn: str,
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        server: bool,
        not_after: datetime.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer[0].subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(not_after or now + datetime.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [*(x509.DNSName(n) for n in server_names),
                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            ).add_extension(
                x509.SubjectAlternativeName([x509.DNSName(f"{cn}.monitoring.svc")]),
                critical=False,
            )
        return builder.sign(issuer[1], hashes.SHA256()), k

    directory.mkdir(parents=True, exist_ok=True)
    root = ca("milvus-probe test CA")
    other = ca("some other CA")
    server_not_after = (now + datetime.timedelta(days=10)).replace(microsecond=0)
    server = leaf("localhost", root, server=True, not_after=server_not_after)
    client = leaf("milvus-probe-client", root, server=False)
    stranger = leaf("milvus-probe-client", other, server=False)
    paths = {}
    for label, cert in (
        ("ca", root[0]),
        ("other_ca", other[0]),
        ("server", server[0]),
        ("client", client[0]),
        ("stranger", stranger[0]),
    ):
        paths[label] = directory / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(server[1], directory / "server.key")
    write_key(client[1], directory / "client.key")
    write_key(stranger[1], directory / "stranger.key")
    return Certs(
        directory,
        paths["ca"],
        paths["server"],
        directory / "server.key",
        paths["client"],
        directory / "client.key",
        paths["other_ca"],
        server_not_after=server_not_after.timestamp(),
        stranger_cert=paths["stranger"],
        stranger_key=directory / "stranger.key",
    )
