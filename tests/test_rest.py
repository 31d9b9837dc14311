"""The REST prober, Milvus's management port beside a probe, and TLS inspection.

No REST server runs here but the real Milvus standalone 2.3.5 (tests/test_e2e.py probes
its v1 API, its management port and its certificates). milvus-lite has no REST API, and no
Milvus 2.4+ installs here, so the v2 API is served by a double built from Milvus's v2
documentation (`POST /v2/vectordb/collections/list`, errors as HTTP 200 with a body code);
the bad answers (HTML, truncated JSON, megabytes, a slow drip, silence) come from raw
sockets that say exactly what a broken server or proxy would.
"""

from __future__ import annotations

import dataclasses
import gc
import http.server
import json
import os
import select
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from kit.proxy import CountingProxy
from kit.scrape import scrape
from kit.wait import wait_until
from probe.probers import InfoMode, Probers
from probe.probers.grpc import GrpcProber
from probe.probers.http import wrap_socket
from probe.probers.rest import Phase, RestProber
from probe.result import FailureReason, ManagementView, TlsView
from tests.conftest import DaemonFactory
from tests.support import Certs, SilentServer, free_port, milvus_double, side_views, target

TOKEN = "root:Milvus"
HEALTHZ = {
    "state": "OK",
    "detail": [
        {"name": "rootcoord", "code": 1},
        {"name": "datacoord", "code": 1},
        {"name": "proxy", "code": 1},
    ],
}


@dataclass
class RestDouble:
    """A REST API double: v2 (2.4+ docs) or v1 (as 2.3.5 answered, REFERENCE §6), plus /healthz."""

    api: str = "v2"
    success_code: int | None = None
    """The code of a successful list; None: what the API sends (v1 200, v2 0)."""
    body_code: int | None = None
    """Answer every list with HTTP 200 and this code (an error as Milvus sends it)."""
    http_status: int = 200
    healthz: tuple[int, Any] = (200, HEALTHZ)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, doc: Any) -> None:
                body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _list(self, body: dict[str, Any]) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status = 401 if double.api == "v1" else 200
                    return self._answer(status, {"code": 1800, "message": "not authenticated"})
                if body.get("dbName") not in (None, "default"):
                    db = body["dbName"]
                    return self._answer(200, {"code": 800, "message": f"database not found: {db}"})
                if double.body_code is not None:
                    return self._answer(double.http_status, {"code": double.body_code})
                code = double.success_code
                if code is None:
                    code = 200 if double.api == "v1" else 0
                self._answer(double.http_status, {"code": code, "data": ["a"]})

            def do_GET(self) -> None:  # noqa: N802
                double.paths.append(self.path)
                double.headers.append(dict(self.headers))
                if self.path == "/healthz":
                    return self._answer(*double.healthz)
                path, _, query = self.path.partition("?")
                if double.api == "v1" and path == "/v1/vector/collections":
                    db = query.removeprefix("dbName=") if query.startswith("dbName=") else None
                    return self._list({"dbName": db} if db else {})
                self._answer(404, {"code": 404, "message": "page not found"})

            def do_POST(self) -> None:  # noqa: N802
                double.paths.append(self.path)
                double.headers.append(dict(self.headers))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                if double.api == "v2" and self.path == "/v2/vectordb/collections/list":
                    return self._list(body)
                self._answer(404, {"code": 404, "message": "page not found"})

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


class _Server(socketserver.ThreadingTCPServer):
    """Serves each connection in its own thread, over TLS when given a context; `stop()`
    waits for those threads, so no socket of the double outlives its test."""

    daemon_threads = True
    block_on_close = False
    context: ssl.SSLContext | None = None
    handlers: list[threading.Thread]

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self.handlers.append(thread)
        thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for thread in self.handlers:
            thread.join(timeout=5)
        # A socket left open by the double or by the prober is reported here, in the test
        # that made it (warnings are errors), not in whichever test the collector runs.
        gc.collect()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            return super().finish_request(request, client_address)
        try:  # the prober's own wrapper: ssl's can leak on a client gone before the handshake
            tls = wrap_socket(self.context, request, server_side=True)
        except (ssl.SSLError, OSError):  # a client that doesn't trust us, or speaks plain
            return None
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()
        return None


@contextmanager
def rest_double(tls: Certs | None = None, **kwargs: Any) -> Iterator[RestDouble]:
    double = RestDouble(**kwargs)
    server = _Server(("127.0.0.1", 0), double.handler())
    server.handlers = []
    if tls is not None:
        server.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.context.load_cert_chain(tls.server_cert, tls.server_key)
    double.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.stop()


