"""/debug/pprof/*: real `go tool pprof` reads every profile; the flame graph renders in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.process import Daemon
from probe.app import App
from probe.pprof import masked_argv
from tests.conftest import DaemonFactory
from tests.support import MilvusLite, http_get, wait_until

# ---------------------------------------------------------------- workloads with unique names


def milvus_probe_test_spin_workload(stop: threading.Event) -> None:
    """Burns CPU until told to stop."""
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


def milvus_probe_test_sleepy_workload(stop: threading.Event) -> None:
    """Waits, using no CPU."""
    stop.wait()


@pytest.fixture
def workloads() -> Iterator[None]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=milvus_probe_test_spin_workload, args=(stop,), name="spinner"),
        threading.Thread(target=milvus_probe_test_sleepy_workload, args=(stop,), name="sleeper"),
    ]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join()


# ---------------------------------------------------------------- tools


@pytest.fixture(scope="session")
def go_pprof(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    go = shutil.which("go")
    assert go is not None, "go is not installed: apt-get install golang-go (.ci/run does)"
    home = tmp_path_factory.mktemp("gohome")
    env = {**os.environ, "HOME": str(home), "PPROF_TMPDIR": str(home / "pprof"),
           "GOCACHE": str(home / "cache"), "GOFLAGS": "-mod=mod"}

    def run(*args: str) -> str:
        done = subprocess.run([go, "tool", "pprof", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"go tool pprof {args} failed: {done.stderr}"
        return done.stdout

    return run


@pytest.fixture
def app(daemon: DaemonFactory, milvus: MilvusLite) -> App:
    return daemon(uri=milvus.address, **{"probe.interval": "200ms", "probe.timeout": "150ms"})


def fetch(app: App, path: str) -> tuple[int, bytes]:
    status, _, body = http_get(app.port, path, timeout=120)
    return status, body


def save(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------- CPU


def test_cpu_profile_top_is_the_spinning_function(app: App, workloads: None, go_pprof,
                                                  tmp_path: Path) -> None:
    status, data = fetch(app, "/debug/pprof/profile?seconds=2")
    assert status == 200
    path = save(tmp_path, "cpu.pb.gz", data)
    top = go_pprof("-top", path)
    assert "Type: cpu" in top
    first = top.split("flat%", 1)[1].splitlines()[1]  # the heaviest function
    assert "milvus_probe_test_spin_workload" in first, top
    assert "milvus_probe_test_sleepy_workload" not in top  # waiting is not CPU
    raw = go_pprof("-raw", path)
    assert "thread:[spinner]" in raw or "thread:spinner" in raw
    traces = go_pprof("-traces", path)
    assert "milvus_probe_test_spin_workload" in traces


def test_wall_profile_shows_the_waiting_thread(app: App, workloads: None, go_pprof,
                                              tmp_path: Path) -> None:
    status, data = fetch(app, "/debug/pprof/profile?seconds=1&mode=wall&hz=50")
    assert status == 200
    top = go_pprof("-top", save(tmp_path, "wall.pb.gz", data))
    assert "Type: wall" in top
    assert "milvus_probe_test_sleepy_workload" in top


def test_go_tool_pprof_fetches_from_the_url(app: App, workloads: None, go_pprof) -> None:
    top = go_pprof("-top", f"http://127.0.0.1:{app.port}/debug/pprof/profile?seconds=1")
    assert "milvus_probe_test_spin_workload" in top


# ---------------------------------------------------------------- heap


def milvus_probe_test_allocate_blocks(count: int, size: int) -> list[bytearray]:
    return [bytearray(size) for _ in range(count)]


def test_heap_window_shows_an_allocation_of_known_size(app: App, go_pprof,
                                                      tmp_path: Path) -> None:
    result: dict[str, bytes] = {}
    worker = threading.Thread(
        target=lambda: result.update(body=fetch(app, "/debug/pprof/heap?seconds=2")[1]))
    worker.start()
    wait_until(tracemalloc.is_tracing, 5, "the heap window to open")
    kept = milvus_probe_test_allocate_blocks(64, 64 * 1024)  # 4 MiB, live at the end
    worker.join()
    assert not tracemalloc.is_tracing()  # the window closed behind itself
    top = go_pprof("-top", "-sample_index=inuse_space", save(tmp_path, "heap.pb.gz",
                                                              result["body"]))
    line = next(row for row in top.splitlines() if "milvus_probe_test_allocate_blocks" in row)
    flat = _bytes(line.split()[0])
    assert 4 * 2**20 <= flat <= 4.4 * 2**20, line  # 64 × 64 KiB, plus a little overhead
    del kept


def _bytes(text: str) -> float:
    """pprof's sizes (`4100.06kB`, `4.00MB`, `512B`) in bytes; its k/M/G are powers of 1024."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10), ("B", 1)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise AssertionError(f"not a size: {text!r}")


