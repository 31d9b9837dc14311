"""The cycle contract, proved by causing each fault: every cycle ends in a true result,
inside its deadline, and leaves no connection open (README "Reliability", the fault matrix).

Real servers where they can do it (milvus-lite behind a FaultProxy); doubles only for what
they can't be made to do, each saying so: a bug in our own code (an exception injected
into a prober, a canary step, a side check or a sink), HTTP answers no Milvus sends
(non-ASCII digits), a discovery read held open at the moment a reload lands.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from probe.app import App
from probe.config import Sources, load
from probe.hub import Hub
from probe.milvus.auth import SecretFile
from probe.probers import InfoMode, Probers
from probe.probers.canary import CanarySetups, Steps
from probe.probers.grpc import GrpcProber
from probe.probers.management import ManagementCheck
from probe.probers.rest import RestProber
from probe.probers.tls import TlsInspector
from probe.result import FailureReason, ManagementView, ProbeResult
from tests.conftest import DaemonFactory
from tests.faults import Fault, FaultProxy
from tests.support import (
    MilvusLite,
    SilentServer,
    make_certs,
    scrape,
    side_views,
    target,
    wait_until,
)

TOKEN = "root:Tru7h-Never-L1es"


class InjectedBug(RuntimeError):
    """Stands for a bug in our own code: no real server can make our code raise."""


def _raise(*_: object, **__: object) -> None:
    raise InjectedBug(f"injected bug while holding {TOKEN}")


def _balanced(app: App) -> tuple[int, int]:
    opened = sum(o for o, _ in app.ledger.snapshot().values())
    closed = sum(c for _, c in app.ledger.snapshot().values())
    return opened, closed


# --------------------------------------------------------------------------- the probe breaks


def test_a_prober_that_raises_ends_every_cycle_in_a_probe_error_result(
    milvus: MilvusLite, daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the exception was logged and the cycle lost; success kept its last value."""
    app = daemon(
        uri=milvus.address,
        token=TOKEN,
        **{"probe.interval": "100ms", "probe.timeout": "90ms", "readiness.failure-threshold": "1"},
    )
    wait_until(lambda: scrape(app.port).value("milvus_probe_success") == 1, 10, "a success")
    monkeypatch.setattr(GrpcProber, "_check_answer", _raise)
    before = scrape(app.port).one("milvus_probe_attempts_total")

    def broke_twice() -> bool:
        m = scrape(app.port)
        return m.one("milvus_probe_failures_total", reason="probe_error") >= 2

    wait_until(broke_twice, 10, "two probe_error cycles")
    m = scrape(app.port)
    assert m.one("milvus_probe_success") == 0  # not frozen at its last value
    assert m.one("milvus_probe_attempts_total") >= before + 2  # attempts keep counting
    assert m.one("milvus_probe_internal_errors_total", where="prober") >= 2
    assert m.one("milvus_probe_missed_cycles_total") == 0
    alias = app.hub.targets()[0].alias
    check = app.health.target_check(alias)  # /readyz/<alias>: nothing is proven
    assert check is not None and not check.ok
    last = app.history.recent(alias)[-1]
    assert last.reason is FailureReason.PROBE_ERROR and last.failed_phase == "probe"
    assert last.duration <= 0.09
    assert "InjectedBug" in last.error and TOKEN not in last.error
    assert TOKEN not in m.text
    monkeypatch.undo()  # the bug is fixed: the target recovers by itself
    wait_until(lambda: scrape(app.port).value("milvus_probe_success") == 1, 10, "recovery")
    with app.scheduler.held_idle(5) as idle:
        assert idle and _balanced(app)[0] == _balanced(app)[1]


def test_a_rest_prober_that_raises_ends_the_cycle_in_a_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kind does not matter: Probers turns any prober's exception into a result."""
    with SilentServer() as silent:
        monkeypatch.setattr(RestProber, "_cycle", _raise)
        t = target(uri=f"http://127.0.0.1:{silent.port}", protocol="rest", token=TOKEN)
        where: list[str] = []
        result = Probers(on_internal_error=where.append).run(t, InfoMode.NONE)
    assert (result.success, result.reason) == (False, FailureReason.PROBE_ERROR)
    assert result.protocol == "rest" and where == ["prober"]
    assert TOKEN not in result.error


