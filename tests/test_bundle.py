"""The diagnostics bundle: /debug/bundle of a daemon probing a real Milvus (milvus-lite) and a
port that refuses, opened with tarfile and read by the real `go tool pprof`; and
`milvus-probe bundle` run as a process against it."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import probe
from probe import bundle
from probe.app import App
from tests.conftest import KUBE_NS, KUBE_SVC, KUBE_TOKEN, DaemonFactory, DiscoverFactory
from tests.kube_double import KubeApiDouble, endpoint_slice
from tests.support import MilvusLite, attempts, free_port, http_get, wait_until
from tests.test_pprof import go_pprof  # noqa: F401 - the fixture

DOWN = "ns/refused-0"
"""A target whose alias holds a slash (as discovered pods' do) and whose port refuses."""

MEMBERS = {
    "README.txt", "version.txt", "config.yaml", "readyz.txt", "metrics.txt", "targets.json",
    "history/lite.json", "history/ns%2Frefused-0.json", "traces.json", "goroutine.txt",
    "profile.pb.gz", "heap.txt", "log.jsonl", "events.json",
}  # fmt: skip
NAME = re.compile(r'attachment; filename="(milvus-probe-bundle-\d{8}T\d{6}Z)\.tar\.gz"')


def two_targets(tmp_path: Path, milvus: MilvusLite) -> Path:
    config = tmp_path / "probe.yaml"
    config.write_text(
        "probe:\n  interval: 200ms\n  timeout: 150ms\n  history: 20\n"
        f"targets:\n  - alias: lite\n    uri: {milvus.address}\n"
        f"  - alias: {DOWN}\n    uri: 127.0.0.1:{free_port()}\n"
    )
    return config


@pytest.fixture
def app(milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path) -> App:
    started = daemon(**{"config.file": str(two_targets(tmp_path, milvus))})
    wait_until(
        lambda: attempts(started.port, "lite") >= 3 and attempts(started.port, DOWN) >= 3,
        15,
        "three cycles of each target",
    )
    return started


def open_bundle(data: bytes, folder: str) -> dict[str, bytes]:
    """The members by name (without the bundle's folder); every one a plain file inside it."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for info in archive.getmembers():
            assert info.isfile() and info.name.startswith(f"{folder}/"), info.name
            assert ".." not in info.name.split("/") and info.mode == 0o644
            extracted = archive.extractfile(info)
            assert extracted is not None
            found[info.name[len(folder) + 1 :]] = extracted.read()
    return found


def route(app: App, path: str, query: str = "", peer: str = "127.0.0.1") -> tuple[str, bytes]:
    """The router's answer to a request from `peer` (no second host exists to send one)."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "REMOTE_ADDR": peer}  # fmt: skip
    seen: list[str] = []
    body = b"".join(app.router(environ, lambda status, headers: seen.append(status)))
    return seen[0], body


# --------------------------------------------------------------------------- the archive


def test_the_bundle_holds_every_member_and_each_parses(
    app: App, go_pprof: Any, tmp_path: Path  # noqa: F811
) -> None:
    status, headers, data = http_get(app.port, "/debug/bundle?seconds=1", timeout=60)
    assert status == 200, data[:300]
    assert headers["content-type"] == "application/gzip"
    named = NAME.fullmatch(headers["content-disposition"])
    assert named, headers["content-disposition"]
    members = open_bundle(data, named.group(1))
    assert set(members) == MEMBERS

    readme = members["README.txt"].decode()
    for name in MEMBERS - {"history/lite.json", "history/ns%2Frefused-0.json"}:
        assert name in readme, name
    version = members["version.txt"].decode()
    assert f"milvus-probe: {probe.__version__}\n" in version
    for key in ("python", "grpcio", "prometheus_client", "platform", "started", "uptime"):
        assert re.search(rf"^{key}: \S", version, re.MULTILINE), key

    config = yaml.safe_load(members["config.yaml"])
    assert [t["alias"] for t in config["targets"]] == ["lite", DOWN]
    assert config["targets"][0]["auth"] == "none"
    assert config["daemon"]["probe"]["interval"] == 0.2
    assert config["daemon"]["profiling"]["enabled"] is True

    readyz = members["readyz.txt"].decode()
    assert "lite" in readyz and DOWN in readyz
    assert re.search(r"readyz check (passed|failed)\n$", readyz)

    families = {f.name: f for f in text_string_to_metric_families(
        members["metrics.txt"].decode())}  # fmt: skip
    aliases = {s.labels["alias"] for s in families["milvus_probe_attempts"].samples}
    assert aliases == {"lite", DOWN}

    targets = {t["alias"]: t for t in json.loads(members["targets.json"])}
    assert (targets["lite"]["up"], targets[DOWN]["reason"]) == (True, "refused")

    for alias, name in (("lite", "history/lite.json"), (DOWN, "history/ns%2Frefused-0.json")):
        history = json.loads(members[name])
        assert history["alias"] == alias and history["window_seconds"] == 86400
        assert sum(b["attempts"] for b in history["buckets"]) >= 3
    down_rows = json.loads(members["history/ns%2Frefused-0.json"])["buckets"]
    assert sum(b["failures"].get("refused", 0) for b in down_rows) >= 3

    traces = {t["alias"]: t for t in json.loads(members["traces.json"])["targets"]}
    assert traces["lite"]["recent"] and all(r["success"] for r in traces["lite"]["recent"])
    assert traces[DOWN]["failures"][-1]["reason"] == "refused"

    goroutines = members["goroutine.txt"].decode()
    assert re.search(r'^thread \d+ "MainThread"', goroutines, re.MULTILINE)
    assert "scheduler" in goroutines

    profile = tmp_path / "profile.pb.gz"
    profile.write_bytes(members["profile.pb.gz"])
    assert "Type: cpu" in go_pprof("-top", str(profile))

    heap = members["heap.txt"].decode()
    assert "objects tracked by the collector" in heap and "VmRSS" in heap

    records = [json.loads(line) for line in members["log.jsonl"].decode().splitlines()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["msg"] == "milvus-probe started" for r in records)

    events = json.loads(members["events.json"])
    assert events["enabled"] is False and events["events"] == [] and events["note"]


def test_events_and_discovered_targets_in_the_bundle(
    discover: DiscoverFactory, kube: KubeApiDouble
) -> None:
    """With Events on (to the API server double: no kube-apiserver runs here), events.json
    lists the Event about a discovered pod that refuses; the discovery template's token
    shows only as <set>."""
    kube.put_slice(endpoint_slice(KUBE_NS, KUBE_SVC, "proxy-9", "127.0.0.1", free_port()))
    app = discover()
    wait_until(lambda: any(e["reason"] == "MilvusConnectionFailed"
                           for e in app.cluster.events.recent()),  # type: ignore[union-attr]
               10, "the Event to be posted")  # fmt: skip
    status, headers, data = http_get(app.port, "/debug/bundle?seconds=1", timeout=60)
    assert status == 200
    named = NAME.fullmatch(headers["content-disposition"])
    assert named
    members = open_bundle(data, named.group(1))
    events = json.loads(members["events.json"])
    assert events["enabled"] is True
    (event,) = [e for e in events["events"] if e["reason"] == "MilvusConnectionFailed"]
    assert event["result"] == "created" and event["regarding"]["name"] == "proxy-9"
    assert "refused" in event["message"]
    alias = f"{KUBE_NS}/proxy-9"
    assert json.loads(members[f"history/{KUBE_NS}%2Fproxy-9.json"])["alias"] == alias
    config = yaml.safe_load(members["config.yaml"])
    assert config["daemon"]["discovery"]["template"]["token"] == "<set>"
    assert config["targets"] == []  # discovered targets are in targets.json
    assert alias in {t["alias"] for t in json.loads(members["targets.json"])}
    for name, body in members.items():
        for secret in (KUBE_TOKEN, KUBE_TOKEN.split(":", 1)[1]):
            assert secret.encode() not in body, name
    # The target's own page lists the Events posted about it.
    status, _, page = http_get(app.port, f"/targets/{urllib.parse.quote(alias, safe='')}")
    assert status == 200
    text = page.decode()
    assert "Kubernetes Events (" in text and "<b>MilvusConnectionFailed</b>" in text
    assert "created" in text and KUBE_TOKEN.split(":", 1)[1] not in text


def test_members_past_their_bounds_are_cut_or_listed(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle, "MEMBER_LIMIT", 100)
    cut = bundle.text_member("metrics.txt", "x" * 1000).data
    assert len(cut) == 100 and cut.endswith(b"the bundle keeps 100]\n")
    monkeypatch.setattr(bundle, "HISTORY_BUDGET", 1)
    monkeypatch.setattr(bundle, "TRACES_BUDGET", 1)
    history = {m.name: json.loads(m.data) for m in bundle.history_members(app.history)}
    assert set(history) == {"history/lite.json", "history/_omitted.json"}
    assert history["history/_omitted.json"]["aliases"] == [DOWN]
    traces = json.loads(bundle.traces_json(app.history).data)
    assert [t["alias"] for t in traces["targets"]] == ["lite"]
    assert traces["omitted"]["aliases"] == [DOWN]


def test_alias_file_names_are_safe_and_distinct() -> None:
    names = [bundle.alias_file_name(a) for a in
             ("lite", "ns/pod-0", "..", ".hidden", "a b", "é", "x" * 400, "x" * 399 + "y")]
    assert names[:6] == ["lite", "ns%2Fpod-0", "%2E.", "%2Ehidden", "a%20b", "%C3%A9"]
    assert len(set(names)) == len(names)
    assert all("/" not in n and len(n) <= 200 for n in names)


def test_log_ring_keeps_the_last_records_as_json() -> None:
    import logging

    from probe.logs import RecentRecords

    ring = RecentRecords(size=3)
    log = logging.getLogger("probe.test_bundle.ring")
    log.addHandler(ring)
    try:
        for n in range(5):
            log.info("record %d", n, extra={"fields": {"n": n}})
        log.debug("x" * 40_000)
    finally:
        log.removeHandler(ring)
    lines = [json.loads(line) for line in ring.lines()]
    assert [r["msg"] for r in lines[:2]] == ["record 3", "record 4"] and lines[1]["n"] == 4
    assert lines[2]["level"] == "debug" and lines[2]["truncated_from_chars"] > 40_000


# --------------------------------------------------------------------------- the rules


def test_remote_peers_are_refused_unless_allowed(
    app: App, daemon: DaemonFactory, milvus: MilvusLite
) -> None:
    status, body = route(app, "/debug/bundle", "seconds=1", peer="10.1.2.3")
    assert status == "403 Forbidden" and b"--profiling.allow-remote" in body
    status, body = route(app, "/debug/bundle", "seconds=1", peer="::ffff:127.0.0.1")
    assert status == "200 OK" and body[:2] == b"\x1f\x8b"

    open_app = daemon(uri=milvus.address, **{"profiling.allow-remote": "true"})
    status, body = route(open_app, "/debug/bundle", "seconds=1", peer="10.1.2.3")
    assert status == "200 OK" and body[:2] == b"\x1f\x8b"


def test_profiling_off_means_no_bundle(daemon: DaemonFactory, milvus: MilvusLite) -> None:
    app = daemon(uri=milvus.address, **{"profiling.enabled": "false"})
    status, _, body = http_get(app.port, "/debug/bundle")
    assert status == 404 and b"--profiling.enabled=false" in body


@pytest.mark.parametrize("query", ["seconds=0", "seconds=abc", "seconds=301", "seconds=-1",
                                   "seconds=", "hz=100", "seconds=1&seconds=2"])
def test_bad_queries_are_400(app: App, query: str) -> None:
    status, _, body = http_get(app.port, f"/debug/bundle?{query}")
    assert status == 400, body
    assert b"seconds" in body or b"hz" in body


def test_post_is_405(app: App) -> None:
    status, headers, _ = http_get(app.port, "/debug/bundle", method="POST")
    assert status == 405 and headers["allow"] == "GET"


def test_one_bundle_or_profile_at_a_time(app: App) -> None:
    answers: list[int] = []
    first = threading.Thread(target=lambda: answers.append(
        http_get(app.port, "/debug/bundle?seconds=3", timeout=60)[0]))  # fmt: skip
    first.start()
    cpu = app.router.pprof.app._cpu  # type: ignore[union-attr]
    wait_until(cpu.locked, 10, "the bundle's CPU profile to start")
    status, headers, body = http_get(app.port, "/debug/bundle?seconds=1")
    assert status == 429 and b"already being made" in body
    assert 1 <= int(headers["retry-after"]) <= 5
    # Nor does a CPU profile run beside the bundle's.
    status, _, body = http_get(app.port, "/debug/pprof/profile?seconds=1")
    assert status == 429 and b"already running" in body
    first.join()
    assert answers == [200]

    # The other way round: a running profile turns a bundle away.
    profile = threading.Thread(target=lambda: answers.append(
        http_get(app.port, "/debug/pprof/profile?seconds=3", timeout=60)[0]))  # fmt: skip
    profile.start()
    wait_until(cpu.locked, 10, "the CPU profile to start")
    status, headers, body = http_get(app.port, "/debug/bundle?seconds=1")
    assert status == 429 and b"CPU profile" in body and headers["retry-after"]
    profile.join()
    assert answers == [200, 200]
    assert http_get(app.port, "/debug/bundle?seconds=1", timeout=60)[0] == 200  # free again


# --------------------------------------------------------------------------- the CLI


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", "bundle", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_fetches_and_writes_the_bundle(app: App, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{app.port}"
    done = cli(tmp_path, "--url", url, "--seconds", "2")
    assert done.returncode == 0, done.stderr
    assert "collecting: 0/2 s" in done.stderr and "collecting: 1/2 s" in done.stderr
    written = list(tmp_path.glob("milvus-probe-bundle-*.tar.gz"))
    assert len(written) == 1
    size = written[0].stat().st_size
    assert done.stdout.startswith(f"wrote {written[0]} (") and "KiB" in done.stdout
    assert size > 1000
    assert set(open_bundle(written[0].read_bytes(), written[0].name[: -len(".tar.gz")])) \
        == MEMBERS

    chosen = tmp_path / "sub" / "probe.tgz"
    chosen.parent.mkdir()
    done = cli(tmp_path, "--url", f"127.0.0.1:{app.port}/", "--seconds", "1", "-o", str(chosen))
    assert done.returncode == 0, done.stderr
    assert f"wrote {chosen} (" in done.stdout
    with tarfile.open(chosen) as archive:
        assert any(n.endswith("/profile.pb.gz") for n in archive.getnames())


def test_cli_errors_say_what_went_wrong(daemon: DaemonFactory, milvus: MilvusLite,
                                        tmp_path: Path) -> None:
    refused = cli(tmp_path, "--url", f"http://127.0.0.1:{free_port()}", "--seconds", "1")
    assert refused.returncode == 2 and "connection refused" in refused.stderr

    off = daemon(uri=milvus.address, **{"profiling.enabled": "false"})
    answered = cli(tmp_path, "--url", f"http://127.0.0.1:{off.port}")
    assert answered.returncode == 3, answered.stderr
    assert "404" in answered.stderr and "profiling is off" in answered.stderr

    too_long = daemon(uri=milvus.address, **{"profiling.max-seconds": "5"})
    answered = cli(tmp_path, "--url", f"http://127.0.0.1:{too_long.port}", "--seconds", "6")
    assert answered.returncode == 1 and "400" in answered.stderr
    assert "--profiling.max-seconds" in answered.stderr

    bad = cli(tmp_path, "--url", "ftp://x", "--seconds", "1")
    assert bad.returncode == 1 and "--url" in bad.stderr
    assert cli(tmp_path, "--seconds", "0").returncode == 1
    assert not list(tmp_path.glob("*.tar.gz"))


def test_cli_from_a_remote_address_is_refused(tmp_path: Path) -> None:
    """The daemon's own 403 to a remote peer is tested in process (above): tests may not
    listen beyond loopback. Here a double on 127.0.0.1 answers as the daemon does to a
    remote peer, and the CLI must say what to do about it."""
    answer = (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n"
        b"Connection: close\r\n\r\n"
        + b"profiles are served to loopback peers only; --profiling.allow-remote".ljust(64)[:64]
    )
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        done = cli(tmp_path, "--url", f"http://127.0.0.1:{port}", "--seconds", "1")
    finally:
        thread.join(10)
        server.close()
    assert done.returncode == 3, done.stderr
    assert "403" in done.stderr and "kubectl" in done.stderr and "port-forward" in done.stderr