def rest(port: int, **fields: Any) -> Any:
    return target(uri=f"http://127.0.0.1:{port}", protocol="rest", **fields)


# --------------------------------------------------------------------------- v2 and v1


def test_v2_list_collections_success_and_phases() -> None:
    with rest_double() as double:
        result = RestProber().run(rest(double.port, token=TOKEN))
    assert result.success, result.error
    assert result.protocol == "rest" and result.method == "list_collections"
    assert list(result.phases) == [Phase.RESOLVE, Phase.CONNECT, Phase.REQUEST, Phase.CLOSE]
    assert result.facts.api == "v2" and result.facts.collections == 1
    assert double.paths == ["/v2/vectordb/collections/list"]
    assert double.headers[0]["Authorization"] == f"Bearer {TOKEN}"


def test_v2_errors_come_as_http_200_with_a_body_code() -> None:
    cases = {
        "unauthenticated": ({"token": "root:wrong"}, FailureReason.UNAUTHENTICATED),
        "missing database": ({"token": TOKEN, "db_name": "nope"}, FailureReason.DB_NOT_FOUND),
    }
    with rest_double() as double:
        for name, (fields, reason) in cases.items():
            result = RestProber().run(rest(double.port, **fields))
            assert (result.reason, result.failed_phase) == (reason, Phase.REQUEST), name
            assert result.facts.http_status == 200, name
    with rest_double(body_code=8) as double:
        limited = RestProber().run(rest(double.port, token=TOKEN))
    assert limited.reason is FailureReason.RATE_LIMITED and limited.status_code == 8
    with rest_double(body_code=65535) as double:
        other = RestProber().run(rest(double.port, token=TOKEN))
    assert other.reason is FailureReason.ERROR and "code 65535" in other.error


def test_v2_success_code_200_as_some_2_4_releases_send() -> None:
    with rest_double(success_code=200) as double:
        assert RestProber().run(rest(double.port, token=TOKEN)).success


def test_http_status_reasons() -> None:
    for status, reason in (
        (429, FailureReason.RATE_LIMITED),
        (503, FailureReason.UNAVAILABLE),
        (403, FailureReason.PERMISSION_DENIED),
        (418, FailureReason.ERROR),
    ):
        with rest_double(body_code=1, http_status=status) as double:
            result = RestProber().run(rest(double.port, token=TOKEN, rest_api="v2"))
        assert result.reason is reason, (status, result.error)
        assert f"HTTP {status}" in result.error


def test_auto_finds_v1_on_the_same_connection_and_remembers_it() -> None:
    with rest_double(api="v1") as double:
        proxy = CountingProxy(("127.0.0.1", double.port))
        try:
            prober = RestProber()
            first = prober.run(rest(proxy.port, token=TOKEN))
            second = prober.run(rest(proxy.port, token=TOKEN))
            wait_until(lambda: proxy.counts() == (2, 2), 5, "both connections closed")
        finally:
            proxy.stop()
    assert first.success and second.success, (first.error, second.error)
    assert first.facts.api == second.facts.api == "v1"
    assert double.paths == [
        "/v2/vectordb/collections/list",  # not there: v1 on the same connection
        "/v1/vector/collections",
        "/v1/vector/collections",  # remembered
    ]


def test_auto_finds_out_again_when_the_api_stops_answering() -> None:
    prober = RestProber()
    with rest_double(api="v1") as double:
        t = rest(double.port, token=TOKEN)
        assert prober.run(t).facts.api == "v1"
        double.api = "v2"  # the server was upgraded
        gone = prober.run(t)
        assert gone.reason is FailureReason.UNIMPLEMENTED
        again = prober.run(t)
    assert again.success and again.facts.api == "v2"


def test_v1_database_goes_in_the_query() -> None:
    with rest_double(api="v1") as double:
        result = RestProber().run(rest(double.port, token=TOKEN, db_name="nope", rest_api="v1"))
    assert result.reason is FailureReason.DB_NOT_FOUND
    assert double.paths == ["/v1/vector/collections?dbName=nope"]


# --------------------------------------------------------------------------- bad answers


