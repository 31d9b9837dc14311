"""The data-plane canary: on the cycle's own channel, prove Milvus can search, read and write.

A target with a `canary:` block gets up to three more phases after the probe RPC, each
on the same connection (no extra Connect, no extra TCP connection):

    search  the vector of a known row, top 1 → must be that row's primary key
    query   a known primary key → must be that row (its vector)
    write   upsert the one fixed row (primary key 0) with a new value, then a strongly
            consistent query that must see it; the time from the acknowledged write to the
            read that saw it is the cycle's `visibility`

The collection is the canary's own: an int64 primary key `pk` and a float vector
`vector` of `dimension`, with a FLAT (exact, L2) index. Its `rows` known rows have
primary keys 1..rows and deterministic vectors in [0, 1); the fixed row's vectors are
negative, far from every known row, so it never answers a search. Writes only ever
reuse primary key 0: the data never grows past rows + 1.

Setup (`create: true`) makes the collection, fills, indexes and loads it when a cycle
finds it missing or not loaded. It runs off the cycle on a connection of its own
(`CanarySetups`, a background thread per target), with its own deadline; cycles that
find it running or failed say so and never wait. It never drops anything.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from probe.logs import fields
from probe.milvus import client
from probe.milvus import wire_pb2 as wire
from probe.probers import Failed
from probe.probers.reasons import classify_status
from probe.result import FailureReason
from probe.targets import Canary, Target

logger = logging.getLogger(__name__)


class CanaryPhase(enum.StrEnum):
    """The canary's steps, in the order they run."""

    SEARCH = "search"
    """Search for a known row's vector, top 1: must return that row's primary key."""
    QUERY = "query"
    """Query a known primary key: must return that row."""
    WRITE = "write"
    """Upsert the fixed row with a new value, then read it back with strong consistency."""


PK_FIELD = "pk"
VECTOR_FIELD = "vector"
WRITE_PK = 0
"""The one row writes touch; known rows are 1..rows."""
INDEX_NAME = "milvus_probe_canary_flat"

INT64 = 5
FLOAT_VECTOR = 101
"""schema.DataType values (milvus-proto)."""
PLACEHOLDER_FLOAT_VECTOR = 101
"""common.PlaceholderType.FloatVector."""
BOOL_EXPR_V1 = 1
"""common.DslType.BoolExprV1."""
STRONG, BOUNDED = 0, 2
"""common.ConsistencyLevel values."""
LOAD_STATE_NOT_EXIST, LOAD_STATE_NOT_LOAD, LOAD_STATE_LOADING, LOAD_STATE_LOADED = 0, 1, 2, 3
"""common.LoadState values."""
COLLECTION_NOT_FOUND = 100
"""common.Status.code of a missing collection (legacy error_code 4)."""

MAX_DECODED = 64
"""Most ids or rows the steps look at in one answer (they ask for one)."""
_SCALE = 65536
"""Vector components are k / 65536: exact in float32, so read-backs compare exactly."""


def phases_for(canary: Canary | None) -> tuple[str, ...]:
    """The phases a canary adds to a cycle: none without one, `write` only if it writes."""
    if canary is None:
        return ()
    if canary.write:
        return (CanaryPhase.SEARCH, CanaryPhase.QUERY, CanaryPhase.WRITE)
    return (CanaryPhase.SEARCH, CanaryPhase.QUERY)


def known_vector(row: int, dimension: int) -> list[float]:
    """The vector of known row `row` (1..rows): distinct per row, components in [0, 1)."""
    return [((row * 40503 + j * 2654435761) % _SCALE) / _SCALE for j in range(dimension)]


def write_vector(value: int, dimension: int) -> list[float]:
    """The fixed row's vector carrying `value` (0..65535): negative, far from known rows."""
    return [-1.0 - (value % _SCALE) / _SCALE] + [-1.0] * (dimension - 1)


def footprint_bytes(canary: Canary) -> int:
    """Raw vector bytes the collection holds: (rows + the fixed row) × dimension × 4."""
    return (canary.rows + 1) * canary.dimension * 4


