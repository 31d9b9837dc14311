"""Reliability under faults: a fault-injecting proxy between the daemon and a real Milvus
(milvus-lite), and a gRPC double that answers bytes no Milvus would send.

Each proxy scenario runs a daemon with two targets: `faulty` (through the proxy) and
`healthy` (straight to milvus-lite), warms up, records a baseline, injects one fault and
checks that

* the reason and the failing phase are the true ones, and the injected time lands in
  the phase it belongs to;
* readiness of `faulty` follows --readiness.failure-threshold (checked against the
  consecutive-failure count observed on both sides of each /readyz answer);
* `healthy` keeps its schedule: schedule-lag p99 (from the histogram's buckets) within
  10% of its interval, no missed cycles, the expected number of attempts;
* once the fault is gone: `milvus_probe_open_connections` 0 and opened == closed for
  both targets, the proxy saw every connection it accepted closed, and this process's
  open file descriptors and threads are back at their baseline (the scheduler's pool
  may have started its second worker: two targets can overlap).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.app import App
from probe.health import TargetState
from probe.probers import Probers
from probe.probers.grpc import GrpcProber, Phase
from probe.result import FailureReason, ProbeResult
from tests.conftest import DaemonFactory
from tests.faults import (
    HEALTHY,
    PASS,
    Fault,
    FaultProxy,
    Kind,
    RawMilvusDouble,
    ThreadCensus,
    check_health_bytes,
    histogram_quantile,
    thread_census,
)
from tests.support import (
    MilvusLite,
    Scrape,
    free_port,
    http_get,
    open_fds,
    scrape,
    target,
    wait_until,
)

FAULTY, HEALTHY_ALIAS = "faulty", "healthy"
HEALTHY_INTERVAL = 0.5
"""10% of it, 50 ms, is a bucket bound of the lag histogram: p99 ≤ 50 ms is then exact
(at least 99% of cycles started within 50 ms of their slot), with no interpolation."""
FAILURE_THRESHOLD = 3
MAX_WORKERS_IN_USE = 2
"""Two targets: at most two cycles overlap, so the pool needs at most two workers."""


# --------------------------------------------------------------------------- scraping


def throttled(predicate: Callable[[], Any], period: float = 0.025) -> Callable[[], Any]:
    """`predicate`, evaluated at most once per `period` (False in between): polls that
    make HTTP requests would otherwise compete with the daemon for the GIL every 5 ms
    and show up in the very schedule lag being measured."""
    last = [0.0]

    def check() -> Any:
        now = time.monotonic()
        if now - last[0] < period:
            return False
        last[0] = now
        return predicate()

    return check


def status_of(port: int, path: str) -> int:
    return http_get(port, path)[0]


def trace_of(port: int, alias: str) -> str:
    status, _, body = http_get(port, f"/probe?alias={alias}")
    assert status == 200
    return body.decode()


# --------------------------------------------------------------------------- the rig


@dataclass(frozen=True)
class Footprint:
    fds: int
    threads: ThreadCensus


@dataclass
class ScheduleWindow:
    began: float
    lag: dict[float, float]
    attempts: float
    missed: float


@dataclass
class Rig:
    app: App
    proxy: FaultProxy
    faulty_interval: float
    faulty_timeout: float

    @property
    def port(self) -> int:
        return self.app.port

    def state(self, alias: str = FAULTY) -> TargetState:
        state = self.app.health.state(alias)
        assert state is not None
        return state

    # ------------------------------------------------------- faults and results

    def set(self, fault: Fault) -> float:
        """Switch the fault; returns the wall time after which cycles start under it."""
        self.proxy.set(fault)
        return time.time()

    def results(self, since: float, count: int, timeout: float = 15.0) -> list[ProbeResult]:
        """The next `count` results of `faulty` from cycles that started after `since`."""
        seen: dict[float, ProbeResult] = {}

        def enough() -> bool:
            last = self.state().last
            if last is not None and last.started_at > since:
                seen[last.started_at] = last
            return len(seen) >= count

        wait_until(enough, timeout, f"{count} cycles of {FAULTY} under the fault")
        return [seen[k] for k in sorted(seen)][:count]

    def wait_recovered(self, successes: int = 2) -> None:
        wait_until(
            throttled(lambda: self.state().consecutive_successes >= successes
                      and status_of(self.port, f"/readyz/{FAULTY}") == 200),
            15,
            f"{FAULTY} to succeed {successes} times in a row and pass again",
        )

    # ------------------------------------------------------- footprint

    def quiescent(self) -> bool:
        return (
            self.app.ledger.open_count() == 0
            and self.proxy.counts().active == 0
            and not any(
                "process_request_thread" in t.name or t.name == "fault-proxy-conn"
                for t in threading.enumerate()
            )
        )

    def footprint(self) -> Footprint | None:
        """fds and threads, read when no cycle, proxied connection or HTTP request is live."""
        if not self.quiescent():
            return None
        found = Footprint(open_fds(), thread_census())
        return found if self.quiescent() else None

    def baseline(self, samples: int = 8) -> Footprint:
        """The resting footprint: fewest fds over several quiescent readings (gRPC frees a
        closed channel's socket a moment after close() returns, never the other way)."""
        readings: list[Footprint] = []

        def collected() -> bool:
            found = self.footprint()
            if found is not None:
                readings.append(found)
            return len(readings) >= samples

        wait_until(collected, 15, "quiescent readings for the baseline")
        others = {r.threads.others for r in readings}
        assert len(others) == 1, f"threads changed while idle: {others}"
        return Footprint(
            min(r.fds for r in readings),
            ThreadCensus(max(r.threads.workers for r in readings), others.pop()),
        )

    def assert_back_to_baseline(self, base: Footprint, timeout: float = 5.0) -> None:
        last: list[Footprint] = []

        def back() -> bool:
            found = self.footprint()
            if found is None:
                return False
            last.append(found)
            return (
                found.fds == base.fds
                and found.threads.others == base.threads.others
                and base.threads.workers <= found.threads.workers <= MAX_WORKERS_IN_USE
            )

        try:
            wait_until(back, timeout, "fds and threads back at the baseline")
        except AssertionError:
            raise AssertionError(
                f"not back at the baseline {base} within {timeout}s; "
                f"last quiescent reading {last[-1:] or 'none'}, proxy {self.proxy.counts()}"
            ) from None

    def assert_connections_balanced(self) -> None:
        """At a quiescent moment: no open connection, opened == closed, for both targets;
        and the proxy saw every connection it accepted closed."""

        def balanced() -> Scrape | None:
            m = scrape(self.port)
            for alias in (FAULTY, HEALTHY_ALIAS):
                opened = m.one("milvus_probe_connections_opened_total", alias=alias)
                closed = m.one("milvus_probe_connections_closed_total", alias=alias)
                if opened != closed or m.one("milvus_probe_open_connections", alias=alias):
                    return None
            return m

        counts = wait_until(
            lambda: (c := self.proxy.counts()).active == 0 and c, 5,
            "the proxy to see every connection closed",
        )
        assert counts.accepted == counts.closed
        m = wait_until(throttled(balanced, 0.05), 5, "open_connections 0 and opened == closed")
        # Every connection the proxy accepted (read first) is one the probe opened and counted.
        assert counts.accepted <= m.one("milvus_probe_connections_opened_total", alias=FAULTY)

    def assert_clean(self, base: Footprint) -> None:
        self.assert_connections_balanced()
        self.assert_back_to_baseline(base)

    # ------------------------------------------------------- schedule of the healthy target

    def schedule_window(self) -> ScheduleWindow:
        m = scrape(self.port)
        return ScheduleWindow(
            time.monotonic(),
            dict(m.buckets("milvus_probe_schedule_lag_seconds")),
            m.one("milvus_probe_attempts_total", alias=HEALTHY_ALIAS),
            m.one("milvus_probe_missed_cycles_total", alias=HEALTHY_ALIAS),
        )

    def assert_schedule_undisturbed(self, window: ScheduleWindow) -> None:
        m = scrape(self.port)
        elapsed = time.monotonic() - window.began
        lag = {
            le: count - window.lag[le]
            for le, count in dict(m.buckets("milvus_probe_schedule_lag_seconds")).items()
        }
        p99 = histogram_quantile(0.99, lag)
        attempts = m.one("milvus_probe_attempts_total", alias=HEALTHY_ALIAS) - window.attempts
        missed = m.one("milvus_probe_missed_cycles_total", alias=HEALTHY_ALIAS) - window.missed
        expected = elapsed / HEALTHY_INTERVAL
        assert p99 <= 0.1 * HEALTHY_INTERVAL, f"schedule lag p99 {p99 * 1000:.1f} ms: {lag}"
        assert missed == 0
        assert expected - 2 <= attempts <= expected + 2, (attempts, expected)


@pytest.fixture
def rig(milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    proxies: list[FaultProxy] = []

    def make(faulty_interval: float = 0.2, faulty_timeout: float = 0.15) -> Rig:
        proxy = FaultProxy(("127.0.0.1", milvus.port))
        proxies.append(proxy)
        config = tmp_path / f"probe-{len(proxies)}.yaml"
        config.write_text(yaml.safe_dump({
            "probe": {"interval": f"{HEALTHY_INTERVAL}s", "timeout": f"{HEALTHY_INTERVAL * 0.8}s"},
            "readiness": {"failure_threshold": FAILURE_THRESHOLD, "success_threshold": 1},
            "targets": [
                {"alias": FAULTY, "uri": proxy.address,
                 "interval": f"{faulty_interval}s", "timeout": f"{faulty_timeout}s"},
                {"alias": HEALTHY_ALIAS, "uri": milvus.address},
            ],
        }))
        app = daemon(**{"config.file": str(config)})
        built = Rig(app, proxy, faulty_interval, faulty_timeout)
        # Warm-up: both targets succeed, Connect is done, the faulty one is ready.
        wait_until(
            lambda: built.state(FAULTY).consecutive_successes >= 2
            and built.state(HEALTHY_ALIAS).consecutive_successes >= 2,
            15, "both targets to succeed twice",
        )
        assert status_of(app.port, f"/readyz/{FAULTY}") == 200
        return built

    yield make
    for proxy in proxies:
        proxy.stop()


def assert_goes_down_after_threshold(r: Rig, reason: FailureReason) -> None:
    """/readyz/faulty keeps passing until the third consecutive failure is recorded, then fails.

    Each /readyz answer is bracketed by two readings of the consecutive-failure count, so
    every answer can be checked against what the daemon had seen at that moment.
    """
    seen: list[tuple[int, int, int]] = []

    def observe() -> bool:
        before = r.state().consecutive_failures
        status = status_of(r.port, f"/readyz/{FAULTY}")
        after = r.state().consecutive_failures
        seen.append((before, status, after))
        return before >= FAILURE_THRESHOLD and status == 503

    wait_until(throttled(observe), 15, f"{FAILURE_THRESHOLD} failures and /readyz/{FAULTY} 503")
    for before, status, after in seen:
        if after < FAILURE_THRESHOLD:
            assert status == 200, seen
        if before >= FAILURE_THRESHOLD:
            assert status == 503, seen
    assert any(
        before >= 1 and after < FAILURE_THRESHOLD and status == 200
        for before, status, after in seen
    ), f"never saw /readyz/{FAULTY} pass with 1–2 failures recorded: {seen}"
    last = r.state().last
    assert last is not None and last.reason is reason


# --------------------------------------------------------------------------- latency


@pytest.mark.parametrize("jitter", [0.0, 0.03], ids=["fixed", "jitter"])
def test_latency_on_the_path_shows_in_connect_and_rpc(rig: Callable[..., Rig],
                                                      jitter: float) -> None:
    """d each way: the server's HTTP/2 SETTINGS arrive d late (connect ≥ d); the request
    goes d late and the answer comes d late (rpc ≥ 2d). Jitter adds up to `jitter` to each."""
    r = rig(faulty_interval=0.3, faulty_timeout=0.25)
    base = r.baseline()
    window = r.schedule_window()
    d = 0.04
    since = r.set(Fault(to_client_delay=d, to_server_delay=d, jitter=jitter))
    results = r.results(since, 5)
    r.assert_schedule_undisturbed(window)
    r.set(PASS)

    assert all(x.success for x in results), [x.error for x in results]
    connect = [x.phases[Phase.CONNECT] for x in results]
    rpc = [x.phases[Phase.RPC] for x in results]
    assert min(connect) >= d, connect
    assert min(rpc) >= 2 * d, rpc
    # …and not counted twice: connect would reach 2d if it waited for a round trip more,
    # rpc 3d if it included the handshake.
    assert statistics.median(connect) < 2 * d + jitter, connect
    assert statistics.median(rpc) < 3 * d + 2 * jitter, rpc
    assert statistics.median(x.phases[Phase.CLOSE] for x in results) < d, results
    if jitter:
        assert max(rpc) - min(rpc) > 0.005, f"jitter should spread the rpc times: {rpc}"
    assert status_of(r.port, f"/readyz/{FAULTY}") == 200  # slow is not down

    r.wait_recovered()
    r.assert_clean(base)


@pytest.mark.parametrize("direction", ["to_client", "to_server"])
def test_one_way_latency_lands_where_it_is_on_the_path(milvus: MilvusLite,
                                                       direction: str) -> None:
    """Server → client latency delays the server's SETTINGS (connect) and the answer (rpc);
    client → server latency delays only the request: gRPC's server sends its SETTINGS
    without waiting for ours, so the connection is usable before our bytes arrive."""
    d = 0.05
    fault = Fault(to_client_delay=d) if direction == "to_client" else Fault(to_server_delay=d)
    with FaultProxy(("127.0.0.1", milvus.port), fault) as proxy:
        prober = GrpcProber()
        t = target(uri=proxy.address, **{"probe.timeout": "500ms", "probe.interval": "1s"})
        results = [prober.run(t) for _ in range(4)]
        wait_until(lambda: proxy.counts().active == 0, 5, "every connection closed")
    assert all(x.success for x in results), [x.error for x in results]
    connect = [x.phases[Phase.CONNECT] for x in results]
    rpc = [x.phases[Phase.RPC] for x in results]
    assert min(rpc) >= d and statistics.median(rpc) < 2 * d, rpc
    if direction == "to_client":
        assert min(connect) >= d and statistics.median(connect) < 2 * d, connect
    else:
        assert statistics.median(connect) < d, connect
    assert proxy.counts().accepted == proxy.counts().closed == 4


def test_delayed_first_response_byte_shows_in_rpc_only(rig: Callable[..., Rig]) -> None:
    r = rig(faulty_interval=0.3, faulty_timeout=0.25)
    base = r.baseline()
    window = r.schedule_window()
    hold = 0.12
    since = r.set(Fault(response_delay=hold))
    results = r.results(since, 4)
    r.assert_schedule_undisturbed(window)
    r.set(PASS)

    assert all(x.success for x in results), [x.error for x in results]
    rpc = [x.phases[Phase.RPC] for x in results]
    connect = [x.phases[Phase.CONNECT] for x in results]
    assert min(rpc) >= hold and statistics.median(rpc) < 1.5 * hold, rpc
    assert statistics.median(connect) < hold / 2, connect  # the handshake was not held

    r.wait_recovered()
    r.assert_clean(base)


# --------------------------------------------------------------------------- failures


def test_reset_mid_rpc_is_unavailable(rig: Callable[..., Rig]) -> None:
    """An RST after the request arrives, on a connection that was READY: gRPC fails the
    call UNAVAILABLE ("Connection reset by peer"), the README's `unavailable` (the
    connection dropped) in the rpc phase — not a timeout, not a generic error."""
    r = rig()
    base = r.baseline()
    window = r.schedule_window()
    resets = r.proxy.counts().resets
    since = r.set(Fault(kind=Kind.RESET))
    assert_goes_down_after_threshold(r, FailureReason.UNAVAILABLE)
    results = r.results(since, 3)
    r.assert_schedule_undisturbed(window)
    trace = trace_of(r.port, FAULTY)
    r.set(PASS)

    for x in results:
        assert (x.reason, x.failed_phase, x.facts.grpc_code) == (
            FailureReason.UNAVAILABLE, Phase.RPC, "UNAVAILABLE"), x
        assert "reset by peer" in x.error.lower(), x.error
        assert x.phases[Phase.RPC] < r.faulty_timeout  # reported at once, not at the deadline
    # Connected fine; it broke during the call, and the call failed at once.
    assert statistics.median(x.phases[Phase.CONNECT] for x in results) < 0.05, results
    assert statistics.median(x.phases[Phase.RPC] for x in results) < 0.05, results
    assert r.proxy.counts().resets - resets >= len(results) + 1  # + the /probe cycle
    assert "result    failure reason=unavailable phase=rpc" in trace, trace
    assert "reset by peer" in trace.lower(), trace
    m = scrape(r.port)
    assert m.one("milvus_probe_failures_total", alias=FAULTY, reason="unavailable") >= 3

    r.wait_recovered()
    r.assert_clean(base)


def test_never_answering_server_is_a_connect_timeout(rig: Callable[..., Rig]) -> None:
    """Accepted, never a byte back: the HTTP/2 handshake can't finish, so the cycle
    times out in connect after exactly its timeout."""
    r = rig(faulty_interval=0.2, faulty_timeout=0.15)
    window = r.schedule_window()
    since = r.set(Fault(kind=Kind.BLACKHOLE))
    assert_goes_down_after_threshold(r, FailureReason.TIMEOUT)
    results = r.results(since, 3)
    r.assert_schedule_undisturbed(window)
    r.set(PASS)

    spent = []
    for x in results:
        assert (x.reason, x.failed_phase) == (FailureReason.TIMEOUT, Phase.CONNECT), x
        assert Phase.RPC not in x.phases
        assert "no usable connection" in x.error
        # The deadline covers the whole cycle: resolve and connect share it.
        spent.append(x.phases[Phase.RESOLVE] + x.phases[Phase.CONNECT])
        assert r.faulty_timeout <= spent[-1] < r.faulty_timeout + 0.15, x.phases
    assert statistics.median(spent) < r.faulty_timeout + 0.03, spent  # ends at its deadline
    r.wait_recovered()
    # The ledger balances (what the metrics export). The sockets themselves stay open for
    # a while: test_never_answering_server_sees_its_connections_closed_with_the_cycle.
    m = wait_until(throttled(lambda: (s := scrape(r.port)).one(
        "milvus_probe_open_connections", alias=FAULTY) == 0 and s, 0.05), 5, "open_connections 0")
    assert m.one("milvus_probe_connections_opened_total", alias=FAULTY) == m.one(
        "milvus_probe_connections_closed_total", alias=FAULTY)


def test_never_answering_server_sees_its_connections_closed_with_the_cycle() -> None:
    with FaultProxy(("127.0.0.1", free_port()), Fault(kind=Kind.BLACKHOLE)) as proxy:
        prober = Probers(max_concurrent=1)
        t = target(uri=proxy.address, **{"probe.timeout": "200ms", "probe.interval": "1s"})
        fds = open_fds()
        for cycle in range(1, 4):
            result = prober.run(t)
            assert result.reason is FailureReason.TIMEOUT
            assert prober.ledger.open_count() == 0  # the probe believes it closed it
            # One connection at a time (max-concurrent 1), each closed with its cycle.
            wait_until(lambda n=cycle: proxy.counts().closed == n, 1.0,  # type: ignore[misc]
                       f"the server to see connection {cycle} closed")
            assert proxy.counts().active <= prober.max_concurrent
        wait_until(lambda: open_fds() <= fds, 1.0, "the probe's sockets to be released")


def test_rpc_never_answered_is_an_rpc_timeout(rig: Callable[..., Rig]) -> None:
    """The handshake completes, the request goes unanswered: DEADLINE_EXCEEDED in rpc,
    after the rest of the cycle's deadline."""
    r = rig(faulty_interval=0.2, faulty_timeout=0.15)
    base = r.baseline()
    window = r.schedule_window()
    since = r.set(Fault(kind=Kind.STALL))
    assert_goes_down_after_threshold(r, FailureReason.TIMEOUT)
    results = r.results(since, 3)
    r.assert_schedule_undisturbed(window)
    r.set(PASS)

    spent = []
    for x in results:
        assert (x.reason, x.failed_phase, x.facts.grpc_code) == (
            FailureReason.TIMEOUT, Phase.RPC, "DEADLINE_EXCEEDED"), x
        spent.append(x.phases[Phase.RESOLVE] + x.phases[Phase.CONNECT] + x.phases[Phase.RPC])
        assert r.faulty_timeout - 0.005 <= spent[-1] < r.faulty_timeout + 0.15, x.phases
    assert statistics.median(spent) < r.faulty_timeout + 0.03, spent
    assert statistics.median(x.phases[Phase.CONNECT] for x in results) < 0.05, results

    r.wait_recovered()
    r.assert_clean(base)


def test_slow_drip_within_and_past_the_deadline(rig: Callable[..., Rig]) -> None:
    """The answer one byte at a time: within the deadline it succeeds and the rpc phase
    carries the drip; past the deadline it is a timeout in rpc, not an error."""
    r = rig(faulty_interval=0.6, faulty_timeout=0.5)
    base = r.baseline()
    window = r.schedule_window()

    since = r.set(Fault(drip=0.001, drip_after_request=True))
    slow = r.results(since, 2)
    since = r.set(Fault(drip=0.01, drip_after_request=True))  # ≥ 1 s for the answer
    assert_goes_down_after_threshold(r, FailureReason.TIMEOUT)
    past = r.results(since, 3)
    r.assert_schedule_undisturbed(window)
    r.set(PASS)

    for x in slow:
        assert x.success, x.error
        assert x.phases[Phase.RPC] >= 0.05, x.phases  # ≥ 50 bytes of answer, 1 ms each
    assert statistics.median(x.phases[Phase.CONNECT] for x in slow) < 0.05, slow
    for x in past:
        assert (x.reason, x.failed_phase, x.facts.grpc_code) == (
            FailureReason.TIMEOUT, Phase.RPC, "DEADLINE_EXCEEDED"), x
        assert x.duration < r.faulty_timeout + 0.15
    assert statistics.median(x.duration for x in past) < r.faulty_timeout + 0.03, past

    r.wait_recovered()
    r.assert_clean(base)


def test_refused_while_not_listening_then_recovers(rig: Callable[..., Rig]) -> None:
    r = rig()
    base = r.baseline()
    window = r.schedule_window()
    accepted = r.proxy.counts().accepted
    r.proxy.refuse()
    since = time.time()
    assert_goes_down_after_threshold(r, FailureReason.REFUSED)
    results = r.results(since, 3)
    trace = trace_of(r.port, FAULTY)
    r.assert_schedule_undisturbed(window)
    assert r.proxy.counts().accepted == accepted
    r.proxy.recover()

    for x in results:
        assert (x.reason, x.failed_phase) == (FailureReason.REFUSED, Phase.CONNECT), x
        assert x.phases[Phase.CONNECT] < r.faulty_timeout  # does not wait out the deadline
        assert "Connection refused" in x.error
    assert statistics.median(x.phases[Phase.CONNECT] for x in results) < 0.02, results
    assert "result    failure reason=refused phase=connect" in trace, trace

    r.wait_recovered()
    assert r.proxy.counts().accepted > accepted  # the same port answers again
    r.assert_clean(base)


def test_flapping_faster_than_the_threshold_never_flips_readiness(
        rig: Callable[..., Rig]) -> None:
    """Two good connections, two reset ones, and so on: never three failures in a row, so
    /readyz/faulty must stay 200 throughout. Then three and three: it must go 503."""
    r = rig(faulty_interval=0.15, faulty_timeout=0.12)
    base = r.baseline()
    window = r.schedule_window()
    since = r.set(Fault(kind=Kind.RESET, flap_every=2))
    seen: list[tuple[int, int, int]] = []

    def three_flaps() -> bool:
        before = r.state().consecutive_failures
        status = status_of(r.port, f"/readyz/{FAULTY}")
        after = r.state().consecutive_failures
        seen.append((before, status, after))
        return r.proxy.counts().resets >= 6 and r.state().consecutive_successes >= 1

    wait_until(throttled(three_flaps), 20, "three flaps of two failed cycles each")
    history = [h for h in r.app.history.recent(FAULTY) if h.started_at > since]
    r.assert_schedule_undisturbed(window)

    runs, run = [], 0
    for entry in history:
        run = 0 if entry.success else run + 1
        if run:
            runs.append(run)
    assert max(runs) == 2, [h.reason for h in history]  # the fault really failed 2 in a row
    assert [s for _, s, _ in seen].count(503) == 0, seen
    assert any(before == 2 and status == 200 for before, status, _ in seen), \
        f"never observed 2 consecutive failures while passing: {seen}"

    # The contrast: three in a row reaches the threshold.
    r.set(Fault(kind=Kind.RESET, flap_every=3))
    assert_goes_down_after_threshold(r, FailureReason.UNAVAILABLE)
    r.set(PASS)
    r.wait_recovered()
    r.assert_clean(base)


# --------------------------------------------------------------------------- bad answers


OVERSIZED = check_health_bytes(isHealthy=True, reasons=["x" * (5 * 1024 * 1024)])
HUGE_REASONS = [f"querynode-{i:06d} is not serving" for i in range(100_000)]

BAD_ANSWERS: dict[str, tuple[bytes, FailureReason, str]] = {
    # Not a protobuf message at all: grpcio can't deserialize it (INTERNAL).
    "garbage": (b"\xff" * 64, FailureReason.ERROR, "INTERNAL: Exception deserializing response"),
    # A Milvus Status code nobody knows.
    "unknown-status": (
        check_health_bytes(status_code=424242, status_reason="the flux capacitor is tired"),
        FailureReason.ERROR,
        "Milvus answered CheckHealth with code 424242: the flux capacitor is tired",
    ),
    # Zero bytes: a valid CheckHealthResponse with every field at its default, i.e. a
    # success Status and isHealthy=false, which is how Milvus says "not healthy".
    "empty": (b"", FailureReason.UNHEALTHY, "Milvus reports it is not healthy: no reason given"),
    # 100,000 reasons, 3.4 MB (under the 4 MiB limit), with isHealthy=false.
    "huge-reasons": (
        check_health_bytes(isHealthy=False, reasons=HUGE_REASONS),
        FailureReason.UNHEALTHY,
        "Milvus reports it is not healthy: querynode-000000 is not serving",
    ),
    # More than grpcio's 4 MiB default receive limit: refused by the client.
    "over-4MiB": (
        OVERSIZED,
        FailureReason.ERROR,
        f"RESOURCE_EXHAUSTED: Stream removed (CLIENT: Received message larger than max "
        f"({len(OVERSIZED)} vs. 4194304))",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_bad_answers_get_a_bounded_reason_and_the_loop_goes_on(case: str,
                                                               daemon: DaemonFactory) -> None:
    answer, reason, detail = BAD_ANSWERS[case]
    with RawMilvusDouble(answer) as double:
        app = daemon(uri=double.address, alias="raw",
                     **{"probe.interval": "200ms", "probe.timeout": "150ms"})
        port = app.port

        def failures() -> float:
            return scrape(port).one("milvus_probe_failures_total", alias="raw",
                                      reason=reason.value)

        wait_until(throttled(lambda: failures() >= 2, 0.05), 15, f"two {reason} failures")
        state = app.health.state("raw")
        assert state is not None and state.last is not None
        last = state.last
        assert (last.reason, last.failed_phase) == (reason, Phase.RPC), last.error
        assert detail in last.error, last.error
        assert len(last.error) <= 2048
        assert len(last.health_reasons) <= 32

        trace = trace_of(port, "raw")
        assert f"result    failure reason={reason} phase=rpc" in trace, trace[:2000]
        assert f"error     {detail}" in trace, trace[:2000]
        assert len(trace) < 16 * 1024, f"the trace is {len(trace)} characters"
        status, _, body = http_get(port, "/probe?alias=raw&format=json")
        assert status == 200 and json.loads(body)["reason"] == reason.value

        # The loop goes on: more cycles, still live, and it recovers when the answers do.
        m = scrape(port)
        attempts = m.one("milvus_probe_attempts_total", alias="raw")
        wait_until(throttled(lambda: scrape(port).one("milvus_probe_attempts_total", alias="raw")
                             >= attempts + 3, 0.05), 15, "three more cycles")
        assert status_of(port, "/healthz") == 200
        double.answer = HEALTHY
        wait_until(throttled(lambda: scrape(port).one("milvus_probe_success", alias="raw") == 1,
                             0.05), 15, "a success once the answers are good again")
        m = wait_until(throttled(lambda: (s := scrape(port)).one(
            "milvus_probe_open_connections", alias="raw") == 0 and s, 0.05), 5,
            "no open connection")
        assert m.one("milvus_probe_connections_opened_total", alias="raw") == m.one(
            "milvus_probe_connections_closed_total", alias="raw")


def test_the_bad_answers_are_what_they_claim() -> None:
    """The fixtures themselves: garbage does not parse; the big ones straddle 4 MiB."""
    from google.protobuf.message import DecodeError

    from probe.milvus import wire_pb2 as wire

    with pytest.raises(DecodeError):
        wire.CheckHealthResponse.FromString(BAD_ANSWERS["garbage"][0])
    assert wire.CheckHealthResponse.FromString(b"") == wire.CheckHealthResponse()
    assert 2 * 1024 * 1024 < len(BAD_ANSWERS["huge-reasons"][0]) < 4 * 1024 * 1024
    assert len(BAD_ANSWERS["over-4MiB"][0]) > 4 * 1024 * 1024


SERVER_ERRORS = [
    # Milvus relays its components' errors in the status details; on a connection that
    # is up and answering, none of them is about *our* connection.
    ("UNKNOWN", "querynode-3: dial tcp 10.0.0.3:21123: connect: connection refused",
     FailureReason.ERROR),
    ("UNAVAILABLE", "querynode-3: dial tcp 10.0.0.3:21123: connect: connection refused",
     FailureReason.UNAVAILABLE),
    ("UNKNOWN", "proxy: dns resolution failed for querynode-3.milvus.svc", FailureReason.ERROR),
    ("UNAVAILABLE", "etcd: tls: failed to verify certificate", FailureReason.UNAVAILABLE),
]


@pytest.mark.parametrize(("code", "details", "reason"), SERVER_ERRORS,
                         ids=[f"{c}-{r}-{d.split(':')[-1].strip()[:18]}"
                              for c, d, r in SERVER_ERRORS])
def test_server_error_text_does_not_pick_a_connection_reason(
        code: str, details: str, reason: FailureReason) -> None:
    """The connection is up (connect succeeded); Milvus fails the call with an error about
    one of its components. `refused`, `dns` or `tls` would say the probe could not reach
    Milvus, which is false: the gRPC code decides."""
    import grpc

    with RawMilvusDouble() as double:
        double.abort = (grpc.StatusCode[code], details)
        result = GrpcProber().run(target(uri=double.address))
    assert result.failed_phase is Phase.RPC and result.facts.grpc_code == code
    assert details in result.error
    assert result.reason is reason, f"{details!r} classified as {result.reason}"


# --------------------------------------------------------------------------- the instruments


def test_request_watch_finds_the_first_request_across_split_reads() -> None:
    """The proxy's HTTP/2 reader: the preface, SETTINGS and WINDOW_UPDATE are skipped, and
    the request's HEADERS frame is found wherever the reads split the stream."""
    from tests.faults import H2_PREFACE, _RequestWatch

    def frame(ftype: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes((ftype, 0)) + stream.to_bytes(4, "big") \
            + payload

    before = H2_PREFACE + frame(4, 0, b"\x00" * 12) + frame(8, 0, b"\x00" * 4) + frame(4, 0, b"")
    stream = before + frame(1, 1, b"\x83\x86") + frame(0, 1, b"\x00" * 5)
    for size in (1, 2, 5, 9, 10, 64, len(stream)):
        watch, offset, found_at = _RequestWatch(), 0, None
        while offset < len(stream) and found_at is None:
            chunk = stream[offset:offset + size]
            at = watch.feed(chunk)
            if at is not None:
                found_at = offset + at
            offset += size
        assert found_at is not None and watch.found, size
        # Where the HEADERS frame begins or, its 9-byte header split across reads, where
        # the read that completed the header begins.
        last_header_byte = len(before) + 8
        expected = max(len(before), last_header_byte // size * size)
        assert found_at == expected, (size, found_at, expected)


def test_flapping_alternates_good_and_faulty_connections() -> None:
    fault = Fault(kind=Kind.RESET, flap_every=2)
    kinds = [fault.for_connection(i).kind for i in range(8)]
    assert kinds == [Kind.PASS, Kind.PASS, Kind.RESET, Kind.RESET] * 2
    assert fault.for_connection(2).flap_every == 0
