"""Health as a state machine on a fake clock: thresholds, policies, liveness, changes.

No daemon and no HTTP: targets come through a real Hub (which stamps their generation)
and results are fed to `Health.observe` as the prober would produce them, so every state
in between thresholds is seen exactly (the end-to-end tests in test_daemon.py see the
same through /readyz, at the mercy of timing).
"""

from __future__ import annotations

import dataclasses

import pytest

from probe.config import Sources, load
from probe.health import Change, Check, Health
from probe.hub import Hub
from probe.probers.grpc import Phase
from probe.result import FailureReason, ProbeResult, RpcMethod
from probe.targets import Target
from tests.support import target


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(clock: FakeClock | None = None, **readiness: str) -> Health:
    flags = {"uri": "127.0.0.1:1", **{f"readiness.{k}": v for k, v in readiness.items()}}
    settings = load(Sources(flags=flags, environ={})).readiness
    return Health(settings, clock=clock or FakeClock())


class Table:
    """Health behind a real Hub, wired as app.py wires it."""

    def __init__(self, h: Health) -> None:
        self.hub = Hub()
        self.hub.listen(h.follow)
        self.h = h

    def update(self, targets: list[Target], first_round: bool = False) -> None:
        self.hub.update(targets, first_round=first_round)

    def cycle(self, t: Target, reason: FailureReason | None = None) -> Change | None:
        """A cycle of `t`'s alias as the hub hands it: the table's generation of it."""
        current = self.hub.pick(t.alias)
        return self.h.observe(current, result(current, reason))


def make(alias: str, port: int = 1) -> Target:
    return target(alias=alias, uri=f"127.0.0.1:{port}")


def result(t: Target, reason: FailureReason | None = None) -> ProbeResult:
    return ProbeResult(
        alias=t.alias, target=t.address, method=RpcMethod.CHECK_HEALTH.value, started_at=0.0,
        duration=0.01, phases={Phase.CONNECT: 0.01}, success=reason is None, reason=reason,
        failed_phase=Phase.CONNECT if reason else None,
    )


def check(h: Health, alias: str) -> tuple[bool, str]:
    found = h.target_check(alias)
    assert found is not None
    return found.ok, found.message


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# --------------------------------------------------------------------------- thresholds


def test_a_target_passes_after_success_threshold_and_fails_after_failure_threshold() -> None:
    h = health(**{"failure-threshold": "3", "success-threshold": "2"})
    table = Table(h)
    db = make("db")
    table.update([db])
    assert check(h, "db") == (False, "no probe has finished yet")

    table.cycle(db)
    assert check(h, "db") == (False, "1 consecutive success(es); passes at 2")
    table.cycle(db)
    assert check(h, "db") == (True, "ok")

    table.cycle(db, FailureReason.TIMEOUT)
    assert check(h, "db") == (True, "ok (1 consecutive failure(s), last timeout; fails at 3)")
    table.cycle(db, FailureReason.REFUSED)
    assert check(h, "db") == (True, "ok (2 consecutive failure(s), last refused; fails at 3)")
    table.cycle(db, FailureReason.REFUSED)
    assert check(h, "db") == (False, "failing: refused (3 consecutive failure(s))")

    table.cycle(db)  # one success is not enough to pass again...
    assert check(h, "db") == (False, "1 consecutive success(es); passes at 2")
    table.cycle(db, FailureReason.UNHEALTHY)  # ...and a failure starts the count over
    table.cycle(db)
    assert check(h, "db")[0] is False
    table.cycle(db)
    assert check(h, "db") == (True, "ok")


def test_a_failure_between_successes_resets_the_failure_count() -> None:
    h = health(**{"failure-threshold": "2"})
    table = Table(h)
    db = make("db")
    table.update([db])
    table.cycle(db)
    for _ in range(5):  # fail, pass, fail, pass ...: never two in a row
        table.cycle(db, FailureReason.TIMEOUT)
        assert check(h, "db")[0] is True
        table.cycle(db)
    table.cycle(db, FailureReason.TIMEOUT)
    table.cycle(db, FailureReason.TIMEOUT)
    assert check(h, "db")[0] is False


# --------------------------------------------------------------------------- policies


def test_self_policy_waits_for_the_first_round_and_ignores_targets() -> None:
    h = health()
    table = Table(h)
    up, down = make("up", 1), make("down", 2)
    table.update([up, down], first_round=True)
    h.server_started()
    ok, checks = h.ready()
    assert not ok
    assert by_name(checks)["first-round"].message == "2 target(s) not probed yet"

    table.cycle(up)
    assert not h.ready()[0]
    table.cycle(down, FailureReason.REFUSED)
    ok, checks = h.ready()
    assert ok  # a failing target does not count under "self"
    named = by_name(checks)
    assert named["first-round"].ok and named["first-round"].message == "done"
    assert not named["target:down"].ok and not named["target:down"].counts
    assert "policy:any" not in named and "policy:all" not in named

    # Targets added later (a reload) are not part of the first round.
    table.update([up, down, make("late", 3)])
    assert h.ready()[0]


