"""The status pages and /api/v1 against a daemon probing a real Milvus (milvus-lite) and a
port that refuses connections; the pages rendered by a real headless Chromium.

Chromium runs with no network but loopback (its own update and account services aside)
and its net log is read back: the pages must load nothing but themselves.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import urllib.parse
import uuid
import zlib
from pathlib import Path

import pytest

from probe import cli
from probe.app import App
from probe.pages import OVERVIEW_CYCLES
from tests.conftest import DaemonFactory
from tests.support import MilvusLite, attempts, free_port, http_get, wait_until
from tests.test_charts import measure_phase_bars

DOWN = "ns/refused-0"
"""A target whose alias holds a slash (as discovered pods' do) and whose port refuses."""


@pytest.fixture
def app(milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path) -> App:
    config = tmp_path / "probe.yaml"
    config.write_text(
        "probe:\n  interval: 200ms\n  timeout: 150ms\n  history: 20\n"
        f"targets:\n  - alias: lite\n    uri: {milvus.address}\n"
        f"  - alias: {DOWN}\n    uri: 127.0.0.1:{free_port()}\n"
    )
    started = daemon(**{"config.file": str(config)})
    wait_until(
        lambda: attempts(started.port, "lite") >= 3 and attempts(started.port, DOWN) >= 3,
        15,
        "three cycles of each target",
    )
    return started


def get_json(app: App, path: str) -> tuple[int, object]:
    status, headers, body = http_get(app.port, path)
    assert headers["content-type"] == "application/json", headers
    return status, json.loads(body)


def quoted(alias: str) -> str:
    return urllib.parse.quote(alias, safe="")


# --------------------------------------------------------------------------- JSON API


def test_targets_api_says_who_is_up_why_and_since_when(app: App) -> None:
    status, body = get_json(app, "/api/v1/targets")
    assert status == 200 and isinstance(body, list)
    by_alias = {t["alias"]: t for t in body}
    assert set(by_alias) == {"lite", DOWN}
    lite, down = by_alias["lite"], by_alias[DOWN]
    assert (lite["up"], lite["reason"], lite["protocol"]) == (True, None, "grpc")
    assert (down["up"], down["reason"]) == (False, "refused")
    assert lite["success_ratio"] == {"15m": 1.0, "1h": 1.0, "6h": 1.0, "24h": 1.0}
    assert down["success_ratio"] == {"15m": 0.0, "1h": 0.0, "6h": 0.0, "24h": 0.0}
    for t in (lite, down):
        assert t["last_duration_seconds"] > 0 and t["since"] > 1.6e9
        assert t["target"].startswith("127.0.0.1:")
    # The last cycle is findable by its trace id.
    status, headers, text = http_get(app.port, f"/probe?trace={down['last_trace_id']}")
    assert status == 200 and f"alias={DOWN}" in text.decode()
    assert "failure reason=refused" in text.decode()
    assert http_get(app.port, "/probe?trace=ffffffffffffffff")[0] == 404


def test_history_api_counts_cycles_and_failures_by_reason(app: App) -> None:
    seen = attempts(app.port, DOWN)
    status, body = get_json(app, f"/api/v1/targets/{quoted(DOWN)}/history?window=15m")
    assert status == 200 and isinstance(body, dict)
    assert (body["alias"], body["window"], body["resolution_seconds"]) == (DOWN, "15m", 60.0)
    buckets = body["buckets"]
    assert buckets and sum(b["attempts"] for b in buckets) >= seen
    for b in buckets:
        assert b["failures"] == {"refused": b["attempts"]}
        assert b["start"] % 60 == 0
    status, lite = get_json(app, "/api/v1/targets/lite/history")  # default window: 1h
    assert status == 200 and isinstance(lite, dict) and lite["window"] == "1h"
    row = lite["buckets"][-1]
    assert row["failures"] == {}
    assert 0 < row["latency_seconds"]["p50"] <= row["latency_seconds"]["p99"] < 1
    assert {"resolve", "connect", "rpc", "close"} <= set(row["phases"])
    assert row["phases"]["rpc"]["p50"] > 0


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/v1/targets/nope/history", 404, "no target with alias 'nope'"),
        ("/api/v1/targets/lite/history?window=soon", 400, "expected a duration"),
        ("/api/v1/targets/lite/history?window=2h&window=1h", 400, "more than once"),
        ("/api/v1/targets/lite/history?window=48h", 400, "longer than the history kept"),
        ("/api/v1/targets/lite/history?window=10s", 400, "shorter than one history row"),
    ],
)
def test_history_api_errors(app: App, path: str, status: int, fragment: str) -> None:
    got, body = get_json(app, path)
    assert got == status and isinstance(body, dict) and fragment in body["error"]


def test_target_page_answers_for_escaped_aliases_only(app: App) -> None:
    status, _, page = http_get(app.port, f"/targets/{quoted(DOWN)}?window=15m")
    assert status == 200 and DOWN in page.decode()
    assert "Events are off" in page.decode()  # not in a cluster: none posted, and it says so
    assert http_get(app.port, "/targets/nope")[0] == 404
    assert http_get(app.port, "/targets/lite?window=1d")[0] == 400


# --------------------------------------------------------------------------- Chromium


