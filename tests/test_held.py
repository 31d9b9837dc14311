"""Held connections against real servers: milvus-lite behind a FaultProxy (the proxy is the
double: it forgets a flow, or sends new connections elsewhere, which the real server can't
be made to do), and the real 2.3.5 standalone (tests/test_e2e.py, the quiet run).

Each test runs the cycles the way the daemon does (a fresh cycle, then the held call
beside it, given the cycle's result), one at a time, so the connections the proxy counts
are exactly the cycles' plus the held one. The measured times are printed (pytest -s)
and quoted in README.md, "Held connections".
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kit.dns import DnsResponder
from kit.milvus_lite import MilvusLite, start_milvus_lite
from kit.net import free_port
from kit.proxy import CountingProxy
from kit.wait import wait_until
from probe.app import App
from probe.probers import InfoMode, Probers
from probe.probers.held import MILVUS_MIN_PING_INTERVAL_MS, PYMILVUS_OPTIONS, held_options
from probe.result import FailureReason, HeldReason, HeldView, ProbeResult
from probe.targets import Target
from tests.conftest import DaemonFactory
from tests.faults import FaultProxy
from tests.standalone import Agent, Netns, daemon, require_netns
from tests.support import milvus_double, target

INTERVAL = 0.5
"""Seconds between two cycles here (the daemon's schedule, played by hand)."""
TIMEOUT = "400ms"


@dataclass
class Rig:
    """Probers, a target with `held: true` through a FaultProxy, and the cycles so far."""

    probers: Probers
    proxy: FaultProxy
    target: Target
    cycles: list[tuple[float, ProbeResult, HeldView]] = field(default_factory=list)

    def cycle(self) -> tuple[ProbeResult, HeldView]:
        """One scheduled cycle and the held call beside it, as `Probers.beside` runs it."""
        at = time.monotonic()
        fresh = self.probers.run(self.target, InfoMode.SCHEDULED)
        held = self.probers._held_view(self.target, fresh)
        self.cycles.append((at, fresh, held))
        return fresh, held

    def until(self, done: object, limit: float, what: str) -> tuple[ProbeResult, HeldView]:
        """Cycles every INTERVAL until `done(fresh, held)`; fail after `limit` seconds."""
        deadline = time.monotonic() + limit
        while True:
            started = time.monotonic()
            fresh, held = self.cycle()
            if done(fresh, held):  # type: ignore[operator]
                return fresh, held
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {limit}s; last: {held.summary()}")
            # The schedule's own pace (the daemon waits for the next slot the same way).
            time.sleep(max(INTERVAL - (time.monotonic() - started), 0))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MilvusLite]:
    """A milvus-lite of the test's own (tests stop and restart it)."""
    (tmp_path / "a").mkdir()
    lite = start_milvus_lite(tmp_path / "a")
    try:
        yield lite
    finally:
        lite.stop()


@pytest.fixture
def rig(server: MilvusLite) -> Iterator[Rig]:
    proxy = FaultProxy(("127.0.0.1", server.port))
    probers = Probers()
    t = target(uri=f"http://{proxy.address}", held="true", **{"probe.timeout": TIMEOUT})
    try:
        yield Rig(probers, proxy, t)
    finally:
        probers.close()
        proxy.stop()
    assert probers.ledger.open_count() == 0


def _proxy_settles(rig: Rig, active: int) -> None:
    wait_until(lambda: rig.proxy.counts().active == active, 5, f"{active} live connection(s)")


def test_options_are_pymilvus_and_keepalive_is_what_milvus_permits() -> None:
    options = dict(held_options(target(uri="http://milvus:19530", held="true")))
    for key, value in PYMILVUS_OPTIONS:
        assert options[key] == value
    assert options["grpc.keepalive_time_ms"] >= MILVUS_MIN_PING_INTERVAL_MS
    assert options["grpc.use_local_subchannel_pool"] == 1


