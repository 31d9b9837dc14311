"""Fuzzing what servers answer: whatever bytes come back, a prober's parsing ends in a
value or a Failed with a bounded reason, never another exception (which would have lost
the cycle before probe_error existed, and is a bug to fix now that it does).

HTTP answers go through the real client (`Connection.exchange`) over a socket pair: the
bytes are what a server would send, generated because no real server sends most of them.
gRPC answers come from a raw gRPC double (tests/faults.py) for the same reason: a real
Milvus always sends well-formed protobuf.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from probe.milvus import wire_pb2 as wire
from probe.probers import Failed, InfoMode
from probe.probers.canary import _row_vector
from probe.probers.grpc import GrpcProber
from probe.probers.http import MAX_BODY_BYTES, Answer, Connection
from probe.probers.management import _parse
from probe.probers.rest import RestApi, RestProber, _Cycle
from probe.result import FailureReason
from tests.faults import RawMilvusDouble
from tests.support import target

LATIN1 = st.characters(min_codepoint=0, max_codepoint=255)
DIGITISH = st.text(alphabet=st.sampled_from(list("0123456789+-_ ²³¹٣०۵abcdefABCDEF\t")), max_size=8)


@st.composite
def http_answers(draw: st.DrawFn) -> bytes:
    """An HTTP/1.x answer, from well-formed to broken: odd digits in the status and
    lengths, chunk sizes of every shape, headers cut short, bodies of any bytes."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x", ""]))
    status = draw(st.one_of(st.sampled_from(["200", "404", "500", "101", "204"]), DIGITISH))
    reason = draw(st.text(LATIN1, max_size=12).filter(lambda t: "\r\n" not in t))
    headers: list[str] = []
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close", "none"]))
    if framing == "length":
        length = draw(
            st.one_of(st.just(str(len(body))), DIGITISH, st.integers(-5, 10**20).map(str))
        )
        headers.append(f"Content-Length: {length}")
    elif framing == "chunked":
        headers.append("Transfer-Encoding: chunked")
        chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
        sizes = [draw(st.one_of(st.just(f"{len(c):x}"), DIGITISH)) for c in chunks]
        body = b"".join(
            s.encode() + b"\r\n" + c + b"\r\n" for s, c in zip(sizes, chunks, strict=True)
        )
        body += draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n", b"", b"zz\r\n"]))
    elif framing == "close":
        headers.append("Connection: close")
    extra = draw(
        st.lists(st.text(LATIN1, max_size=30).filter(lambda t: "\r\n" not in t), max_size=3)
    )
    head = "\r\n".join([f"{version} {status} {reason}", *headers, *extra])
    end = draw(st.sampled_from([b"\r\n\r\n", b"\r\n", b""]))
    # Latin-1 where it can (`²` is the one byte a server would send), UTF-8 beyond (`٣`).
    raw = b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode() for c in head)
    return raw + end + body


def _exchange(data: bytes, method: str = "GET") -> Answer | Failed:
    """What the real client makes of `data` sent by a server that then closes."""
    client, server = socket.socketpair()
    writer = threading.Thread(target=_serve, args=(server, data), daemon=True)
    writer.start()
    try:
        clock = time.monotonic
        connection = Connection(client, "milvus:19530")
        return connection.exchange(method, "/", {}, None, clock() + 2.0, clock, "request")
    except Failed as failed:
        return failed
    finally:
        client.close()
        writer.join(5)
        server.close()


def _serve(server: socket.socket, data: bytes) -> None:
    try:
        server.recv(65536)
        server.sendall(data)
        server.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client hung up first: it has already judged what it got


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=http_answers(), method=st.sampled_from(["GET", "POST", "HEAD"]))
@example("HTTP/1.1 ²00 OK\r\nContent-Length: 2\r\n\r\n{}".encode("latin-1"), "GET")
@example("HTTP/1.1 200 OK\r\nContent-Length: ³\r\n\r\n{}".encode("latin-1"), "GET")
@example("HTTP/1.1 ٣00 OK\r\nContent-Length: ٢\r\n\r\n{}".encode(), "GET")
def test_any_http_answer_is_an_answer_or_a_bounded_failure(data: bytes, method: str) -> None:
    outcome = _exchange(data, method)
    if isinstance(outcome, Failed):
        assert outcome.reason in FailureReason and outcome.phase == "request"
        assert len(outcome.error) < 400
    else:
        status_field = data.split(b"\r\n", 1)[0].split(b" ")[1]
        assert status_field == str(outcome.status).encode()  # ASCII digits, as sent
        assert len(outcome.body) <= MAX_BODY_BYTES


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"code": json_values, "message": json_values, "data": json_values, "state": json_values}
    ),
    st.fixed_dictionaries({"state": json_values, "detail": st.lists(json_values, max_size=4)}),
)
bodies = st.one_of(
    json_documents.map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"OK", b"[" * 5000, b"1" * 5000, b'{"code": 1e999}', b"\xff\xfe"]),
)


@FUZZ
@given(
    status=st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 503, 999]),
    body=bodies,
    api=st.sampled_from([RestApi.V1, RestApi.V2]),
)
def test_any_rest_body_is_judged_without_raising_anything_else(
    status: int, body: bytes, api: RestApi
) -> None:
    try:
        RestProber._judge(api, Answer(status, {}, body, False), _Cycle())
    except Failed as failed:
        assert failed.reason in FailureReason and failed.phase == "request"


@FUZZ
@given(body=bodies)
def test_any_healthz_body_parses_to_a_state(body: bytes) -> None:
    state, components = _parse(body)
    assert isinstance(state, str) and len(state) <= 64 and len(components) <= 64


@FUZZ
@given(raw=st.binary(max_size=400), pk=st.integers(0, 2**63 - 1), dimension=st.integers(1, 8))
def test_any_query_answer_decodes_to_a_vector_or_none(raw: bytes, pk: int, dimension: int) -> None:
    """The canary's read of a Query answer (protobuf that decodes, whatever it holds)."""
    try:
        answer = wire.QueryResults.FromString(raw)
    except DecodeError:
        return  # grpc's deserializer fails the call: an RpcError the prober classifies
    vector = _row_vector(answer, pk, dimension)
    assert vector is None or len(vector) == dimension


@pytest.fixture(scope="module")
def raw_double() -> Iterator[RawMilvusDouble]:
    double = RawMilvusDouble()
    try:
        yield double
    finally:
        double.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(answer=st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\x08\x01" * 100])))
def test_any_grpc_answer_ends_the_cycle_in_a_true_result(
    raw_double: RawMilvusDouble, answer: bytes
) -> None:
    """Garbage, nothing, or a well-formed answer: a result inside the deadline, never
    probe_error, and the connection closed."""
    raw_double.answer = answer
    prober = GrpcProber()
    t = target(uri=raw_double.address, timeout="2s")
    result = prober.run(t, InfoMode.NONE)
    assert result.reason is not FailureReason.PROBE_ERROR, result.error
    assert result.duration <= t.timeout
    ((opened, closed),) = prober.ledger.snapshot().values()
    assert opened == closed == 1
    if not result.success:
        assert result.reason in FailureReason and result.error
