"""Kubernetes Events when a target changes state, posted without ever blocking a probe.

A change is queued and posted by a worker thread: `events.k8s.io/v1` (falling back to
core/v1 when the API server lacks it), attached to the discovered pod, the Service, or
our own pod for static targets. A repeat of the same event within `AGGREGATE_WINDOW`
updates the first one's series count instead of creating another; each target may post
at most `BURST` events, refilled one per `REFILL_SECONDS`, so a flapping target can't
flood the API. Failures are logged and counted, never retried in a loop.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from probe import logs
from probe.health import Change
from probe.hub import TargetDiff
from probe.result import FailureReason, ProbeResult
from probe.targets import ObjectRef, Target

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 1024
AGGREGATE_WINDOW = 600.0
BURST = 5
REFILL_SECONDS = 60.0
QUEUE_SIZE = 1000
CONTROLLER = "milvus-probe.io/milvus-probe"
RECENT_EVENTS = 50
"""Events the recorder remembers (posted or not) for the diagnostics bundle."""


@dataclass(frozen=True)
class EventRequest:
    regarding: ObjectRef
    type: str
    """Normal or Warning."""
    reason: str
    """MilvusConnectionFailed, MilvusConnectionRecovered, MilvusUnhealthy, MilvusQuotaDenying."""
    message: str
    alias: str


@dataclass
class _Posted:
    name: str
    namespace: str
    count: int
    first: float
    api: str
    """"events.k8s.io/v1" or "v1"."""


class _Bucket:
    def __init__(self, now: float) -> None:
        self.tokens, self.stamp = float(BURST), now

    def take(self, now: float) -> bool:
        self.tokens = min(BURST, self.tokens + (now - self.stamp) / REFILL_SECONDS)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class EventRecorder:
    """Posts EventRequests from a queue; `record()` never blocks."""

    def __init__(
        self,
        api: Any,
        *,
        instance: str | None = None,
        on_result: Callable[[str], None] = lambda result: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The client's models are typed loosely (optional metadata); treat answers as Any.
        self._events: Any = client.EventsV1Api(api)
        self._core: Any = client.CoreV1Api(api)
        self._instance = instance or socket.gethostname()
        self._on_result = on_result
        self._clock = clock
        self._queue: queue.Queue[EventRequest | None] = queue.Queue(QUEUE_SIZE)
        self._posted: dict[tuple[str, str, str, str, str], _Posted] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._use_core = False
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._recent_lock = threading.Lock()

    def recent(self) -> list[dict[str, Any]]:
        """The last RECENT_EVENTS events handled, oldest first, with what became of each."""
        with self._recent_lock:
            return list(self._recent)

    def _remember(self, request: EventRequest, result: str) -> None:
        ref = request.regarding
        entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "result": result,
            "type": request.type,
            "reason": request.reason,
            "message": request.message[:MESSAGE_LIMIT],
            "alias": request.alias,
            "regarding": {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name},
        }
        with self._recent_lock:
            self._recent.append(entry)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def drained(self) -> bool:
        """True when nothing is waiting to be posted (for tests and shutdown)."""
        return self._queue.unfinished_tasks == 0

    def record(self, request: EventRequest) -> None:
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self._remember(request, "dropped")
            self._on_result("dropped")
            logger.warning("event dropped: queue full", extra=logs.fields(alias=request.alias))

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            try:
                if request is None:
                    return
                self._post(request)
            except Exception as exc:  # the API server must never break the probe
                if request is not None:
                    self._remember(request, "failed")
                self._on_result("failed")
                logger.warning(
                    "event not posted",
                    extra=logs.fields(
                        alias=request.alias if request else "",
                        reason=request.reason if request else "",
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    ),
                )
            finally:
                self._queue.task_done()

    def _post(self, request: EventRequest) -> None:
        now = self._clock()
        ref = request.regarding
        key = (ref.kind, ref.namespace, ref.name, request.reason, request.message)
        posted = self._posted.get(key)
        if posted is not None and now - posted.first < AGGREGATE_WINDOW:
            posted.count += 1
            self._aggregate(posted)
            self._remember(request, "aggregated")
            self._on_result("aggregated")
            return
        bucket = self._buckets.setdefault(request.alias, _Bucket(now))
        if not bucket.take(now):
            self._remember(request, "rate_limited")
            self._on_result("rate_limited")
            return
        self._posted[key] = self._create(request, now)
        self._remember(request, "created")
        self._on_result("created")
        for stale in [k for k, p in self._posted.items() if now - p.first >= AGGREGATE_WINDOW]:
            del self._posted[stale]

    def _create(self, request: EventRequest, now: float) -> _Posted:
        from kubernetes.client.exceptions import ApiException

        ref = request.regarding
        stamp = datetime.datetime.now(datetime.timezone.utc)
        message = request.message[:MESSAGE_LIMIT]
        regarding = client.V1ObjectReference(
            kind=ref.kind,
            namespace=ref.namespace,
            name=ref.name,
            uid=ref.uid or None,
            api_version=ref.api_version,
        )
        metadata = client.V1ObjectMeta(generate_name="milvus-probe.", namespace=ref.namespace)
        if not self._use_core:
            body: Any = client.EventsV1Event(
                metadata=metadata,
                event_time=stamp,
                type=request.type,
                reason=request.reason,
                note=message,
                action="Probe",
                regarding=regarding,
                reporting_controller=CONTROLLER,
                reporting_instance=self._instance,
            )
            try:
                created = self._events.create_namespaced_event(
                    ref.namespace, body, _request_timeout=10
                )
                return _Posted(created.metadata.name, ref.namespace, 1, now, "events.k8s.io/v1")
            except ApiException as exc:
                if exc.status != 404:
                    raise
                logger.info("events.k8s.io/v1 not served; posting core/v1 Events")
                self._use_core = True
        body = client.CoreV1Event(
            metadata=metadata,
            involved_object=regarding,
            type=request.type,
            reason=request.reason,
            message=message,
            count=1,
            first_timestamp=stamp,
            last_timestamp=stamp,
            source=client.V1EventSource(component="milvus-probe", host=self._instance),
            reporting_component=CONTROLLER,
            reporting_instance=self._instance,
        )
        created = self._core.create_namespaced_event(ref.namespace, body, _request_timeout=10)
        return _Posted(created.metadata.name, ref.namespace, 1, now, "v1")

    def _aggregate(self, posted: _Posted) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        if posted.api == "v1":
            self._core.patch_namespaced_event(
                posted.name,
                posted.namespace,
                {"count": posted.count, "lastTimestamp": stamp},
                _request_timeout=10,
            )
        else:
            self._events.patch_namespaced_event(
                posted.name,
                posted.namespace,
                {"series": {"count": posted.count, "lastObservedTime": stamp}},
                _request_timeout=10,
            )


class TargetEvents:
    """What the Events about targets say, and when: a target went down or came back, or
    started or stopped denying reads/writes. A results sink of the hub; never blocks."""

    def __init__(self, recorder: EventRecorder, own_pod: ObjectRef | None) -> None:
        self._recorder = recorder
        self._own_pod = own_pod
        self._denying: dict[int, bool] = {}
        """Target generation → whether its quota states last denied reads or writes."""

    def _regarding(self, target: Target) -> ObjectRef | None:
        """Discovered targets' own object; our own pod for static targets."""
        return target.regarding or self._own_pod

    def changed(self, target: Target, change: Change) -> None:
        """A target went up or down (a target that starts healthy changed nothing)."""
        regarding = self._regarding(target)
        if regarding is None or (change.first and change.up):
            return
        if change.up:
            reason, kind = "MilvusConnectionRecovered", "Normal"
            message = f"{change.alias} ({change.target}) answers again"
            if change.previous_reason:
                message += f"; it failed with {change.previous_reason} before"
        else:
            unhealthy = change.reason is FailureReason.UNHEALTHY
            reason = "MilvusUnhealthy" if unhealthy else "MilvusConnectionFailed"
            kind = "Warning"
            message = (
                f"{change.alias} ({change.target}) failed: {change.reason}: {change.error[:600]}"
            )
        self._recorder.record(EventRequest(regarding, kind, reason, message, change.alias))

    def follow(self, diff: TargetDiff) -> None:
        """A hub listener: forget what removed (and replaced) targets were denying."""
        for target in diff.removed:
            self._denying.pop(target.generation, None)

    def observe(self, target: Target, result: ProbeResult) -> None:
        """A hub sink: post when the target starts or stops denying reads or writes."""
        if result.quota_states is None:
            return
        denying = any(s.startswith("DenyTo") for s in result.quota_states)
        before = self._denying.get(target.generation, False)
        self._denying[target.generation] = denying
        regarding = self._regarding(target)
        if denying == before or regarding is None:
            return
        states = ", ".join(result.quota_states) or "none"
        if denying:
            request = EventRequest(
                regarding,
                "Warning",
                "MilvusQuotaDenying",
                f"{target.alias} ({target.address}) quota states: {states}",
                target.alias,
            )
        else:
            request = EventRequest(
                regarding,
                "Normal",
                "MilvusQuotaCleared",
                f"{target.alias} ({target.address}) no longer denies "
                f"reads or writes (quota states: {states})",
                target.alias,
            )
        self._recorder.record(request)