def test_exactly_one_held_connection_counted_at_the_server(rig: Rig) -> None:
    for n in range(1, 6):
        fresh, held = rig.cycle()
        assert fresh.success and held.success, held.summary()
        # Every fresh cycle opened one connection and closed it; the held one stays.
        _proxy_settles(rig, 1)
        assert rig.proxy.counts().accepted == n + 1
    assert held.reconnects == 0 and held.state_after == "READY"
    assert held.connection_age is not None and held.connection_age > 0
    opened, closed = rig.probers.ledger.snapshot()[rig.target.alias, rig.target.address]
    assert (opened, closed) == (6, 5)
    rig.probers.forget(rig.target)  # the target goes: its held connection closes
    _proxy_settles(rig, 0)
    assert rig.probers.ledger.open_count() == 0


def test_idle_flow_black_holed_fails_held_only_then_recovers(rig: Rig) -> None:
    """The proxy forgets the held flow (no FIN, no RST): the held call fails as
    idle_dropped while every fresh cycle stays green, until gRPC's keepalive gives the
    connection up and the channel reconnects by itself."""
    rig.until(lambda f, h: f.success and h.success, 10, "a first good cycle")
    assert rig.proxy.drop_established() == 1
    dropped_at, dropped_wall = time.monotonic(), time.time()
    fresh, held = rig.cycle()
    detected = time.monotonic() - dropped_at
    assert fresh.success
    assert not held.success and held.reason == HeldReason.IDLE_DROPPED, held.summary()
    assert held.state_before == "READY"

    fresh, held = rig.until(lambda f, h: h.success, 120, "the held connection to recover")
    recovered = time.monotonic() - dropped_at
    failed = [(f, h) for _, f, h in rig.cycles if not h.success]
    assert all(f.success for f, _ in failed), "a fresh cycle failed: the server was fine"
    assert {h.reason for _, h in failed} == {HeldReason.IDLE_DROPPED}
    assert held.reconnects == 1
    assert held.unusable_for is not None and held.unusable_for >= recovered - detected - 1
    states = [c.state for c in held.changes]
    assert states[-2:] in (["CONNECTING", "READY"], ["IDLE", "READY"]) or states[-1] == "READY"
    assert "IDLE" in states[3:] or "TRANSIENT_FAILURE" in states[3:], states
    print(
        f"\nidle drop: detected by the next call after {detected:.2f}s; "
        f"{len(failed)} held calls failed; usable again {recovered:.1f}s after the drop "
        f"(unusable {held.unusable_for:.1f}s); state changes: "
        + ", ".join(f"{c.state}@{c.at - dropped_wall:+.1f}s" for c in held.changes)
    )  # fmt: skip
    # Still exactly one held connection: gRPC closed the forgotten flow when it gave it
    # up, and opened one new connection.
    _proxy_settles(rig, 1)
    assert rig.proxy.counts().accepted == len(rig.cycles) + 2


def test_server_restarted_both_fail_held_recovery_measured(
    rig: Rig, server: MilvusLite, tmp_path: Path
) -> None:
    rig.until(lambda f, h: f.success and h.success, 10, "a first good cycle")
    server.stop()
    stopped_at = time.monotonic()
    fresh, held = rig.until(lambda f, h: not f.success and not h.success, 10, "both to fail")
    assert held.reason not in (HeldReason.IDLE_DROPPED, HeldReason.RECONNECTING), held.summary()
    restarted = start_milvus_lite(tmp_path / "a", server.port)
    up_at = time.monotonic()
    try:
        fresh, held = rig.until(lambda f, h: h.success, 150, "the held connection to recover")
        held_back = time.monotonic() - up_at
        fresh_back = next(at - up_at for at, f, _ in rig.cycles if at >= up_at and f.success)
        assert held.reconnects == 1
        assert held.unusable_for is not None and held.unusable_for > 0
        reasons = sorted({h.reason or "" for at, _, h in rig.cycles if not h.success})
        print(
            f"\nrestart: down {up_at - stopped_at:.1f}s; fresh back {fresh_back:.2f}s after the "
            f"server, held back {held_back:.2f}s after (unusable {held.unusable_for:.1f}s); "
            f"held reasons {reasons}; fresh reasons "
            f"{sorted({str(f.reason) for _, f, _ in rig.cycles if not f.success})}"
        )
    finally:
        restarted.stop()


