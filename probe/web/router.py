"""The router: maps paths and methods of the management port to the daemon's answers.

`prometheus_client.start_http_server` answers every path with metrics, so it can't
host health, status and pprof; we mount the metrics app (probe.exposition: OpenMetrics
and gzip negotiation included) at `/metrics` beside our own handlers.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client.exposition import choose_encoder

from probe import pages
from probe.health import Check
from probe.history import Cycles
from probe.hub import AliasRequired, UnknownAlias
from probe.probers import SlotsBusy
from probe.result import ProbeResult
from probe.web.bundle import BundleEndpoint
from probe.web.wsgi import (
    BadRequest,
    Environ,
    StartResponse,
    WSGIApp,
    query,
    request_path,
    respond,
)

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""Largest request body accepted (only POST /-/reload takes a request, and ignores it)."""


class ManagementApi(Protocol):
    """What the router needs from the daemon."""

    metrics_app: WSGIApp

    def live(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, list[Check]]: ...

    def target_check(self, alias: str) -> Check | None: ...

    def probe_now(self, alias: str | None) -> tuple[ProbeResult, Cycles | None]: ...

    def status_page(self, window: str | None = None) -> str: ...

    def target_page(self, alias: str, window: str | None = None) -> str | None: ...

    def targets_api(self) -> list[dict[str, Any]]: ...

    def history_api(self, alias: str, window: str | None = None) -> dict[str, Any] | None: ...

    def trace(self, trace_id: str) -> tuple[ProbeResult, Cycles | None] | None: ...

    def reload(self) -> tuple[bool, str]: ...

    def bundle_members(self) -> list[Any]:
        """The diagnostics bundle's members the daemon holds itself (probe.bundle.Member)."""
        ...


Handler = Callable[[Environ, StartResponse], Iterable[bytes]]


