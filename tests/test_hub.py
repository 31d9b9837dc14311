"""The hub: target table diffs, listener order, and results of departed targets dropped by
their generation (no server needed: results are built here as a prober builds them)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from probe.hub import AliasRequired, Hub, TargetDiff, UnknownAlias
from probe.result import ProbeResult
from probe.targets import Target
from tests.support import target


def result_for(t: Target) -> ProbeResult:
    return ProbeResult(
        alias=t.alias,
        target=t.address,
        method="check_health",
        started_at=time.time(),
        duration=0.001,
        phases={"rpc": 0.001},
        success=True,
    )


@pytest.fixture
def hub() -> tuple[Hub, list[TargetDiff], list[tuple[Target, ProbeResult]]]:
    h = Hub()
    diffs: list[TargetDiff] = []
    seen: list[tuple[Target, ProbeResult]] = []
    h.listen(diffs.append)
    h.sink(lambda t, r: seen.append((t, r)))
    return h, diffs, seen


def test_added_removed_and_replaced_targets_are_told_apart(hub) -> None:
    h, diffs, _ = hub
    a, b = target(alias="a", host="10.0.0.1"), target(alias="b", host="10.0.0.2")
    h.update([a, b], first_round=True)
    first = diffs[-1]
    assert first.first_round and {t.alias for t in first.added} == {"a", "b"}
    assert first.removed == ()
    moved = target(alias="a", host="10.0.0.9")
    h.update([moved])
    diff = diffs[-1]
    assert [t.address for t in diff.added] == [moved.address]
    assert sorted((t.alias, t.address) for t in diff.removed) == [
        ("a", a.address),
        ("b", b.address),
    ]
    assert [t.alias for t in diff.current] == ["a"]
    assert diff.added[0].generation > first.added[0].generation


def test_new_settings_keep_the_generation_and_reach_listeners(hub) -> None:
    h, diffs, _ = hub
    a = target(alias="a", host="10.0.0.1")
    h.update([a])
    generation = diffs[-1].current[0].generation
    slower = dataclasses.replace(a, interval=30.0)
    h.update([slower])
    diff = diffs[-1]
    assert diff.added == () and diff.removed == ()
    assert diff.current[0].interval == 30.0 and diff.current[0].generation == generation


def test_a_result_of_a_removed_or_replaced_target_is_dropped(hub) -> None:
    h, diffs, seen = hub
    h.update([target(alias="a", host="10.0.0.1")])
    (running,) = diffs[-1].current  # what the scheduler hands a cycle
    assert h.publish(running, result_for(running))
    h.update([])
    assert not h.publish(running, result_for(running))  # removed while in flight
    h.update([target(alias="a", host="10.0.0.1")])  # ... and added back
    assert not h.publish(running, result_for(running))  # still the old generation
    (fresh,) = diffs[-1].current
    assert h.publish(fresh, result_for(fresh))
    assert [t.generation for t, _ in seen] == [running.generation, fresh.generation]
    h.close()
    assert not h.publish(fresh, result_for(fresh))
    assert len(seen) == 2


def test_listeners_hear_in_registration_order_before_update_returns() -> None:
    h = Hub()
    order: list[str] = []
    h.listen(lambda diff: order.append("scheduler"))
    h.listen(lambda diff: order.append("metrics"))
    h.update([target(alias="a", host="10.0.0.1")])
    assert order == ["scheduler", "metrics"]


def test_pick_by_alias() -> None:
    h = Hub()
    h.update([target(alias="only", host="10.0.0.1")])
    assert h.pick(None).alias == "only"
    assert h.pick("only").alias == "only"
    with pytest.raises(UnknownAlias):
        h.pick("nope")
    h.update([target(alias="x", host="10.0.0.1"), target(alias="y", host="10.0.0.2")])
    with pytest.raises(AliasRequired, match="x, y"):
        h.pick(None)