def test_backend_moved_behind_one_address_held_stays_on_the_old_server_until_it_goes(
    rig: Rig, server: MilvusLite, milvus_b: MilvusLite
) -> None:
    """One address whose backend changes (a Service IP; the proxy moves new connections
    to server B): the held channel keeps its flow to A as long as A lives, then reconnects
    by itself and lands on B. The name-moved case (a DNS answer) is the test below."""
    rig.until(lambda f, h: f.success and h.success, 10, "a first good cycle")
    rig.proxy.move(("127.0.0.1", milvus_b.port))
    for _ in range(3):
        fresh, held = rig.cycle()
        assert fresh.success and held.success
    assert held.reconnects == 0, "the held channel left its old server on its own"
    server.stop()
    gone_at = time.monotonic()
    fresh, held = rig.until(lambda f, h: h.success and h.reconnects == 1, 150, "held on B")
    moved = time.monotonic() - gone_at
    failed = [h for at, _, h in rig.cycles if at >= gone_at and not h.success]
    print(
        f"\nmoved: held reached the new server {moved:.2f}s after the old one went; "
        f"{len(failed)} held call(s) failed meanwhile "
        f"({sorted({h.reason or '' for h in failed})}); fresh never failed: "
        f"{all(f.success for _, f, _ in rig.cycles)}"
    )
    assert all(f.success for _, f, _ in rig.cycles)


@pytest.fixture
def lite_proxy(milvus: MilvusLite) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's milvus-lite, counting connections."""
    proxy = FaultProxy(("127.0.0.1", milvus.port))
    try:
        yield proxy
    finally:
        proxy.stop()


def _held_daemon(daemon: DaemonFactory, proxy: FaultProxy, **flags: str) -> App:
    return daemon(
        uri=f"http://{proxy.address}",
        alias="kept",
        held="true",
        **{"probe.interval": "300ms", "probe.timeout": "250ms", **flags},
    )


def test_daemon_publishes_held_beside_fresh_and_closes_it(
    daemon: DaemonFactory, lite_proxy: FaultProxy
) -> None:
    app = _held_daemon(daemon, lite_proxy)
    labels = {**_labels(app), "alias": "kept", "target": lite_proxy.address}

    def sample(name: str, **extra: str) -> float | None:
        return app.registry.get_sample_value(name, {**labels, **extra})

    wait_until(lambda: sample("milvus_probe_held_success") == 1, 10, "a held success")
    assert sample("milvus_probe_held_failures_total", reason="idle_dropped") == 0
    assert sample("milvus_probe_held_state_changes_total", state="READY") == 1
    assert sample("milvus_probe_held_reconnects_total") == 0
    assert sample("milvus_probe_success") == 1
    state = app.health.state("kept")
    assert state is not None and state.held is not None and state.held.success
    _, checks = app.ready()
    (check,) = [c for c in checks if c.name == "target:kept"]
    assert "held: ok" in check.message
    app.stop()
    assert app.ledger.open_count() == 0
    wait_until(lambda: lite_proxy.counts().active == 0, 5, "every connection closed")


def test_removed_target_closes_its_held_connection(
    daemon: DaemonFactory, lite_proxy: FaultProxy, milvus: MilvusLite, tmp_path: Path
) -> None:
    config = tmp_path / "probe.yaml"
    kept = f"  - {{alias: kept, uri: 'http://{lite_proxy.address}', held: true}}\n"
    other = f"  - {{alias: other, uri: 'http://{milvus.address}'}}\n"
    config.write_text("targets:\n" + kept + other)
    app = daemon(
        **{"config.file": str(config), "probe.interval": "300ms", "probe.timeout": "250ms"}
    )
    wait_until(lambda: app.probers.held.count() == 1, 10, "the held connection")
    wait_until(lambda: lite_proxy.counts().active == 1, 10, "only the held connection open")
    config.write_text("targets:\n" + other)
    ok, message = app.reload()
    assert ok, message
    assert app.probers.held.count() == 0
    wait_until(lambda: lite_proxy.counts().active == 0, 5, "the held connection closed")
    assert lite_proxy.counts().accepted >= 2


