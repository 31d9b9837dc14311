"""Fault injection for reliability tests: a TCP proxy with switchable faults, a gRPC double
that answers raw bytes, and the instruments the tests read (threads, fds, RSS, quantiles).

`FaultProxy` sits between the probe and a *real* Milvus (milvus-lite) and does to each
connection what its current `Fault` says: added latency in either direction (with
jitter), a held-back answer, a slow drip of the answer, a reset in the middle of the RPC,
a connection accepted and never answered, an RPC that is never answered; it can stop
listening (connections are refused) and listen again on the same port, and it can flap:
K good connections, K faulty ones, and so on. It counts what it accepted and closed.
It can also forget the flows it relays (`drop_established`: what a load balancer's idle
timeout or a full conntrack table does — nothing is relayed on them any more, and nothing
is closed) and send new connections to another server (`move`).

The fault in force when a connection is *accepted* governs that whole connection (the
probe opens a fresh connection every cycle, so a switch takes effect on the next cycle
and never half-way through one).

Delays are the relay waiting (in select) for a chunk's due time: the injected fault
itself, never synchronisation. The one `time.sleep` retries a bind on a port a closing
socket still holds.
"""

from __future__ import annotations

import contextlib
import enum
import random
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, replace
from typing import Any

import grpc

from probe.milvus import wire_pb2 as wire

SERVICE = "milvus.proto.milvus.MilvusService"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_HEADERS = 0x1


class Kind(enum.Enum):
    PASS = "pass"
    """Relay both ways (subject to the latency/drip settings of the Fault)."""
    RESET = "reset"
    """Relay the HTTP/2 handshake; when the first request (a HEADERS frame on a stream)
    arrives, reset the client connection (SO_LINGER 0 + close: a TCP RST)."""
    BLACKHOLE = "blackhole"
    """Accept the connection and never send a byte (reads and discards what comes)."""
    STALL = "stall"
    """Relay the handshake, then never answer: from the first request on, nothing is
    relayed either way, until the client gives up."""