class RawServer:
    """Accepts connections and answers each with `answer(sock)`: a broken server or proxy."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.answer(conn)
            except OSError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()


def head(status: str = "200 OK", length: int | None = None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.1 {status}\r\n{framing}{extra}\r\n".encode()


def html(conn: socket.socket) -> None:
    body = b"<html><body>Welcome to nginx</body></html>"
    conn.sendall(head(length=len(body)) + body)


def truncated_json(conn: socket.socket) -> None:
    conn.sendall(head(length=100) + b'{"code":200,"da')


def truncated_at_close(conn: socket.socket) -> None:
    conn.sendall(head() + b'{"code":200,"da')


def error_code_in_200(conn: socket.socket) -> None:
    body = b'{"code":1100,"message":"invalid parameter"}'
    conn.sendall(head(length=len(body)) + body)


def megabytes(conn: socket.socket) -> None:
    conn.sendall(head(length=50 * 1024 * 1024))
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB, then hang up: the prober must stop long before
        conn.sendall(chunk)


def chunked_megabytes(conn: socket.socket) -> None:
    conn.sendall(head(extra="Transfer-Encoding: chunked\r\n"))
    for _ in range(64):
        conn.sendall(b"10000\r\n" + b"x" * 65536 + b"\r\n")


def slow_drip(conn: socket.socket) -> None:
    for byte in head(length=40).decode():
        conn.sendall(byte.encode())
        time.sleep(0.05)  # the fault itself: a byte every 50 ms


def ssh(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")  # another service's port


def tls_alert(conn: socket.socket) -> None:
    conn.sendall(b"\x15\x03\x01\x00\x02\x02\x0a")  # what a TLS port says to plaintext


def chunked_ok(conn: socket.socket) -> None:
    conn.sendall(
        head(extra="Transfer-Encoding: chunked\r\n")
        + b"7\r\n{\"code\"\r\n"
        + b"14\r\n:0,\"data\":[\"a\",\"b\"]}\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("answer", "reason", "needle"),
    [
        (html, FailureReason.UNIMPLEMENTED, "HTML"),
        (truncated_json, FailureReason.UNAVAILABLE, "cut off after 15 of 100 bytes"),
        (truncated_at_close, FailureReason.UNIMPLEMENTED, "not JSON"),
        (error_code_in_200, FailureReason.ERROR, "code 1100"),
        (megabytes, FailureReason.ERROR, "over 1024 KiB"),
        (chunked_megabytes, FailureReason.ERROR, "over 1024 KiB"),
        (slow_drip, FailureReason.TIMEOUT, "timeout"),
        (ssh, FailureReason.UNIMPLEMENTED, "not an HTTP answer: b'SSH-2.0"),
        (tls_alert, FailureReason.TLS, "wants https://"),
    ],
)
def test_bad_answers_are_reasons_within_the_deadline(
    answer: Callable[[socket.socket], None], reason: FailureReason, needle: str
) -> None:
    server = RawServer(answer)
    prober = RestProber()
    try:
        result = prober.run(
            rest(server.port, rest_api="v2", **{"probe.timeout": "500ms", "probe.interval": "1s"})
        )
    finally:
        server.stop()
    assert (result.reason, result.failed_phase) == (reason, Phase.REQUEST), result.error
    assert needle in result.error
    assert result.duration < 0.5 + 0.25  # the cycle's deadline, not the server's pace
    assert prober.ledger.open_count() == 0


def test_chunked_answers_are_read() -> None:
    server = RawServer(chunked_ok)
    try:
        result = RestProber().run(rest(server.port, rest_api="v2"))
    finally:
        server.stop()
    assert result.success, result.error
    assert result.facts.collections == 2


def test_silent_server_times_out_and_refused_port_is_refused(silent: SilentServer) -> None:
    quick = {"probe.timeout": "300ms", "probe.interval": "1s"}
    hung = RestProber().run(rest(silent.port, **quick))
    assert (hung.reason, hung.failed_phase) == (FailureReason.TIMEOUT, Phase.REQUEST)
    refused = RestProber().run(rest(free_port(), **quick))
    assert (refused.reason, refused.failed_phase) == (FailureReason.REFUSED, Phase.CONNECT)


def test_one_fresh_connection_per_cycle_and_none_left_open() -> None:
    with rest_double() as double:
        proxy = CountingProxy(("127.0.0.1", double.port))
        try:
            prober = RestProber()
            t = rest(proxy.port, token=TOKEN)
            results = [prober.run(t) for _ in range(10)]
            wait_until(lambda: proxy.counts() == (10, 10), 5, "every connection closed")
        finally:
            proxy.stop()
    assert all(r.success for r in results)
    assert prober.ledger.snapshot() == {(t.alias, t.address): (10, 10)}


# --------------------------------------------------------------------------- TLS


def test_rest_over_tls_reads_the_chain_from_its_own_connection(certs: Certs) -> None:
    with rest_double(tls=certs) as double:
        t = target(
            uri=f"https://localhost:{double.port}",
            protocol="rest",
            token=TOKEN,
            server_pem_path=str(certs.ca),
        )
        result = RestProber().run(t)
        untrusted = RestProber().run(
            target(uri=f"https://localhost:{double.port}", protocol="rest")
        )
        plain = RestProber().run(rest(double.port, rest_api="v2"))
    assert result.success, result.error
    assert result.tls is not None
    assert result.tls.earliest_expiry == certs.server_not_after
    leaf = result.tls.chain[0]
    assert leaf.subject == "CN=localhost" and leaf.issuer == "CN=milvus-probe test CA"
    assert "DNS:localhost" in leaf.sans and result.tls.version.startswith("TLS")
    assert (untrusted.reason, untrusted.failed_phase) == (FailureReason.TLS, Phase.CONNECT)
    assert plain.reason is not None and plain.success is False


def test_a_peer_reset_before_the_handshake_leaves_no_socket_open() -> None:
    """A server that goes away with connections in its backlog resets them. ssl's
    wrap_socket then takes the descriptor over, finds the peer gone (ECONNRESET) and
    drops its new SSLSocket unclosed: a connection held until the collector ran (CI saw
    it as an 'unclosed SSLSocket' in a later test). Our wrap_socket closes it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname(), timeout=5)
    listener.close()  # the kernel resets the connection still in the backlog
    assert select.select([client], [], [], 5)[0], "the reset never came"
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConnectionResetError):
        wrap_socket(ssl.create_default_context(), client, server_hostname="localhost")
    assert len(os.listdir("/proc/self/fd")) == before - 1  # the connection's descriptor
    gc.collect()  # an SSLSocket left open would be reported here (warnings are errors)


