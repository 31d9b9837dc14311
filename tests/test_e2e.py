"""End to end against the real Milvus standalone server (Go; PyPI `milvus` 2.3.5).

Each server configuration — plain, authorization on, one-way TLS, mutual TLS — runs as a
real standalone in a network namespace of its own (it binds 19530, 9091 and a dozen
internal ports on every interface). The probe runs in that namespace as users run it:
`python -m probe check` and `python -m probe serve`, whose HTTP endpoints are read from
inside the namespace too (tests/standalone.py). One standalone runs at a time, and each
configuration is started once for the tests that need it.

Needs root (`ip netns`); without it the suite fails, it does not skip.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kit.process import Daemon
from tests.standalone import (
    Agent,
    Netns,
    Spec,
    Standalone,
    Unavailable,
    daemon,
    require_netns,
)
from tests.support import Certs, Scrape, wait_until

VERSION = "v2.3.5-lite"
"""What the PyPI standalone answers to GetVersion."""

PROBE_PORT = 9191
"""The daemon's management port inside a namespace (Milvus has 9091 there)."""


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Checked:
    """`python -m probe check --output json` run in the namespace."""

    code: int
    result: dict[str, Any]
    stderr: str

    @property
    def reason(self) -> str | None:
        return self.result["reason"]  # type: ignore[no-any-return]


@dataclass
class Server:
    """A running standalone, its namespace and an HTTP agent in it."""

    kind: str
    ns: Netns
    milvus: Standalone
    agent: Agent
    certs: Certs
    work: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.milvus.port}"

    def check(self, *args: str, timeout: str = "5s") -> Checked:
        done = self.ns.python(
            "-m", "probe", "check", "--output", "json", "--timeout", timeout, *args, timeout=30
        )
        try:
            result = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(
                f"check {' '.join(args)} printed no JSON (exit {done.returncode}): "
                f"{done.stdout}{done.stderr}"
            ) from None
        assert result["exit_code"] == done.returncode, result
        return Checked(done.returncode, result, done.stderr)

    def daemon(self, name: str, *args: str) -> AbstractContextManager[Daemon]:
        return daemon(self.ns, self.agent, self.work / f"{name}.log", PROBE_PORT, *args)


def spec(kind: str, certs: Certs) -> Spec:
    tls = {
        "server_pem_path": str(certs.server_cert),
        "server_key_path": str(certs.server_key),
        "ca_pem_path": str(certs.ca),
    }
    if kind == "plain":
        return Spec()
    if kind == "auth":
        return Spec({"authorization_enabled": True}, token="root:Milvus")
    if kind == "tls1":
        return Spec({"tls_mode": 1, **tls}, ca=str(certs.ca))
    if kind == "tls2":
        return Spec(
            {"tls_mode": 2, **tls},
            ca=str(certs.ca),
            client_cert=str(certs.client_cert),
            client_key=str(certs.client_key),
        )
    raise ValueError(kind)


class Servers:
    """Starts the standalone a test asks for, stopping the one that ran before.

    One Milvus at a time keeps a 2-core machine free for the probe's timings; tests are
    grouped by configuration, so each configuration starts once.
    """

    def __init__(self, root: Path, certs: Certs) -> None:
        self.root, self.certs = root, certs
        self.bin_cache = root / "bin-cache"
        self.current: Server | None = None

    def get(self, kind: str) -> Server:
        if self.current is not None and self.current.kind == kind:
            return self.current
        self.close()
        work = self.root / kind
        work.mkdir(exist_ok=True)
        ns = _require(lambda: Netns.create(f"mprobe-{kind}"))
        milvus = Standalone(ns, spec(kind, self.certs), work, self.bin_cache)
        agent: Agent | None = None
        try:
            milvus.start()
            agent = Agent(ns)
        except BaseException:
            if agent is not None:
                agent.close()
            milvus.stop()
            ns.delete()
            raise
        self.current = Server(kind, ns, milvus, agent, self.certs, work)
        return self.current

    def close(self) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        try:
            current.agent.close()
        finally:
            try:
                current.milvus.stop()
            finally:
                current.ns.delete()


T = TypeVar("T")


def _require(make: Callable[[], T]) -> T:
    """`make()`, or fail (never skip) saying why this machine can't run the suite."""
    try:
        return make()
    except Unavailable as exc:
        problem = str(exc)
    pytest.fail(f"the end-to-end suite can't run here: {problem}", pytrace=False)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Servers]:
    _require(require_netns)
    pool = Servers(tmp_path_factory.mktemp("e2e"), certs)
    try:
        yield pool
    finally:
        try:
            pool.close()
        finally:
            shutil.rmtree(pool.bin_cache, ignore_errors=True)  # 250 MB of unpacked binaries