@dataclass(frozen=True)
class Fault:
    """What the proxy does to a connection. The default relays faithfully."""

    kind: Kind = Kind.PASS
    to_client_delay: float = 0.0
    """Every server → client chunk is released this long after it arrived."""
    to_server_delay: float = 0.0
    """Every client → server chunk is released this long after it arrived."""
    jitter: float = 0.0
    """Each chunk gets a further uniform(0, jitter) delay (order is kept, like TCP)."""
    response_delay: float = 0.0
    """Server → client bytes arriving after the first request are held until
    request arrival + response_delay: the first response byte comes this late."""
    drip: float = 0.0
    """Seconds per byte: server → client bytes are released one at a time, this far apart."""
    drip_after_request: bool = False
    """Drip only what the server sends after the first request (the handshake is fast)."""
    flap_every: int = 0
    """> 0: connections alternate, `flap_every` relayed faithfully (Kind.PASS, no delays)
    and then `flap_every` with this fault, counted from when the fault was set."""

    def for_connection(self, index: int) -> Fault:
        """The fault for the `index`-th connection accepted since this one was set."""
        if self.flap_every <= 0:
            return self
        if (index // self.flap_every) % 2 == 0:
            return PASS
        return replace(self, flap_every=0)


PASS = Fault()


@dataclass(frozen=True)
class ProxyCounts:
    accepted: int
    closed: int
    """Connections fully torn down (both sockets closed), whoever ended them."""
    resets: int
    """Connections the proxy reset on purpose (Kind.RESET)."""
    requests: int
    """Connections on which a request (HTTP/2 HEADERS on a stream) was seen."""

    @property
    def active(self) -> int:
        return self.accepted - self.closed


class _RequestWatch:
    """Finds where the client's first request starts in its HTTP/2 byte stream.

    Skips the connection preface and every frame before the first HEADERS frame on a
    stream (SETTINGS, SETTINGS ack, WINDOW_UPDATE, PING …); frame headers may be split
    across reads.
    """

    def __init__(self) -> None:
        self._preface = len(H2_PREFACE)
        self._head = b""
        self._skip = 0
        self.found = False

    def feed(self, data: bytes) -> int | None:
        """Offset in `data` where the request's HEADERS frame begins (0 when its frame
        header began in an earlier read), or None if not in this chunk."""
        i, n = 0, len(data)
        while i < n and not self.found:
            if self._preface:
                take = min(self._preface, n - i)
                self._preface -= take
                i += take
            elif self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
            else:
                start = i - len(self._head)
                piece = data[i : i + 9 - len(self._head)]
                self._head += piece
                i += len(piece)
                if len(self._head) < 9:
                    continue
                length = int.from_bytes(self._head[:3], "big")
                ftype = self._head[3]
                stream = int.from_bytes(self._head[5:9], "big") & 0x7FFFFFFF
                self._head = b""
                if ftype == _H2_HEADERS and stream:
                    self.found = True
                    return max(start, 0)
                self._skip = length
        return None


def _listen(port: int) -> socket.socket:
    """A listener on 127.0.0.1:port (0: any); retries briefly if the port is still held."""
    last: OSError | None = None
    for _ in range(200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(256)
            return sock
        except OSError as exc:
            sock.close()
            if port == 0:
                raise
            last = exc
            time.sleep(0.01)  # the port is briefly held by a closing socket
    assert last is not None
    raise last


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    """127.0.0.1:<port> → `upstream`, doing to each connection what `fault` says.

    `set(fault)` switches the fault for connections accepted from then on; `refuse()`
    closes the listener (connections are refused) and `recover()` listens again on the
    same port. `counts()` says how many connections were accepted, closed, reset.
    Threads: one accepting, one per live connection; `stop()` ends them all.
    """

    def __init__(self, upstream: tuple[str, int], fault: Fault = PASS, seed: int = 1) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._fault = fault
        self._fault_index = 0
        self._accepted = self._closed = self._resets = self._requests = 0
        self._live: dict[threading.Thread, tuple[socket.socket, ...]] = {}
        self._dropped_below = 0
        """Connections accepted before this index are black-holed (`drop_established`)."""
        self._dropped = 0
        self._rng = random.Random(seed)
        self._stopped = False
        self._listener: socket.socket | None = _listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = self._start_acceptor(self._listener)

    # ----------------------------------------------------------- control

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def fault(self) -> Fault:
        with self._lock:
            return self._fault

    def set(self, fault: Fault) -> None:
        """Apply `fault` to every connection accepted from now on (flapping restarts)."""
        with self._lock:
            self._fault, self._fault_index = fault, 0

    def drop_established(self) -> int:
        """Black-hole every connection accepted so far, as a middlebox that forgot the flow
        does: from now on nothing they send is relayed either way, and nothing is closed
        (no FIN, no RST); connections accepted later are relayed as the fault says. How
        many live connections were dropped."""
        with self._lock:
            self._dropped_below = self._accepted
            live = len(self._live)
            self._dropped += live
            return live

    def move(self, upstream: tuple[str, int]) -> None:
        """Relay connections accepted from now on to `upstream` (the address moved);
        established ones stay with the server they reached."""
        with self._lock:
            self.upstream = upstream

    def counts(self) -> ProxyCounts:
        with self._lock:
            return ProxyCounts(self._accepted, self._closed, self._resets, self._requests)

    @property
    def listening(self) -> bool:
        with self._lock:
            return self._listener is not None

    def refuse(self) -> None:
        """Stop listening: new connections are refused (RST) until `recover()`."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is None:
            return
        _shutdown(listener)  # wakes the blocked accept() (EINVAL) on Linux
        self._acceptor.join()
        listener.close()

    def recover(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            if self._listener is not None or self._stopped:
                return
        listener = _listen(self.port)
        with self._lock:
            self._listener = listener
        self._acceptor = self._start_acceptor(listener)

    def stop(self) -> None:
        """Stop listening and tear every connection down; returns when all threads ended."""
        with self._lock:
            self._stopped = True
        self.refuse()
        with self._lock:
            live = dict(self._live)
        for sockets in live.values():
            for sock in sockets:
                _shutdown(sock)
        for thread in live:
            thread.join()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- accepting

    def _start_acceptor(self, listener: socket.socket) -> threading.Thread:
        thread = threading.Thread(
            target=self._accept, args=(listener,), name="fault-proxy-accept", daemon=True
        )
        thread.start()
        return thread

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # shut down by refuse()/stop()
            with self._lock:
                if self._stopped or self._listener is not listener:
                    client.close()
                    return
                fault = self._fault.for_connection(self._fault_index)
                self._fault_index += 1
                index = self._accepted
                self._accepted += 1
                upstream = self.upstream
                thread = threading.Thread(
                    target=self._serve,
                    args=(client, fault, index, upstream),
                    name="fault-proxy-conn",
                    daemon=True,
                )
                self._live[thread] = (client,)
            thread.start()

    def _serve(
        self, client: socket.socket, fault: Fault, index: int, to: tuple[str, int]
    ) -> None:
        me = threading.current_thread()
        upstream: socket.socket | None = None
        try:
            if fault.kind is Kind.BLACKHOLE:
                with contextlib.suppress(OSError):
                    while client.recv(65536):
                        pass  # never answer; end when the client gives up
                return
            try:
                upstream = socket.create_connection(to, timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._live[me] = (client, upstream)
                stopped = self._stopped
            if not stopped:
                self._relay(client, upstream, fault, index)
        finally:
            with contextlib.suppress(OSError):
                client.close()
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._live.pop(me, None)
                self._closed += 1

    # ----------------------------------------------------------- relaying

    def _delay(self, base: float, jitter: float) -> float:
        if not jitter:
            return base
        with self._lock:
            return base + self._rng.uniform(0, jitter)

    def _relay(
        self, client: socket.socket, upstream: socket.socket, fault: Fault, index: int
    ) -> None:
        watch = _RequestWatch()
        request_at: float | None = None
        stalled = False
        to_client: deque[tuple[float, bytes]] = deque()
        to_server: deque[tuple[float, bytes]] = deque()
        last_client = last_server = 0.0  # due time of the last queued chunk, per direction
        client_eof = server_eof = False
        client_shut = server_shut = False
        while True:
            dropped = index < self._dropped_below  # an int read: atomic under the GIL
            if dropped:
                to_client.clear()
                to_server.clear()
            now = time.monotonic()
            for queue, dst in ((to_client, client), (to_server, upstream)):
                while queue and queue[0][0] <= now:
                    try:
                        dst.sendall(queue.popleft()[1])
                    except OSError:
                        return  # the receiving side is gone: tear down
            if client_eof and not to_server and not server_shut:
                server_shut = True
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
            if server_eof and not stalled and not dropped and not to_client and not client_shut:
                client_shut = True
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)
            if client_eof and (server_eof or stalled) and not to_client and not to_server:
                return
            readers = []
            if not client_eof:
                readers.append(client)
            if not server_eof:
                readers.append(upstream)
            dues = [q[0][0] for q in (to_client, to_server) if q]
            timeout = max(min(dues) - time.monotonic(), 0.0) if dues else None
            if not readers and timeout is None:
                return
            readable, _, _ = select.select(readers, [], [], timeout)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return  # reset by a peer (or by stop()): tear down
                now = time.monotonic()
                if data and index < self._dropped_below:
                    continue  # a forgotten flow: what arrives goes nowhere
                if sock is client:
                    if not data:
                        client_eof = True
                        continue
                    if stalled:
                        continue
                    if not watch.found:
                        offset = watch.feed(data)
                        if offset is not None:
                            request_at = now
                            with self._lock:
                                self._requests += 1
                            if fault.kind is Kind.RESET:
                                self._reset(client)
                                return
                            if fault.kind is Kind.STALL:
                                # Nothing more is relayed either way; the server is let go.
                                stalled, server_eof = True, True
                                to_client.clear()
                                to_server.clear()
                                _shutdown(upstream)
                                continue
                    due = max(now + self._delay(fault.to_server_delay, fault.jitter), last_server)
                    last_server = due
                    to_server.append((due, data))
                else:
                    if not data:
                        server_eof = True
                        continue
                    if stalled:
                        continue
                    if fault.drip and (not fault.drip_after_request or request_at is not None):
                        for byte in data:
                            last_client = max(now, last_client) + fault.drip
                            to_client.append((last_client, bytes((byte,))))
                        continue
                    due = now + self._delay(fault.to_client_delay, fault.jitter)
                    if fault.response_delay and request_at is not None:
                        due = max(due, request_at + fault.response_delay)
                    due = max(due, last_client)
                    last_client = due
                    to_client.append((due, data))

    def _reset(self, client: socket.socket) -> None:
        """Abort the client connection with a TCP RST (linger on, timeout 0, close)."""
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with self._lock:
            self._resets += 1


# --------------------------------------------------------------------------- raw gRPC double


def check_health_bytes(**fields: Any) -> bytes:
    """A serialized CheckHealthResponse; `status_code=` sets status.code."""
    code = fields.pop("status_code", 0)
    reason = fields.pop("status_reason", "")
    message = wire.CheckHealthResponse(status=wire.Status(code=code, reason=reason), **fields)
    return bytes(message.SerializeToString())


HEALTHY = check_health_bytes(isHealthy=True)


class RawMilvusDouble:
    """A gRPC server whose CheckHealth answers `answer`, raw bytes sent as they are
    (or, when `abort` is set, fails with that gRPC status and details).

    No serializer stands between the handler and the wire (the handler's return value
    is the message body), so it can answer what no protobuf library would produce:
    garbage, nothing at all, or more than a client accepts. Connect and GetVersion answer
    like a healthy Milvus. The server sends messages of any size.
    """

    def __init__(self, answer: bytes = HEALTHY) -> None:
        self.answer = answer
        self.abort: tuple[grpc.StatusCode, str] | None = None
        """When set, CheckHealth fails with this gRPC status and details instead."""
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}
        self._pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="raw-double")
        self.server = grpc.server(
            self._pool,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        handlers = {
            "CheckHealth": grpc.unary_unary_rpc_method_handler(self._check_health),
            "GetVersion": grpc.unary_unary_rpc_method_handler(self._get_version),
            "Connect": grpc.unary_unary_rpc_method_handler(self._connect),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, method: str) -> int:
        with self._lock:
            return self._calls.get(method, 0)

    def stop(self) -> None:
        self.server.stop(0).wait()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> RawMilvusDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _seen(self, method: str) -> None:
        with self._lock:
            self._calls[method] = self._calls.get(method, 0) + 1

    def _check_health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._seen("CheckHealth")
        abort = self.abort
        if abort is not None:
            context.abort(*abort)
        return self.answer

    def _get_version(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._seen("GetVersion")
        answer = wire.GetVersionResponse(status=wire.Status(), version="v2.5.0-raw")
        return bytes(answer.SerializeToString())

    def _connect(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._seen("Connect")
        return bytes(wire.ConnectResponse(status=wire.Status()).SerializeToString())


# --------------------------------------------------------------------------- instruments


POOL_WORKER_PREFIX = "probe_"
"""The scheduler's ThreadPoolExecutor names its workers probe_0, probe_1, …"""


@dataclass(frozen=True)
class ThreadCensus:
    """Python threads, split into the scheduler's pool workers and everything else."""

    workers: int
    others: tuple[str, ...]
    """Sorted names of the other live threads (HTTP request threads included)."""

    @property
    def total(self) -> int:
        return self.workers + len(self.others)


def thread_census() -> ThreadCensus:
    names = [t.name for t in threading.enumerate()]
    workers = sum(1 for n in names if n.startswith(POOL_WORKER_PREFIX))
    others = tuple(sorted(n for n in names if not n.startswith(POOL_WORKER_PREFIX)))
    return ThreadCensus(workers, others)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative `{le: count}` (+Inf included):
    linear interpolation inside the bucket where the rank falls."""
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return 0.0
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if le == float("inf"):
                return lower_bound  # as Prometheus: the highest finite bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return ordered[-2][0] if len(ordered) > 1 else 0.0


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Cumulative buckets of the observations made between two readings."""
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_buckets(registry: Any, name: str, **labels: str) -> dict[float, float]:
    """`{le: cumulative count}` of a histogram read straight from a prometheus registry."""
    found: dict[float, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            found[le] = found.get(le, 0.0) + sample.value
    return found