def test_a_canary_step_that_raises_closes_its_connection(
    milvus: MilvusLite, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = target(uri=milvus.address, **{"canary.collection": "truth_canary"})
    monkeypatch.setattr(Steps, "run", _raise)
    probers = Probers(canary_setups=CanarySetups(background=False))
    result = probers.run(t, InfoMode.NONE)
    assert result.reason is FailureReason.PROBE_ERROR
    ((opened, closed),) = probers.ledger.snapshot().values()
    assert opened == closed == 1


@pytest.mark.parametrize("check", ["management", "tls"])
def test_a_side_check_that_raises_is_counted_and_the_probe_stands(
    milvus: MilvusLite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, check: str
) -> None:
    if check == "management":
        monkeypatch.setattr(ManagementCheck, "run", _raise)
        t = target(uri=milvus.address, management_uri="http://127.0.0.1:9", token=TOKEN)
    else:
        monkeypatch.setattr(TlsInspector, "inspect", _raise)
        certs = make_certs(tmp_path)
        t = target(uri=f"https://localhost:{milvus.port}", server_pem_path=str(certs.ca))
    where: list[str] = []
    probers = Probers(on_internal_error=where.append)
    result = probers.run(t, InfoMode.NONE)
    if check == "management":
        (view,) = side_views(probers, t, result)
        assert isinstance(view, ManagementView)
        assert view.reason is FailureReason.PROBE_ERROR and TOKEN not in view.error
    else:
        assert probers.beside(t, result, lambda view: None) == 1
        wait_until(lambda: where == [check], 5, "the inspection to fail")
    assert where == [check]


def test_a_sink_that_raises_keeps_the_result_from_no_other_sink() -> None:
    errors: list[None] = []
    hub = Hub(on_sink_error=lambda: errors.append(None))
    seen: list[ProbeResult] = []
    hub.sink(_raise)
    hub.sink(lambda _, result: seen.append(result))
    t = target()
    hub.update([t])
    current = hub.targets()[0]
    result = ProbeResult(current.alias, current.address, "check_health", 0.0, 0.001, {}, True)
    assert hub.publish(current, result)
    assert seen == [result] and len(errors) == 1


# --------------------------------------------------------------------------- what servers send


class _CannedHttp:
    """Answers every connection with the same bytes (no Milvus sends these: a double)."""

    def __init__(self, answer: bytes) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._answer = answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self._answer)

    def close(self) -> None:
        self._sock.close()


@contextmanager
def canned(answer: bytes) -> Iterator[_CannedHttp]:
    server = _CannedHttp(answer)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    "answer",
    [
        "HTTP/1.1 ²00 OK\r\nContent-Length: 2\r\n\r\n{}".encode("latin-1"),
        "HTTP/1.1 200 OK\r\nContent-Length: ³\r\n\r\n{}".encode("latin-1"),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n"
        + b"x" * 16
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
    ],
    ids=["superscript-status", "superscript-length", "underscore-chunk", "signed-length"],
)
def test_numbers_on_the_wire_are_ascii_digits_or_the_answer_is_not_http(answer: bytes) -> None:
    """Before: `²00` passed str.isdigit() and int() raised ValueError: the cycle was lost."""
    with canned(answer) as server:
        t = target(uri=f"http://127.0.0.1:{server.port}", protocol="rest", timeout="1s")
        probers = Probers()
        result = probers.run(t, InfoMode.NONE)
    assert (result.reason, result.failed_phase) == (FailureReason.UNIMPLEMENTED, "request")
    ((opened, closed),) = probers.ledger.snapshot().values()
    assert opened == closed


def test_an_unloadable_ca_file_fails_the_management_check_not_the_daemon(
    milvus: MilvusLite, tmp_path: Path
) -> None:
    """Before: the TLS context was built outside the check's `try`, so it raised out of the
    cycle and threw the probe's own result away."""
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    t = target(uri=milvus.address, management_uri="https://127.0.0.1:9", ca_pem_path=str(bad))
    probers = Probers()
    result = probers.run(t, InfoMode.VERSION)
    assert result.reason is not FailureReason.PROBE_ERROR  # the probe's own view stands
    assert result.management is not None
    assert result.management.reason is FailureReason.ERROR
    assert "cannot load the TLS files" in result.management.error


# --------------------------------------------------------------------------- the schedule


def test_a_black_holed_management_port_beside_a_slow_milvus_costs_no_slot(
    milvus: MilvusLite, daemon: DaemonFactory
) -> None:
    """Before: the check ran in the cycle's slot with a full timeout after a 0.45 s probe, so
    cycles outlasted the 1 s interval and slots were missed while 19530 was fine."""
    proxy = FaultProxy(("127.0.0.1", milvus.port), Fault(response_delay=0.45))
    try:
        with SilentServer() as silent:
            app = daemon(
                uri=proxy.address,
                management_uri=f"http://127.0.0.1:{silent.port}",
                **{"probe.interval": "1s", "probe.timeout": "900ms"},
            )
            wait_until(
                lambda: scrape(app.port).one("milvus_probe_attempts_total") >= 6, 20, "six cycles"
            )
            m = scrape(app.port)
    finally:
        proxy.stop()
    assert m.one("milvus_probe_missed_cycles_total") == 0
    assert m.total("milvus_probe_failures_total") == 0  # every cycle: a success
    assert m.one("milvus_probe_management_failures_total", reason="timeout") >= 1
    assert m.one("milvus_probe_duration_seconds_count") == m.one("milvus_probe_attempts_total")


