"""The data-plane canary end to end against the real Milvus standalone 2.3.5 (Go).

Same machinery as tests/test_e2e.py (a standalone in a network namespace, the probe run in
it as users run it); pymilvus, run in the namespace too, is the tests' hand on the server
(drop, release, delete, count, users). Needs root; fails rather than skips without it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests import test_e2e
from tests.support import wait_until
from tests.test_e2e import Server, Servers

servers = test_e2e.servers
"""The standalone pool of tests/test_e2e.py, started for this module."""


@pytest.fixture
def plain(servers: Servers) -> Server:
    return servers.get("plain")


@pytest.fixture
def auth(servers: Servers) -> Server:
    return servers.get("auth")


pytestmark = pytest.mark.e2e

ROOT = "root:Milvus"


def _milvus(server: Server, code: str, *args: str, token: str | None = None) -> Any:
    """Run `code` (with `client`, a pymilvus MilvusClient, and `args`) in the namespace;
    what it prints as JSON."""
    prelude = (
        "import json, sys\n"
        "from pymilvus import MilvusClient\n"
        "args = sys.argv[3:]\n"
        "client = MilvusClient(uri=sys.argv[1], token=sys.argv[2] or None)\n"
    )
    done = server.ns.python(
        "-c", prelude + code, f"http://{server.address}", token or "", *args, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _count(server: Server, collection: str, token: str | None = None) -> int:
    return int(
        _milvus(
            server,
            "rows = client.query(args[0], filter='', output_fields=['count(*)'],"
            " consistency_level='Strong')\n"
            "print(json.dumps(rows[0]['count(*)']))\n",
            collection,
            token=token,
        )
    )


def _init(server: Server, collection: str, *extra: str) -> str:
    done = server.ns.python(
        "-m", "probe", "canary", "init", "--uri", server.address,
        "--canary.collection", collection, *extra, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_canary_init_check_release_delete_on_standalone(plain: Server) -> None:
    name = "canary_e2e_a"
    missing = plain.check("--uri", plain.address, "--canary.collection", name)
    assert (missing.code, missing.reason) == (3, "collection_missing"), missing
    assert missing.result["failed_phase"] == "search"

    said = _init(plain, name)
    assert "created collection" in said and "loaded the collection" in said, said
    assert "nothing to do" in _init(plain, name)  # idempotent
    assert _count(plain, name) == 16

    ok = plain.check(
        "--uri", plain.address, "--canary.collection", name, "--canary.write", "true",
        timeout="10s",
    )  # fmt: skip
    assert ok.code == 0, ok
    assert {"search", "query", "write"} <= set(ok.result["phases"])

    # Released: not_loaded, and create: false does not load it again.
    _milvus(plain, "client.release_collection(args[0])\nprint('null')\n", name)
    released = plain.check("--uri", plain.address, "--canary.collection", name)
    assert (released.code, released.reason) == (3, "not_loaded"), released
    state = _milvus(
        plain, "print(json.dumps(str(client.get_load_state(args[0])['state'])))\n", name
    )
    assert state == "NotLoad"

    # Loaded again by `canary init`; then rows deleted under it: wrong_result.
    _init(plain, name)
    _milvus(plain, "client.delete(args[0], ids=list(range(1, 17)))\nprint('null')\n", name)

    def wrong() -> Any:
        checked = plain.check("--uri", plain.address, "--canary.collection", name)
        return checked if checked.reason == "wrong_result" else None

    checked = wait_until(wrong, 30, "the deletes to show (bounded staleness)")
    assert checked.code == 4 and checked.result["failed_phase"] == "search"


def test_daemon_sets_up_from_nothing_and_again_after_a_drop(plain: Server) -> None:
    name = "canary_e2e_daemon"
    with plain.daemon(
        "canary",
        "--uri", plain.address,
        "--alias", "canary",
        "--canary.collection", name,
        "--canary.create", "true",
        "--canary.write", "true",
        "--probe.interval", "1s",
        "--probe.timeout", "900ms",
    ) as d:  # fmt: skip

        def setups() -> float:
            return d.scrape().one("milvus_probe_canary_setups_total", result="success")

        def passing_since(attempts: float) -> bool:
            m = d.scrape()
            return (
                m.one("milvus_probe_attempts_total") > attempts
                and m.one("milvus_probe_success") == 1.0
            )

        def canary_passed() -> bool:
            m = d.scrape()
            wrote = m.one("milvus_probe_phase_duration_seconds_count", phase="write") >= 1
            return wrote and m.one("milvus_probe_success") == 1.0

        wait_until(canary_passed, 120, "setup from nothing, then a passing canary cycle")
        assert setups() == 1.0
        m = d.scrape()
        # Cycles before the first setup waited for it: the healthy server never failed
        # (before, the first two cycles here failed as collection_missing).
        assert m.total("milvus_probe_failures_total") == 0
        assert m.one("milvus_probe_attempts_total") >= 2
        for phase in ("search", "query", "write"):
            assert m.one("milvus_probe_phase_duration_seconds_count", phase=phase) >= 1
        assert m.one("milvus_probe_canary_visibility_seconds_count") >= 1

        _milvus(plain, "client.drop_collection(args[0])\nprint('null')\n", name)
        wait_until(lambda: setups() == 2.0, 120, "a second setup after the drop")
        attempts = d.scrape().one("milvus_probe_attempts_total")
        wait_until(lambda: passing_since(attempts), 60, "passing again")
        reasons = {
            s.labels["reason"] for s in d.scrape().find("milvus_probe_failures_total") if s.value
        }
        assert "collection_missing" in reasons, reasons
        assert d.stop() == 0
    assert _count(plain, name) == 17


CYCLES = """
import json, sys
from kit.proxy import CountingProxy
from kit.wait import wait_until
from probe.probers import InfoMode
from probe.probers.grpc import GrpcProber
from tests.support import target