def test_readiness_policy_with_held_counts_a_failing_held_call(
    daemon: DaemonFactory, lite_proxy: FaultProxy
) -> None:
    app = _held_daemon(daemon, lite_proxy, **{"readiness.policy": "all-held"})

    def held_ok() -> bool:
        state = app.health.state("kept")
        return state is not None and state.held is not None and state.held.success

    wait_until(lambda: app.ready()[0] and held_ok(), 10, "ready, with a held success")
    assert lite_proxy.drop_established() == 1
    wait_until(lambda: not app.ready()[0], 10, "not ready while held fails")
    state = app.health.state("kept")
    assert state is not None and state.last is not None and state.last.success
    assert state.held is not None and state.held.reason == HeldReason.IDLE_DROPPED


def _labels(app: object) -> dict[str, str]:
    return {"namespace": "", "service": "", "pod": "", "protocol": "grpc"}


def test_held_is_only_for_grpc_targets() -> None:
    from probe.config import ConfigError, Sources, load

    with pytest.raises(ConfigError, match="held"):
        load(
            Sources(
                flags={"uri": "http://m:19530", "protocol": "rest", "held": "true"}, environ={}
            )
        )
    assert FailureReason.REFUSED.value != HeldReason.RECONNECTING.value


def test_check_verbose_shows_fresh_and_held_and_closes_both(
    capsys: pytest.CaptureFixture[str], milvus: MilvusLite
) -> None:
    from tests.test_cli import run_check

    code, out, _ = run_check(capsys, "-v", "--uri", f"http://{milvus.address}", "--held")
    assert code == 0, out
    lines = out.splitlines()
    fresh = next(line for line in lines if line.startswith("fresh "))
    held = next(line for line in lines if line.startswith("held "))
    assert " ok " in fresh and " ok in " in held, out
    assert any(line.startswith("  channel ") and "READY" in line for line in lines), out
    code, out, _ = run_check(
        capsys, "--output", "json", "--uri", f"http://{milvus.address}", "--held"
    )
    body = json.loads(out)
    assert body["success"] and body["held"]["success"], body
    assert body["held"]["state_after"] == "READY"


