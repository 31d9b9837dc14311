"""Signals, reloads and secret rotation on a live daemon.

Everything runs against the real `python -m probe serve` in a subprocess, as deployed,
so nothing in the test process competes with the daemon's cycles. Secret rotation uses a
Milvus double that accepts both the old and the new token while the rotation happens, as
a server does while a credential is being rolled, and then only the new one.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.support import (
    MilvusDouble,
    SilentServer,
    attempts,
    free_port,
    http_get,
    scrape,
    serve_process,
    wait_until,
)
from tests.test_abuse import ClosedBy
from tests.test_daemon import write_config

SHUTDOWN_LIMIT = 2.0
"""Seconds from SIGTERM to exit, as the README promises."""


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_with_cycles_in_flight_closes_every_connection(tmp_path: Path) -> None:
    """Three targets that accept TCP and never answer, and a /probe waiting on one of them.

    SIGTERM: every connection the daemon opened sees EOF, the daemon says it closed the
    cycles in flight itself, and it exits 0 within 2 s.
    """
    silent = [SilentServer() for _ in range(3)]
    waiting: list[Any] = []
    try:
        config = write_config(tmp_path / "probe.yaml",
                              [{"alias": f"hung{i}", "uri": f"127.0.0.1:{s.port}"}
                               for i, s in enumerate(silent)],
                              interval="10s", timeout="5s")
        with serve_process(tmp_path, "--config.file", str(config)) as (process, port):
            def all_in_flight() -> bool:
                m = scrape(port)
                return all(m.value("milvus_probe_open_connections", alias=f"hung{i}") == 1
                           for i in range(3)) and all(s.connections for s in silent)

            wait_until(all_in_flight, 10, "a cycle of every target in flight")

            # An on-demand probe of a hung target, waiting too.
            def probe_now() -> None:
                try:
                    waiting.append(http_get(port, "/probe?alias=hung0", timeout=10)[0])
                except OSError as exc:
                    waiting.append(exc)

            asker = threading.Thread(target=probe_now)
            asker.start()
            wait_until(lambda: len(silent[0].connections) >= 2, 5, "the /probe connection")

            accepted = [conn for s in silent for conn in s.connections]
            watcher = ClosedBy(accepted)
            try:
                began = time.monotonic()
                process.send_signal(signal.SIGTERM)
                try:
                    code: int | None = process.wait(SHUTDOWN_LIMIT + 3)
                except subprocess.TimeoutExpired:
                    code = None
                took = time.monotonic() - began
                wait_until(lambda: watcher.poll() == len(accepted), 2,
                           "EOF on every connection the daemon opened")
            finally:
                watcher.close()
            asker.join(10)
            assert code == 0, f"exit code {code}"
            assert took < SHUTDOWN_LIMIT, f"shutdown took {took:.2f}s"
        log = (tmp_path / "daemon.log").read_text()
        assert "Traceback" not in log
        stopped = [line for line in log.splitlines() if 'msg="milvus-probe stopped"' in line]
        assert len(stopped) == 1, log[-2000:]
        closed = re.search(r"closed_in_flight=(\d+)", stopped[0])
        assert closed and int(closed.group(1)) == 4, stopped[0]  # 3 scheduled + 1 on demand
        assert "all_cycles_finished=True" in stopped[0], stopped[0]
        assert len(waiting) == 1  # the /probe client got an answer or a closed connection
    finally:
        for server in silent:
            server.stop()


# --------------------------------------------------------------------------- SIGHUP


def _targets(version: int) -> list[dict[str, str]]:
    return [{"alias": f"v{version}-{n}", "uri": f"127.0.0.1:{port}"}
            for n, port in enumerate(REFUSED_PORTS[version % 4])]


REFUSED_PORTS = [[free_port() for _ in range(2)] for _ in range(4)]
FINAL = [{"alias": f"final-{n}", "uri": f"127.0.0.1:{free_port()}"} for n in range(3)]


def test_a_hundred_sighups_while_the_config_is_rewritten(tmp_path: Path) -> None:
    """100 SIGHUPs in a second while a writer rewrites the file (not atomically).

    Some reloads read half-written files and are rejected; none crashes the daemon, and
    after the last write and the signals after it, the last file's targets are the ones
    probed and exported — nothing of an earlier version is left.
    """
    config = tmp_path / "probe.yaml"
    write_config(config, _targets(0))
    with serve_process(tmp_path, "--config.file", str(config)) as (process, port):
        wait_until(lambda: attempts(port, "v0-0") >= 1, 10, "the first version probed")
        stop = threading.Event()
        writes = [0]

        def rewrite() -> None:
            version = 1
            while not stop.is_set():
                text = yaml.safe_dump({"probe": {"interval": "200ms", "timeout": "150ms"},
                                       "targets": _targets(version)})
                with open(config, "w") as fh:  # truncate, half, flush, the rest: torn reads
                    fh.write(text[:len(text) // 2])
                    fh.flush()
                    fh.write(text[len(text) // 2:])
                writes[0] += 1
                version += 1

        writer = threading.Thread(target=rewrite)
        writer.start()
        try:
            for number in range(100):
                if number == 90:
                    stop.set()
                    writer.join()
                    write_config(config, FINAL)
                process.send_signal(signal.SIGHUP)
                time.sleep(0.01)  # the fault's pace: 100 signals in a second
        finally:
            stop.set()
            writer.join()
        assert writes[0] > 10, "the writer hardly ran"

        final = {t["alias"] for t in FINAL}

        def settled() -> bool:
            m = scrape(port)
            return m.aliases() == final and m.value("milvus_probe_targets") == 3 and all(
                (m.value("milvus_probe_attempts_total", alias=a) or 0) >= 1 for a in final)

        wait_until(settled, 10, "the final configuration's targets, and only them")
        assert process.poll() is None, "SIGHUP must never stop the daemon"
        assert http_get(port, "/healthz")[0] == 200
        m = scrape(port)
        assert m.value("milvus_probe_config_last_reload_successful") == 1
        for alias in final:
            assert http_get(port, f"/readyz/{alias}")[0] in (200, 503)
        for version in range(4):
            assert http_get(port, f"/readyz/v{version}-0")[0] == 404
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "crashed" not in log
    assert log.count("SIGHUP: reloading") >= 10, "the signals hardly reached the daemon"


def test_reload_removes_series_and_starts_new_targets_within_an_interval(tmp_path: Path) -> None:
    """SIGHUP: removed targets lose every series at once, for good; added ones start
    within one interval."""
    config = tmp_path / "probe.yaml"
    keep = {"alias": "keep", "uri": f"127.0.0.1:{free_port()}"}
    old = [{"alias": f"old{n}", "uri": f"127.0.0.1:{free_port()}"} for n in range(2)]
    new = [{"alias": f"new{n}", "uri": f"127.0.0.1:{free_port()}"} for n in range(3)]
    interval = 2.0
    write_config(config, [keep, *old], interval="2s", timeout="1s")
    with serve_process(tmp_path, "--config.file", str(config)) as (process, port):
        wait_until(lambda: all(attempts(port, t["alias"]) >= 1 for t in [keep, *old]), 10,
                   "every target probed once")
        write_config(config, [keep, *new], interval="2s", timeout="1s")
        process.send_signal(signal.SIGHUP)
        signalled = time.monotonic()

        started: dict[str, float] = {}
        leftovers: list[str] = []
        reloaded = [False]

        def observe() -> bool:
            m = scrape(port)
            now = time.monotonic()
            for target in new:
                if target["alias"] not in started and (
                        m.value("milvus_probe_attempts_total", alias=target["alias"]) or 0) >= 1:
                    started[target["alias"]] = now - signalled
            # A scrape collects family after family, so one that overlaps the reload may show
            # old and new targets; every scrape that starts after one showed a new target
            # must show nothing of the old ones.
            if reloaded[0]:
                leftovers.extend(s.name for t in old for s in m.series_of(t["alias"]))
            reloaded[0] = reloaded[0] or "new0" in m.aliases()
            return len(started) == len(new)

        wait_until(observe, 3 * interval, "the new targets' first cycles")
        assert max(started.values()) <= interval + 0.2, started
        assert leftovers == []

        # Two more rounds of keep: the old targets' series never come back.
        base = attempts(port, "keep")

        def two_rounds() -> bool:
            m = scrape(port)
            leftovers.extend(s.name for t in old for s in m.series_of(t["alias"]))
            return (m.value("milvus_probe_attempts_total", alias="keep") or 0) >= base + 2

        wait_until(two_rounds, 4 * interval, "two more rounds")
        assert leftovers == []
        m = scrape(port)
        assert m.aliases() == {"keep", "new0", "new1", "new2"}
        assert m.value("milvus_probe_targets") == 4
        for target in old:
            assert http_get(port, f"/readyz/{target['alias']}")[0] == 404
            assert http_get(port, f"/probe?alias={target['alias']}")[0] == 404


# --------------------------------------------------------------------------- Secret rotation

OLD_TOKEN = "root:0ld-S3cr3t-Tok3n"
NEW_TOKEN = "root:N3w-S3cr3t-Tok3n"


def _authorization(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


class RotatingDouble(MilvusDouble):
    """A Milvus double that accepts any of a set of tokens (a credential being rolled)."""

    def __init__(self, *tokens: str) -> None:
        self.accepted = frozenset(_authorization(t) for t in tokens)
        super().__init__()

    def accept(self, *tokens: str) -> None:
        self.accepted = frozenset(_authorization(t) for t in tokens)

    def _enter(self, method: str, context: grpc.ServicerContext) -> dict[str, str]:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.calls.append((method, md))
        if md.get("authorization") not in self.accepted:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "auth check failure, please check username and password are correct")
        return md

    def tokens_seen(self) -> list[str | None]:
        with self._lock:
            return [md.get("authorization") for _, md in self.calls]


def kubernetes_secret_volume(directory: Path, token: str) -> Path:
    """A mounted Secret as kubelet lays it out: `token -> ..data/token`, `..data -> ..<ts>`."""
    directory.mkdir()
    stamp = directory / "..2026_11_21_14_00_00.000000001"
    stamp.mkdir()
    (stamp / "token").write_text(token + "\n")
    os.symlink(stamp.name, directory / "..data")
    os.symlink("..data/token", directory / "token")
    return directory / "token"


def rotate_secret_volume(directory: Path, token: str) -> None:
    """kubelet's AtomicWriter: write a new timestamped dir, swap `..data` with a rename."""
    old = os.readlink(directory / "..data")
    stamp = directory / "..2026_11_21_14_05_00.000000002"
    stamp.mkdir()
    (stamp / "token").write_text(token + "\n")
    os.symlink(stamp.name, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", directory / "..data")  # atomic
    shutil.rmtree(directory / old)


def test_token_file_rotated_like_a_kubernetes_secret(tmp_path: Path) -> None:
    """The probe picks up the rotated token without a restart and without one failure.

    The daemon runs in its own process (as deployed), so nothing in the test competes
    with its cycles. Waiting watches the double's call log; failures_total is a counter,
    so 0 at the end means 0 throughout.
    """
    token_file = kubernetes_secret_volume(tmp_path / "secret", OLD_TOKEN)
    double = RotatingDouble(OLD_TOKEN)
    try:
        with serve_process(tmp_path, "--uri", double.address, "--alias", "rot",
                           "--token-file", str(token_file), "--probe.interval", "200ms",
                           "--probe.timeout", "150ms") as (process, port):
            wait_until(lambda: double.count("CheckHealth") >= 5, 10, "cycles with the old token")
            assert set(double.tokens_seen()) == {_authorization(OLD_TOKEN)}

            double.accept(OLD_TOKEN, NEW_TOKEN)  # the server takes both while the Secret rolls
            rotate_secret_volume(tmp_path / "secret", NEW_TOKEN)
            wait_until(lambda: _authorization(NEW_TOKEN) in double.tokens_seen(), 10,
                       "a call with the new token")
            double.accept(NEW_TOKEN)  # the old token is revoked
            switched = double.tokens_seen().index(_authorization(NEW_TOKEN))

            before = double.count("CheckHealth")
            wait_until(lambda: double.count("CheckHealth") >= before + 10, 10,
                       "10 cycles after the revocation")
            after = double.tokens_seen()[switched:]
            assert set(after) == {_authorization(NEW_TOKEN)}, "the old token was sent after the new"
            m = scrape(port)
            reasons = {s.labels["reason"]: s.value
                       for s in m.find("milvus_probe_failures_total", alias="rot") if s.value}
            assert reasons == {}, f"failed cycles by reason: {reasons}"
            assert m.value("milvus_probe_success", alias="rot") == 1
            assert (m.value("milvus_probe_attempts_total", alias="rot") or 0) >= 15
            assert process.poll() is None  # no restart
    finally:
        double.stop()


@pytest.mark.parametrize("kind", ["token_file", "password_file"])
def test_secret_file_replaced_with_the_same_size_and_mtime(tmp_path: Path, kind: str) -> None:
    """An editor's save (write a new file, rename it over the old) of an equal-length
    secret with the old mtime: the new inode alone must trigger the re-read."""
    old, new = ("root:AAAA-S3cr3t", "root:BBBB-S3cr3t")
    secret = tmp_path / "secret"
    secret.write_text(old.split(":", 1)[1] if kind == "password_file" else old)
    stat = secret.stat()
    double = RotatingDouble(old)
    flags = (["--token-file", str(secret)] if kind == "token_file"
             else ["--user", "root", "--password-file", str(secret)])
    try:
        with serve_process(tmp_path, "--uri", double.address, "--alias", "rot", *flags,
                           "--probe.interval", "200ms", "--probe.timeout", "150ms") as (_, port):
            wait_until(lambda: double.count("CheckHealth") >= 3, 10, "cycles with the old one")
            double.accept(old, new)
            replacement = tmp_path / "secret.new"
            replacement.write_text(new.split(":", 1)[1] if kind == "password_file" else new)
            os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            os.rename(replacement, secret)
            assert secret.stat().st_size == stat.st_size
            wait_until(lambda: _authorization(new) in double.tokens_seen(), 10,
                       "a call with the new secret")
            assert scrape(port).total("milvus_probe_failures_total", alias="rot") == 0
    finally:
        double.stop()


def test_sigterm_while_many_cycles_start_and_end(tmp_path: Path) -> None:
    """20 targets refused at once, cycling every 100 ms: SIGTERM lands while channels are
    being opened and closed; the daemon still exits 0 within 2 s, nothing logged as crashed."""
    targets = [{"alias": f"r{i}", "uri": f"127.0.0.1:{free_port()}"} for i in range(20)]
    config = write_config(tmp_path / "probe.yaml", targets, interval="100ms", timeout="80ms")
    with serve_process(tmp_path, "--config.file", str(config)) as (process, port):
        def every_target_cycled() -> bool:
            text = http_get(port, "/metrics")[2].decode()
            counts = re.findall(r'^milvus_probe_attempts_total\{alias="r\d+".*\} (\S+)$', text,
                                re.M)
            return len(counts) == len(targets) and all(float(c) >= 2 for c in counts)

        wait_until(every_target_cycled, 10, "two cycles of every target")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(SHUTDOWN_LIMIT + 3)
        took = time.monotonic() - began
        assert code == 0 and took < SHUTDOWN_LIMIT, (code, took)
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "crashed" not in log
    assert "all_cycles_finished=True" in log
