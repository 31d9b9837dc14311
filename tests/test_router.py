"""The management router called as a WSGI app, a fake daemon behind it (no sockets).

The fake API is a double for what a real daemon can't be made to answer on demand: a
liveness failure, any readiness verdict, a busy /probe. End-to-end HTTP (the threaded
server, raw requests, slow clients) stays in test_daemon.py and test_abuse.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from probe.health import Check
from probe.history import Cycles
from probe.hub import AliasRequired, UnknownAlias
from probe.probers import SlotsBusy as Busy
from probe.probers.grpc import Phase
from probe.result import FailureReason, ProbeResult, RpcMethod
from probe.web import MAX_BODY, Router


def trace(alias: str) -> ProbeResult:
    return ProbeResult(
        alias=alias, target="127.0.0.1:19530", method=RpcMethod.CHECK_HEALTH.value,
        started_at=1_700_000_000.0, duration=0.004,
        phases={Phase.CONNECT: 0.002, Phase.RPC: 0.001, Phase.CLOSE: 0.001},
        success=False, reason=FailureReason.REFUSED, failed_phase=Phase.CONNECT,
        error="connection refused",
    )


@dataclass
class FakeApi:
    """Answers as it is told, and records what the router asked."""

    alive: tuple[bool, str] = (True, "ok")
    readiness: tuple[bool, list[Check]] = (True, [Check("config", True, "loaded")])
    targets: dict[str, Check] = field(default_factory=dict)
    probe_error: Exception | None = None
    reloaded: tuple[bool, str] = (True, "reloaded: 1 target(s)")
    asked: list[Any] = field(default_factory=list)

    def metrics_app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.asked.append(("metrics", environ.get("QUERY_STRING", "")))
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
        return [b"milvus_probe_targets 1.0\n"]

    def live(self) -> tuple[bool, str]:
        return self.alive

    def ready(self) -> tuple[bool, list[Check]]:
        return self.readiness

    def target_check(self, alias: str) -> Check | None:
        self.asked.append(("target_check", alias))
        return self.targets.get(alias)

    def probe_now(self, alias: str | None) -> tuple[ProbeResult, Cycles | None]:
        self.asked.append(("probe_now", alias))
        if self.probe_error is not None:
            raise self.probe_error
        return trace(alias or "only"), None

    def status_page(self, window: str | None = None) -> str:
        if window not in (None, "1h"):
            raise ValueError(f"window: bad {window!r}")
        return "<!doctype html><title>milvus-probe</title>"

    def target_page(self, alias: str, window: str | None = None) -> str | None:
        self.asked.append(("target_page", alias, window))
        return f"<p>{alias}</p>" if alias in self.targets else None

    def targets_api(self) -> list[dict[str, Any]]:
        return [{"alias": alias} for alias in self.targets]

    def history_api(self, alias: str, window: str | None = None) -> dict[str, Any] | None:
        self.asked.append(("history_api", alias, window))
        if alias not in self.targets:
            return None
        if window == "2d":
            raise ValueError("window: '2d' is not a duration")
        return {"alias": alias, "buckets": []}

    def trace(self, trace_id: str) -> tuple[ProbeResult, Cycles | None] | None:
        return (trace("kept"), None) if trace_id == "00000000000000aa" else None

    def reload(self) -> tuple[bool, str]:
        self.asked.append(("reload",))
        return self.reloaded

    def boom(self) -> tuple[bool, str]:
        raise RuntimeError("a bug")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def call(app: Router, path: str, method: str = "GET", query: str = "",
         **environ: str) -> Answer:
    env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                           **environ}
    setup_testing_defaults(env)
    got: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got[:] = [int(status.split()[0]), {k.lower(): v for k, v in headers}]
        return lambda data: None

    body = b"".join(app(env, start_response))
    return Answer(got[0], got[1], body)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def router(api: FakeApi) -> Router:
    return Router(api)


# --------------------------------------------------------------------------- paths, methods


def test_paths_and_content(router: Router, api: FakeApi) -> None:
    index = call(router, "/")
    assert index.status == 200 and index.headers["content-type"].startswith("text/html")
    assert index.text == api.status_page()
    metrics = call(router, "/metrics", query="name[]=milvus_probe_targets")
    assert (metrics.status, metrics.body) == (200, b"milvus_probe_targets 1.0\n")
    assert api.asked == [("metrics", "name[]=milvus_probe_targets")]
    for path in ("/healthz", "/livez"):
        answer = call(router, path)
        assert (answer.status, answer.text) == (200, "OK\n")
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["content-length"] == "3"


def test_liveness_failure_is_500_with_the_reason(router: Router, api: FakeApi) -> None:
    api.alive = (False, "scheduler heartbeat is 12.0s old (limit 10s)")
    answer = call(router, "/healthz")
    assert (answer.status, answer.text) == (500, "scheduler heartbeat is 12.0s old (limit 10s)\n")


def test_http_paths_and_methods(router: Router, api: FakeApi) -> None:
    """Moved from test_daemon.py: routing is the router's, not the server's."""
    api.targets["default"] = Check("target:default", False, "failing: refused")
    answer = call(router, "/nope")
    assert answer.status == 404 and "/nope" in answer.text
    assert call(router, "/metrics/").status == 404

    for method, path in (("POST", "/metrics"), ("DELETE", "/healthz"), ("PUT", "/readyz"),
                         ("GET", "/-/reload"), ("POST", "/readyz/default")):
        answer = call(router, path, method)
        assert answer.status == 405, (method, path)
        assert "GET" in answer.headers["allow"] or "POST" in answer.headers["allow"]
    assert call(router, "/metrics", "POST").headers["allow"] == "GET"
    assert call(router, "/-/reload", "GET").headers["allow"] == "POST, PUT"

    head = call(router, "/healthz", "HEAD")
    assert head.status == 200 and head.body == b""
    assert call(router, "/readyz/default", "HEAD").status == 503  # HEAD answers like GET


@pytest.mark.parametrize("path", ["/", "/metrics", "/healthz", "/readyz", "/readyz/db",
                                  "/probe", "/nope"])
def test_head_is_get_without_the_body(path: str, router: Router, api: FakeApi) -> None:
    api.targets["db"] = Check("target:db", True, "ok")
    get, head = call(router, path), call(router, path, "HEAD")
    assert get.body
    assert head.body == b""
    # The same headers, with the length GET's body has (mounted apps may leave it out).
    assert (head.status, head.headers) == (
        get.status, {**get.headers, "content-length": str(len(get.body))})


@pytest.mark.parametrize(("path", "query"), [("/", "x=1"), ("/healthz", "x"),
                                             ("/readyz", "verbose&verbose"),
                                             ("/readyz/db", "exclude=x"),
                                             ("/-/reload", "now=1"),
                                             ("/probe", "alias=a&colour=blue"),
                                             ("/probe", "alias=a&alias=b"),
                                             ("/probe", "alias=a&format=xml"),
                                             ("/probe", "alias="),
                                             ("/healthz", "%ff=1")])
def test_bad_queries_are_400(path: str, query: str, router: Router, api: FakeApi) -> None:
    api.targets["db"] = Check("target:db", True, "ok")
    method = "POST" if path == "/-/reload" else "GET"
    answer = call(router, path, method, query)
    assert answer.status == 400, answer.text
    assert ("probe_now", "a") not in api.asked and ("reload",) not in api.asked


def test_request_bodies(router: Router) -> None:
    assert call(router, "/-/reload", "POST", CONTENT_LENGTH="lots").status == 400
    too_big = call(router, "/-/reload", "POST", CONTENT_LENGTH=str(MAX_BODY + 1))
    assert too_big.status == 413
    assert call(router, "/healthz", CONTENT_LENGTH=str(MAX_BODY + 1)).status == 413
    assert call(router, "/-/reload", "POST", CONTENT_LENGTH=str(MAX_BODY)).status == 200
    chunked = call(router, "/-/reload", "POST", HTTP_TRANSFER_ENCODING="chunked")
    assert chunked.status == 411


def test_a_failing_handler_is_a_500_not_a_traceback(router: Router, api: FakeApi) -> None:
    api.live = api.boom  # type: ignore[method-assign]
    answer = call(router, "/healthz")
    assert (answer.status, answer.text) == (500, "internal error; see the probe's log\n")


def test_profiling_off(router: Router) -> None:
    answer = call(router, "/debug/pprof/profile")
    assert answer.status == 404 and "profiling is off" in answer.text


# --------------------------------------------------------------------------- /readyz


def test_readyz_variants(router: Router, api: FakeApi) -> None:
    assert (call(router, "/readyz").status, call(router, "/readyz").text) == (200, "OK\n")
    verbose = call(router, "/readyz", query="verbose")
    assert verbose.text == "[+]config loaded\nreadyz check passed\n"
    assert call(router, "/readyz", query="exclude=x").status == 200

    api.readiness = (False, [
        Check("config", True, "loaded"),
        Check("first-round", False, "2 target(s) not probed yet"),
        Check("target:db", False, "failing: refused", counts=False),
    ])
    answer = call(router, "/readyz")
    assert (answer.status, answer.text) == (503, "not ready: first-round: 2 target(s) not "
                                                 "probed yet\n")
    verbose = call(router, "/readyz", query="verbose")
    assert verbose.status == 503
    assert verbose.text.splitlines() == [
        "[+]config loaded",
        "[-]first-round 2 target(s) not probed yet",
        "[-]target:db failing: refused (not required by the readiness policy)",
        "readyz check failed",
    ]

    # Every counted check passes and the policy does not: the policy says why.
    api.readiness = (False, [Check("config", True, "loaded"),
                             Check("policy:all", False, "1 of 2 target(s) passing"),
                             Check("target:b", False, "failing: timeout")])
    answer = call(router, "/readyz")
    assert answer.text == "not ready: policy:all: 1 of 2 target(s) passing; " \
                          "target:b: failing: timeout\n"


def test_readyz_of_one_target(router: Router, api: FakeApi) -> None:
    api.targets["svc/pod-0"] = Check("target:svc/pod-0", True, "ok")
    api.targets["ünï"] = Check("target:ünï", False, "failing: dns (3 consecutive failure(s))")
    ok = call(router, "/readyz/svc/pod-0")
    assert (ok.status, ok.text) == (200, "OK\n")
    verbose = call(router, "/readyz/svc/pod-0", query="verbose")
    assert verbose.text.splitlines() == ["[+]target:svc/pod-0 ok", "readyz/svc/pod-0 check passed"]
    # wsgiref hands the path over as latin-1; aliases are UTF-8.
    failing = call(router, "/readyz/ünï".encode().decode("latin-1"))
    assert (failing.status, failing.text) == (503, "failing: dns (3 consecutive failure(s))\n")

    missing = call(router, "/readyz/nope")
    assert missing.status == 404 and "'nope'" in missing.text
    assert ("target_check", "svc/pod-0") in api.asked
    assert call(router, "/readyz/").status == 404  # no alias: not a target check


# --------------------------------------------------------------------------- /probe


def test_probe_text_and_json(router: Router, api: FakeApi) -> None:
    text = call(router, "/probe", query="alias=db")
    assert text.status == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text.startswith("Probe of alias=db target=127.0.0.1:19530 rpc=check_health\n")
    assert "result    failure reason=refused phase=connect" in text.text

    for query, accept in (("alias=db&format=json", ""), ("alias=db", "application/json")):
        answer = call(router, "/probe", query=query, HTTP_ACCEPT=accept)
        assert answer.headers["content-type"] == "application/json"
        body = json.loads(answer.body)
        assert (body["alias"], body["reason"], body["failed_phase"]) == ("db", "refused",
                                                                         "connect")
    forced = call(router, "/probe", query="alias=db&format=text", HTTP_ACCEPT="application/json")
    assert forced.headers["content-type"].startswith("text/plain")

    call(router, "/probe")
    assert api.asked[-1] == ("probe_now", None)  # no alias: the API decides


@pytest.mark.parametrize(("error", "status", "message"), [
    (UnknownAlias("no target with alias 'nope'"), 404, "no target with alias 'nope'\n"),
    (AliasRequired("2 targets: say which with ?alias= (a, b)"), 400,
     "2 targets: say which with ?alias= (a, b)\n"),
    (Busy("every connection slot is busy; try again"), 503,
     "every connection slot is busy; try again\n"),
])
def test_probe_errors(error: Exception, status: int, message: str, router: Router,
                      api: FakeApi) -> None:
    api.probe_error = error
    answer = call(router, "/probe", query="alias=nope")
    assert (answer.status, answer.text) == (status, message)
    assert answer.headers.get("retry-after") == ("1" if isinstance(error, Busy) else None)


# --------------------------------------------------------------------------- reload


def test_reload(router: Router, api: FakeApi) -> None:
    for method in ("POST", "PUT"):
        answer = call(router, "/-/reload", method)
        assert (answer.status, answer.text) == (200, "reloaded: 1 target(s)\n")
    api.reloaded = (False, "config error: targets[0].uri: unsupported scheme 'ftp'")
    answer = call(router, "/-/reload", "POST")
    assert answer.status == 500 and "ftp" in answer.text
    assert api.asked.count(("reload",)) == 3


# --------------------------------------------------------------------------- pages and API


def test_target_pages_and_history_take_aliases_with_slashes(router: Router, api: FakeApi) -> None:
    api.targets = {"ns/pod-0": Check("target:ns/pod-0", True, "ok")}
    # wsgiref hands the router %2F already decoded: the alias is the rest of the path.
    page = call(router, "/targets/ns/pod-0", query="window=6h")
    assert page.status == 200 and page.text == "<p>ns/pod-0</p>"
    assert page.headers["content-type"].startswith("text/html")
    assert call(router, "/targets/nope").status == 404
    assert call(router, "/targets/ns/pod-0", query="x=1").status == 400
    assert call(router, "/targets/ns/pod-0", method="POST").status == 405
    history = call(router, "/api/v1/targets/ns/pod-0/history", query="window=15m")
    assert history.status == 200 and json.loads(history.text)["alias"] == "ns/pod-0"
    assert ("history_api", "ns/pod-0", "15m") in api.asked
    listed = call(router, "/api/v1/targets")
    assert listed.headers["content-type"] == "application/json"
    assert json.loads(listed.text) == [{"alias": "ns/pod-0"}]


def test_api_errors_are_json_with_the_reason(router: Router, api: FakeApi) -> None:
    api.targets = {"a": Check("target:a", True, "ok")}
    unknown = call(router, "/api/v1/targets/b/history")
    assert unknown.status == 404
    assert json.loads(unknown.text) == {"error": "no target with alias 'b'"}
    bad = call(router, "/api/v1/targets/a/history", query="window=2d")
    assert bad.status == 400 and "2d" in json.loads(bad.text)["error"]
    extra = call(router, "/api/v1/targets/a/history", query="windows=1h")
    assert extra.status == 400 and "windows" in json.loads(extra.text)["error"]
    assert call(router, "/", query="window=2d").status == 400


def test_probe_finds_a_past_cycle_by_trace_id(router: Router) -> None:
    found = call(router, "/probe", query="trace=00000000000000aa")
    assert found.status == 200 and "alias=kept" in found.text
    as_json = call(router, "/probe", query="trace=00000000000000aa&format=json")
    assert json.loads(as_json.text)["alias"] == "kept"
    gone = call(router, "/probe", query="trace=00000000000000bb")
    assert gone.status == 404 and "no cycle with trace id" in gone.text
    assert call(router, "/probe", query="trace=00000000000000aa&alias=a").status == 400