def _vector_bytes(vector: list[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def _rows_field(pks: list[int], vectors: list[list[float]], dimension: int) -> list[wire.FieldData]:
    return [
        wire.FieldData(
            type=INT64,
            field_name=PK_FIELD,
            scalars=wire.ScalarField(long_data=wire.LongArray(data=pks)),
        ),
        wire.FieldData(
            type=FLOAT_VECTOR,
            field_name=VECTOR_FIELD,
            vectors=wire.VectorField(
                dim=dimension,
                float_vector=wire.FloatArray(data=[x for v in vectors for x in v]),
            ),
        ),
    ]


# --------------------------------------------------------------------------- per-target state


class CanaryCounter:
    """Per target: scheduled cycles seen (for `every` and which known row to use) and the
    last value written (each write must differ from the one before)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cycles: dict[tuple[str, str], int] = {}
        self._values: dict[tuple[str, str], int] = {}

    def next(self, key: tuple[str, str], every: int, scheduled: bool) -> tuple[bool, int]:
        """(whether the canary runs this cycle, the cycle's number)."""
        with self._lock:
            count = self._cycles.get(key, 0)
            if scheduled:
                self._cycles[key] = count + 1
        return (not scheduled or count % every == 0), count

    def next_value(self, key: tuple[str, str]) -> int:
        """A value for the fixed row that differs from the last one written."""
        with self._lock:
            # A random start: a restarted probe does not write what it wrote before.
            value = (self._values.get(key, random.randrange(_SCALE)) + 1) % _SCALE
            self._values[key] = value
            return value

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._cycles.pop(key, None)
            self._values.pop(key, None)


# --------------------------------------------------------------------------- the steps

RpcFailure = Callable[[grpc.RpcError, str], Failed]
"""Turns a failed call in a phase into the cycle's failure (GrpcProber's classification)."""


@dataclass
class StepsOutcome:
    """What the steps saw, for the result and the trace."""

    notes: dict[str, str] = field(default_factory=dict)
    visibility: float | None = None


@dataclass
class Steps:
    """One cycle's canary, on a channel that already answered the probe RPC."""

    target: Target
    canary: Canary
    channel: grpc.Channel
    md: client.Metadata
    deadline: float
    clock: Callable[[], float]
    rpc_failure: RpcFailure
    phases: dict[str, float]
    outcome: StepsOutcome

    def remaining(self, phase: str) -> float:
        left = self.deadline - self.clock()
        if left <= 0:
            raise Failed(
                FailureReason.TIMEOUT,
                phase,
                f"the cycle's {self.target.timeout:g}s timeout ran out before {phase}",
            )
        return left

    def check(self, method: str, status: wire.Status, phase: str) -> None:
        """Raise the cycle's failure when Milvus answered `method` with an error."""
        reason = classify_status(status)
        if reason is None:
            return
        code = status.code or status.error_code
        text = (
            f"Milvus answered {method} on collection {self.canary.collection!r} with code "
            f"{code}: {status.reason or status.detail}"
        )
        raise Failed(reason, phase, text, status_code=code)

    def run(self, cycle: int, value: int | None) -> None:
        """search, query and (with `value`) write; each timed as its own phase."""
        rows = self.canary.rows
        self._timed(CanaryPhase.SEARCH, lambda: self.search(cycle % rows + 1))
        self._timed(CanaryPhase.QUERY, lambda: self.query((cycle + rows // 2) % rows + 1))
        if value is not None:
            self._timed(CanaryPhase.WRITE, lambda: self.write(value))

    def _timed(self, phase: str, step: Callable[[], None]) -> None:
        t = self.clock()
        try:
            step()
        except grpc.RpcError as exc:
            raise self.rpc_failure(exc, phase) from None
        finally:
            self.phases[phase] = self.clock() - t

    def search(self, row: int) -> None:
        c = self.canary
        group = wire.PlaceholderGroup(
            placeholders=[
                wire.PlaceholderValue(
                    tag="$0",
                    type=PLACEHOLDER_FLOAT_VECTOR,
                    values=[_vector_bytes(known_vector(row, c.dimension))],
                )
            ]
        )
        params = {
            "anns_field": VECTOR_FIELD,
            "topk": "1",
            "metric_type": "L2",
            "params": "{}",
            "round_decimal": "-1",
        }
        request = wire.SearchRequest(
            db_name=self.target.db_name,
            collection_name=c.collection,
            placeholder_group=group.SerializeToString(),
            dsl_type=BOOL_EXPR_V1,
            search_params=[wire.KeyValuePair(key=k, value=v) for k, v in params.items()],
            nq=1,
            consistency_level=BOUNDED,
            use_default_consistency=False,
        )
        answer = client.search(self.channel, self.remaining(CanaryPhase.SEARCH), self.md, request)
        self.check("Search", answer.status, CanaryPhase.SEARCH)
        ids = answer.results.ids.int_id.data
        found = [int(i) for i in ids[:MAX_DECODED]]
        if not found or found[0] != row:
            what = f"primary key {found[0]}" if found else "no row"
            raise Failed(
                FailureReason.WRONG_RESULT,
                CanaryPhase.SEARCH,
                f"searching {c.collection!r} for the vector of row {row} (top 1) returned "
                f"{what}; expected {row}",
            )
        self.outcome.notes[CanaryPhase.SEARCH] = f"row {row} → pk {found[0]}"

    def query(self, row: int) -> None:
        c = self.canary
        vector = self._read(CanaryPhase.QUERY, row, BOUNDED)
        expected = known_vector(row, c.dimension)
        if vector is None or vector != expected:
            what = "no row" if vector is None else "a different vector"
            raise Failed(
                FailureReason.WRONG_RESULT,
                CanaryPhase.QUERY,
                f"querying {c.collection!r} for pk {row} returned {what}; expected known row {row}",
            )
        self.outcome.notes[CanaryPhase.QUERY] = f"pk {row} → its vector"

    def write(self, value: int) -> None:
        c = self.canary
        vector = write_vector(value, c.dimension)
        request = wire.UpsertRequest(
            db_name=self.target.db_name,
            collection_name=c.collection,
            fields_data=_rows_field([WRITE_PK], [vector], c.dimension),
            num_rows=1,
        )
        answer = client.upsert(self.channel, self.remaining(CanaryPhase.WRITE), self.md, request)
        self.check("Upsert", answer.status, CanaryPhase.WRITE)
        acknowledged = self.clock()
        seen = self._read(CanaryPhase.WRITE, WRITE_PK, STRONG)
        if seen != vector:
            what = "no row" if seen is None else "an older value"
            raise Failed(
                FailureReason.WRONG_RESULT,
                CanaryPhase.WRITE,
                f"a strong query of {c.collection!r} right after upserting pk {WRITE_PK} "
                f"returned {what}; expected the value just written",
            )
        self.outcome.visibility = self.clock() - acknowledged
        self.outcome.notes[CanaryPhase.WRITE] = (
            f"upsert pk {WRITE_PK} → visible in {self.outcome.visibility * 1000:.3f} ms (strong)"
        )

    def _read(self, phase: str, pk: int, consistency: int) -> list[float] | None:
        """The vector of row `pk`, or None when the answer holds no such row."""
        c = self.canary
        request = wire.QueryRequest(
            db_name=self.target.db_name,
            collection_name=c.collection,
            expr=f"{PK_FIELD} in [{pk}]",
            output_fields=[PK_FIELD, VECTOR_FIELD],
            consistency_level=consistency,
            use_default_consistency=False,
        )
        answer = client.query(self.channel, self.remaining(phase), self.md, request)
        self.check("Query", answer.status, phase)
        return _row_vector(answer, pk, c.dimension)


def _row_vector(answer: wire.QueryResults, pk: int, dimension: int) -> list[float] | None:
    """Row `pk`'s vector from a query answer; None if absent or not of `dimension`."""
    pks: list[int] | None = None
    flat: list[float] | None = None
    for data in answer.fields_data[:MAX_DECODED]:
        if data.field_name == PK_FIELD and data.HasField("scalars"):
            pks = [int(p) for p in data.scalars.long_data.data[:MAX_DECODED]]
        elif data.field_name == VECTOR_FIELD and data.HasField("vectors"):
            flat = list(data.vectors.float_vector.data[: MAX_DECODED * dimension])
    if not pks or flat is None or pk not in pks:
        return None
    index = pks.index(pk)
    vector = flat[index * dimension : (index + 1) * dimension]
    return vector if len(vector) == dimension else None


# --------------------------------------------------------------------------- setup


class SetupResult(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


SETUP_RESULTS = tuple(SetupResult)


class SetupError(Exception):
    """Setting the collection up failed; the message says which step and why."""


@dataclass
class SetupState:
    """The last (or running) setup of one target."""

    running: bool = False
    started_at: float = 0.0
    """Monotonic time the last setup started."""
    finished_at: float = 0.0
    error: str = ""
    """Why the last setup failed ("" if it succeeded or runs)."""
    counts: dict[SetupResult, int] = field(default_factory=lambda: dict.fromkeys(SetupResult, 0))
    last_duration: float = 0.0


class CanarySetups:
    """Setups run off the cycle, at most one per target at a time, and what they did.

    Metrics read `snapshot()` at scrape time (like the connection ledger), so the
    counts are never stale and no cycle waits for a setup.
    """

    def __init__(
        self, *, background: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.background = background
        """False in one-shot `check`: a cycle never starts a setup it could not finish."""
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], SetupState] = {}

    def state(self, key: tuple[str, str]) -> SetupState | None:
        with self._lock:
            return self._states.get(key)

    def snapshot(self) -> dict[tuple[str, str], tuple[dict[SetupResult, int], float]]:
        """Per target: setups by result, and the last one's duration in seconds."""
        with self._lock:
            return {k: (dict(s.counts), s.last_duration) for k, s in self._states.items()}

    def start(self, key: tuple[str, str], setup: Callable[[], object], retry_after: float) -> str:
        """Start `setup` in the background unless one runs or failed less than
        `retry_after` seconds ago; what the cycle should say about it."""
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(key, SetupState())
            if state.running:
                return f"the canary's setup is running (started {now - state.started_at:.1f}s ago)"
            if state.error and now - state.finished_at < retry_after:
                return (
                    f"the canary's setup failed {now - state.finished_at:.0f}s ago "
                    f"({state.error}); it is retried {retry_after:g}s after a failure"
                )
            if not self.background:
                return (
                    "setup runs only in the daemon (create: true); `milvus-probe canary init` "
                    "sets the collection up once"
                )
            state.running, state.started_at, state.error = True, now, ""
        thread = threading.Thread(
            target=self._run, args=(key, setup), name=f"canary-setup-{key[0]}", daemon=True
        )
        thread.start()
        return "the canary's setup has started"

    def _run(self, key: tuple[str, str], setup: Callable[[], object]) -> None:
        error = ""
        try:
            setup()
        except SetupError as exc:
            error = str(exc)
        except Exception as exc:  # a setup must never take the daemon down
            logger.exception("canary setup crashed")
            error = f"{type(exc).__name__}: {exc}"
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(key, SetupState())
            state_started = state.started_at
            state.running = False
            state.finished_at = now
            state.error = error
            state.last_duration = now - state.started_at
            state.counts[SetupResult.FAILURE if error else SetupResult.SUCCESS] += 1
        if error:
            logger.warning("canary setup failed", extra=fields(alias=key[0], error=error))
        else:
            logger.info(
                "canary setup done", extra=fields(alias=key[0], took=f"{now - state_started:.3f}s")
            )

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._states.pop(key, None)


@dataclass
class Setup:
    """Creates, fills, indexes and loads the canary's collection, as far as it needs.

    Idempotent and never destructive: an existing collection of the right shape is only
    loaded (and its known rows upserted if some are missing); one of another shape is an
    error. Every call carries what is left of `deadline`.
    """

    canary: Canary
    db_name: str
    channel: grpc.Channel
    md: client.Metadata
    deadline: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    done: list[str] = field(default_factory=list)
    """What it did, in words (for `canary init` and logs)."""

    def left(self, step: str) -> float:
        left = self.deadline - self.clock()
        if left <= 0:
            raise SetupError(f"setup_timeout ran out before {step}")
        return left

    def ok(self, step: str, status: wire.Status) -> None:
        if classify_status(status) is not None:
            code = status.code or status.error_code
            raise SetupError(f"{step}: Milvus answered code {code}: {status.reason}")

    def call(self, step: str, fn: Callable[[float], object]) -> object:
        try:
            return fn(self.left(step))
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise SetupError(f"{step}: {code}: {details}") from None

    def run(self) -> None:
        c, ch, md = self.canary, self.channel, self.md
        name = c.collection
        described = self.call(
            "DescribeCollection",
            lambda t: client.describe_collection(
                ch,
                t,
                md,
                wire.DescribeCollectionRequest(db_name=self.db_name, collection_name=name),
            ),
        )
        assert isinstance(described, wire.DescribeCollectionResponse)
        missing = described.status.code == COLLECTION_NOT_FOUND or (
            described.status.code == 0 and described.status.error_code == 4
        )
        if missing:
            self.create()
        else:
            self.ok("DescribeCollection", described.status)
            self.check_shape(described.schema)
        self.load()
        self.fill()

    def check_shape(self, schema: wire.CollectionSchema) -> None:
        c = self.canary
        fields = {f.name: f for f in schema.fields[:MAX_DECODED]}
        pk, vector = fields.get(PK_FIELD), fields.get(VECTOR_FIELD)
        dim = next((p.value for p in vector.type_params if p.key == "dim"), "") if vector else ""
        if (
            pk is None
            or not pk.is_primary_key
            or pk.data_type != INT64
            or pk.autoID
            or vector is None
            or vector.data_type != FLOAT_VECTOR
            or dim != str(c.dimension)
        ):
            raise SetupError(
                f"collection {c.collection!r} exists but is not the canary's (int64 primary "
                f"key {PK_FIELD!r} without autoID, float vector {VECTOR_FIELD!r} of dimension "
                f"{c.dimension}); the probe never drops anything: drop it or choose another "
                "canary collection"
            )

    def create(self) -> None:
        c, ch, md = self.canary, self.channel, self.md
        schema = wire.CollectionSchema(
            name=c.collection,
            description="milvus-probe data-plane canary",
            fields=[
                wire.FieldSchema(fieldID=100, name=PK_FIELD, is_primary_key=True, data_type=INT64),
                wire.FieldSchema(
                    fieldID=101,
                    name=VECTOR_FIELD,
                    data_type=FLOAT_VECTOR,
                    type_params=[wire.KeyValuePair(key="dim", value=str(c.dimension))],
                ),
            ],
        )
        request = wire.CreateCollectionRequest(
            db_name=self.db_name,
            collection_name=c.collection,
            schema=schema.SerializeToString(),
            shards_num=1,
            consistency_level=BOUNDED,
        )
        status = self.call(
            "CreateCollection", lambda t: client.create_collection(ch, t, md, request)
        )
        assert isinstance(status, wire.Status)
        self.ok("CreateCollection", status)
        self.done.append(f"created collection {c.collection!r} (dimension {c.dimension})")
        rows = list(range(1, c.rows + 1))
        insert = wire.InsertRequest(
            db_name=self.db_name,
            collection_name=c.collection,
            fields_data=_rows_field(
                rows, [known_vector(r, c.dimension) for r in rows], c.dimension
            ),
            num_rows=len(rows),
        )
        answer = self.call("Insert", lambda t: client.insert(ch, t, md, insert))
        assert isinstance(answer, wire.MutationResult)
        self.ok("Insert", answer.status)
        self.done.append(f"inserted {c.rows} known rows")
        params = {"index_type": "FLAT", "metric_type": "L2", "params": json.dumps({})}
        index = wire.CreateIndexRequest(
            db_name=self.db_name,
            collection_name=c.collection,
            field_name=VECTOR_FIELD,
            index_name=INDEX_NAME,
            extra_params=[wire.KeyValuePair(key=k, value=v) for k, v in params.items()],
        )
        status = self.call("CreateIndex", lambda t: client.create_index(ch, t, md, index))
        assert isinstance(status, wire.Status)
        self.ok("CreateIndex", status)
        self.done.append("created a FLAT (L2) index")

    def load_state(self) -> int:
        request = wire.GetLoadStateRequest(
            db_name=self.db_name, collection_name=self.canary.collection
        )
        answer = self.call(
            "GetLoadState", lambda t: client.get_load_state(self.channel, t, self.md, request)
        )
        assert isinstance(answer, wire.GetLoadStateResponse)
        self.ok("GetLoadState", answer.status)
        return int(answer.state)

    def load(self) -> None:
        if self.load_state() == LOAD_STATE_LOADED:
            return
        request = wire.LoadCollectionRequest(
            db_name=self.db_name, collection_name=self.canary.collection
        )
        status = self.call(
            "LoadCollection", lambda t: client.load_collection(self.channel, t, self.md, request)
        )
        assert isinstance(status, wire.Status)
        self.ok("LoadCollection", status)
        started = self.clock()
        while (state := self.load_state()) != LOAD_STATE_LOADED:
            if state in (LOAD_STATE_NOT_EXIST, LOAD_STATE_NOT_LOAD) and (
                self.clock() - started > 5.0
            ):
                raise SetupError(f"LoadCollection was accepted but the load state is {state}")
            self.left("the collection was loaded")
            self.sleep(0.1)
        self.done.append("loaded the collection")

    def fill(self) -> None:
        """Upsert the known rows a strong query does not find (never more than `rows`)."""
        c, ch, md = self.canary, self.channel, self.md
        rows = list(range(1, c.rows + 1))
        request = wire.QueryRequest(
            db_name=self.db_name,
            collection_name=c.collection,
            expr=f"{PK_FIELD} in [{', '.join(map(str, rows))}]",
            output_fields=[PK_FIELD, VECTOR_FIELD],
            consistency_level=STRONG,
            use_default_consistency=False,
        )
        answer = self.call("Query", lambda t: client.query(ch, t, md, request))
        assert isinstance(answer, wire.QueryResults)
        self.ok("Query", answer.status)
        wrong = [
            r
            for r in rows
            if _row_vector_any(answer, r, c.dimension) != known_vector(r, c.dimension)
        ]
        if not wrong:
            return
        upsert = wire.UpsertRequest(
            db_name=self.db_name,
            collection_name=c.collection,
            fields_data=_rows_field(
                wrong, [known_vector(r, c.dimension) for r in wrong], c.dimension
            ),
            num_rows=len(wrong),
        )
        result = self.call("Upsert", lambda t: client.upsert(ch, t, md, upsert))
        assert isinstance(result, wire.MutationResult)
        self.ok("Upsert", result.status)
        self.done.append(f"restored {len(wrong)} known row(s)")


def _row_vector_any(answer: wire.QueryResults, pk: int, dimension: int) -> list[float] | None:
    """Like `_row_vector`, for an answer of up to `rows` rows (setup's bulk check)."""
    pks: list[int] = []
    flat: list[float] = []
    for data in answer.fields_data[:MAX_DECODED]:
        if data.field_name == PK_FIELD and data.HasField("scalars"):
            pks = list(data.scalars.long_data.data)
        elif data.field_name == VECTOR_FIELD and data.HasField("vectors"):
            flat = list(data.vectors.float_vector.data)
    if pk not in pks:
        return None
    index = pks.index(pk)
    vector = flat[index * dimension : (index + 1) * dimension]
    return vector if len(vector) == dimension else None
