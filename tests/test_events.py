"""The Events recorder on a fake clock: aggregation, the per-target rate limit, fallback.

The real `kubernetes` client posts to the API server double (tests/kube_double.py: no
kube-apiserver runs here); only time is fake, through the recorder's `clock` seam. Every
`record()` is followed by waiting for the queue to drain (`drained()`), so the worker
thread has finished with it before anything is checked.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as kube_config

from probe.events import (
    AGGREGATE_WINDOW,
    BURST,
    MESSAGE_LIMIT,
    QUEUE_SIZE,
    REFILL_SECONDS,
    EventRecorder,
    EventRequest,
    TargetEvents,
)
from probe.hub import Hub
from probe.result import ProbeResult, RpcMethod
from probe.targets import ObjectRef
from tests.kube_double import KubeApiDouble
from tests.support import target, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, kube: KubeApiDouble, tmp_path: Path) -> None:
        self.kube, self.clock = kube, FakeClock()
        self.results: list[str] = []
        api = kube_config.new_client_from_config(config_file=str(kube.kubeconfig(tmp_path)))
        self.recorder = EventRecorder(api, instance="probe-0", on_result=self.results.append,
                                      clock=self.clock)
        self.recorder.start()

    def record(self, alias: str = "db", reason: str = "MilvusConnectionFailed",
               message: str = "milvus/db: refused", pod: str = "proxy-0") -> str:
        """Record one Event request and wait until it is handled; what became of it."""
        before = len(self.results)
        self.recorder.record(EventRequest(ObjectRef("Pod", "milvus", pod, uid="u-1"),
                                          "Warning", reason, message, alias))
        wait_until(self.recorder.drained, 10, "the Event to be handled")
        (outcome,) = self.results[before:]
        return outcome

    def events(self) -> list[dict[str, Any]]:
        with self.kube._lock:
            return list(self.kube.events.values())


@pytest.fixture
def rig(kube: KubeApiDouble, tmp_path: Path) -> Iterator[Callable[[], Rig]]:
    made: list[Rig] = []

    def make() -> Rig:
        made.append(Rig(kube, tmp_path))
        return made[-1]

    yield make
    kube.release_events()
    for r in made:
        r.recorder.stop()


def test_a_repeat_within_the_window_updates_the_first_event(rig: Callable[[], Rig]) -> None:
    r = rig()
    assert r.record() == "created"
    (event,) = r.events()
    assert event["_api"] == "events.k8s.io/v1" and event["reportingInstance"] == "probe-0"
    assert event["regarding"] == {"kind": "Pod", "namespace": "milvus", "name": "proxy-0",
                                  "uid": "u-1", "apiVersion": "v1"}
    name = event["metadata"]["name"]

    r.clock.now += AGGREGATE_WINDOW - 1
    assert r.record() == "aggregated"
    assert r.record() == "aggregated"
    assert [(n, p["series"]["count"]) for n, p in r.kube.event_patches] == [(name, 2), (name, 3)]
    assert len(r.events()) == 1

    # Another reason, message or object is another Event.
    assert r.record(reason="MilvusUnhealthy") == "created"
    assert r.record(message="milvus/db: timeout") == "created"
    assert r.record(pod="proxy-1") == "created"
    assert len(r.events()) == 4

    r.clock.now += 1  # the first Event's window has passed: a new one
    assert r.record() == "created"
    assert len(r.events()) == 5 and len(r.kube.event_patches) == 2


def test_each_target_gets_a_burst_then_one_event_per_refill(rig: Callable[[], Rig]) -> None:
    r = rig()
    outcomes = [r.record(message=f"change {i}") for i in range(BURST + 2)]
    assert outcomes == ["created"] * BURST + ["rate_limited"] * 2
    assert r.record(alias="other", message="other 0") == "created"  # per target

    r.clock.now += REFILL_SECONDS - 1
    assert r.record(message="change a") == "rate_limited"
    r.clock.now += 1  # one token back per refill period
    assert r.record(message="change b") == "created"
    assert r.record(message="change c") == "rate_limited"
    # Aggregating a repeat takes no token: a flapping target can't flood, nor be silenced.
    assert r.record(message="change b") == "aggregated"
    assert len(r.events()) == BURST + 2


def test_core_v1_events_on_an_old_api_server(rig: Callable[[], Rig]) -> None:
    r = rig()
    r.kube.events_v1 = False
    assert r.record() == "created"
    assert r.record(reason="MilvusUnhealthy") == "created"
    events = r.events()
    assert [e["_api"] for e in events] == ["v1", "v1"]
    assert events[0]["involvedObject"]["name"] == "proxy-0" and events[0]["count"] == 1
    posts = [p for m, p in r.kube.requests if m == "POST"]
    assert sum("events.k8s.io" in p for p in posts) == 1  # asked once, then remembered
    assert r.record() == "aggregated"
    ((name, patch),) = r.kube.event_patches
    assert name == events[0]["metadata"]["name"] and patch["count"] == 2


def test_messages_are_cut_to_the_limit(rig: Callable[[], Rig]) -> None:
    r = rig()
    assert r.record(message="x" * (MESSAGE_LIMIT * 2)) == "created"
    (event,) = r.events()
    assert event["note"] == "x" * MESSAGE_LIMIT


def test_a_failed_post_is_counted_once_not_retried(rig: Callable[[], Rig]) -> None:
    r = rig()
    r.kube.fail_next = 1
    assert r.record() == "failed"
    posts = sum(1 for m, _ in r.kube.requests if m == "POST")
    assert posts == 1
    assert r.record(message="next") == "created"


def test_record_never_blocks_and_drops_when_the_queue_is_full(rig: Callable[[], Rig]) -> None:
    r = rig()
    r.kube.hold_events = True

    def request(i: int) -> EventRequest:
        return EventRequest(ObjectRef("Pod", "milvus", "proxy-0"), "Warning",
                            "MilvusConnectionFailed", f"change {i}", "db")

    r.recorder.record(request(0))
    wait_until(lambda: r.kube.held_events == 1, 10, "the first post to hang")
    done = threading.Event()

    def fill() -> None:
        for i in range(1, QUEUE_SIZE + 2):  # the queue holds QUEUE_SIZE behind the hung post
            r.recorder.record(request(i))
        done.set()

    threading.Thread(target=fill, daemon=True).start()
    wait_until(done.is_set, 10, "record() to return while the API hangs")
    assert r.results == ["dropped"]
    assert not r.recorder.drained()

    r.kube.hold_events = False
    r.kube.release_events()
    wait_until(r.recorder.drained, 15, "the queue to drain")
    # The hung post failed (its token spent); then the target's burst, then the limit.
    assert r.results[:2] == ["dropped", "failed"]
    assert r.results[2:] == ["created"] * (BURST - 1) + ["rate_limited"] * (QUEUE_SIZE - BURST + 1)


def test_quota_events_follow_the_hubs_generation_of_a_target(rig: Callable[[], Rig]) -> None:
    """TargetEvents behind a real Hub: a target replaced under its alias (another RPC: the
    hub's new generation) is a new target, so its denying is news again; the old one's
    state is forgotten with it."""
    r = rig()
    events = TargetEvents(r.recorder, ObjectRef("Pod", "milvus", "probe-0", uid="u-0"))
    hub = Hub()
    hub.listen(events.follow)
    hub.sink(events.observe)
    db = target(alias="db", uri="127.0.0.1:1")

    def cycle(*states: str) -> None:
        current = hub.pick("db")
        assert hub.publish(current, ProbeResult(
            alias="db", target=current.address, method="check_health", started_at=0.0,
            duration=0.001, phases={}, success=True, quota_states=states,
        ))  # fmt: skip
        wait_until(r.recorder.drained, 10, "the Events to be handled")

    hub.update([db], first_round=True)
    cycle("DenyToWrite")
    cycle("DenyToWrite")  # still denying: nothing new to say
    assert r.results == ["created"]
    hub.update([dataclasses.replace(db, rpc=RpcMethod.GET_VERSION)])
    cycle("DenyToWrite")  # the new target denies from its first cycle: said again
    assert r.results == ["created", "aggregated"]
    cycle()
    assert r.results[-1] == "created" and "no longer denies" in r.events()[-1]["note"]
