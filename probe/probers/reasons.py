"""Failure reasons: how each answer or error becomes one of the bounded FailureReasons.

The tables are facts measured on real servers and grpcio (shared/REFERENCE.md §1-2);
every kind of prober classifies through here, so a reason means the same thing
whichever door the probe came through.
"""

from __future__ import annotations

import grpc

from probe.milvus import wire_pb2 as wire
from probe.result import FailureReason

# Milvus common.Status codes (REFERENCE.md §1) → reasons.
STATUS_REASONS: dict[int, FailureReason] = {
    1: FailureReason.NOT_READY,
    2: FailureReason.UNAVAILABLE,
    8: FailureReason.RATE_LIMITED,
    9: FailureReason.QUOTA_EXCEEDED,
    10: FailureReason.UNIMPLEMENTED,
    100: FailureReason.COLLECTION_MISSING,
    101: FailureReason.NOT_LOADED,
    800: FailureReason.DB_NOT_FOUND,
    1400: FailureReason.UNAUTHENTICATED,
    1401: FailureReason.PERMISSION_DENIED,
}

# The deprecated common.ErrorCode, for answers that carry no `code` (servers before 2.3).
LEGACY_REASONS: dict[int, FailureReason] = {
    3: FailureReason.PERMISSION_DENIED,
    4: FailureReason.COLLECTION_MISSING,
    48: FailureReason.QUOTA_EXCEEDED,  # ForceDeny: deny-to-read/deny-to-write
    49: FailureReason.RATE_LIMITED,
    53: FailureReason.QUOTA_EXCEEDED,  # MemoryQuotaExhausted
    54: FailureReason.QUOTA_EXCEEDED,  # DiskQuotaExhausted
}

_GRPC_REASONS: dict[grpc.StatusCode, FailureReason] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: FailureReason.TIMEOUT,
    grpc.StatusCode.UNAUTHENTICATED: FailureReason.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: FailureReason.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED: FailureReason.UNIMPLEMENTED,
}

# Substrings of grpcio's UNAVAILABLE details, measured per failure (REFERENCE.md §2).
_DETAIL_REASONS: tuple[tuple[tuple[str, ...], FailureReason], ...] = (
    (("connection refused",), FailureReason.REFUSED),
    (("errors resolving", "domain name not found", "dns resolution"), FailureReason.DNS),
    (
        (
            "certificate_verify_failed",
            "hostname verification",
            "wrong_version_number",
            "ssl",
            "tls",
            "handshake",
            "certificate",
        ),
        FailureReason.TLS,
    ),
    (("failed parsing http/2", "http2 error", "unexpected http"), FailureReason.UNIMPLEMENTED),
    (("timed out", "timeout"), FailureReason.TIMEOUT),
)


def classify_rpc_error(
    code: grpc.StatusCode | None, details: str, *, connecting: bool, secure: bool
) -> FailureReason:
    """The reason for a failed call; `connecting` when no connection was ever usable."""
    if code in _GRPC_REASONS:
        return _GRPC_REASONS[code]
    if connecting and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        # Only a failed connection attempt describes our path to the server. On a working
        # connection the text is Milvus talking about its own parts ("querynode: dial tcp:
        # connection refused"), which must not pass for our refused/dns/tls.
        text = details.lower()
        for needles, reason in _DETAIL_REASONS:
            if any(n in text for n in needles):
                return reason
        if (
            secure
            and connecting
            and any(n in text for n in ("socket closed", "unwrap failed", "tsi_data_corrupted"))
        ):
            # The server dropped us during the TLS handshake: mutual TLS without a
            # client certificate, or one it does not trust. With TLS 1.3 the client has
            # finished its side first, so grpcio says "Unwrap failed (TSI_DATA_CORRUPTED)".
            return FailureReason.TLS
    if code == grpc.StatusCode.UNAVAILABLE:
        return FailureReason.UNAVAILABLE
    return FailureReason.ERROR


def classify_status(status: wire.Status) -> FailureReason | None:
    """The reason for a Milvus error answer, or None when the Status says success."""
    if status.code == 0 and status.error_code == 0:
        return None
    if status.code in STATUS_REASONS:
        return STATUS_REASONS[status.code]
    if status.code == 0 and status.error_code in LEGACY_REASONS:
        return LEGACY_REASONS[status.error_code]
    text = status.reason.lower()
    if "deny to" in text or "quota exceeded" in text or "quota exhausted" in text:
        return FailureReason.QUOTA_EXCEEDED
    if "rate limit" in text:
        return FailureReason.RATE_LIMITED
    if "database" in text and "not" in text and "exist" in text or "database not found" in text:
        return FailureReason.DB_NOT_FOUND
    if "not ready" in text:
        return FailureReason.NOT_READY
    return FailureReason.ERROR