def test_allocs_uses_alloc_sample_types(app: App, go_pprof, tmp_path: Path) -> None:
    status, data = fetch(app, "/debug/pprof/allocs?seconds=1")
    assert status == 200
    raw = go_pprof("-raw", save(tmp_path, "allocs.pb.gz", data))
    assert "alloc_objects/count alloc_space/bytes" in raw


# ---------------------------------------------------------------- threads


def test_goroutine_dumps(app: App, workloads: None, go_pprof, tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    status, full = fetch(app, "/debug/pprof/goroutine?debug=2")
    lived_throughout = before & {t.name for t in threading.enumerate()}
    assert status == 200
    text = full.decode()
    for name in lived_throughout:
        assert f'"{name}"' in text, name
    assert "milvus_probe_test_sleepy_workload()" in text
    assert "daemon=" in text and "native_id=" in text

    status, grouped = fetch(app, "/debug/pprof/goroutine?debug=1")
    assert grouped.decode().startswith("thread profile: total ")

    status, proto = fetch(app, "/debug/pprof/goroutine")
    top = go_pprof("-top", save(tmp_path, "goroutine.pb.gz", proto))
    assert "Type: goroutine" in top and "milvus_probe_test_sleepy_workload" in top


def test_threadcreate_and_cmdline(app: App, workloads: None, go_pprof, tmp_path: Path) -> None:
    top = go_pprof("-top", f"http://127.0.0.1:{app.port}/debug/pprof/threadcreate")
    assert "Scheduler._loop" in top and "milvus_probe_test_spin_workload" in top
    status, body = fetch(app, "/debug/pprof/cmdline")
    assert status == 200 and body.split(b"\x00")[0] == sys.executable.encode()


def test_cmdline_masks_secrets() -> None:
    argv = ["milvus-probe", "serve", "--token", "root:S3cret", "--password=Pa55",
            "--uri", "http://x"]
    assert masked_argv(argv, ("--token", "--password")) == [
        "milvus-probe", "serve", "--token", "***", "--password=***", "--uri", "http://x"]


def test_cmdline_of_a_real_daemon_hides_the_token(milvus: MilvusLite, tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "daemon.log", "--uri", milvus.address, "--token",
                    "root:S3cr3t-Tok3n")
    with daemon.serving(timeout=20):
        status, _, body = http_get(daemon.port, "/debug/pprof/cmdline")
        assert status == 200
        assert b"S3cr3t" not in body and b"--token\x00***" in body


# ---------------------------------------------------------------- flame graph


def _png_is_blank(path: Path) -> bool:
    """True when every pixel row of the PNG carries the same bytes (an empty page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            width = struct.unpack(">I", data[pos + 8:pos + 12])[0]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    distinct = len(set(pixels[i] for i in range(0, len(pixels), 7)))
    return distinct < 4 or width == 0


def test_flamegraph_renders_in_chromium_without_network(
    app: App, workloads: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is not installed: apt-get install chromium"
    url = f"http://127.0.0.1:{app.port}/debug/pprof/flamegraph?seconds=1"
    status, page = fetch(app, "/debug/pprof/flamegraph?seconds=1")
    assert status == 200
    html = page.decode()
    assert "milvus_probe_test_spin_workload" in html
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert 'src="http' not in html and 'href="http' not in html

    shot, netlog = tmp_path / "flame.png", tmp_path / "netlog.json"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
         f"--log-net-log={netlog}", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    assert not _png_is_blank(shot)
    # What the page fetched from us: our own request log, one line per request served.
    served = [r.getMessage() for r in caplog.records
              if r.name == "probe.web.server" and r.getMessage().startswith("http ")]
    assert len(served) == 2, served  # our fetch above, and Chromium's page load: no assets
    # And from anywhere else: the net log, less the browser's own update/account services.
    urls = {str(event["params"]["url"]) for event in _netlog_events(netlog)  # type: ignore[index]
            if isinstance(event.get("params"), dict) and "url" in event["params"]}  # type: ignore[operator]
    browser_own = (".google.com", ".googleapis.com", ".gvt1.com", ".gstatic.com")
    elsewhere = {u for u in urls if u.startswith(("http:", "https:"))
                 and not u.startswith(f"http://127.0.0.1:{app.port}/")
                 and not urllib.parse.urlsplit(u).hostname.endswith(browser_own)}  # type: ignore[union-attr]
    assert not elsewhere, elsewhere


def _netlog_events(path: Path) -> list[dict[str, object]]:
    """Chromium's net log; one written by a process that was cut short lacks its closing."""
    text = path.read_text().rstrip()
    try:
        return list(json.loads(text)["events"])
    except json.JSONDecodeError:
        return list(json.loads(text.rstrip(",") + "]}")["events"])


# ---------------------------------------------------------------- safety and errors


@pytest.mark.parametrize("query", ["seconds=0", "seconds=301", "seconds=abc", "hz=0",
                                   "hz=1001", "mode=gpu", "bogus=1"])
def test_bad_profile_queries_are_400(app: App, query: str) -> None:
    status, body = fetch(app, f"/debug/pprof/profile?{query}")
    assert status == 400 and body.strip()


def test_bad_goroutine_debug_and_unknown_profile(app: App) -> None:
    assert fetch(app, "/debug/pprof/goroutine?debug=3")[0] == 400
    assert fetch(app, "/debug/pprof/nope")[0] == 404


def test_one_cpu_profile_at_a_time(app: App) -> None:
    cpu_lock = app.router.pprof.app._cpu  # type: ignore[union-attr]
    first = threading.Thread(target=fetch, args=(app, "/debug/pprof/profile?seconds=2"))
    first.start()
    wait_until(cpu_lock.locked, 5, "the first profile to start")
    status, body = fetch(app, "/debug/pprof/profile?seconds=1")
    first.join()
    assert status == 429 and b"already running" in body
    assert fetch(app, "/debug/pprof/profile?seconds=1")[0] == 200  # free again


def test_client_that_disconnects_stops_the_profile(app: App) -> None:
    cpu_lock = app.router.pprof.app._cpu  # type: ignore[union-attr]
    sock = socket.create_connection(("127.0.0.1", app.port))
    sock.sendall(b"GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(cpu_lock.locked, 5, "the profile to start")
    began = time.monotonic()
    sock.close()
    wait_until(lambda: not cpu_lock.locked(), 5, "the profile to stop")
    assert time.monotonic() - began < 2


def test_remote_peers_are_refused_unless_allowed(app: App, daemon: DaemonFactory,
                                                 milvus: MilvusLite) -> None:
    # No second host exists here, so the peer address is given to the WSGI app directly.
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/debug/pprof/cmdline",
               "QUERY_STRING": "", "REMOTE_ADDR": "10.1.2.3"}
    seen: list[str] = []
    body = b"".join(app.router(environ, lambda status, headers: seen.append(status)))
    assert seen == ["403 Forbidden"] and b"--profiling.allow-remote" in body
    environ["REMOTE_ADDR"] = "::ffff:127.0.0.1"
    b"".join(app.router(environ, lambda status, headers: seen.append(status)))
    assert seen[-1] == "200 OK"

    open_app = daemon(uri=milvus.address, **{"profiling.allow-remote": "true"})
    environ["REMOTE_ADDR"] = "10.1.2.3"
    b"".join(open_app.router(environ, lambda status, headers: seen.append(status)))
    assert seen[-1] == "200 OK"


def test_profiling_can_be_switched_off(daemon: DaemonFactory, milvus: MilvusLite) -> None:
    app = daemon(uri=milvus.address, **{"profiling.enabled": "false"})
    status, body = fetch(app, "/debug/pprof/")
    assert status == 404 and b"--profiling.enabled" in body


def test_index_lists_every_profile(app: App) -> None:
    status, body = fetch(app, "/debug/pprof/")
    text = body.decode()
    assert status == 200
    for name in ("profile", "heap", "allocs", "goroutine", "threadcreate", "cmdline",
                 "flamegraph"):
        assert f'href="{name}' in text
    assert "go tool pprof" in text and "kubectl port-forward" in text


def test_probes_keep_their_schedule_while_a_profile_runs(app: App) -> None:
    """A 10 s CPU profile at 100 Hz must not stall the 200 ms probe schedule."""
    def attempts() -> float:
        labels = dict(zip(("alias", "target", "namespace", "service", "pod", "protocol"),
                          app.config.targets[0].series_labels, strict=True))
        value = app.registry.get_sample_value("milvus_probe_attempts_total", labels)
        return value or 0.0

    def lag_count_over(limit: float) -> float:
        total = app.registry.get_sample_value("milvus_probe_schedule_lag_seconds_count") or 0
        within = app.registry.get_sample_value("milvus_probe_schedule_lag_seconds_bucket",
                                               {"le": str(limit)}) or 0
        return total - within

    before, late_before = attempts(), lag_count_over(0.05)
    status, _ = fetch(app, "/debug/pprof/profile?seconds=10")
    after, late_after = attempts(), lag_count_over(0.05)
    assert status == 200
    assert after - before >= 45  # 10 s / 200 ms = 50 slots
    assert late_after - late_before <= 1  # no cycle started more than 50 ms late
