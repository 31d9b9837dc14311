"""What one probe cycle saw: a plain value, produced by the prober, read by everything else."""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


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


class Dial(NamedTuple):
    """One address a cycle dialled, and what came of it."""

    endpoint: str
    """`127.0.0.1:19530`, `[::1]:19530`."""
    outcome: str
    """`ready` (it carried the cycle), a FailureReason (refused, timeout, tls, ...),
    `abandoned` (still connecting when another address answered) or `not tried` (the
    deadline came first)."""


def dials_note(dials: tuple[Dial, ...]) -> str:
    """`[::1]:19530 refused, 127.0.0.1:19530 ready`."""
    return ", ".join(f"{d.endpoint} {d.outcome}" for d in dials)


class Facts(Protocol):
    """What one kind of prober learnt beyond the common fields (gRPC: the Connect
    bookkeeping and gRPC status); flattened into `ProbeResult.to_dict()`."""

    def to_dict(self) -> dict[str, Any]: ...

    def phase_note(self, result: ProbeResult, phase: str) -> str:
        """What `phase` did, in words, for traces."""
        ...


class HeldReason(enum.StrEnum):
    """Reasons only a held connection has (probe/probers/held.py); its other failures
    carry the FailureReason the fresh cycle would give."""

    IDLE_DROPPED = "idle_dropped"
    """A call on a connection gRPC thought usable failed (timed out, or the connection
    died under it) while a fresh connection worked: something on the path dropped the
    idle flow (a load balancer's idle timeout, a NAT or conntrack table)."""
    GOAWAY = "goaway"
    """The server (or a proxy) sent HTTP/2 GOAWAY, e.g. `too_many_pings`."""
    RECONNECTING = "reconnecting"
    """gRPC was still reconnecting (or waiting out its backoff) while a fresh connection
    worked."""


HELD_REASONS: tuple[str, ...] = (*(r.value for r in HeldReason), *(r.value for r in FailureReason))
"""Every reason a held connection's call may fail with: the label values of
`milvus_probe_held_failures_total`."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """The held channel entered `state` (IDLE, CONNECTING, READY, TRANSIENT_FAILURE,
    SHUTDOWN) at Unix time `at`."""

    at: float
    state: str


@dataclass(frozen=True, slots=True)
class HeldView:
    """One call of the probe RPC on a target's held connection: a channel opened once and
    kept, configured as pymilvus configures its own (probe/probers/held.py)."""

    started_at: float
    """Unix time the call started."""
    duration: float
    success: bool
    reason: str | None = None
    """One of HELD_REASONS; None on success."""
    error: str = ""
    state_before: str = ""
    """The channel's state when the call started."""
    state_after: str = ""
    idle: float = 0.0
    """Seconds since the previous call on the channel ended (since it opened, at first)."""
    opened_at: float = 0.0
    """Unix time the channel was opened (it is never reopened while the target lasts)."""
    connection_age: float | None = None
    """Seconds the current connection has been READY; None when it is not."""
    reconnects: int = 0
    """Times the channel became READY again after its first READY, since it opened."""
    state_counts: tuple[tuple[str, int], ...] = ()
    """Times the channel entered each state since it opened."""
    changes: tuple[StateChange, ...] = ()
    """The channel's last state changes, oldest first."""
    unusable_for: float | None = None
    """On the success that ended an outage: seconds from the start of the first failed
    call to the end of this one."""
    failing_for: float | None = None
    """While failing: seconds since the start of the first failed call."""

    def summary(self) -> str:
        """`ok in 1.2 ms on a connection up 5m3s (0 reconnects)`, or what failed, in one line."""
        if self.success:
            age = f" on a connection up {_span(self.connection_age)}" if self.connection_age else ""
            back = f", usable again after {_span(self.unusable_for)}" if self.unusable_for else ""
            return f"ok in {self.duration * 1000:.1f} ms{age} ({self.reconnects} reconnects){back}"
        since = f" for {_span(self.failing_for)}" if self.failing_for else ""
        return (
            f"FAILED {self.reason}{since} (channel {self.state_before} → {self.state_after}, "
            f"{_span(self.idle)} idle): {self.error}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "success": self.success,
            "reason": self.reason,
            "error": self.error,
            "duration_seconds": self.duration,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "idle_seconds": self.idle,
            "opened_at": self.opened_at,
            "connection_age_seconds": self.connection_age,
            "reconnects": self.reconnects,
            "unusable_seconds": self.unusable_for,
            "failing_seconds": self.failing_for,
            "state_changes": [{"at": c.at, "state": c.state} for c in self.changes],
        }


def _span(seconds: float | None) -> str:
    """`850 ms`, `12.3 s`, `5m3s`, `2h04m`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60)}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


SideView = ManagementView | TlsView | HeldView
"""What a check beside the cycles hands the hub (`publish_view`)."""


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
    """Addresses the name resolved to, in the order a client dials them."""
    dials: tuple[Dial, ...] = ()
    """Each address dialled, in order, and what came of it (one `ready` at most)."""
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
    held: HeldView | None = None
    """The target's held connection, called beside this cycle (`/probe`, `check`)."""
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
            "dials": [{"address": d.endpoint, "outcome": d.outcome} for d in self.dials],
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
        if self.held is not None:
            body["held"] = self.held.to_dict()
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