def chromium(tmp_path: Path, url: str, width: int, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary is not None, "chromium is not installed: apt-get install chromium"
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={width},1400", *args, url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def png_is_blank(path: Path) -> bool:
    """True when the PNG's pixels take fewer than a handful of values (an empty page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IHDR":
            width = struct.unpack(">I", data[pos + 8 : pos + 12])[0]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return width == 0 or len(set(pixels[i] for i in range(0, len(pixels), 7))) < 8


def requested_urls(netlog: Path) -> set[str]:
    text = netlog.read_text().rstrip()
    try:
        events = json.loads(text)["events"]
    except json.JSONDecodeError:  # a log cut short lacks its closing
        events = json.loads(text.rstrip(",") + "]}")["events"]
    return {
        str(e["params"]["url"])
        for e in events
        if isinstance(e.get("params"), dict) and "url" in e["params"]
    }


BROWSER_OWN = (".google.com", ".googleapis.com", ".gvt1.com", ".gstatic.com")


@pytest.mark.parametrize("width", [1280, 400])
@pytest.mark.parametrize("page", ["status", "target"])
def test_pages_render_in_chromium_from_their_own_origin_only(
    app: App, tmp_path: Path, width: int, page: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/?window=15m" if page == "status" else f"/targets/{quoted(DOWN)}?window=15m"
    url = f"http://127.0.0.1:{app.port}{path}"
    shot, netlog = tmp_path / "page.png", tmp_path / "netlog.json"
    caplog.clear()
    done = chromium(tmp_path, url, width, f"--screenshot={shot}", f"--log-net-log={netlog}")
    assert shot.exists(), done.stderr[-2000:]
    assert not png_is_blank(shot)
    served = [
        r.getMessage()
        for r in caplog.records
        if r.name == "probe.web.server" and r.getMessage().startswith("http ")
    ]
    assert served and all(path.split("?")[0] in line for line in served), served
    elsewhere = {
        u
        for u in requested_urls(netlog)
        if u.startswith(("http:", "https:"))
        and not u.startswith(f"http://127.0.0.1:{app.port}/")
        and not (urllib.parse.urlsplit(u).hostname or "").endswith(BROWSER_OWN)
    }
    assert not elsewhere, elsewhere

    dom = chromium(tmp_path, url, width, "--dump-dom").stdout
    assert "<svg" in dom and "<script" not in dom
    if page == "status":
        for alias in ("lite", DOWN):
            assert f">{alias}</a>" in dom, alias
        assert dom.index(f">{DOWN}</a>") < dom.index(">lite</a>")  # failing first
        assert "1 up" in dom and "1 down" in dom
    else:
        assert f">{DOWN}</h1>" in dom
        assert "<b>refused</b> in connect" in dom  # the current reason
        assert "Connection refused" in dom  # a failure's full trace
        assert 'class="failed"' in dom  # failed minutes marked on the chart
        assert f'content="{10}"' in dom  # refreshes itself...
        # ...at the same URL, so the chosen window stays; the switch keeps the page.
        assert f'href="{quoted(DOWN)}?window=1h"' in dom


# --------------------------------------------------------------------------- true pictures


def legends(page: str) -> list[list[tuple[str, str]]]:
    """Every legend of a page: its (colour, name) keys in order."""
    return [
        re.findall(r'<span class="(?:key|line)" style="background:(#[0-9a-f]{6})[^"]*"></span>'
                   r"([^<]*)</span>", legend)
        for legend in re.findall(r'<div class="legend">(.*?)</div>', page)
    ]  # fmt: skip


def phase_charts(page: str) -> list[str]:
    return re.findall(r'<svg class="[^"]*"[^>]*aria-label="phases of the last.*?</svg>', page)


def test_canary_bars_are_their_trace_phases_in_colours_of_their_own(
    milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Real canary cycles on milvus-lite: the first ones find no collection (create: false)
    and fail in search; `milvus-probe canary init` sets it up; then they search, query and
    write. Every bar segment both pages draw is its phase's seconds on the axis, and every
    legend's keys differ in colour. The schedule is stopped before the pages are read, so
    they and the history hold the same cycles."""
    name = f"bars_{uuid.uuid4().hex[:10]}"
    app = daemon(
        uri=milvus.address,
        **{"canary.collection": name, "canary.write": "true", "probe.interval": "200ms",
           "probe.timeout": "150ms"},
    )  # fmt: skip
    alias = app.hub.targets()[0].alias
    wait_until(lambda: len(app.history.failures(alias)) >= 2, 15, "two collection_missing")
    args = cli.build_parser().parse_args(
        ["canary", "init", "--uri", milvus.address, "--canary.collection", name]
    )
    assert cli.canary_init(args, {}, io.StringIO()) == cli.EXIT_OK
    wait_until(
        lambda: sum(r.success for r in app.history.recent(alias)) >= 5, 20, "five canary cycles"
    )
    app.scheduler.stop(timeout=1.0)
    assert app.scheduler.join_workers(5.0)
    recent = app.history.recent(alias)
    assert {str(r.reason) for r in recent if not r.success} == {"collection_missing"}
    assert str(recent[0].failed_phase) == "search" and "query" not in recent[0].phases
    assert any("write" in r.phases for r in recent)

    target_page = http_get(app.port, f"/targets/{quoted(alias)}")[2].decode()
    status_page = http_get(app.port, "/")[2].decode()
    wide, narrow = phase_charts(target_page)
    (overview,) = phase_charts(status_page)
    cycles = app.history.cycles(alias)
    assert measure_phase_bars(wide, cycles) >= 5 * 7
    assert measure_phase_bars(narrow, cycles) >= 5 * 5
    assert measure_phase_bars(overview, app.history.cycles(alias, OVERVIEW_CYCLES)) >= 5 * 5

    for page in (target_page, status_page):
        for keys in legends(page):
            assert len({colour for colour, _ in keys}) == len(keys), keys
        phases = [name for _, name in legends(page)[-1]]
        assert phases == ["resolve", "connect", "rpc", "info", "search", "query", "write",
                          "close"]  # fmt: skip
    shot = tmp_path / "canary.png"
    url = f"http://127.0.0.1:{app.port}/targets/{quoted(alias)}"
    done = chromium(tmp_path, url, 1280, f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    assert not png_is_blank(shot)
