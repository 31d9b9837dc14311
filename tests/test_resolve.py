"""One deadline from resolve to close, DNS included; every resolved address tried, in grpc's order.

The rows run the real probe (`python -m probe check|serve`) in a network namespace whose
resolv.conf names a DNS server of the test's own (kit/dns.py, shared/REFERENCE.md §8),
with Kubernetes' search domains and ndots:5. Milvus is the session's milvus-lite, reached
through a counting proxy that listens inside the namespace on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.dns import DnsResponder
from kit.proxy import CountingProxy
from kit.scrape import Scrape
from kit.wait import wait_until
from probe.probers import Failed
from probe.probers.http import dial
from probe.resolver import Resolved, ResolveError, Resolver, dial_order
from probe.result import Dial, FailureReason
from tests.standalone import Agent, Netns, daemon, require_netns
from tests.support import MilvusLite, free_port

RESOLV_CONF = (
    "nameserver 127.0.0.53\n"
    "search default.svc.cluster.local svc.cluster.local cluster.local\n"
    "options ndots:5 timeout:2 attempts:2\n"
)
"""Kubernetes' resolv.conf, with glibc's timeout made 2 s: a name nobody answers blocks
getaddrinfo for 8 s (`getent ahosts dead.test` in the namespace, measured)."""
DEAD = "dead.test"
"""A name the resolver never answers."""
DUAL = "milvus.test"
"""AAAA ::1 (nothing listening there) and A 127.0.0.1 (Milvus)."""
REFUSING = "refusing.test"
"""A 127.0.0.1 only, on a port nothing listens on."""
SLACK = 0.15
"""What a result may take past its deadline (closing, building the result)."""


@dataclass
class Namespace:
    ns: Netns
    dns: DnsResponder
    proxy: CountingProxy
    """127.0.0.1:port in the namespace → milvus-lite."""

    @property
    def port(self) -> int:
        return self.proxy.port

    def check(self, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        """(seconds the process took, the process) of `probe check ARGS` in the namespace."""
        began = time.monotonic()
        done = self.ns.python("-m", "probe", "check", *args, timeout=60)
        return time.monotonic() - began, done


@pytest.fixture(scope="module")
def space(milvus: MilvusLite) -> Iterator[Namespace]:
    require_netns()
    ns = Netns.create("resolve", etc={"resolv.conf": RESOLV_CONF})
    try:
        udp = ns.new_socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.53", 53))
        listener = ns.new_socket()
        listener.bind(("127.0.0.1", 0))
        records = {DUAL: ["::1", "127.0.0.1"], REFUSING: ["127.0.0.1"]}
        with DnsResponder(udp, records, silent=[DEAD]) as dns:
            proxy = CountingProxy(("127.0.0.1", milvus.port), listener=listener)
            try:
                yield Namespace(ns, dns, proxy)
            finally:
                proxy.stop()
    finally:
        ns.delete()


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.stdout.strip(), done.stderr
    body: dict[str, object] = json.loads(done.stdout)
    return body


# --------------------------------------------------------------------------- the pool


class _Getaddrinfo:
    """A getaddrinfo that blocks until released: a test double, since the resolver this
    process uses (the machine's) can't be made to hang for one test."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[bytes | str] = []
        self._lock = threading.Lock()

    def __call__(self, host: bytes | str, *args: object, **kwargs: object) -> list[tuple]:  # type: ignore[type-arg]
        with self._lock:
            self.calls.append(host)
        self.release.wait(30)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0))]