class Router:
    """Maps paths and methods to handlers; unknown path 404, wrong method 405."""

    def __init__(self, api: ManagementApi, pprof: WSGIApp | None = None) -> None:
        self.api = api
        self.pprof = pprof
        self._renders = _SharedRenders()
        self._bundle: BundleEndpoint | None = None
        self._bundle_lock = threading.Lock()
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._index},
            "/metrics": {"GET": self._metrics},
            "/healthz": {"GET": self._live},
            "/livez": {"GET": self._live},
            "/readyz": {"GET": self._ready},
            "/probe": {"GET": self._probe},
            "/api/v1/targets": {"GET": self._api_targets},
            "/-/reload": {"POST": self._reload, "PUT": self._reload},
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD":
                return self._head(environ, start_response)
            return self._dispatch(environ, start_response)
        except BadRequest as exc:
            return respond(start_response, 400, f"{exc}\n")
        except Exception:
            logger.exception(
                "management request failed: %s %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
            )
            return respond(start_response, 500, "internal error; see the probe's log\n")

    def _head(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """GET without the body, for every GET route and mounted app; headers as GET's."""
        answer: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda data: None

        body = self._dispatch({**environ, "REQUEST_METHOD": "GET"}, capture)
        try:
            size = sum(len(chunk) for chunk in body)
        finally:
            if hasattr(body, "close"):
                body.close()
        status, headers = answer
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(size))]
        start_response(status, headers)
        return []

    def _dispatch(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = request_path(environ)
        if environ.get("HTTP_TRANSFER_ENCODING"):
            # We take no request bodies; a chunked one would dodge the size limit.
            return respond(start_response, 411, "send a Content-Length, not Transfer-Encoding\n")
        length = environ.get("CONTENT_LENGTH") or "0"
        if not re.fullmatch(r"[0-9]{1,18}", length):
            raise BadRequest("Content-Length is not a number")
        if int(length) > MAX_BODY:
            return respond(start_response, 413, f"request body over {MAX_BODY} bytes\n")

        if path == "/debug/bundle":
            if self.pprof is None:
                return respond(
                    start_response,
                    404,
                    "the diagnostics bundle is served with the profiles, and profiling is off "
                    "(--profiling.enabled=false)\n",
                )
            return self._only(method, ("GET",), environ, start_response, self._debug_bundle)
        if path.startswith("/debug/pprof"):
            if self.pprof is None:
                return respond(
                    start_response, 404, "profiling is off (--profiling.enabled=false)\n"
                )
            return self._only(method, ("GET",), environ, start_response, self.pprof)
        if path.startswith("/readyz/") and len(path) > len("/readyz/"):
            return self._only(method, ("GET",), environ, start_response, self._target_ready)
        if path.startswith(_TARGETS) and len(path) > len(_TARGETS):
            return self._only(method, ("GET",), environ, start_response, self._target)
        if path.startswith(_API_TARGETS) and path.endswith(_HISTORY):
            return self._only(method, ("GET",), environ, start_response, self._api_history)
        handlers = self._routes.get(path)
        if handlers is None:
            return respond(start_response, 404, f"no such page: {path}\nsee / for the index\n")
        allowed = tuple(handlers)
        if method not in handlers:
            return respond(
                start_response,
                405,
                f"{method} is not allowed on {path}; use {' or '.join(allowed)}\n",
                headers=[("Allow", ", ".join(allowed))],
            )
        return handlers[method](environ, start_response)

    @staticmethod
    def _only(
        method: str,
        allowed: tuple[str, ...],
        environ: Environ,
        start_response: StartResponse,
        handler: Handler,
    ) -> Iterable[bytes]:
        if method in allowed:
            return handler(environ, start_response)
        return respond(
            start_response,
            405,
            f"{method} is not allowed here; use {' or '.join(allowed)}\n",
            headers=[("Allow", ", ".join(allowed))],
        )

    # ----------------------------------------------------------- handlers

    def _index(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("window",))
        try:
            page = self.api.status_page(params.get("window"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return respond(start_response, 200, page, "text/html; charset=utf-8")

    def _target(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """`/targets/<alias>`: the alias is the rest of the path (it may hold `/`)."""
        params = query(environ, ("window",))
        alias = request_path(environ)[len(_TARGETS) :]
        try:
            page = self.api.target_page(alias, params.get("window"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if page is None:
            return respond(start_response, 404, f"no target with alias {alias!r}; see /\n")
        return respond(start_response, 200, page, "text/html; charset=utf-8")

    def _api_targets(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ())
        return _json(start_response, 200, self.api.targets_api())

    def _api_history(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            params = query(environ, ("window",))
        except BadRequest as exc:
            return _json(start_response, 400, {"error": str(exc)})
        alias = request_path(environ)[len(_API_TARGETS) : -len(_HISTORY)]
        try:
            answer = self.api.history_api(alias, params.get("window"))
        except ValueError as exc:
            return _json(start_response, 400, {"error": str(exc)})
        if answer is None:
            return _json(start_response, 404, {"error": f"no target with alias {alias!r}"})
        return _json(start_response, 200, answer)

    def _metrics(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            choose_encoder(environ.get("HTTP_ACCEPT", ""))
        except Exception:  # a malformed version= parameter; serve the plain text format
            environ = {**environ, "HTTP_ACCEPT": "text/plain"}
        return self._renders.run(environ, start_response, self.api.metrics_app)

    def _live(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ("verbose",))
        ok, message = self.api.live()
        return respond(start_response, 200 if ok else 500, "OK\n" if ok else f"{message}\n")

    def _ready(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("verbose", "exclude"))
        ok, checks = self.api.ready()
        status = 200 if ok else 503
        if "verbose" in params:
            return respond(start_response, status, pages.checks_text("readyz", ok, checks))
        if ok:
            return respond(start_response, status, "OK\n")
        failed = [f"{c.name}: {c.message}" for c in checks if c.counts and not c.ok]
        if not failed:
            failed = [c.message for c in checks if c.name.startswith("policy:")]
        return respond(start_response, status, "not ready: " + "; ".join(failed) + "\n")

    def _target_ready(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("verbose",))
        alias = request_path(environ)[len("/readyz/") :]
        check = self.api.target_check(alias)
        if check is None:
            return respond(start_response, 404, f"no target with alias {alias!r}\n")
        status = 200 if check.ok else 503
        if "verbose" in params:
            return respond(
                start_response, status, pages.checks_text(f"readyz/{alias}", check.ok, [check])
            )
        return respond(start_response, status, "OK\n" if check.ok else f"{check.message}\n")

    def _probe(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = query(environ, ("alias", "format", "trace"))
        fmt = params.get("format", "")
        if fmt not in ("", "text", "json"):
            raise BadRequest(f"format must be text or json, got {fmt!r}")
        wants_json = fmt == "json" or (
            not fmt and "application/json" in environ.get("HTTP_ACCEPT", "")
        )
        if "trace" in params:
            if "alias" in params:
                raise BadRequest("give alias (probe now) or trace (a past cycle), not both")
            found = self.api.trace(params["trace"])
            if found is None:
                return respond(
                    start_response,
                    404,
                    f"no cycle with trace id {params['trace']!r} in history (kept: the last "
                    "--probe.history cycles and the last 20 failures of each target)\n",
                )
            past, recent = found
            if wants_json:
                body = pages.trace_json(past, recent)
                return respond(start_response, 200, body, "application/json")
            return respond(start_response, 200, pages.trace_text(past, recent))
        alias = params.get("alias")
        if alias == "":
            raise BadRequest("alias is empty")
        try:
            result, recent = self.api.probe_now(alias)
        except UnknownAlias as exc:
            return respond(start_response, 404, f"{exc}\n")
        except AliasRequired as exc:
            raise BadRequest(str(exc)) from None
        except SlotsBusy as exc:
            return respond(start_response, 503, f"{exc}\n", headers=[("Retry-After", "1")])
        if wants_json:
            body = pages.trace_json(result, recent)
            return respond(start_response, 200, body, "application/json")
        return respond(start_response, 200, pages.trace_text(result, recent))

    def _debug_bundle(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        with self._bundle_lock:
            if self._bundle is None:
                self._bundle = BundleEndpoint(self, self.pprof, self.api.bundle_members)
        return self._bundle(environ, start_response)

    def _reload(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query(environ, ())
        ok, message = self.api.reload()
        return respond(start_response, 200 if ok else 500, f"{message}\n")


_TARGETS = "/targets/"
_API_TARGETS = "/api/v1/targets/"
_HISTORY = "/history"


def _json(start_response: StartResponse, status: int, body: Any) -> list[bytes]:
    return respond(start_response, status, json.dumps(body, indent=1) + "\n", "application/json")


class _SharedRenders:
    """Concurrent identical scrapes share one render of /metrics (single flight).

    A render costs milliseconds of CPU under the GIL; 100 scrapers at once would otherwise
    queue 100 renders in front of /healthz and the probes. Nothing is cached: a request
    either starts a render or waits for the one in progress.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str, str], _Flight] = {}

    def run(self, environ: Environ, start_response: StartResponse, app: WSGIApp) -> list[bytes]:
        key = (
            environ.get("HTTP_ACCEPT", ""),
            environ.get("HTTP_ACCEPT_ENCODING", ""),
            environ.get("QUERY_STRING", ""),
        )
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            try:
                flight.render(environ, app)
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
        else:
            flight.done.wait()
        if flight.answer is None:
            return respond(start_response, 500, "rendering metrics failed; see the log\n")
        status, headers, body = flight.answer
        start_response(status, headers)
        return [body]


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: tuple[str, list[tuple[str, str]], bytes] | None = None

    def render(self, environ: Environ, app: WSGIApp) -> None:
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return lambda data: None

        try:
            body = b"".join(app(environ, capture))
        except Exception:
            logger.exception("rendering /metrics failed")
            return
        self.answer = (captured[0], captured[1], body)
