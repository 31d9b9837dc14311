"""What one probe cycle saw: a plain value, produced by the prober, read by everything else."""

from __future__ import annotations

import enum
import random
import time
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
    # The data-plane canary (probe/probers/canary.py) and Milvus's limits.
    COLLECTION_MISSING = "collection_missing"
    NOT_LOADED = "not_loaded"
    WRONG_RESULT = "wrong_result"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    ERROR = "error"
    PROBE_ERROR = "probe_error"
    """The probe itself broke (a bug, an unexpected answer it could not handle): nothing
    is known of the target. Counted apart (`milvus_probe_internal_errors_total`)."""

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
class ComponentState:
    """One Milvus component as its management port's /healthz reports it."""

    name: str
    code: int
    """commonpb.StateCode: 0 Initializing, 1 Healthy, 2 Abnormal, 3 StandBy, 4 Stopping."""

    @property
    def healthy(self) -> bool:
        return self.code == 1


@dataclass(frozen=True, slots=True)
class ManagementView:
    """What Milvus's own management port (/healthz on 9091) said, on its own connection."""

    uri: str
    started_at: float
    duration: float
    healthy: bool
    """It answered 200 with state OK."""
    http_status: int | None = None
    state: str = ""
    components: tuple[ComponentState, ...] = ()
    reason: FailureReason | None = None
    """None when healthy; `unhealthy` when it answered but not OK; else why no answer came
    (refused, timeout, dns, ...)."""
    error: str = ""

    def summary(self) -> str:
        """`OK (9/9 components healthy)`, or what is wrong, in one line."""
        healthy = sum(c.healthy for c in self.components)
        parts = f" ({healthy}/{len(self.components)} components healthy)" if self.components else ""
        if self.healthy:
            return f"OK{parts}"
        if self.reason is FailureReason.UNHEALTHY:
            sick = [f"{c.name}={c.code}" for c in self.components if not c.healthy]
            why = f"; not healthy: {', '.join(sick)}" if sick else ""
            return f"unhealthy: HTTP {self.http_status} {self.state or ''}".rstrip() + parts + why
        return f"no answer ({self.reason}): {self.error}"


@dataclass(frozen=True, slots=True)
class Certificate:
    """One certificate the server presented."""

    subject: str
    issuer: str
    serial: str
    not_after: float
    """Unix time."""
    sans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsView:
    """The server's TLS: protocol version and the chain it presented (leaf first)."""

    version: str
    chain: tuple[Certificate, ...]
    inspected_at: float

    @property
    def earliest_expiry(self) -> float:
        return min(c.not_after for c in self.chain)

    def summary(self, now: float) -> str:
        """`TLSv1.3, CN=milvus expires 2027-01-02 (29 days left)`: the earliest expiry."""
        first = min(self.chain, key=lambda c: c.not_after)
        days = (first.not_after - now) / 86400
        when = time.strftime("%Y-%m-%d", time.gmtime(first.not_after))
        left = f"{days:.0f} days left" if days >= 0 else f"EXPIRED {-days:.0f} days ago"
        return f"{self.version}, {first.subject or '?'} expires {when} ({left})"


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
    prober (gRPC: resolve, connect, rpc, info, close); `facts.phase_note()` says in words
    what each phase did. `duration` is the whole cycle, close included. `error` is the
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
    facts: Facts | None = None
    """The prober kind's own facts."""
    management: ManagementView | None = None
    """Milvus's own view of itself, when a management URI is set and the check was due."""
    tls: TlsView | None = None
    """The server's certificates, when this cycle inspected them."""
    visibility: float | None = None
    """Seconds from the canary's acknowledged write until a strong read saw it; None when
    the cycle wrote nothing (or never saw its write)."""
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
        body["protocol"] = self.protocol
        if self.management is not None:
            body["management"] = management_dict(self.management)
        if self.tls is not None:
            body["tls"] = tls_dict(self.tls)
        return body


def management_dict(view: ManagementView) -> dict[str, Any]:
    return {
        "uri": view.uri,
        "healthy": view.healthy,
        "http_status": view.http_status,
        "state": view.state,
        "components": {c.name: c.code for c in view.components},
        "duration_seconds": view.duration,
        "reason": str(view.reason) if view.reason else None,
        "error": view.error,
    }


def tls_dict(view: TlsView) -> dict[str, Any]:
    return {
        "version": view.version,
        "earliest_expiry": view.earliest_expiry,
        "chain": [
            {
                "subject": c.subject,
                "issuer": c.issuer,
                "serial": c.serial,
                "not_after": c.not_after,
                "sans": list(c.sans),
            }
            for c in view.chain
        ],
    }