def test_a_server_name_tls_cannot_send_fails_the_cycle_before_any_connection(
    certs: Certs,
) -> None:
    """The ssl module encodes the SNI name only after taking a socket over: a name it can't
    encode used to leave a connected SSLSocket behind (a connection to the server held
    until the garbage collector came). The name is checked before dialling now. Config
    refuses such a name; a Target built in code (or from discovery) reaches the prober."""
    with rest_double(tls=certs) as double:
        t = target(uri=f"https://localhost:{double.port}", protocol="rest",
                   server_pem_path=str(certs.ca))  # fmt: skip
        bad = dataclasses.replace(t, tls=dataclasses.replace(t.tls, server_name="a..b"))
        prober = RestProber()
        result = prober.run(bad)
        gc.collect()  # a leaked SSLSocket would be reported here (warnings are errors)
    assert (result.reason, result.failed_phase) == (FailureReason.TLS, Phase.CONNECT)
    assert "'a..b' is not a host name TLS can send" in result.error
    assert double.paths == [] and prober.ledger.snapshot() == {}


def test_grpc_tls_is_inspected_once_per_interval_on_a_connection_of_its_own(
    certs: Certs,
) -> None:
    with milvus_double(tls=certs.server_credentials()) as double:
        proxy = CountingProxy(("127.0.0.1", double.port))
        try:
            t = target(
                uri=f"https://localhost:{proxy.port}",
                server_pem_path=str(certs.ca),
                tls_inspect_interval="1h",
            )
            probers = Probers()
            first = probers.run(t, InfoMode.NONE)
            (first_view,) = side_views(probers, t, first)  # the daemon's way: off the cycle
            second = probers.run(t, InfoMode.NONE)
            second_views = side_views(probers, t, second)
            asked = probers.run(t, InfoMode.FULL)  # check -v: always, with the result
            wait_until(lambda: proxy.counts() == (5, 5), 5, "every connection closed")
        finally:
            proxy.stop()
    assert first.success and second.success and asked.success
    assert first.tls is None  # the cycle never waits for the inspection
    assert isinstance(first_view, TlsView)
    assert first_view.earliest_expiry == certs.server_not_after
    assert second_views == []  # within the interval: no handshake of our own
    assert asked.tls is not None
    assert probers.ledger.snapshot() == {(t.alias, t.address): (5, 5)}


def test_a_plain_grpc_target_is_never_inspected() -> None:
    with milvus_double() as double:
        result = Probers().run(target(uri=double.address), InfoMode.FULL)
        assert GrpcProber.phases  # the kind is imported
    assert result.tls is None


# --------------------------------------------------------------------------- management


def test_management_view_beside_a_probe() -> None:
    with rest_double() as mgmt, milvus_double() as double:
        t = target(uri=double.address, management_uri=f"http://127.0.0.1:{mgmt.port}")
        probers = Probers()
        result = probers.run(t, InfoMode.NONE)
        (view,) = side_views(probers, t, result)
    assert result.management is None  # the cycle never waits for the check
    assert isinstance(view, ManagementView) and view.healthy and view.reason is None
    assert [(c.name, c.healthy) for c in view.components] == [
        ("rootcoord", True),
        ("datacoord", True),
        ("proxy", True),
    ]
    assert mgmt.paths == ["/healthz"]
    assert mgmt.headers[0]["Content-Type"] == "application/json"
    assert probers.ledger.snapshot()[(t.alias, t.address)] == (2, 2)  # probe + management