@pytest.fixture
def plain(servers: Servers) -> Server:
    return servers.get("plain")


@pytest.fixture
def auth(servers: Servers) -> Server:
    return servers.get("auth")


@pytest.fixture
def tls1(servers: Servers) -> Server:
    return servers.get("tls1")


@pytest.fixture
def tls2(servers: Servers) -> Server:
    return servers.get("tls2")


# --------------------------------------------------------------------------- metrics


# --------------------------------------------------------------------------- authorization


@pytest.mark.e2e
def test_auth_right_credentials_succeed(auth: Server, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("root:Milvus\n")
    for credentials in (
        ("--token", "root:Milvus"),
        ("--user", "root", "--password", "Milvus"),
        ("--token-file", str(token_file)),
    ):
        checked = auth.check("--uri", auth.address, *credentials)
        assert checked.code == 0, checked
        assert checked.result["healthy"] is True
        assert checked.result["server_version"] == VERSION

    verbose = auth.check("--uri", auth.address, "--token", "root:Milvus", "-v")
    assert verbose.code == 0, verbose
    assert verbose.result["connect_called"] is True
    assert verbose.result["server_info"]["deploy_mode"] == "STANDALONE"


@pytest.mark.e2e
def test_auth_wrong_or_missing_credentials_are_unauthenticated(auth: Server) -> None:
    for credentials in (("--token", "root:wrong"), ("--user", "root", "--password", "nope"), ()):
        checked = auth.check("--uri", auth.address, *credentials)
        assert checked.code == 3, checked
        assert checked.reason == "unauthenticated"
        assert checked.result["failed_phase"] == "rpc"
        assert checked.result["grpc_code"] == "UNAUTHENTICATED"
    # The wrong password and its base64 never show.
    wrong = auth.check("--uri", auth.address, "--token", "root:wrong")
    text = json.dumps(wrong.result) + wrong.stderr
    assert "root:wrong" not in text and "cm9vdDp3cm9uZw" not in text


@pytest.mark.e2e
def test_auth_missing_and_existing_databases(auth: Server) -> None:
    missing = auth.check("--uri", auth.address, "--token", "root:Milvus", "--db-name", "nope")
    assert missing.code == 3, missing
    assert missing.reason == "db_not_found"
    assert (missing.result["failed_phase"], missing.result["status_code"]) == ("info", 800)

    created = auth.ns.python(
        "-c",
        "import sys\n"
        "from pymilvus import MilvusClient\n"
        "client = MilvusClient(uri=sys.argv[1], token='root:Milvus')\n"
        "if 'analytics' not in client.list_databases():\n"
        "    client.create_database('analytics')\n"
        "print(sorted(client.list_databases()))\n"
        "client.close()\n",
        f"http://{auth.address}",
    )
    assert created.returncode == 0, created.stderr
    assert "'analytics'" in created.stdout

    for target in (
        ("--uri", auth.address, "--db-name", "analytics"),
        ("--uri", f"http://{auth.address}/analytics"),  # the database as the URI's path
        ("--uri", auth.address, "--db-name", "default"),
    ):
        checked = auth.check(*target, "--token", "root:Milvus")
        assert checked.code == 0, checked
        assert checked.result["connect_called"] is True

def _time_wait_to(server: Server, port: int) -> int:
    """Closed connections to `port` the kernel still remembers (the closer's TIME_WAIT)."""
    done = server.ns.run("ss", "-Htan", "state", "time-wait", f"( dport = :{port} )")
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


def _established_to(server: Server, port: int) -> int:
    done = server.ns.run("ss", "-Htan", "state", "established", f"( dport = :{port} )")
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


def test_rest_v1_with_the_right_a_wrong_and_no_token(auth: Server) -> None:
    uri = f"http://{auth.address}"
    ok = auth.check("--uri", uri, "--protocol", "rest", "--token", "root:Milvus")
    assert ok.code == 0, ok
    # auto asked v2 first (2.3.5 answers 404), then v1 on the same connection.
    assert (ok.result["protocol"], ok.result["rest_api"]) == ("rest", "v1"), ok
    assert ok.result["http_status"] == 200 and ok.result["body_code"] == 200
    for credentials in (("--token", "root:wrong"), ()):
        bad = auth.check("--uri", uri, "--protocol", "rest", "--rest-api", "v1", *credentials)
        assert bad.code == 3, bad
        assert bad.reason == "unauthenticated" and bad.result["failed_phase"] == "request"
        assert (bad.result["http_status"], bad.result["body_code"]) == (401, 1800), bad


def test_rest_missing_database_is_http_200_with_code_800(auth: Server) -> None:
    missing = auth.check(
        "--uri", f"http://{auth.address}", "--protocol", "rest", "--token", "root:Milvus",
        "--db-name", "nope",
    )
    assert missing.code == 3, missing
    assert missing.reason == "db_not_found"
    assert (missing.result["http_status"], missing.result["body_code"]) == (200, 800)


def test_rest_one_connection_per_cycle_counted_at_the_server(auth: Server) -> None:
    port = auth.milvus.port
    before = _time_wait_to(auth, port)
    for _ in range(5):
        ok = auth.check(
            "--uri", f"http://{auth.address}", "--protocol", "rest", "--token", "root:Milvus"
        )
        assert ok.code == 0, ok
    # One connection per cycle, each closed by the probe (so it is the one in TIME_WAIT),
    # even though auto asked two questions (v2, then v1) in the first of them.
    assert _time_wait_to(auth, port) - before == 5
    assert _established_to(auth, port) == 0




@pytest.mark.e2e
def test_tls_client_against_the_plaintext_port(auth: Server) -> None:
    checked = auth.check(
        "--uri", f"https://localhost:{auth.milvus.port}", "--server-pem-path", str(auth.certs.ca)
    )
    assert checked.code == 2, checked
    assert (checked.reason, checked.result["failed_phase"]) == ("tls", "connect")


# --------------------------------------------------------------------------- one-way TLS


@pytest.mark.e2e
def test_tls_trusted_with_the_ca(tls1: Server) -> None:
    port, ca = tls1.milvus.port, str(tls1.certs.ca)
    for args in (
        ("--uri", f"https://localhost:{port}", "--server-pem-path", ca,
         "--server-name", "localhost"),
        ("--uri", f"https://localhost:{port}", "--ca-pem-path", ca),
        ("--uri", f"localhost:{port}", "--secure", "--server-pem-path", ca),
        # dial the address, verify the name
        ("--uri", f"https://127.0.0.1:{port}", "--server-pem-path", ca,
         "--server-name", "localhost"),
    ):
        checked = tls1.check(*args)
        assert checked.code == 0, checked
        assert checked.result["server_version"] == VERSION


@pytest.mark.e2e
def test_tls_untrusted_or_wrong_name_is_tls(tls1: Server) -> None:
    port, certs = tls1.milvus.port, tls1.certs
    uri = f"https://localhost:{port}"
    cases = {
        "no CA (system roots)": ("--uri", uri),
        "another CA": ("--uri", uri, "--server-pem-path", str(certs.other_ca)),
        "wrong server name": (
            "--uri", uri, "--server-pem-path", str(certs.ca), "--server-name", "milvus.other",
        ),
    }
    for case, args in cases.items():
        checked = tls1.check(*args)
        assert checked.code == 2, (case, checked)
        assert (checked.reason, checked.result["failed_phase"]) == ("tls", "connect"), (
            case,
            checked,
        )
    wrong_name = tls1.check(*cases["wrong server name"])
    assert "Hostname Verification" in wrong_name.result["error"]

def test_tls_certificate_of_the_real_server(tls1: Server) -> None:
    port, certs = tls1.milvus.port, tls1.certs
    checked = tls1.check(
        "--uri", f"https://localhost:{port}", "--server-pem-path", str(certs.ca), "-v"
    )
    assert checked.code == 0, checked
    tls = checked.result["tls"]
    assert tls["earliest_expiry"] == certs.server_not_after
    leaf = tls["chain"][0]
    assert (leaf["subject"], leaf["issuer"]) == ("CN=localhost", "CN=milvus-probe test CA")
    assert "DNS:localhost" in leaf["sans"] and tls["version"].startswith("TLSv1")




@pytest.mark.e2e
def test_plaintext_client_against_the_tls_port(tls1: Server) -> None:
    checked = tls1.check("--uri", tls1.address)
    assert checked.code == 2, checked
    # grpcio only sees the server close the socket (tests/test_prober.py documents this).
    assert (checked.reason, checked.result["failed_phase"]) == ("unavailable", "connect")


# --------------------------------------------------------------------------- mutual TLS


def _mtls(server: Server, *client: str) -> Checked:
    return server.check(
        "--uri", f"https://localhost:{server.milvus.port}", "--ca-pem-path", str(server.certs.ca),
        *client,
    )


@pytest.mark.e2e
def test_mutual_tls_with_the_client_certificate(tls2: Server) -> None:
    certs = tls2.certs
    client = (
        "--client-pem-path", str(certs.client_cert), "--client-key-path", str(certs.client_key)
    )
    checked = _mtls(tls2, *client)
    assert checked.code == 0, checked
    assert checked.result["server_version"] == VERSION

    wrong_name = _mtls(tls2, *client, "--server-name", "milvus.other")
    assert (wrong_name.code, wrong_name.reason) == (2, "tls"), wrong_name


@pytest.mark.e2e
def test_mutual_tls_without_an_accepted_client_certificate_is_tls(tls2: Server) -> None:
    certs = tls2.certs
    cases = {
        "no client certificate": (),
        "a certificate not for clients": (
            "--client-pem-path", str(certs.server_cert), "--client-key-path", str(certs.server_key)
        ),
    }
    checked = {case: _mtls(tls2, *args) for case, args in cases.items()}
    for case, c in checked.items():
        assert (c.code, c.result["failed_phase"]) == (2, "connect"), (case, c)
    reasons = {case: c.reason for case, c in checked.items()}
    # With TLS 1.3 the client's handshake is over before the Go server checks the client
    # certificate; its rejection reaches grpcio as "Unwrap failed (TSI_DATA_CORRUPTED)".
    assert reasons == dict.fromkeys(cases, "tls"), checked


# --------------------------------------------------------------------------- the daemon


INTERVAL = 0.5
FAILURE_THRESHOLD = 3


def _failures(d: Daemon, alias: str) -> float:
    return d.scrape().total("milvus_probe_failures_total", alias=alias)


def _reasons(m: Scrape, alias: str, since: dict[str, float] | None = None) -> dict[str, float]:
    """Failures by reason (the non-zero ones), counted from `since`."""
    since = since or {}
    found = {s.labels["reason"]: s.value - since.get(s.labels["reason"], 0)
             for s in m.find("milvus_probe_failures_total", alias=alias)}
    return {reason: n for reason, n in found.items() if n}


@pytest.mark.e2e
def test_daemon_follows_milvus_down_and_back_up(plain: Server) -> None:
    alias = "plain"
    with plain.daemon(
        "updown",
        "--uri", plain.address,
        "--alias", alias,
        "--probe.interval", f"{INTERVAL * 1000:g}ms",
        "--probe.timeout", f"{INTERVAL * 800:g}ms",
        "--readiness.failure-threshold", str(FAILURE_THRESHOLD),
        "--readiness.success-threshold", "1",
    ) as d:
        wait_until(lambda: d.get(f"/readyz/{alias}")[0] == 200, 10, "the target to pass")
        m = d.scrape()
        assert m.one("milvus_probe_success", alias=alias) == 1
        (info,) = m.find("milvus_probe_server_info", alias=alias)
        assert (info.labels["version"], info.labels["deploy_mode"]) == (VERSION, "STANDALONE")
        port = plain.milvus.port
        live: list[int] = []

        # Down: /readyz/<alias> passes until the third consecutive failure is recorded.
        base = _failures(d, alias)
        reasons_before = _reasons(d.scrape(), alias)
        plain.milvus.stop()
        stopped, stopped_at = time.monotonic(), time.time()
        seen: list[tuple[float, int, float]] = []

        def down() -> bool:
            before = _failures(d, alias) - base
            status, _ = d.get(f"/readyz/{alias}")
            after = _failures(d, alias) - base
            live.append(d.get("/healthz")[0])
            seen.append((before, status, after))
            return before >= FAILURE_THRESHOLD and status == 503

        wait_until(down, 10 * INTERVAL, f"{FAILURE_THRESHOLD} failures and /readyz/{alias} 503")
        took = time.monotonic() - stopped
        for before, status, after in seen:
            if after < FAILURE_THRESHOLD:
                assert status == 200, seen
            if before >= FAILURE_THRESHOLD:
                assert status == 503, seen
        assert any(before >= 1 and after < FAILURE_THRESHOLD and status == 200
                   for before, status, after in seen), f"never passed while failing: {seen}"
        # First failure within an interval of the stop, then one per interval (+ slack for
        # a loaded host).
        assert took < FAILURE_THRESHOLD * INTERVAL + 1.0, f"503 after {took:.2f}s"

        m = d.scrape()
        reasons = _reasons(m, alias, since=reasons_before)
        assert reasons.get("refused", 0) >= FAILURE_THRESHOLD - 1, reasons
        # (one cycle may have caught Milvus shutting down, with another reason)
        assert sum(reasons.values()) - reasons.get("refused", 0) <= 1, reasons
        assert m.one("milvus_probe_success", alias=alias) == 0
        status, body = d.get(f"/readyz/{alias}")
        assert status == 503, body
        assert re.fullmatch(r"failing: refused \(\d+ consecutive failure\(s\)\)\n", body), body
        status, trace = d.get(f"/probe?alias={alias}&format=json")
        now = json.loads(trace)
        assert (now["reason"], now["failed_phase"]) == ("refused", "connect")
        assert now["history"][-1]["reason"] == "refused"

        # Up again: the next cycle (at most one interval after Milvus answers) passes.
        healthy_at = plain.milvus.start()
        back = time.monotonic()
        assert plain.milvus.port == port, "Milvus came back on another port"

        def up() -> bool:
            live.append(d.get("/healthz")[0])
            return d.get(f"/readyz/{alias}")[0] == 200

        wait_until(up, 5, f"/readyz/{alias} to pass again")
        waited = time.monotonic() - back
        _, trace = d.get(f"/probe?alias={alias}&format=json")
        history = json.loads(trace)["history"]
        first_success = next(h for h in history if h["success"] and h["started_at"] > stopped_at)
        late = first_success["started_at"] - healthy_at
        lag = d.scrape().find("milvus_probe_schedule_lag_seconds_sum")
        assert late <= INTERVAL + 0.25, (
            f"the first successful cycle started {late:.3f}s after Milvus answered "
            f"(interval {INTERVAL}s; schedule lag {lag}); history {history}"
        )
        # ... and readiness follows at once (success threshold 1); generous for a loaded host
        assert waited <= INTERVAL + 1.0, f"/readyz/{alias} passed {waited:.2f}s after Milvus"
        assert d.scrape().one("milvus_probe_success", alias=alias) == 1
        assert set(live) == {200}, f"/healthz answered {sorted(set(live))}: it follows Milvus"
        assert d.stop() == 0
    log = d.log_path.read_text()
    assert re.search(r'msg="target down" alias=plain .*reason=refused', log), log

def test_management_port_beside_the_probe_up_down_and_back(plain: Server) -> None:
    assert plain.milvus.ports is not None
    management = f"http://127.0.0.1:{plain.milvus.ports.web}"
    args = ("--management-uri", management)
    address = plain.address  # the ports are forgotten while Milvus is stopped
    up = plain.check("--uri", address, *args)
    assert up.code == 0, up
    view = up.result["management"]
    assert view["healthy"] and view["state"] == "OK" and view["http_status"] == 200
    assert view["components"]["proxy"] == 1 and len(view["components"]) >= 5, view
    rest_up = plain.check("--uri", f"http://{address}", "--protocol", "rest", *args)
    assert rest_up.code == 0, rest_up

    plain.milvus.stop()
    try:
        down = plain.check("--uri", address, *args, timeout="2s")
        rest_down = plain.check(
            "--uri", f"http://{address}", "--protocol", "rest", *args, timeout="2s"
        )
    finally:
        plain.milvus.start()
    assert plain.address == address, "Milvus came back on another port"
    assert plain.milvus.ports is not None  # (its management port may have moved: read it back)
    args = ("--management-uri", f"http://127.0.0.1:{plain.milvus.ports.web}")
    assert down.reason == "refused" and rest_down.reason == "refused", (down, rest_down)
    assert rest_down.result["failed_phase"] == "connect"
    assert down.result["management"]["healthy"] is False
    assert down.result["management"]["reason"] == "refused"

    back = plain.check("--uri", f"http://{address}", "--protocol", "rest", *args)
    assert back.code == 0, back
    assert back.result["management"]["healthy"] is True




@pytest.mark.e2e
def test_connect_registers_once_per_connect_interval(plain: Server) -> None:
    """Milvus keeps every Connect as a client for 24 h; the daemon must not flood that table."""
    alias, interval, connect_interval = "hygiene", 0.1, 2.0
    cycles_wanted = 200
    with plain.daemon(
        "hygiene",
        "--uri", plain.address,
        "--alias", alias,
        "--probe.interval", "100ms",
        "--probe.timeout", "90ms",
        "--probe.connect-interval", "2s",
    ) as d:

        def attempts() -> float:
            return d.scrape().one("milvus_probe_attempts_total", alias=alias)

        wait_until(lambda: attempts() >= cycles_wanted, cycles_wanted * interval * 3,
                   f"{cycles_wanted} cycles")
        # Milvus's own record of the registrations (proxy/impl.go Connect →
        # connection/manager.go "client register").
        registered = plain.milvus.log_lines(
            '"client register"', "[sdk_type=milvus-probe]", f"[alias={alias}]"
        )
        received = plain.milvus.log_lines(
            '"connect received"', "[sdk_type=milvus-probe]", f"[alias={alias}]"
        )
        # Cycles of a target never overlap: two more recorded cycles include the one
        # (if any) that was in flight while the log was read.
        counted = attempts()
        wait_until(lambda: attempts() >= counted + 2, 5, "two more cycles")
        m = d.scrape()
        cycles = m.one("milvus_probe_attempts_total", alias=alias)
        missed = m.one("milvus_probe_missed_cycles_total", alias=alias)
        failures = _reasons(m, alias)
    slots = cycles + missed  # time passes for skipped slots too
    bound = 1 + slots * interval / connect_interval
    assert 0 < len(registered) <= bound, (
        f"{len(registered)} registrations in {cycles:g} cycles ({missed:g} missed); at most "
        f"{bound:g} allowed. Seconds between registrations: {_gaps(registered)}; "
        f"failed cycles: {failures}"
    )
    # Every registration followed a Connect (one may be received and not registered: Milvus
    # drops a Connect whose deadline passed while it checked the database).
    assert len(registered) <= len(received)
    # A healthy Milvus fails a cycle only by answering late (on a loaded host).
    assert set(failures) <= {"timeout"}, failures


def _gaps(lines: list[str]) -> list[float]:
    """Seconds between successive Milvus log lines (by their timestamps)."""
    stamps = [
        datetime.datetime.strptime(line[1:24], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        for line in lines
    ]
    return [round(b - a, 3) for a, b in zip(stamps, stamps[1:], strict=False)]


# --------------------------------------------------------------------------- held connection

HELD_INTERVAL = 12.0
"""Longer than pymilvus's keepalive time (10 s): between two calls the held channel is idle
and gRPC sends keepalive pings on it, as it does for an application's idle client."""


def test_held_connection_quiet_run_no_goaway(plain: Server) -> None:
    """A held connection (pymilvus 3.0.2's keepalive: a ping every 10 s, even without
    calls) against the real 2.3.5 standalone, whose proxy permits one ping per 5 s: over
    four keepalive intervals the channel stays on its first connection (never a GOAWAY,
    which would send it back to IDLE and reconnect) and every held call succeeds."""
    alias = "kept"
    with plain.daemon(
        "held",
        "--uri", plain.address,
        "--alias", alias,
        "--held",
        "--probe.interval", f"{HELD_INTERVAL:g}s",
        "--probe.timeout", "5s",
    ) as d:  # fmt: skip
        def held_calls() -> float:
            return d.scrape().value("milvus_probe_held_duration_seconds_count", alias=alias) or 0

        wait_until(lambda: held_calls() >= 1, 20, "the first held call")
        opened = time.monotonic()
        wait_until(lambda: held_calls() >= 4, 4 * HELD_INTERVAL + 10, "four held calls")
        quiet = time.monotonic() - opened
        m = d.scrape()
        assert m.one("milvus_probe_held_success", alias=alias) == 1
        failures = {
            s.labels["reason"]: s.value
            for s in m.find("milvus_probe_held_failures_total", alias=alias)
            if s.value
        }
        assert failures == {}, failures
        assert m.one("milvus_probe_held_reconnects_total", alias=alias) == 0
        assert m.one("milvus_probe_held_state_changes_total", alias=alias, state="READY") == 1
        assert m.one("milvus_probe_held_state_changes_total", alias=alias, state="IDLE") == 1
        age = m.one("milvus_probe_held_connection_age_seconds", alias=alias)
        assert age >= quiet - 1, (age, quiet)
        # The fresh cycles beside it are untouched: one connection each, plus the held one.
        assert m.one("milvus_probe_open_connections", alias=alias) >= 1
        print(f"\nquiet run: {quiet:.0f}s on one held connection (age {age:.0f}s), no GOAWAY")
