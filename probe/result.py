"""What one probe cycle saw: a plain value, produced by the prober, read by everything else."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any, Protocol


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


class Facts(Protocol):
    """What one kind of prober learnt beyond the common fields (gRPC: the Connect
    bookkeeping and gRPC status); flattened into `ProbeResult.to_dict()`."""

    def to_dict(self) -> dict[str, Any]: ...

    def phase_note(self, result: ProbeResult, phase: str) -> str:
        """What `phase` did, in words, for traces."""
        ...


_IDS = random.Random()
"""Our own generator: drawing from the `random` module's would move its state under
whoever else uses it (Hypothesis notices)."""


def new_trace_id() -> str:
    """16 hex digits naming one cycle (not a secret: only unique enough to find it again)."""
    return f"{_IDS.getrandbits(64):016x}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one cycle against one target, whatever kind of prober ran it.

    `phases` holds the seconds spent in every phase that ran, in order, named by the
    prober (gRPC: resolve, connect, rpc, info, close); `notes` says in words what each
    phase did. `duration` is the whole cycle, close included. `error` is the
    (secret-free) error text for humans; it never becomes a label.
    """

    alias: str
    target: str
    method: str
    """What the probe asked (gRPC: check_health or get_version)."""
    started_at: float
    """Wall-clock time the cycle started (Unix seconds)."""
    duration: float
    phases: dict[str, float]
    success: bool
    protocol: str = "grpc"
    """The kind of prober that ran the cycle (probe.probers)."""
    reason: FailureReason | None = None
    failed_phase: str | None = None
    error: str = ""
    status_code: int | None = None
    """Milvus's status code in a failing answer, if Milvus answered with an error."""
    addresses: tuple[str, ...] = ()
    """Addresses the name resolved to (the ones dialled)."""
    healthy: bool | None = None
    """Whether Milvus says it is healthy; None when it was not asked or did not answer."""
    health_reasons: tuple[str, ...] = ()
    quota_states: tuple[str, ...] | None = None
    """Quota state names Milvus reported; None when it was not asked or did not answer."""
    version: str | None = None
    """The server's version, when the cycle asked for it."""
    server_info: ServerInfo | None = None
    """What the server said about its build, when the cycle asked."""
    notes: dict[str, str] = field(default_factory=dict)
    """Per phase: what it did, in words (for traces)."""
    facts: Facts | None = None
    """The prober kind's own facts."""
    trace_id: str = field(default_factory=new_trace_id)
    """Names this cycle: `/probe?trace=ID` while it is in history, exemplars on /metrics."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, used by `/probe` and `check --output json`."""
        body = {
            "alias": self.alias,
            "target": self.target,
            "trace_id": self.trace_id,
            "rpc": self.method,
            "started_at": self.started_at,
            "success": self.success,
            "reason": str(self.reason) if self.reason else None,
            "failed_phase": self.failed_phase,
            "duration_seconds": self.duration,
            "phases": dict(self.phases),
            "error": self.error,
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
        }
        if self.facts is not None:
            body.update(self.facts.to_dict())
        return body
