"""What one probe cycle saw: a plain value, produced by the prober, read by everything else."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Phase(enum.StrEnum):
    """The steps of a cycle, in the order they run."""

    RESOLVE = "resolve"
    """Name resolution (getaddrinfo), done by us so it can be timed and told apart."""
    CONNECT = "connect"
    """From channel creation until the connection can carry an RPC (TCP, TLS, HTTP/2)."""
    RPC = "rpc"
    """The probe RPC itself: CheckHealth (default) or GetVersion."""
    INFO = "info"
    """Milvus Connect and/or GetVersion; only in cycles where server info is due."""
    CLOSE = "close"
    """Closing the channel, which closes its connection."""


class FailureReason(enum.StrEnum):
    """Every failure maps to exactly one of these bounded reasons."""

    DNS = "dns"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    TLS = "tls"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    DB_NOT_FOUND = "db_not_found"
    NOT_READY = "not_ready"
    UNIMPLEMENTED = "unimplemented"
    UNHEALTHY = "unhealthy"
    UNAVAILABLE = "unavailable"
    ERROR = "error"

    @property
    def is_connection_failure(self) -> bool:
        """True when no usable connection to Milvus was established."""
        return self in _CONNECTION_FAILURES


_CONNECTION_FAILURES = frozenset(
    {
        FailureReason.DNS,
        FailureReason.REFUSED,
        FailureReason.TIMEOUT,
        FailureReason.TLS,
        FailureReason.UNAVAILABLE,
    }
)


class RpcMethod(enum.StrEnum):
    """The RPC each cycle makes (`--probe.rpc`)."""

    CHECK_HEALTH = "check_health"
    GET_VERSION = "get_version"


QUOTA_STATES: dict[int, str] = {
    0: "Unknown",
    2: "ReadLimited",
    3: "WriteLimited",
    4: "DenyToRead",
    5: "DenyToWrite",
    6: "DenyToDDL",
}
"""Milvus's QuotaState enum (CheckHealthResponse.quota_states)."""

QUOTA_NONE = "none"
"""Label value used when CheckHealth reports no quota state at all."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What Milvus said about itself in Connect's server_info."""

    build_tags: str = ""
    build_time: str = ""
    git_commit: str = ""
    go_version: str = ""
    deploy_mode: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one cycle against one target.

    `phases` holds the seconds spent in every phase that ran, in order; `duration` is
    the whole cycle, close included. `error` is the (secret-free) error text for
    humans; it never becomes a label.
    """

    alias: str
    target: str
    rpc: RpcMethod
    started_at: float
    """Wall-clock time the cycle started (Unix seconds)."""
    duration: float
    phases: dict[Phase, float]
    success: bool
    reason: FailureReason | None = None
    failed_phase: Phase | None = None
    error: str = ""
    grpc_code: str | None = None
    """gRPC status code name of the failing call, if a call failed."""
    status_code: int | None = None
    """Milvus common.Status code of the failing answer, if Milvus answered with an error."""
    addresses: tuple[str, ...] = ()
    """Addresses the name resolved to (the ones dialled)."""
    healthy: bool | None = None
    """CheckHealth's isHealthy; None when CheckHealth was not answered."""
    health_reasons: tuple[str, ...] = ()
    quota_states: tuple[str, ...] | None = None
    """Quota state names from CheckHealth; None when CheckHealth was not answered."""
    version: str | None = None
    """GetVersion's answer, when GetVersion ran."""
    server_info: ServerInfo | None = None
    """Connect's server_info, when Connect ran and succeeded."""
    connect_called: bool = False
    """Whether this cycle called Milvus Connect (which registers a client for 24 h)."""
    connect_supported: bool = True
    """False when the server answered Connect with UNIMPLEMENTED (Milvus before 2.3)."""
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, used by `/probe` and `check --output json`."""
        return {
            "alias": self.alias,
            "target": self.target,
            "rpc": str(self.rpc),
            "started_at": self.started_at,
            "success": self.success,
            "reason": str(self.reason) if self.reason else None,
            "failed_phase": str(self.failed_phase) if self.failed_phase else None,
            "duration_seconds": self.duration,
            "phases": {str(k): v for k, v in self.phases.items()},
            "error": self.error,
            "grpc_code": self.grpc_code,
            "status_code": self.status_code,
            "addresses": list(self.addresses),
            "healthy": self.healthy,
            "health_reasons": list(self.health_reasons),
            "quota_states": list(self.quota_states) if self.quota_states is not None else None,
            "server_version": self.version,
            "server_info": (
                {
                    "build_tags": self.server_info.build_tags,
                    "build_time": self.server_info.build_time,
                    "git_commit": self.server_info.git_commit,
                    "go_version": self.server_info.go_version,
                    "deploy_mode": self.server_info.deploy_mode,
                }
                if self.server_info
                else None
            ),
            "connect_called": self.connect_called,
        }
