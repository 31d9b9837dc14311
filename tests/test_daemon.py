"""The daemon end to end: metrics, health, /probe, the status page, reload, signals, secrets.

In-process daemons come from the `daemon` fixture; signal handling is tested on the real
`python -m probe serve` in a subprocess. A real Milvus (milvus-lite) is used wherever a
healthy server suffices, the fault-injecting double where a fault is needed.
"""

from __future__ import annotations

import base64
import gzip
import json
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

import probe
from probe.logs import JsonFormatter, LogfmtFormatter
from probe.probers.grpc import Phase
from probe.result import FailureReason
from probe.targets import Target
from tests.conftest import DaemonFactory
from tests.support import (
    Behaviour,
    MilvusLite,
    Sample,
    Scrape,
    SilentServer,
    attempts,
    free_port,
    http_get,
    milvus_double,
    scrape,
    serve_process,
    wait_until,
)

# --------------------------------------------------------------------------- helpers


def write_config(path: Path, targets: list[dict[str, Any]], interval: str = "200ms",
                 timeout: str = "150ms", **settings: Any) -> Path:
    """A YAML config file; settings as `readiness_policy="all"` → readiness.policy."""
    doc: dict[str, Any] = {"probe": {"interval": interval, "timeout": timeout}}
    for key, value in settings.items():
        section, name = key.split("_", 1)
        doc.setdefault(section, {})[name] = value
    doc["targets"] = targets
    path.write_text(yaml.safe_dump(doc))
    return path


def refused_uri() -> str:
    return f"127.0.0.1:{free_port()}"


def status_of(port: int, path: str, **kwargs: Any) -> int:
    return http_get(port, path, **kwargs)[0]


def text_of(port: int, path: str, **kwargs: Any) -> tuple[int, str]:
    status, _, body = http_get(port, path, **kwargs)
    return status, body.decode("utf-8")


# --------------------------------------------------------------------------- /metrics


def test_metrics_after_first_cycle_against_real_milvus(milvus: MilvusLite,
                                                       daemon: DaemonFactory) -> None:
    # A long interval: exactly one (scheduled) cycle runs, so the counts are exact.
    app = daemon(uri=milvus.address, alias="lite", **{"probe.interval": "1h"})
    wait_until(lambda: attempts(app.port, "lite") >= 1, 10, "the first cycle")
    m = scrape(app.port)
    key = {"alias": "lite", "target": milvus.address}

    assert m.value("milvus_probe_success", **key) == 1
    assert m.value("milvus_probe_attempts_total", **key) == 1
    assert m.value("milvus_probe_healthy", **key) == 1
    assert m.value("milvus_probe_quota_state", **key, state="none") == 1
    for state in ("Unknown", "ReadLimited", "WriteLimited", "DenyToRead", "DenyToWrite",
                  "DenyToDDL"):
        assert m.value("milvus_probe_quota_state", **key, state=state) == 0
    last_success = m.value("milvus_probe_last_success_timestamp_seconds", **key)
    assert last_success is not None and abs(last_success - time.time()) < 60

    info = m.find("milvus_probe_server_info", **key)
    assert len(info) == 1
    assert info[0].labels["version"] == "milvus_lite-3.2.2"
    assert info[0].value == 1

    opened = m.value("milvus_probe_connections_opened_total", **key)
    closed = m.value("milvus_probe_connections_closed_total", **key)
    assert opened == closed == 1
    assert m.value("milvus_probe_open_connections", **key) == 0

    failures = {s.labels["reason"]: s.value for s in m.find("milvus_probe_failures_total", **key)}
    assert failures == {reason.value: 0.0 for reason in FailureReason}
    assert len(failures) == len(FailureReason) == 18  # 12, the canary, limits, probe_error

    # The first cycle calls Connect + GetVersion, so every phase ran once.
    for phase in Phase:
        labels = {**key, "phase": phase.value}
        assert m.value("milvus_probe_phase_duration_seconds_count", **labels) == 1, phase
        assert m.value("milvus_probe_phase_duration_seconds_bucket", **labels, le="+Inf") == 1
        phase_sum = m.value("milvus_probe_phase_duration_seconds_sum", **labels)
        assert phase_sum is not None and phase_sum > 0
    assert m.value("milvus_probe_duration_seconds_count", **key) == 1

    build = m.find("milvus_probe_build_info")
    assert len(build) == 1 and build[0].value == 1
    assert build[0].labels == {"version": probe.__version__,
                               "python_version": platform.python_version(),
                               "grpcio_version": grpc.__version__}
    assert m.value("milvus_probe_targets") == 1