@pytest.mark.parametrize(("policy", "one_of_two", "none"), [("any", True, False),
                                                            ("all", False, False)])
def test_any_and_all_policies(policy: str, one_of_two: bool, none: bool) -> None:
    h = health(policy=policy, **{"failure-threshold": "1"})
    table = Table(h)
    a, b = make("a", 1), make("b", 2)
    table.update([a, b], first_round=True)
    h.server_started()
    ok, checks = h.ready()
    assert not ok and by_name(checks)[f"policy:{policy}"].message == "0 of 2 target(s) passing"
    assert "first-round" not in by_name(checks)

    table.cycle(a)
    table.cycle(b, FailureReason.REFUSED)
    ok, checks = h.ready()
    assert ok is one_of_two
    assert by_name(checks)[f"policy:{policy}"].message == "1 of 2 target(s) passing"
    assert by_name(checks)["target:b"].counts  # targets count under any/all

    table.cycle(b)
    assert h.ready()[0] is True
    table.cycle(a, FailureReason.TIMEOUT)
    table.cycle(b, FailureReason.TIMEOUT)
    assert h.ready()[0] is none

    table.update([])  # no targets at all
    assert h.ready()[0] is (policy == "all")


def test_server_and_shutdown_checks() -> None:
    h = health()
    table = Table(h)
    table.update([])
    ok, checks = h.ready()
    assert not ok and by_name(checks)["server"].message == "not started"
    h.server_started()
    assert h.ready()[0]
    h.extra_checks.append(lambda: Check("discovery", False, "not synced"))
    ok, checks = h.ready()
    assert not ok and by_name(checks)["discovery"].message == "not synced"
    h.extra_checks.clear()
    h.stopping()
    ok, checks = h.ready()
    assert not ok and by_name(checks)["shutdown"].message == "shutting down"


# --------------------------------------------------------------------------- liveness


def test_liveness_follows_the_heartbeat_on_the_clock() -> None:
    clock = FakeClock()
    h = health(clock)
    assert h.live() == (False, "scheduler has not started")
    h.heartbeat()
    assert h.live() == (True, "ok")
    clock.now += 10.0
    assert h.live() == (True, "ok")  # 10 s is the limit, not yet past it
    clock.now += 0.5
    assert h.live() == (False, "scheduler heartbeat is 10.5s old (limit 10s)")
    h.heartbeat()
    assert h.live() == (True, "ok")


# --------------------------------------------------------------------------- targets


def test_state_survives_a_reload_unless_the_address_changes() -> None:
    h = health(**{"failure-threshold": "1"})
    table = Table(h)
    db = make("db", 1)
    table.update([db])
    table.cycle(db)
    table.update([dataclasses.replace(db, interval=db.interval * 2)])  # new settings only
    assert check(h, "db") == (True, "ok")

    old = table.hub.pick("db")
    moved = make("db", 2)
    table.update([moved])
    assert check(h, "db") == (False, "no probe has finished yet")
    assert h.observe(old, result(old, FailureReason.REFUSED)) is None  # the old address's
    assert check(h, "db") == (False, "no probe has finished yet")

    gone = table.hub.pick("db")
    table.update([])
    assert h.target_check("db") is None
    assert h.observe(gone, result(gone)) is None  # in flight while it was removed


def test_a_target_is_its_generation_not_its_alias_and_address() -> None:
    """Same alias and address, another RPC: the hub's new generation, so a new target
    whose readiness starts over (as its series do), and the old one's cycles are dropped."""
    h = health(**{"failure-threshold": "1"})
    table = Table(h)
    db = make("db")
    table.update([db])
    table.cycle(db)
    old = table.hub.pick("db")
    table.update([dataclasses.replace(db, rpc=RpcMethod.GET_VERSION)])
    assert check(h, "db") == (False, "no probe has finished yet")
    assert h.observe(old, result(old)) is None
    assert check(h, "db") == (False, "no probe has finished yet")
    assert table.cycle(db) is not None and check(h, "db") == (True, "ok")


def test_changes_are_reported_on_flips_and_new_reasons_only() -> None:
    h = health()
    table = Table(h)
    db = make("db")
    table.update([db])
    first = table.cycle(db)
    assert first is not None and first.up and first.first
    assert table.cycle(db) is None

    down = table.cycle(db, FailureReason.REFUSED)
    assert down is not None and not down.up and not down.first
    assert (down.reason, down.previous_reason) == (FailureReason.REFUSED, None)
    assert table.cycle(db, FailureReason.REFUSED) is None
    other = table.cycle(db, FailureReason.TIMEOUT)  # down for another reason
    assert other is not None and (other.reason, other.previous_reason) == (
        FailureReason.TIMEOUT, FailureReason.REFUSED)
    back = table.cycle(db)
    assert back is not None and back.up and back.previous_reason is FailureReason.TIMEOUT

