"""Small WSGI helpers shared by the router and the profiling app: answers, query strings."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def respond(
    start_response: StartResponse,
    status: int,
    body: str | bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    start_response(
        f"{status} {_REASONS.get(status, '')}".rstrip(),
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *(headers or []),
        ],
    )
    return [data]


class BadRequest(ValueError):
    """A query the endpoint can't take; the message says why."""


def query(environ: Environ, allowed: Iterable[str]) -> dict[str, str]:
    """The query string as a dict; BadRequest for unknown, repeated or undecodable keys."""
    raw = environ.get("QUERY_STRING", "")
    try:
        pairs = urllib.parse.parse_qsl(
            raw, keep_blank_values=True, errors="strict", max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"cannot parse the query string: {exc}") from None
    allowed = set(allowed)
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown query parameter {key!r}; this endpoint takes: {names}")
        if key in found:
            raise BadRequest(f"query parameter {key!r} given more than once")
        found[key] = value
    return found


def request_path(environ: Environ) -> str:
    # wsgiref decodes %XX as latin-1; aliases are UTF-8.
    raw = environ.get("PATH_INFO", "") or "/"
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


KUBELET_PATHS = ("/healthz", "/livez", "/readyz")
"""What kubelet's probes ask (and `/readyz/<alias>`): answered without waiting for a
handler thread, and without credentials under a web config (status only)."""


def is_kubelet_path(path: str) -> bool:
    return path in KUBELET_PATHS or path.startswith("/readyz/")