def test_probe_and_api_show_both_views(daemon: DaemonFactory, milvus: MilvusLite) -> None:
    app = daemon(
        uri=f"http://{milvus.address}",
        alias="kept",
        held="true",
        **{"probe.interval": "300ms", "probe.timeout": "250ms"},
    )

    def get(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def held_listed() -> dict[str, Any] | None:
        (row,) = json.loads(get("/api/v1/targets"))
        return row.get("held")  # type: ignore[no-any-return]

    view = wait_until(held_listed, 10, "the held view in /api/v1/targets")
    assert view["success"] and view["reason"] is None and view["reconnects"] == 0
    trace = get("/probe?alias=kept")
    assert re.search(r"^fresh .* ok ", trace, re.M) and re.search(r"^held .* ok in ", trace, re.M)
    page = get("/")
    assert "fresh connection:" in page and "held connection:" in page


# --------------------------------------------------------------------------- the address moves

MOVED = "milvus.test"
"""The target's name in the namespace: first 127.0.0.2 (server A), then 127.0.0.3 (B)."""


def test_name_moved_in_dns_held_follows_only_when_its_old_server_goes(
    server: MilvusLite, milvus_b: MilvusLite, tmp_path: Path
) -> None:
    """The daemon runs in a network namespace whose resolver is a DNS server of the test's
    own (kit/dns.py, REFERENCE §8); `milvus.test` answers 127.0.0.2 (a proxy to server A),
    then 127.0.0.3 (a proxy to server B). Fresh cycles follow the new answer; the held
    channel keeps its connection to A while A lives (as a long-lived pymilvus client
    does), and when A goes, gRPC re-resolves the name and lands on B by itself."""
    require_netns()
    ns = Netns.create("held", etc={"resolv.conf": "nameserver 127.0.0.53\n"})
    agent: Agent | None = None
    proxies: list[CountingProxy] = []
    try:
        udp = ns.new_socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.53", 53))
        port = free_port()
        for address, upstream in (("127.0.0.2", server), ("127.0.0.3", milvus_b)):
            listener = ns.new_socket()
            listener.bind((address, port))
            proxies.append(CountingProxy(("127.0.0.1", upstream.port), listener=listener))
        to_a, to_b = proxies
        agent = Agent(ns)
        with (
            DnsResponder(udp, {MOVED: ["127.0.0.2"]}) as dns,
            daemon(ns, agent, tmp_path / "daemon.log", free_port(),
                   "--uri", f"{MOVED}:{port}", "--alias", "moved", "--held",
                   "--probe.interval", "500ms", "--probe.timeout", "400ms") as d,
        ):  # fmt: skip

            def held(name: str, **labels: str) -> float:
                return d.scrape().value(f"milvus_probe_held_{name}", alias="moved", **labels) or 0

            wait_until(lambda: held("success") == 1, 20, "a held success on A")
            dns.records[MOVED] = ["127.0.0.3"]
            moved_at = time.monotonic()
            wait_until(lambda: to_b.counts()[0] >= 3, 20, "fresh cycles on B")
            fresh_moved = time.monotonic() - moved_at
            calls = held("duration_seconds_count")
            wait_until(lambda: held("duration_seconds_count") >= calls + 3, 10, "3 held calls")
            # Still on A: its one connection there, never reconnected.
            assert held("success") == 1 and held("reconnects_total") == 0
            accepted, closed = to_a.counts()
            assert accepted - closed == 1, (accepted, closed)

            to_a.stop()  # A goes: its address refuses from now on ...
            server.stop()  # ... and its connections close
            gone_at = time.monotonic()
            wait_until(
                lambda: held("reconnects_total") == 1 and held("success") == 1,
                120,
                "the held connection on B",
            )
            followed = time.monotonic() - gone_at
            m = d.scrape()
            failed = {
                s.labels["reason"]: s.value
                for s in m.find("milvus_probe_held_failures_total", alias="moved")
                if s.value
            }
            fresh_failed = m.total("milvus_probe_failures_total", alias="moved")
            wait_until(lambda: to_b.counts()[0] - to_b.counts()[1] == 1, 5, "one held on B")
        print(
            f"\nDNS moved: fresh cycles on B {fresh_moved:.2f}s after the answer changed; held "
            f"stayed on A until A went, then reached B {followed:.2f}s later; held failures "
            f"{failed or 'none'}; fresh failures {fresh_failed:g}"
        )
        assert fresh_failed == 0
    finally:
        if agent is not None:
            agent.close()
        for proxy in proxies:
            proxy.stop()
        ns.delete()


def test_held_connection_never_calls_connect(daemon: DaemonFactory) -> None:
    """A double (MilvusDouble) counts the Connect calls the real server would register:
    the fresh cycles' Connect policy calls it once; the held channel adds none."""
    with milvus_double() as double:
        app = daemon(
            uri=f"http://{double.address}",
            alias="kept",
            held="true",
            **{"probe.interval": "200ms", "probe.timeout": "150ms"},
        )
        wait_until(
            lambda: double.count("CheckHealth") >= 10, 10, "five cycles and five held calls"
        )
        state = app.health.state("kept")
        assert state is not None and state.held is not None and state.held.success
        assert double.count("Connect") == 1
