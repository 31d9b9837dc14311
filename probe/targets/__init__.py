"""Targets: what to probe, and where the list of them comes from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from probe.milvus.auth import Credentials
from probe.result import RpcMethod


def tls_server_name(name: str) -> str:
    """`name` as TLS sends it (SNI) and checks it against a certificate: IDNA-encoded, as
    the ssl module would; ValueError says why a name can't be sent.

    Check a name with this *before* `SSLContext.wrap_socket`: the ssl module encodes the
    name only after taking the socket over, and a UnicodeError then leaves a connected
    SSLSocket nobody can close (a connection held until the garbage collector runs)."""
    shown = repr(name[:80]) + ("..." if len(name) > 80 else "")
    try:
        encoded = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        why = exc.__cause__ or exc
        raise ValueError(f"{shown} is not a host name TLS can send ({why})") from None
    if not encoded or "\x00" in encoded:
        raise ValueError(f"{shown} is not a host name TLS can send")
    return encoded


@dataclass(frozen=True)
class TLSFiles:
    """TLS settings of one target, named as pymilvus names them."""

    server_pem_path: str | None = None
    """Server certificate (self-signed) or CA used to verify the server; one-way TLS."""
    server_name: str | None = None
    """Name to verify in the server certificate, when it differs from the host."""
    client_pem_path: str | None = None
    client_key_path: str | None = None
    ca_pem_path: str | None = None
    """CA that signed the server certificate; used with the client pair for mutual TLS."""


@dataclass(frozen=True)
class Endpoint:
    """Another address of the same Milvus, e.g. its management port (9091)."""

    host: str
    port: int
    secure: bool = False

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.secure else 'http'}://{host}:{self.port}"


@dataclass(frozen=True)
class Canary:
    """The data-plane canary of one target (config `canary:`, flags `--canary.*`): each
    cycle also searches, queries and (optionally) writes a small collection of its own
    (probe/probers/canary.py)."""

    collection: str = "milvus_probe_canary"
    """Collection the canary reads and writes (default milvus_probe_canary)."""
    create: bool = False
    """Create, fill, index and load the collection when it is missing or not loaded
    (default false: change nothing but the one fixed row a write cycle upserts)."""
    dimension: int = 8
    """Dimension of the float vector (default 8)."""
    rows: int = 16
    """Known rows (primary keys 1..rows) the canary searches and queries (default 16)."""
    write: bool = False
    """Also upsert one fixed row (primary key 0) and read it back, strongly (default false)."""
    every: int = 1
    """Run the canary on every Nth scheduled cycle (default 1: every cycle)."""
    setup_timeout: float = 60.0
    """Seconds the setup (create, insert, index, load) may take (default 60 s)."""

    @property
    def shape(self) -> str:
        """What decides the canary's series: which phases and counters it has."""
        return "canary" + ("+write" if self.write else "") + ("+create" if self.create else "")


@dataclass(frozen=True)
class ObjectRef:
    """A Kubernetes object: what an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "v1"


@dataclass(frozen=True)
class Target:
    """One Milvus endpoint and how to reach it. Equality compares settings only."""

    alias: str
    host: str
    port: int
    interval: float
    timeout: float
    rpc: RpcMethod
    connect_interval: float
    secure: bool = False
    db_name: str = ""
    credentials: Credentials | None = None
    tls: TLSFiles | None = None
    namespace: str = ""
    """Kubernetes namespace of a discovered target ("" for static targets)."""
    service: str = ""
    """Kubernetes Service a discovered target belongs to."""
    pod: str = ""
    """Pod behind a discovered endpoint ("" for the Service's own address)."""
    regarding: ObjectRef | None = field(default=None, compare=False)
    """The Kubernetes object Events about this target are attached to."""
    protocol: str = "grpc"
    """Which kind of prober runs its cycles (probe.probers.KINDS): grpc or rest."""
    rest_api: str = "auto"
    """REST targets: auto, v1 or v2."""
    management: Endpoint | None = None
    """Milvus's management port, checked beside the probe (GET /healthz)."""
    management_interval: float = 0.0
    """Least seconds between two management checks (0: every cycle)."""
    tls_inspect_interval: float = 3600.0
    """Least seconds between two certificate inspections of a gRPC TLS target."""
    canary: Canary | None = None
    """The data-plane canary, when the target opts in (None: the probe RPC alone)."""
    held: bool = False
    """Also keep one long-lived connection and call the probe RPC on it every cycle
    (probe/probers/held.py), beside the fresh one (default false)."""
    generation: int = field(default=0, compare=False)
    """Stamped by the hub when the target enters its table; a result carrying an older
    generation than the table's belongs to a target that was removed or replaced."""

    @property
    def series_labels(self) -> tuple[str, str, str, str, str, str]:
        """Label values of the target's series: alias, target, namespace, service, pod,
        protocol."""
        return self.alias, self.address, self.namespace, self.service, self.pod, self.protocol

    @property
    def series_key(self) -> tuple[str, ...]:
        """What names the target's series: a change here is a new target (new series)."""
        management = self.management.uri if self.management else ""
        canary = self.canary.shape if self.canary else ""
        return (*self.series_labels, self.rpc.value, management, canary, "held" * self.held)

    @property
    def address(self) -> str:
        """`host:port`, the `target` label; IPv6 literals in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redact(self, text: str) -> str:
        """`text` with every secret this target knows replaced by `***`."""
        return self.credentials.redact(text) if self.credentials else text


class TargetSource(Protocol):
    """Something that knows the current set of targets and says when it changes."""

    def current(self) -> list[Target]:
        """The targets to probe now."""
        ...

    def subscribe(self, callback: Callable[[list[Target]], None]) -> None:
        """Call `callback` with the full new list whenever it changes."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...