def test_metrics_openmetrics_and_gzip(milvus: MilvusLite, daemon: DaemonFactory) -> None:
    app = daemon(uri=milvus.address, alias="lite", **{"probe.interval": "1h"})
    wait_until(lambda: attempts(app.port, "lite") >= 1, 10, "the first cycle")

    status, headers, body = http_get(
        app.port, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = body.decode("utf-8")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}  # type: ignore[no-untyped-call]
    success = [s for s in families["milvus_probe_success"].samples
               if s.labels.get("alias") == "lite"]
    assert [s.value for s in success] == [1]

    status, headers, body = http_get(app.port, "/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("content-encoding") == "gzip"
    m = Scrape(gzip.decompress(body).decode("utf-8"))
    assert m.value("milvus_probe_success", alias="lite", target=milvus.address) == 1

    # Without asking, plain Prometheus text, not compressed.
    status, headers, body = http_get(app.port, "/metrics")
    assert headers["content-type"].startswith("text/plain")
    assert "content-encoding" not in headers
    assert b"# EOF" not in body


# --------------------------------------------------------------------------- Connect hygiene


def test_connect_called_once_across_many_cycles(daemon: DaemonFactory) -> None:
    with milvus_double() as double:
        daemon(uri=double.address, **{"probe.interval": "100ms", "probe.timeout": "80ms",
                                      "probe.connect-interval": "1h"})
        wait_until(lambda: double.count("CheckHealth") >= 15, 15, "15 CheckHealth calls")
        assert double.count("Connect") == 1
        assert double.count("CheckHealth") >= 15


def test_connect_repeats_when_connect_interval_is_short(daemon: DaemonFactory) -> None:
    """The contrast: with a short connect-interval, Connect is called again."""
    with milvus_double() as double:
        daemon(uri=double.address, **{"probe.interval": "100ms", "probe.timeout": "80ms",
                                      "probe.connect-interval": "250ms"})
        wait_until(lambda: double.count("Connect") >= 3, 15, "Connect to be called again")
        assert double.count("CheckHealth") > double.count("Connect")


# --------------------------------------------------------------------------- liveness


def test_healthz_and_livez_while_running(milvus: MilvusLite, daemon: DaemonFactory) -> None:
    app = daemon(uri=milvus.address, **{"probe.interval": "200ms", "probe.timeout": "150ms"})
    for path in ("/healthz", "/livez"):
        assert text_of(app.port, path) == (200, "OK\n")
    wait_until(lambda: attempts(app.port, "default") >= 2, 10, "cycles")
    for path in ("/healthz", "/livez"):
        assert text_of(app.port, path) == (200, "OK\n")


def test_healthz_does_not_depend_on_milvus(daemon: DaemonFactory) -> None:
    app = daemon(uri=refused_uri(), alias="down",
                 **{"probe.interval": "100ms", "probe.timeout": "80ms"})
    wait_until(lambda: (scrape(app.port).value("milvus_probe_failures_total", alias="down",
                                                reason="refused") or 0) >= 3, 10, "refused cycles")
    m = scrape(app.port)
    assert (m.value("milvus_probe_failures_total", alias="down", reason="refused") or 0) >= 3
    assert m.value("milvus_probe_success", alias="down") == 0
    for path in ("/healthz", "/livez"):
        assert text_of(app.port, path) == (200, "OK\n")
    assert status_of(app.port, "/readyz/down") == 503  # the target is down, the daemon is not


# --------------------------------------------------------------------------- readiness


def test_readyz_self_policy_passes_after_first_round(milvus: MilvusLite, daemon: DaemonFactory,
                                                     tmp_path: Path) -> None:
    config = write_config(tmp_path / "probe.yaml", [
        {"alias": "lite", "uri": milvus.address},
        {"alias": "down", "uri": refused_uri()},
    ])
    app = daemon(**{"config.file": str(config)})
    wait_until(lambda: status_of(app.port, "/readyz") == 200, 10, "/readyz to pass")
    assert text_of(app.port, "/readyz") == (200, "OK\n")

    status, body = text_of(app.port, "/readyz?verbose")
    assert status == 200
    lines = body.splitlines()
    assert lines[-1] == "readyz check passed"
    assert all(re.match(r"\[[+-]\]\S", line) for line in lines[:-1]), body
    assert "[+]first-round done" in lines
    assert "[+]target:lite ok (not required by the readiness policy)" in lines
    down = [line for line in lines if line.startswith("[-]target:down ")]
    assert len(down) == 1 and "refused" in down[0], body
    assert down[0].endswith("(not required by the readiness policy)")

    assert status_of(app.port, "/readyz?nonsense=1") == 400


def test_readyz_all_policy_fails_with_a_down_target(milvus: MilvusLite, daemon: DaemonFactory,
                                                    tmp_path: Path) -> None:
    config = write_config(tmp_path / "probe.yaml", [
        {"alias": "lite", "uri": milvus.address},
        {"alias": "down", "uri": refused_uri()},
    ], readiness_policy="all")
    app = daemon(**{"config.file": str(config)})
    wait_until(lambda: status_of(app.port, "/readyz/lite") == 200
               and attempts(app.port, "down") >= 3, 10, "both targets probed")
    status, body = text_of(app.port, "/readyz")
    assert status == 503
    assert body.startswith("not ready: ") and "target:down" in body and "target:lite" not in body
    status, body = text_of(app.port, "/readyz?verbose")
    assert status == 503
    lines = body.splitlines()
    assert lines[-1] == "readyz check failed"
    assert "[-]policy:all 1 of 2 target(s) passing" in lines
    assert "[+]target:lite ok" in lines


def test_readyz_any_policy_passes_with_one_good_target(milvus: MilvusLite,
                                                       daemon: DaemonFactory,
                                                       tmp_path: Path) -> None:
    config = write_config(tmp_path / "probe.yaml", [
        {"alias": "lite", "uri": milvus.address},
        {"alias": "down", "uri": refused_uri()},
    ], readiness_policy="any")
    app = daemon(**{"config.file": str(config)})
    wait_until(lambda: attempts(app.port, "down") >= 3
               and status_of(app.port, "/readyz/lite") == 200, 10, "both targets probed")
    assert text_of(app.port, "/readyz") == (200, "OK\n")
    assert status_of(app.port, "/readyz/down") == 503
    status, body = text_of(app.port, "/readyz?verbose")
    assert status == 200 and "[+]policy:any 1 of 2 target(s) passing" in body.splitlines()


def test_readyz_thresholds_debounce(daemon: DaemonFactory) -> None:
    with milvus_double() as double:
        # 800 ms: each observation below takes three HTTP requests, and the states in
        # between thresholds last one interval; a loaded machine must still see them.
        app = daemon(uri=double.address, alias="db",
                     **{"probe.interval": "800ms", "probe.timeout": "300ms",
                        "readiness.failure-threshold": "3", "readiness.success-threshold": "2"})
        port = app.port

        def unhealthy() -> float:
            return scrape(port).value("milvus_probe_failures_total", alias="db",
                                      reason="unhealthy") or 0.0

        def successes() -> float:
            m = scrape(port)
            return (m.value("milvus_probe_attempts_total", alias="db") or 0.0) - m.total(
                "milvus_probe_failures_total", alias="db")

        wait_until(lambda: status_of(port, "/readyz/db") == 200, 10, "db to pass")
        assert unhealthy() == 0

        # Down: passing until the third consecutive failure is recorded.
        double.behaviour.healthy = False
        seen: list[tuple[float, int, float]] = []

        def observe_down() -> bool:
            before = unhealthy()
            status = status_of(port, "/readyz/db")
            after = unhealthy()
            seen.append((before, status, after))
            return before >= 3 and status == 503

        wait_until(observe_down, 20, "3 failures and /readyz/db 503")
        for before, status, after in seen:
            if after < 3:
                assert status == 200, seen
            if before >= 3:
                assert status == 503, seen
        assert any(before >= 1 and after < 3 and status == 200 for before, status, after in seen), \
            f"never saw /readyz/db pass with 1–2 failures recorded: {seen}"

        # Up again: failing until success-threshold (2) consecutive successes.
        base = successes()
        double.behaviour.healthy = True
        seen = []

        def observe_up() -> bool:
            before = successes() - base
            status = status_of(port, "/readyz/db")
            after = successes() - base
            seen.append((before, status, after))
            return before >= 2 and status == 200

        wait_until(observe_up, 20, "2 successes and /readyz/db 200")
        for before, status, after in seen:
            if after < 2:
                assert status == 503, seen
            if before >= 2:
                assert status == 200, seen
        assert any(before >= 1 and after < 2 and status == 503 for before, status, after in seen), \
            f"never saw /readyz/db fail with 1 success recorded: {seen}"


def test_readyz_unknown_alias_and_aliases_with_a_slash(milvus: MilvusLite,
                                                      daemon: DaemonFactory) -> None:
    app = daemon(uri=milvus.address, alias="svc/pod-0",
                 **{"probe.interval": "200ms", "probe.timeout": "150ms"})
    wait_until(lambda: status_of(app.port, "/readyz/svc%2Fpod-0") == 200, 10, "svc/pod-0 to pass")
    assert text_of(app.port, "/readyz/svc/pod-0") == (200, "OK\n")
    status, body = text_of(app.port, "/readyz/svc%2Fpod-0?verbose")
    assert status == 200
    assert body.splitlines() == ["[+]target:svc/pod-0 ok", "readyz/svc/pod-0 check passed"]

    status, body = text_of(app.port, "/readyz/nope")
    assert status == 404 and "nope" in body
    assert status_of(app.port, "/readyz/svc") == 404
    assert status_of(app.port, "/readyz/svc/pod-0/extra") == 404


# --------------------------------------------------------------------------- /probe


def test_probe_trace_text_and_json(milvus: MilvusLite, daemon: DaemonFactory) -> None:
    app = daemon(uri=milvus.address, alias="lite", **{"probe.interval": "1h"})
    wait_until(lambda: attempts(app.port, "lite") >= 1, 10, "the first cycle")

    status, headers, body = http_get(app.port, "/probe?alias=lite")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    lines = body.decode("utf-8").splitlines()
    assert lines[0] == f"Probe of alias=lite target={milvus.address} rpc=check_health"
    for phase in Phase:
        assert any(line.startswith(f"{phase.value} ") for line in lines), (phase, lines)
    assert "result    success" in lines
    assert any("isHealthy=true" in line for line in lines)
    assert any("version=milvus_lite-3.2.2" in line for line in lines)

    # One target: the alias may be left out.
    status, _, body = http_get(app.port, "/probe")
    assert status == 200 and body.decode().startswith("Probe of alias=lite ")

    for path, headers in (("/probe?alias=lite", {"Accept": "application/json"}),
                          ("/probe?alias=lite&format=json", {})):
        status, got, body = http_get(app.port, path, headers=headers)
        assert status == 200 and got["content-type"] == "application/json"
        trace = json.loads(body)
        assert {"alias", "target", "success", "phases", "server_version", "history"} <= set(trace)
        assert trace["alias"] == "lite" and trace["target"] == milvus.address
        assert trace["success"] is True
        assert list(trace["phases"]) == [p.value for p in Phase]
        assert trace["server_version"] == "milvus_lite-3.2.2"
        # History holds the scheduled cycle only: on-demand probes are not recorded.
        assert len(trace["history"]) == 1 and trace["history"][0]["success"] is True

    m = scrape(app.port)
    assert m.value("milvus_probe_attempts_total", alias="lite") == 1
    assert m.value("milvus_probe_duration_seconds_count", alias="lite") == 1
    # The on-demand channels were opened and closed like every other.
    assert m.value("milvus_probe_open_connections", alias="lite") == 0


def test_probe_bad_requests(daemon: DaemonFactory, tmp_path: Path) -> None:
    config = write_config(tmp_path / "probe.yaml", [
        {"alias": "a", "uri": refused_uri()},
        {"alias": "b", "uri": refused_uri()},
    ])
    app = daemon(**{"config.file": str(config)})
    status, body = text_of(app.port, "/probe")
    assert status == 400 and "a, b" in body
    status, body = text_of(app.port, "/probe?alias=nope")
    assert status == 404 and "nope" in body
    assert status_of(app.port, "/probe?alias=a&colour=blue") == 400
    assert status_of(app.port, "/probe?alias=a&alias=b") == 400
    assert status_of(app.port, "/probe?alias=a&format=xml") == 400
    assert status_of(app.port, "/probe?alias=") == 400
    # A failing target still gets its trace (200: the probe ran; the trace says it failed).
    status, body = text_of(app.port, "/probe?alias=a")
    assert status == 200 and "result    failure reason=refused phase=connect" in body


# --------------------------------------------------------------------------- status page


def test_status_page(milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path) -> None:
    config = write_config(tmp_path / "probe.yaml", [
        {"alias": "lite", "uri": milvus.address},
        {"alias": "odd<i>", "uri": refused_uri()},
    ])
    app = daemon(**{"config.file": str(config)})
    wait_until(lambda: attempts(app.port, "lite") >= 2 and attempts(app.port, "odd<i>") >= 2,
               10, "cycles of both targets")
    status, headers, body = http_get(app.port, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    page = body.decode("utf-8")
    assert ">lite<" in page
    assert "odd&lt;i&gt;" in page and "odd<i>" not in page  # escaped
    assert page.count("<svg") == 4  # per target: latency over time, last cycles by phase
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, re.I)
    assert links, page
    for link in links:
        assert not link.startswith("/") and "://" not in link, link
    assert "probe?alias=lite" in links
    assert "readyz/odd%3Ci%3E" in links
    assert status_of(app.port, "/?x=1") == 400


# --------------------------------------------------------------------------- HTTP


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/readyz/default", "/metrics"])
def test_head_answers_without_a_body(path: str, daemon: DaemonFactory) -> None:
    app = daemon(uri=refused_uri(), **{"probe.interval": "200ms", "probe.timeout": "150ms"})
    wait_until(lambda: attempts(app.port, "default") >= 1, 10, "the first cycle")
    get = raw_exchange(app.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = raw_exchange(app.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    get_headers, _, get_body = get.partition(b"\r\n\r\n")
    head_headers, _, head_body = head.partition(b"\r\n\r\n")
    assert get_body  # GET has content...
    assert head_headers.split(b"\r\n")[0] == get_headers.split(b"\r\n")[0]  # same status
    assert head_body == b"", f"HEAD {path} sent content: {head_body[:80]!r}"  # ...HEAD none


def test_request_body_over_64k_is_refused(daemon: DaemonFactory) -> None:
    app = daemon(uri=refused_uri(), **{"probe.interval": "200ms", "probe.timeout": "150ms"})
    status, _, _ = http_get(app.port, "/-/reload", method="POST",
                            headers={"Content-Length": "lots"})
    assert status == 400
    for method, path in (("POST", "/-/reload"), ("GET", "/healthz")):
        # The header alone says too much; the body is never sent (nor read).
        status, _, _ = http_get(app.port, path, method=method,
                                headers={"Content-Length": str(64 * 1024 + 1)})
        assert status == 413, (method, path, status)
    # The daemon is still serving.
    assert text_of(app.port, "/healthz") == (200, "OK\n")


# --------------------------------------------------------------------------- reload


def test_reload_adds_and_removes_targets(milvus: MilvusLite, daemon: DaemonFactory,
                                         tmp_path: Path) -> None:
    config = tmp_path / "probe.yaml"
    write_config(config, [{"alias": "keep", "uri": milvus.address},
                          {"alias": "old", "uri": refused_uri()}])
    app = daemon(**{"config.file": str(config)})
    port = app.port
    wait_until(lambda: attempts(port, "keep") >= 1 and attempts(port, "old") >= 1, 10,
               "both targets probed")

    write_config(config, [{"alias": "keep", "uri": milvus.address},
                          {"alias": "new", "uri": milvus.address}])
    status, body = text_of(port, "/-/reload", method="POST")
    assert status == 200, body

    def switched() -> bool:
        m = scrape(port)
        return "old" not in m.aliases() and (
            m.value("milvus_probe_success", alias="new") == 1)

    wait_until(switched, 10, "old gone and new probed")
    m = scrape(port)
    assert m.series_of("old") == []
    assert m.value("milvus_probe_targets") == 2
    assert m.value("milvus_probe_config_last_reload_successful") == 1
    assert m.value("milvus_probe_config_reload_failures_total") == 0
    assert status_of(port, "/readyz/old") == 404
    assert status_of(port, "/readyz/new") == 200

    # A bad configuration is rejected; the running one stays.
    config.write_text("targets:\n  - alias: broken\n    uri: ftp://nowhere\n")
    status, body = text_of(port, "/-/reload", method="POST")
    assert status == 500
    assert "ftp" in body
    m = scrape(port)
    assert m.value("milvus_probe_config_reload_failures_total") == 1
    assert m.value("milvus_probe_config_last_reload_successful") == 0
    assert m.aliases() == {"keep", "new"}
    before = {a: m.value("milvus_probe_attempts_total", alias=a) or 0.0 for a in ("keep", "new")}
    wait_until(lambda: all(attempts(port, a) > before[a] + 2 for a in before), 10,
               "the old targets to keep being probed")
    assert "broken" not in scrape(port).aliases()


def test_reload_accepts_put(daemon: DaemonFactory) -> None:
    app = daemon(uri=refused_uri(), **{"probe.interval": "200ms", "probe.timeout": "150ms"})
    status, body = text_of(app.port, "/-/reload", method="PUT")
    assert status == 200 and "1 target(s)" in body


def test_removed_target_series_never_come_back(milvus: MilvusLite, daemon: DaemonFactory,
                                               tmp_path: Path, silent: SilentServer) -> None:
    config = tmp_path / "probe.yaml"
    write_config(config, [{"alias": "keep", "uri": milvus.address},
                          {"alias": "gone", "uri": f"127.0.0.1:{silent.port}"},
                          {"alias": "gone2", "uri": refused_uri()}],
                 interval="100ms", timeout="90ms")
    app = daemon(**{"config.file": str(config)})
    port = app.port
    # "gone" is mid-cycle (its connection never answers) almost all the time.
    wait_until(lambda: scrape(port).value("milvus_probe_open_connections",
                                          alias="gone") == 1 and attempts(port, "gone2") >= 3,
               10, "a cycle of gone in flight")
    write_config(config, [{"alias": "keep", "uri": milvus.address}],
                 interval="100ms", timeout="90ms")
    assert status_of(port, "/-/reload", method="POST") == 200
    start = attempts(port, "keep")
    leaks: list[list[Sample]] = []

    def keep_ran_a_while() -> bool:
        m = scrape(port)
        leaked = m.series_of("gone") + m.series_of("gone2")
        if leaked:
            leaks.append(leaked)
        return (m.value("milvus_probe_attempts_total", alias="keep") or 0) >= start + 10

    wait_until(keep_ran_a_while, 15, "10 more cycles of keep")
    assert leaks == []
    assert status_of(port, "/readyz/gone") == 404
    assert status_of(port, "/probe?alias=gone") == 404


def test_missed_cycle_series_of_a_removed_target_stays_removed(daemon: DaemonFactory,
                                                               tmp_path: Path) -> None:
    """A missed slot or a late result arriving while the reload removes the target must not
    re-create its series.

    One connection slot, shared with two targets whose cycles always run to their timeout,
    keeps "gone" queued, so the scheduler counts missed slots for it every interval. The
    reload's removal of gone's series is wrapped so that, right after the series go, a
    missed slot and a late result of gone arrive: the widest window there is.
    """
    silent = SilentServer()
    try:
        config = tmp_path / "probe.yaml"
        gone_uri = refused_uri()
        busy = [{"alias": f"busy{i}", "uri": f"127.0.0.1:{silent.port}"} for i in (1, 2)]
        write_config(config, [*busy, {"alias": "gone", "uri": gone_uri}],
                     interval="100ms", timeout="90ms", probe_max_concurrent=1)
        app = daemon(**{"config.file": str(config)})
        port = app.port
        missed = ("milvus_probe_missed_cycles_total",
                  {"alias": "gone", "target": gone_uri, "namespace": "", "service": "", "pod": "",
                   "protocol": "grpc"})
        wait_until(lambda: (app.registry.get_sample_value(*missed) or 0) >= 2, 30,
                   "missed slots of gone")
        (gone,) = [t for t in app.hub.targets() if t.alias == "gone"]
        late = app.probers.run(gone)  # a real result of gone, to arrive late
        remove_target = app.metrics.remove_target
        window: list[str] = []

        def remove_then_late_arrivals(target: Target) -> None:
            remove_target(target)
            if target.alias == "gone":
                window.append(target.alias)
                app.metrics.missed_cycle(gone)
                app.metrics.record(gone, late)

        app.metrics.remove_target = remove_then_late_arrivals  # type: ignore[method-assign]
        write_config(config, busy,
                     interval="100ms", timeout="90ms", probe_max_concurrent=1)
        assert status_of(port, "/-/reload", method="POST") == 200
        assert window == ["gone"]
        assert not app.hub.publish(gone, late), "the hub must drop gone's late result"
        start = attempts(port, "busy1")
        wait_until(lambda: attempts(port, "busy1") >= start + 3, 10, "more cycles of busy1")
        assert scrape(port).series_of("gone") == []
        assert app.registry.get_sample_value(*missed) is None
    finally:
        silent.stop()


def test_target_removed_mid_cycle_and_added_back_counts_connections_right(
        daemon: DaemonFactory, tmp_path: Path, silent: SilentServer) -> None:
    config = tmp_path / "probe.yaml"
    flapping = {"alias": "flap", "uri": f"127.0.0.1:{silent.port}"}
    other = {"alias": "other", "uri": refused_uri()}
    write_config(config, [other, flapping], interval="2s", timeout="1s")
    app = daemon(**{"config.file": str(config)})
    port = app.port
    wait_until(lambda: scrape(port).value("milvus_probe_open_connections", alias="flap") == 1,
               10, "a cycle of flap in flight")
    # Remove it and add it back while that cycle is still waiting for an answer.
    write_config(config, [other], interval="2s", timeout="1s")
    assert status_of(port, "/-/reload", method="POST") == 200
    write_config(config, [other, flapping], interval="2s", timeout="1s")
    assert status_of(port, "/-/reload", method="POST") == 200

    bad: list[tuple[float | None, float | None, float | None]] = []

    def two_more_cycles() -> bool:
        m = scrape(port)
        opened = m.value("milvus_probe_connections_opened_total", alias="flap")
        closed = m.value("milvus_probe_connections_closed_total", alias="flap")
        now = m.value("milvus_probe_open_connections", alias="flap")
        if opened is None or closed is None or now is None or opened < closed or now < 0:
            bad.append((opened, closed, now))
        return (m.value("milvus_probe_attempts_total", alias="flap") or 0) >= 2

    wait_until(two_more_cycles, 15, "cycles of the re-added target")
    assert bad == [], "connections_opened < connections_closed or open_connections < 0 " \
        f"(opened, closed, open): {bad[:3]}"


# --------------------------------------------------------------------------- subprocess


def test_sighup_reloads_the_config_file(milvus: MilvusLite, tmp_path: Path) -> None:
    config = tmp_path / "probe.yaml"
    write_config(config, [{"alias": "first", "uri": refused_uri()}])
    with serve_process(tmp_path, "--config.file", str(config)) as (process, port):
        wait_until(lambda: attempts(port, "first") >= 1, 10, "the first target probed")
        write_config(config, [{"alias": "second", "uri": milvus.address}])
        process.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            m = scrape(port)
            return "first" not in m.aliases() and m.value("milvus_probe_success",
                                                          alias="second") == 1

        wait_until(reloaded, 10, "SIGHUP to swap the targets")
        assert process.poll() is None  # SIGHUP reloads; it does not stop the daemon
        assert scrape(port).value("milvus_probe_config_last_reload_successful") == 1


def test_sigterm_during_a_hung_cycle_exits_promptly(tmp_path: Path, silent: SilentServer) -> None:
    with serve_process(tmp_path, "--uri", f"127.0.0.1:{silent.port}", "--alias", "hung",
                       "--probe.timeout", "5s", "--probe.interval", "10s") as (process, port):
        wait_until(lambda: scrape(port).value("milvus_probe_open_connections",
                                              alias="hung") == 1, 10, "a cycle in flight")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - began
        assert code == 0, f"exit code {code}"
        assert took < 2.0, f"shutdown took {took:.2f}s"
    assert silent.connections, "the daemon never connected"


# --------------------------------------------------------------------------- slow clients


def test_slow_client_does_not_block_others(milvus: MilvusLite, daemon: DaemonFactory) -> None:
    app = daemon(uri=milvus.address, alias="lite",
                 **{"probe.interval": "100ms", "probe.timeout": "80ms"})
    port = app.port
    wait_until(lambda: attempts(port, "lite") >= 1, 10, "the first cycle")
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
    try:
        for sock in slow:
            sock.sendall(b"GET /heal")  # half a request line, never finished
        status, _, body = http_get(port, "/healthz", timeout=3)
        assert (status, body) == (200, b"OK\n")
        # Answered while every slow request is still pending: nothing was sent to them yet,
        # nor were they hung up on (the read timeout is 10 s away), so /healthz did not
        # wait behind them.
        for sock in slow:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        start = attempts(port, "lite")
        wait_until(lambda: attempts(port, "lite") >= start + 5, 10, "cycles to go on")
        assert text_of(port, "/readyz") == (200, "OK\n")
    finally:
        for sock in slow:
            sock.close()


# --------------------------------------------------------------------------- secrets


CREDENTIALS = {
    "token": ({"token": "root:S3cr3t-Tok3n"}, "root:S3cr3t-Tok3n", "S3cr3t-Tok3n"),
    "password": ({"user": "root", "password": "Pa55-w0rd-X"}, "root:Pa55-w0rd-X", "Pa55-w0rd-X"),
}


def _forms(*secrets: str) -> list[str]:
    found = []
    for secret in secrets:
        found.append(secret)
        encoded = base64.b64encode(secret.encode()).decode()
        found.append(encoded.rstrip("="))  # also matches the padded form
        found.append(base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="))
    return sorted(set(found))


@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_secrets_never_leave_the_daemon(kind: str, daemon: DaemonFactory, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    settings, token, password = CREDENTIALS[kind]
    secrets = _forms(token, password)
    with milvus_double(Behaviour(token="root:other")) as rejecting, \
            milvus_double(Behaviour(token=token)) as accepting:
        config = write_config(tmp_path / "probe.yaml", [
            {"alias": "rejected", "uri": rejecting.address, **settings},
            {"alias": "accepted", "uri": accepting.address, **settings},
        ], readiness_policy="all")
        app = daemon(**{"config.file": str(config)})
        port = app.port

        def both_seen() -> bool:
            m = scrape(port)
            return (m.value("milvus_probe_failures_total", alias="rejected",
                            reason="unauthenticated") or 0) >= 2 and \
                m.value("milvus_probe_success", alias="accepted") == 1

        wait_until(both_seen, 10, "one target rejected and one accepted")
        # The double saw the credential, so it was really sent.
        assert rejecting.count("CheckHealth") >= 1 and accepting.count("Connect") >= 1

        pages: dict[str, bytes] = {}
        for path, headers in (
            ("/metrics", {}),
            ("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
            ("/", {}),
            ("/probe?alias=rejected", {}),
            ("/probe?alias=rejected", {"Accept": "application/json"}),
            ("/probe?alias=accepted", {}),
            ("/probe?alias=accepted", {"Accept": "application/json"}),
            ("/readyz", {}),
            ("/readyz?verbose", {}),
            ("/readyz/rejected?verbose", {}),
            ("/readyz/accepted?verbose", {}),
            ("/-/reload", {}),
        ):
            method = "POST" if path == "/-/reload" else "GET"
            status, _, body = http_get(port, path, method=method, headers=headers)
            assert status in (200, 503), (path, status)
            pages[f"{method} {path} {headers}"] = body
        assert b"unauthenticated" in pages["GET /probe?alias=rejected {}"]
        assert b"success" in pages["GET /probe?alias=accepted {}"]
        # The reload above re-read the file; probe once more with the reloaded targets.
        wait_until(lambda: attempts(port, "rejected") >= 4, 10, "cycles after the reload")
        pages["after reload /probe"] = http_get(port, "/probe?alias=rejected")[2]

    for where, body in pages.items():
        text = body.decode("utf-8")
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {where}"

    records = [r for r in caplog.records if r.name.startswith("probe")]
    assert any(r.getMessage() == "target down" for r in records)
    logfmt, as_json = LogfmtFormatter(), JsonFormatter()
    for record in records:
        for rendered in (logfmt.format(record), as_json.format(record), record.getMessage()):
            for secret in secrets:
                assert secret not in rendered, f"{secret!r} logged: {rendered}"
    for secret in secrets:
        assert secret not in caplog.text



def test_connect_is_not_repeated_when_a_later_step_of_its_cycle_fails(
        daemon: DaemonFactory) -> None:
    """Connect registered the probe even though GetVersion then timed out: don't register again.

    The first cycle's info step (Connect, then GetVersion) fails on GetVersion's timeout;
    the cycles after it are within connect-interval, so they skip the info step and pass.
    """
    with milvus_double(Behaviour(get_version_delay=0.5)) as double:
        app = daemon(uri=double.address, alias="db",
                     **{"probe.interval": "200ms", "probe.timeout": "150ms",
                        "probe.connect-interval": "1h"})
        wait_until(lambda: double.count("CheckHealth") >= 6, 10, "several cycles")
        assert double.count("Connect") == 1
        assert double.count("GetVersion") == 1  # nor is the failed step retried
        first, *later = app.history.recent("db")
        assert first.reason is FailureReason.TIMEOUT
        assert later and all(h.success for h in later), [h.reason for h in later]
        m = scrape(app.port)
        # Only the first cycle had an info phase, so its timeout was the info phase's.
        assert m.value("milvus_probe_phase_duration_seconds_count", alias="db",
                       phase="info") == 1
        assert m.value("milvus_probe_failures_total", alias="db", reason="timeout") == 1
        assert m.total("milvus_probe_failures_total", alias="db") == 1


def test_the_default_process_imports_only_what_it_uses(milvus: MilvusLite) -> None:
    """Optional code stays out of memory: one static gRPC target, no config file, nobody
    profiling. (The image's RSS budget is measured in `make bench`; this keeps it honest.)"""
    unwanted = (
        "kubernetes", "yaml", "probe.pprof", "tracemalloc", "statistics", "decimal",
        "encodings.idna", "probe.probers.rest", "probe.probers.management",
        "probe.probers.tls", "probe.events", "probe.charts",
    )  # fmt: skip
    code = (
        "import socket, sys; from probe.app import App; "
        "from probe.config import load, Sources; "
        f"app = App(load(Sources(flags={{'uri': '{milvus.address}', "
        "'web.listen-address': '127.0.0.1:0'}))); app.start(); "
        "s = socket.create_connection((b'127.0.0.1', app.port), timeout=10); "
        "s.sendall(b'GET /readyz HTTP/1.0\\r\\n\\r\\n'); assert s.recv(100).startswith(b'HTTP'); "
        "app.stop(); "
        f"print(sorted(m for m in {unwanted!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