address, collection, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = address.split(":")
proxy = CountingProxy((host, int(port)))
t = target(uri=proxy.address, **{"canary.collection": collection, "canary.write": "true",
                                 "canary.rows": "8", "probe.timeout": "3s",
                                 "probe.interval": "10s"})
prober = GrpcProber()
failed = []
for _ in range(cycles):
    r = prober.run(t, InfoMode.SCHEDULED)
    if not r.success:
        failed.append(f"{r.reason} {r.failed_phase}: {r.error}")
wait_until(lambda: proxy.counts()[1] == proxy.counts()[0], 10, "every close")
print(json.dumps({"connections": proxy.counts(), "failed": failed}))
proxy.stop()
"""


def test_write_cycles_keep_the_row_count_and_one_connection_each(plain: Server) -> None:
    """200 write cycles (the issue asks 1,000; a strong read waits for Milvus's time tick,
    ~0.2 s a cycle here, so 200 keep the suite's time in bounds)."""
    name, cycles = "canary_e2e_writes", 200
    _init(plain, name, "--canary.rows", "8")
    done = plain.ns.python("-c", CYCLES, plain.address, name, str(cycles), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed"] == [], report["failed"][:5]
    assert report["connections"] == [cycles, cycles]
    assert _count(plain, name) == 8 + 1


def test_a_user_without_privileges_is_permission_denied(auth: Server) -> None:
    name = "canary_e2e_rbac"
    _init(auth, name, "--token", ROOT)
    _milvus(
        auth,
        "if 'canary_reader' not in client.list_users():\n"
        "    client.create_user('canary_reader', 'Reader-Pass-1')\n"
        "print('null')\n",
        token=ROOT,
    )
    checked = auth.check(
        "--uri", auth.address, "--user", "canary_reader", "--password", "Reader-Pass-1",
        "--canary.collection", name,
    )  # fmt: skip
    assert (checked.code, checked.reason) == (3, "permission_denied"), checked
    assert checked.result["failed_phase"] == "search"
    assert "Reader-Pass-1" not in json.dumps(checked.result)

    # Granted search and query (2.3.5's RBAC: privileges Search and Query on the
    # collection), it reads; a write still needs Upsert (Insert + Delete in 2.3.5).
    _milvus(
        auth,
        "if 'canary_read' not in client.list_roles():\n"
        "    client.create_role('canary_read')\n"
        "for p in ('Search', 'Query'):\n"
        "    client.grant_privilege('canary_read', 'Collection', p, args[0])\n"
        "client.grant_role('canary_reader', 'canary_read')\n"
        "print('null')\n",
        name,
        token=ROOT,
    )

    def reads() -> Any:
        c = auth.check(
            "--uri", auth.address, "--user", "canary_reader", "--password", "Reader-Pass-1",
            "--canary.collection", name,
        )  # fmt: skip
        return c if c.code == 0 else None

    wait_until(reads, 30, "the grant to take effect")
    writes = auth.check(
        "--uri", auth.address, "--user", "canary_reader", "--password", "Reader-Pass-1",
        "--canary.collection", name, "--canary.write", "true",
    )  # fmt: skip
    assert (writes.reason, writes.result["failed_phase"]) == ("permission_denied", "write")
