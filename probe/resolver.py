"""Name resolution inside the cycle's deadline, and the order a client dials the answers in.

glibc's `getaddrinfo` takes no timeout and can't be interrupted: a resolver that never
answers holds the caller for `timeout × attempts`, times the search domains under
Kubernetes' `ndots:5` (6.4 s for a 2 s cycle, measured). So lookups run on a small pool of
daemon threads of their own and a caller waits for its answer no longer than the time its
cycle has left:

* at most `threads` lookups run at once, started only when a lookup needs one (a process
  whose targets are IP addresses never starts one) and ended after `idle` seconds unused;
* lookups of one name are coalesced: a cycle that finds the name already being looked up
  waits for that lookup, so a dead resolver holds one thread per name, not one per cycle;
* at most `queue_limit` names wait for a thread; past that a lookup fails at once and
  says so, instead of queueing behind lookups that may never end;
* a lookup that ends after its caller gave up is dropped: nothing was opened for it, and
  its thread, a daemon, never holds up shutdown.

Why a pool around getaddrinfo and not a DNS client with a timeout (c-ares, dnspython):
getaddrinfo is the platform's resolver — /etc/hosts, nsswitch, search domains and ndots,
gai.conf's RFC 6724 sorting — the one every client of the target consults, and it needs no
new dependency.

The order: grpcio's own client (its c-ares resolver, then pick_first) sorts a name's
addresses per RFC 6724, as getaddrinfo does, and then interleaves the families per RFC 8305
§4 (grpc's pick_first.cc), dialling the next address when one fails or after 250 ms
(Happy Eyeballs). Tried in a network namespace with a resolver of our own answering AAAA
::1 and A 127.0.0.1: getaddrinfo lists ::1 first; grpcio dials [::1] at once and 127.0.0.1
250 ms later (tests/test_resolve.py). `Resolved.addresses` is that order.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
from dataclasses import dataclass, field

from probe.result import FailureReason

logger = logging.getLogger(__name__)

ATTEMPT_DELAY = 0.25
"""Seconds an address gets before the next one is dialled beside it (grpc's pick_first
Connection Attempt Delay, RFC 8305's recommended 250 ms)."""


class ResolveError(Exception):
    """The name did not resolve: `reason` is dns (no such name, or the resolver is
    overwhelmed) or timeout (no answer within the caller's time)."""

    def __init__(self, reason: FailureReason, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Resolved:
    """The addresses `host` resolved to, in the order a client dials them."""

    host: str
    port: int
    addresses: tuple[str, ...]

    def endpoint(self, address: str) -> str:
        """`127.0.0.1:19530` or `[::1]:19530`."""
        return f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"

    def grpc_target(self, address: str) -> str:
        """grpcio's name for exactly this address (`ipv4:…` or `ipv6:[…]:port`)."""
        return ("ipv6:" if ":" in address else "ipv4:") + self.endpoint(address)


def dial_order(addresses: list[tuple[int, str]]) -> tuple[str, ...]:
    """(family, address) pairs in resolver order → distinct addresses, families interleaved
    starting with the first's (RFC 8305 §4, as grpc's pick_first does)."""
    by_family: dict[int, list[str]] = {}
    for family, address in addresses:
        found = by_family.setdefault(family, [])
        if address not in found:
            found.append(address)
    queues = [collections.deque(found) for found in by_family.values()]
    order: list[str] = []
    while queues:
        for queue in list(queues):
            order.append(queue.popleft())
            if not queue:
                queues.remove(queue)
    return tuple(order)


def _literal(host: str) -> str | None:
    """`host` itself when it is an IP address (no lookup needed), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return host
    return None


@dataclass(eq=False)
class _Lookup:
    """One getaddrinfo call that any number of callers wait for."""

    host: str
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    addresses: tuple[str, ...] = ()
    error: str = ""


class Resolver:
    """getaddrinfo on at most `threads` daemon threads; callers wait at most their timeout."""

    def __init__(self, threads: int = 4, queue_limit: int = 64, idle: float = 60.0) -> None:
        self.max_threads, self.queue_limit, self.idle = threads, queue_limit, idle
        self._cond = threading.Condition()
        self._queue: collections.deque[_Lookup] = collections.deque()
        self._running: dict[str, _Lookup] = {}
        """Every lookup queued or running, by name: a second caller joins it."""
        self._threads = 0
        self._waiting = 0
        """Threads idle, waiting for a lookup."""
        self._started = 0

    def threads(self) -> int:
        """Threads alive now."""
        with self._cond:
            return self._threads

    def resolve(self, host: str, port: int, timeout: float) -> Resolved:
        """`host`'s addresses in dial order, within `timeout` seconds. Raises ResolveError."""
        literal = _literal(host)
        if literal is not None:
            return Resolved(host, port, (literal,))
        lookup = self._submit(host)
        if not lookup.done.wait(max(timeout, 0.0)):
            waited = "" if lookup.started else " (the lookup still waits for a free thread)"
            raise ResolveError(
                FailureReason.TIMEOUT,
                f"the resolver did not answer for {host!r} within the {timeout:.3g}s timeout"
                + waited,
            )
        if lookup.error:
            raise ResolveError(FailureReason.DNS, f"cannot resolve {host!r}: {lookup.error}")
        return Resolved(host, port, lookup.addresses)

    def _submit(self, host: str) -> _Lookup:
        with self._cond:
            lookup = self._running.get(host)
            if lookup is not None:
                return lookup
            if len(self._queue) >= self.queue_limit:
                raise ResolveError(
                    FailureReason.DNS,
                    f"not resolving {host!r}: {len(self._queue)} names already wait for the "
                    f"resolver ({self._threads} lookups running, none answered yet)",
                )
            lookup = self._running[host] = _Lookup(host)
            self._queue.append(lookup)
            if self._waiting < len(self._queue) and self._threads < self.max_threads:
                self._threads += 1
                self._started += 1
                threading.Thread(
                    target=self._work, name=f"resolver-{self._started}", daemon=True
                ).start()
            else:
                self._cond.notify()
            return lookup

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._waiting += 1
                    woken = self._cond.wait(self.idle)
                    self._waiting -= 1
                    if not woken and not self._queue:
                        self._threads -= 1
                        return
                lookup = self._queue.popleft()
                lookup.started = True
            _look_up(lookup)
            with self._cond:
                if self._running.get(lookup.host) is lookup:
                    del self._running[lookup.host]
            lookup.done.set()


def _look_up(lookup: _Lookup) -> None:
    host = lookup.host
    try:
        # An ASCII name goes as bytes: a str makes CPython load the idna codec (0.2 MiB of
        # RSS for the life of the process) to encode it.
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        lookup.error = str(exc)
        return
    found = [(int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    lookup.addresses = dial_order(found)
    if not lookup.addresses:
        lookup.error = "no addresses"


RESOLVER = Resolver()
"""The process's one resolver pool."""


def resolve(host: str, port: int, timeout: float) -> Resolved:
    """`RESOLVER.resolve`: `host`'s addresses in dial order within `timeout` seconds."""
    return RESOLVER.resolve(host, port, timeout)