def test_the_pool_coalesces_names_fails_fast_when_full_and_lets_its_threads_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck = _Getaddrinfo()
    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    resolver = Resolver(threads=2, queue_limit=2, idle=0.05)

    # An IP address needs no lookup and starts no thread.
    assert resolver.resolve("10.1.2.3", 19530, 1.0).addresses == ("10.1.2.3",)
    assert resolver.threads() == 0

    # Lookups of one name are one lookup, however many cycles wait for it.
    errors: list[ResolveError] = []

    def ask(name: str, timeout: float) -> None:
        try:
            resolver.resolve(name, 19530, timeout)
        except ResolveError as exc:
            errors.append(exc)

    waiters = [threading.Thread(target=ask, args=("a.test", 0.2)) for _ in range(5)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    assert stuck.calls == [b"a.test"]
    assert resolver.threads() == 1
    assert len(errors) == 5 and {e.reason for e in errors} == {FailureReason.TIMEOUT}
    assert "the resolver did not answer for 'a.test' within the 0.2s timeout" in str(errors[0])

    # Two threads busy, two names queued: the next name fails at once, saying why.
    errors.clear()
    ask("b.test", 0.05)  # the second thread
    wait_until(lambda: len(stuck.calls) == 2, 5, "the second lookup to start")
    ask("c.test", 0.05)
    ask("d.test", 0.05)
    assert [e.reason for e in errors] == [FailureReason.TIMEOUT] * 3
    assert "still waits for a free thread" in str(errors[-1])
    with pytest.raises(ResolveError) as full:
        resolver.resolve("e.test", 19530, 30.0)  # fails now, not in 30 s
    assert full.value.reason is FailureReason.DNS
    assert "2 names already wait for the resolver (2 lookups running" in str(full.value)
    assert resolver.threads() == 2

    # The resolver answers: queued names are looked up, then the idle threads end.
    stuck.release.set()
    assert resolver.resolve("a.test", 19530, 5.0).addresses == ("10.0.0.1",)
    wait_until(lambda: resolver.threads() == 0, 5, "idle resolver threads to end")
    assert sorted(set(stuck.calls)) == [b"a.test", b"b.test", b"c.test", b"d.test"]


def test_dial_order_interleaves_families_as_grpc_pick_first_does() -> None:
    v6, v4 = socket.AF_INET6, socket.AF_INET
    found = [(v6, "::1"), (v6, "::2"), (v6, "::1"), (v4, "10.0.0.1"), (v4, "10.0.0.2")]
    assert dial_order(found) == ("::1", "10.0.0.1", "::2", "10.0.0.2")
    assert dial_order([(v4, "10.0.0.1"), (v6, "::1")]) == ("10.0.0.1", "::1")


def test_dial_gives_a_silent_first_address_250ms_then_races_the_next() -> None:
    """127.0.0.2's listener never accepts and its backlog is full, so its SYNs go
    unanswered (a black hole made in user space); 127.0.0.1 accepts."""
    hole = socket.socket()
    hole.bind(("127.0.0.2", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: further SYNs are dropped
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.2", port))
        fillers.append(filler)
    live = socket.socket()
    live.bind(("127.0.0.1", port))
    live.listen(8)
    try:
        resolved = Resolved("two.test", port, ("127.0.0.2", "127.0.0.1"))
        began = time.perf_counter()
        sock, dials = dial(resolved, began + 2.0, time.perf_counter, "connect")
        spent = time.perf_counter() - began
        sock.close()
        assert dials == (
            Dial(f"127.0.0.2:{port}", "abandoned"),
            Dial(f"127.0.0.1:{port}", "ready"),
        )
        assert 0.25 <= spent < 0.25 + SLACK, spent

        # Nothing listens at all: every address refused, at once, each one named.
        live.close()
        with pytest.raises(Failed) as refused:
            dial(Resolved("x", free_port(), ("::1", "127.0.0.1")), time.perf_counter() + 2,
                 time.perf_counter, "connect")  # fmt: skip
        assert refused.value.reason is FailureReason.REFUSED
        assert [d.outcome for d in refused.value.dials] == ["refused", "refused"]
        assert "every address failed: [::1]:" in refused.value.error
    finally:
        for s in (hole, live, *fillers):
            s.close()


# --------------------------------------------------------------------------- the rows


def test_a_resolver_that_never_answers_ends_check_at_its_deadline(space: Namespace) -> None:
    took, done = space.check("--uri", f"{DEAD}:19530", "--timeout", "2s", "--output", "json")
    body = _json(done)
    assert (body["reason"], body["failed_phase"]) == ("timeout", "resolve"), body
    assert "the resolver did not answer for 'dead.test' within the 2s timeout" in str(body["error"])
    duration = float(body["duration_seconds"])  # type: ignore[arg-type]
    assert 2.0 <= duration <= 2.0 + SLACK, duration
    # The process too: start-up (~0.5 s of imports here) plus the deadline, not glibc's 8 s.
    assert took < duration + 3.0, took
    assert done.returncode != 0
    print(f"dead resolver, timeout 2 s: result in {duration:.2f} s, process {took:.2f} s")


def test_a_resolver_that_never_answers_keeps_the_daemon_on_schedule(
    space: Namespace, tmp_path: Path
) -> None:
    """Interval 1 s, timeout 500 ms, getaddrinfo stuck 8 s per lookup: every cycle ends
    at its deadline, no slot is missed, and the cycles share one stuck lookup."""
    agent = Agent(space.ns)
    try:
        with daemon(space.ns, agent, tmp_path / "daemon.log", free_port(),
                    "--uri", f"{DEAD}:19530", "--probe.interval", "1s",
                    "--probe.timeout", "500ms") as d:  # fmt: skip
            durations: dict[str, float] = {}

            def cycles() -> bool:
                (row,) = d.get_json("/api/v1/targets")
                if row["last_trace_id"]:
                    durations[row["last_trace_id"]] = row["last_duration_seconds"]
                return len(durations) >= 5

            wait_until(cycles, 30, "five cycles seen")
            m = d.scrape()
            threads = d.threads()
        assert all(0.5 <= x <= 0.5 + SLACK for x in durations.values()), durations
        attempts = m.total("milvus_probe_attempts_total")
        assert m.total("milvus_probe_failures_total", reason="timeout") == attempts
        assert m.total("milvus_probe_missed_cycles_total") == 0
        assert m.total("milvus_probe_connections_opened_total") == 0  # nothing to dial
        # One lookup of the name was running all along; the cycles waited on it.
        assert sum(1 for name in threads if name.startswith("resolver-")) == 1, threads
        # ... and it did not hold up shutdown.
        (stopped,) = [x for x in d.log_path.read_text().splitlines() if "probe stopped" in x]
        assert "all_cycles_finished=True" in stopped, stopped
        print(f"dead resolver, daemon timeout 500 ms: cycles took {sorted(durations.values())}")
    finally:
        agent.close()


def test_a_dual_stack_name_with_a_dead_first_address_succeeds_on_the_second(
    space: Namespace, tmp_path: Path
) -> None:
    port = space.port
    before = space.proxy.counts()
    took, done = space.check("--uri", f"{DUAL}:{port}", "--timeout", "2s", "--output", "json")
    body = _json(done)
    assert body["success"] is True, body
    assert body["addresses"] == ["::1", "127.0.0.1"]  # grpc's order: ::1 first
    assert body["dials"] == [
        {"address": f"[::1]:{port}", "outcome": "refused"},
        {"address": f"127.0.0.1:{port}", "outcome": "ready"},
    ]
    print(f"dual stack, ::1 dead: success in {float(body['duration_seconds']):.3f} s")  # type: ignore[arg-type]
    _, verbose = space.check("--uri", f"{DUAL}:{port}", "-v")
    assert f"[::1]:{port} refused, 127.0.0.1:{port} ready" in verbose.stdout, verbose.stdout
    print(verbose.stdout)
    # At the server: one connection per check, each closed.
    wait_until(lambda: space.proxy.counts() == (before[0] + 2, before[1] + 2), 5,
               "the server to see two connections closed")  # fmt: skip

    agent = Agent(space.ns)
    try:
        start = space.proxy.counts()
        with daemon(space.ns, agent, tmp_path / "daemon.log", free_port(),
                    "--uri", f"{DUAL}:{port}", "--probe.interval", "300ms",
                    "--probe.timeout", "250ms") as d:  # fmt: skip

            def between_cycles() -> tuple[tuple[int, int], Scrape] | None:
                """Counts on both sides read with no connection open on either side."""
                before, m, after = space.proxy.counts(), d.scrape(), space.proxy.counts()
                quiet = before == after and before[0] == before[1]
                quiet = quiet and m.total("milvus_probe_open_connections") == 0
                return (after, m) if quiet and m.total("milvus_probe_attempts_total") >= 5 else None

            (accepted, _), m = wait_until(between_cycles, 30, "five cycles, none in flight")
        attempts = m.total("milvus_probe_attempts_total")
        assert m.total("milvus_probe_failures_total") == 0
        opened = m.total("milvus_probe_connections_opened_total")
        assert opened == m.total("milvus_probe_connections_closed_total")
        # Two channels per cycle (::1 refused, then 127.0.0.1), one connection at the server.
        assert opened == 2 * attempts
        assert accepted - start[0] == attempts, (accepted, start, attempts)
    finally:
        agent.close()


def test_a_silent_first_address_gets_250ms_then_the_next_answers(
    space: Namespace, milvus: MilvusLite
) -> None:
    """[::1]'s listener never accepts and its backlog is full, so its SYNs go unanswered
    (a black hole made in user space); 127.0.0.1 is Milvus. As grpc's pick_first: the
    second address is dialled 250 ms after the first, beside it, and wins."""
    listener = space.ns.new_socket()
    listener.bind(("127.0.0.1", 0))
    proxy = CountingProxy(("127.0.0.1", milvus.port), listener=listener)
    port = proxy.port
    hole = space.ns.new_socket(socket.AF_INET6)
    hole.bind(("::1", port))
    hole.listen(0)
    fillers = []
    for _ in range(4):
        filler = space.ns.new_socket(socket.AF_INET6)
        filler.setblocking(False)
        filler.connect_ex(("::1", port))
        fillers.append(filler)
    try:
        _, done = space.check("--uri", f"{DUAL}:{port}", "--timeout", "2s", "--output", "json")
        body = _json(done)
        assert body["success"] is True, body
        assert body["dials"] == [
            {"address": f"[::1]:{port}", "outcome": "abandoned"},
            {"address": f"127.0.0.1:{port}", "outcome": "ready"},
        ]
        connect = body["phases"]["connect"]  # type: ignore[index]
        assert 0.25 <= connect < 0.25 + SLACK, connect
        wait_until(lambda: proxy.counts() == (1, 1), 5, "one connection, closed, at the server")
        print(f"dual stack, ::1 silent: success, connect {connect:.3f} s")
    finally:
        proxy.stop()
        for sock in (hole, *fillers):
            sock.close()


def test_a_name_whose_only_address_refuses_is_refused_fast(space: Namespace) -> None:
    with space.ns.new_socket() as unused:  # a port free in the namespace, closed again
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    took, done = space.check("--uri", f"{REFUSING}:{port}", "--timeout", "2s", "--output", "json")
    body = _json(done)
    assert (body["reason"], body["failed_phase"]) == ("refused", "connect"), body
    assert body["dials"] == [{"address": f"127.0.0.1:{port}", "outcome": "refused"}]
    duration = float(body["duration_seconds"])  # type: ignore[arg-type]
    assert duration < 0.5, duration  # at once, not at the 2 s deadline
    print(f"only address refuses, timeout 2 s: result in {duration:.3f} s, reason refused")


def test_grpcio_dials_in_the_order_the_probe_reports(space: Namespace) -> None:
    """What the order is taken from: grpcio itself (its c-ares resolver, pick_first) in the
    namespace, with a listener on both addresses that never answers: [::1] first, then
    127.0.0.1 after grpc's 250 ms Connection Attempt Delay."""
    v6 = space.ns.new_socket(socket.AF_INET6)
    v6.bind(("::1", 0))
    port = v6.getsockname()[1]
    v4 = space.ns.new_socket()
    v4.bind(("127.0.0.1", port))
    seen: list[tuple[float, str]] = []

    def accept(sock: socket.socket, name: str) -> None:
        kept = []
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                break
            seen.append((time.monotonic(), name))
            kept.append(conn)
        for conn in kept:
            conn.close()

    threads = [threading.Thread(target=accept, args=(s, n)) for s, n in ((v6, "::1"), (v4, "v4"))]
    for sock in (v6, v4):
        sock.listen(8)
    for thread in threads:
        thread.start()
    code = (
        "import grpc\n"
        f"ch = grpc.insecure_channel('dns:///{DUAL}:{port}')\n"
        "try:\n    grpc.channel_ready_future(ch).result(timeout=1.0)\n"
        "except grpc.FutureTimeoutError:\n    pass\nch.close()\n"
    )
    try:
        done = space.ns.run(sys.executable, "-c", code)
        assert done.returncode == 0, done.stderr
    finally:
        for sock in (v6, v4):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(5)
    assert [name for _, name in seen[:2]] == ["::1", "v4"], seen
    gap = seen[1][0] - seen[0][0]
    assert 0.2 <= gap < 0.4, gap