def test_a_reload_raising_the_timeout_recuts_the_latency_buckets(
    milvus: MilvusLite, tmp_path: Path
) -> None:
    """Before: buckets ended at the start-up timeout; 1.2 s cycles after raising it to 3 s
    all landed in +Inf and histogram_quantile said p99 = 1 s."""
    proxy = FaultProxy(("127.0.0.1", milvus.port), Fault(response_delay=1.2))
    config = tmp_path / "probe.yaml"
    config.write_text(f"targets:\n  - uri: {proxy.address}\n    timeout: 1s\n    interval: 4s\n")
    flags = {"config.file": str(config), "web.listen-address": "127.0.0.1:0", "probe.timeout": "1s"}
    sources = Sources(flags=flags)
    app = App(load(sources), load_config=lambda: load(sources))
    app.start()
    try:
        assert app.metrics.bucket_top == 1.0
        config.write_text(
            f"targets:\n  - uri: {proxy.address}\n    timeout: 3s\n    interval: 4s\n"
        )
        assert app.reload()[0]
        assert app.metrics.bucket_top == 3.0
        wait_until(lambda: scrape(app.port).one("milvus_probe_success") == 1, 15, "a slow success")
        buckets = dict(scrape(app.port).buckets("milvus_probe_duration_seconds"))
    finally:
        app.stop()
        proxy.stop()
    assert 3.0 in buckets and 1.0 in buckets
    assert buckets[1.0] == 0  # the old top: nothing of the new cycles is cut at it
    assert buckets[2.5] == buckets[3.0] == buckets[float("inf")] >= 1


class _HeldDiscovery:
    """Stands for Kubernetes discovery, whose read can be held open at the moment a reload
    lands (a real API server can't be paused between two lines of our code)."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.notify = lambda: None

    def discovered(self) -> list[object]:
        if self.hold.is_set():
            self.entered.set()
            assert self.release.wait(10)
        return []

    def start(self, on_change: object) -> None:
        self.notify = on_change  # type: ignore[assignment]

    def stop(self) -> None:
        pass


def test_a_reload_racing_discovery_never_puts_the_old_targets_back(
    milvus: MilvusLite, tmp_path: Path
) -> None:
    """Before: discovery's merge read the old static list, the reload wrote the new one and
    logged "configuration reloaded", then discovery's late write put the old list back."""
    config = tmp_path / "probe.yaml"
    config.write_text(f"targets:\n  - alias: old\n    uri: {milvus.address}\n")
    sources = Sources(flags={"config.file": str(config), "web.listen-address": "127.0.0.1:0"})
    app = App(load(sources), load_config=lambda: load(sources))
    discovery = _HeldDiscovery()
    app.cluster = discovery  # type: ignore[assignment]
    app.start()
    try:
        discovery.hold.set()
        racer = threading.Thread(target=lambda: discovery.notify())  # type: ignore[misc]
        racer.start()
        assert discovery.entered.wait(5)  # discovery has read the old static list
        config.write_text(f"targets:\n  - alias: new\n    uri: {milvus.address}\n")
        discovery.hold.clear()
        reload = threading.Thread(target=app.reload)
        reload.start()
        wait_until(lambda: [t.alias for t in app.source.current()] == ["new"], 5, "the reload")
        discovery.release.set()
        racer.join(10)
        reload.join(10)
        assert [t.alias for t in app.hub.targets()] == ["new"]
    finally:
        discovery.release.set()
        app.stop()


# --------------------------------------------------------------------------- secrets


def test_a_secret_file_rewritten_in_place_with_the_same_length_is_read_again(
    tmp_path: Path,
) -> None:
    """Before: the cache key (device, inode, mtime, size) did not move for a same-length
    rewrite within one timestamp tick: the old password stayed in use."""
    path = tmp_path / "password"
    path.write_text("first-password")
    secret = SecretFile(str(path))
    assert secret.read() == "first-password"
    before = os.stat(path)
    with open(path, "r+") as fh:  # in place: same inode, same size
        fh.write("other-password")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_ino == before.st_ino
    assert secret.read() == "other-password"