@pytest.mark.parametrize(
    ("healthz", "summary"),
    [
        ((500, b"Not all components are healthy"), "unhealthy: HTTP 500"),
        (
            (200, {"state": "Abnormal", "detail": [{"name": "querynode", "code": 2}]}),
            "not healthy: querynode=2",
        ),
    ],
)
def test_management_says_unhealthy(healthz: tuple[int, Any], summary: str) -> None:
    with rest_double(healthz=healthz) as mgmt, milvus_double() as double:
        t = target(uri=double.address, management_uri=f"http://127.0.0.1:{mgmt.port}")
        probers = Probers()
        result = probers.run(t, InfoMode.NONE)
        (view,) = side_views(probers, t, result)
    assert result.success  # the probe's own view stands apart
    assert isinstance(view, ManagementView) and not view.healthy
    assert view.reason is FailureReason.UNHEALTHY
    assert summary in view.summary()


def test_management_unreachable_is_a_reason_and_the_probe_still_stands() -> None:
    with milvus_double() as double:
        t = target(uri=double.address, management_uri=f"http://127.0.0.1:{free_port()}")
        probers = Probers()
        result = probers.run(t, InfoMode.NONE)
        (view,) = side_views(probers, t, result)
    assert result.success
    assert isinstance(view, ManagementView) and view.reason is FailureReason.REFUSED


def test_management_interval_spaces_the_checks_one_connection_each() -> None:
    with rest_double() as mgmt, milvus_double() as double:
        proxy = CountingProxy(("127.0.0.1", mgmt.port))  # counts at the server's side
        try:
            spaced = target(
                uri=double.address,
                management_uri=f"http://127.0.0.1:{proxy.port}",
                management_interval="1h",
            )
            every = target(
                alias="every", uri=double.address, management_uri=f"http://127.0.0.1:{proxy.port}"
            )
            probers = Probers()
            views = [
                len(side_views(probers, spaced, probers.run(spaced, InfoMode.NONE)))
                for _ in range(3)
            ]
            for _ in range(4):
                side_views(probers, every, probers.run(every, InfoMode.NONE))
            wait_until(lambda: proxy.counts() == (5, 5), 5, "every check's connection closed")
        finally:
            proxy.stop()
    assert views == [1, 0, 0]
    assert mgmt.paths == ["/healthz"] * 5


# --------------------------------------------------------------------------- the daemon


def test_daemon_exports_rest_management_and_tls_series(
    daemon: DaemonFactory, certs: Certs
) -> None:
    with rest_double(tls=certs) as api, rest_double() as mgmt:
        app = daemon(
            uri=f"https://localhost:{api.port}",
            protocol="rest",
            token=TOKEN,
            server_pem_path=str(certs.ca),
            management_uri=f"http://127.0.0.1:{mgmt.port}",
            **{"probe.interval": "200ms", "probe.timeout": "150ms"},
        )
        wait_until(
            lambda: (scrape(app.port).value("milvus_probe_attempts_total") or 0) >= 2,
            10,
            "two cycles",
        )
        m = scrape(app.port)
        status, verbose = _get(app.port, "/readyz?verbose")
        status_json, trace = _get(app.port, "/probe?format=json")
    assert m.value("milvus_probe_success", protocol="rest") == 1
    assert m.value("milvus_probe_phase_duration_seconds_count", phase="request") >= 2
    assert m.value("milvus_probe_management_healthy") == 1
    assert m.value("milvus_probe_management_component_healthy", component="proxy") == 1
    assert m.value("milvus_probe_management_failures_total", reason="refused") == 0
    expiry = m.value("milvus_probe_tls_certificate_expiry_timestamp_seconds")
    assert expiry == certs.server_not_after
    assert m.value("milvus_probe_tls_info", subject="CN=localhost") == 1
    assert "Milvus /healthz: OK (3/3 components healthy)" in verbose
    body = json.loads(trace)
    assert body["protocol"] == "rest" and body["rest_api"] == "v2"
    assert body["management"]["healthy"] is True
    assert body["tls"]["earliest_expiry"] == certs.server_not_after
    assert TOKEN not in verbose + trace + m.text


def _get(port: int, path: str) -> tuple[int, str]:
    from kit.net import http_get

    status, _, body = http_get(port, path)
    return status, body.decode()
