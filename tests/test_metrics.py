"""The per-target exposition (probe.metrics + probe.exposition) against prometheus_client.

/metrics writes per-target lines itself (prometheus_client's writer costs ~15 µs a line).
These tests hold it to prometheus_client's output for the same numbers: histograms
against prometheus_client's own Histogram fed the same observations, the text against
prometheus_client's writers (which read the families' `samples`), parsed by its strict
OpenMetrics parser. No server is needed: results are built here, the way the prober
builds them; test_daemon and test_monitoring check the same endpoint after real cycles
against a real Milvus and a real Prometheus.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from probe.exposition import metrics_app
from probe.exposition import render as render_chunks
from probe.metrics import ProbeMetrics, latency_buckets
from probe.probers.grpc import Phase
from probe.probers.ledger import ConnectionLedger
from probe.result import FailureReason, ProbeResult, RpcMethod, ServerInfo
from tests.support import target


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    chunks, content_type = render_chunks(registry, accept)
    return b"".join(chunks), content_type


OPENMETRICS = "application/openmetrics-text;version=1.0.0"
TEXT = "text/plain;version=0.0.4"
ODD = replace(
    target(alias="odd", host="10.0.0.2"), namespace="ns", service="milvus", pod="p-0", generation=2
)
PLAIN = replace(target(alias="plain", host="10.0.0.1"), generation=1)
"""Targets as the hub hands them to sinks: each with its own generation."""
"""A discovered target (namespace/service/pod set); discovery itself is test_kubernetes'."""
DURATIONS = [0.00005, 0.0001, 0.0004, 0.003, 0.003, 0.04, 0.9, 1.0, 2.4, 4.99, 5.0]


def result(alias: str, address: str, duration: float, **fields: Any) -> ProbeResult:
    values: dict[str, Any] = {
        "alias": alias,
        "target": address,
        "method": RpcMethod.CHECK_HEALTH.value,
        "started_at": time.time(),
        "duration": duration,
        "phases": {p: duration / len(Phase) for p in Phase},
        "success": True,
    }
    values.update(fields)
    return ProbeResult(**values)


def families(
    body: bytes, fmt: str
) -> dict[str, set[tuple[str, tuple[tuple[str, str], ...], float]]]:
    parse = openmetrics_families if fmt == OPENMETRICS else text_string_to_metric_families
    return {
        f.name: {(s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples}
        for f in parse(body.decode())
    }


def exemplars(body: bytes) -> dict[tuple[tuple[str, str], ...], tuple[str, float, float]]:
    """OpenMetrics bucket labels → (trace_id, value, timestamp) of their exemplar."""
    return {
        tuple(sorted(s.labels.items())): (
            s.exemplar.labels["trace_id"],
            s.exemplar.value,
            float(s.exemplar.timestamp),  # type: ignore[arg-type]
        )
        for f in openmetrics_families(body.decode())
        for s in f.samples
        if s.exemplar is not None
    }


@pytest.fixture
def metrics() -> ProbeMetrics:
    """Two targets, one with awkward label values, after a mix of cycles."""
    m = ProbeMetrics(CollectorRegistry(), ConnectionLedger(), max_timeout=5.0)
    plain = PLAIN
    odd = ODD
    for t in (plain, odd):
        m.add_target(t)
    for seconds in DURATIONS:
        m.record(PLAIN, result("plain", plain.address, seconds, healthy=True, quota_states=()))
    timeout = result("plain", plain.address, 5.0, success=False, reason=FailureReason.TIMEOUT)
    m.record(PLAIN, timeout)
    info = ServerInfo(
        build_tags="", build_time='at "noon"', git_commit="back\\slash",
        go_version="line\nbreak", deploy_mode="STANDALONE",
    )  # fmt: skip
    m.record(ODD, result("odd", odd.address, 0.002, version="v2.3.5", server_info=info,
                    healthy=False, quota_states=("DenyToWrite",)))  # fmt: skip
    m.missed_cycle(odd)
    return m


@pytest.mark.parametrize("fmt", [OPENMETRICS, TEXT])
def test_exposition_says_what_prometheus_client_would(metrics: ProbeMetrics, fmt: str) -> None:
    ours, content_type = render(metrics.registry, fmt)
    writer = openmetrics_latest if fmt == OPENMETRICS else generate_latest
    theirs = writer(metrics.registry)  # reads every family's samples the slow way
    assert content_type.startswith(fmt.split(";")[0])
    assert families(ours, fmt) == families(theirs, fmt)
    assert ours.endswith(b"# EOF\n") == (fmt == OPENMETRICS)
    # The families really hold what the cycles said (not just the same as each other).
    parsed = families(ours, fmt)
    attempts = {dict(labels)["alias"]: v for _, labels, v in parsed["milvus_probe_attempts"]}
    assert attempts == {"plain": len(DURATIONS) + 1, "odd": 1}
    info = [dict(labels) for _, labels, _ in parsed["milvus_probe_server_info"]]
    assert info == [{
        "alias": "odd", "target": "10.0.0.2:19530", "namespace": "ns", "service": "milvus",
        "pod": "p-0", "protocol": "grpc", "version": "v2.3.5", "git_commit": "back\\slash",
        "go_version": "line\nbreak", "deploy_mode": "STANDALONE", "build_time": 'at "noon"',
    }]  # fmt: skip


def test_duration_buckets_carry_the_last_cycle_in_them_as_an_exemplar(
    metrics: ProbeMetrics,
) -> None:
    slow = result("plain", "10.0.0.1:19530", 0.7, started_at=1_700_000_000.1234)
    fast = result("plain", "10.0.0.1:19530", 0.0007, started_at=1_700_000_001.5)
    metrics.record(PLAIN, slow)
    metrics.record(PLAIN, fast)
    ours = render(metrics.registry, OPENMETRICS)[0]
    theirs = openmetrics_latest(metrics.registry)  # prometheus_client writes them too
    assert exemplars(ours) == exemplars(theirs)
    found = exemplars(ours)
    plain = (("alias", "plain"), ("namespace", ""), ("pod", ""), ("protocol", "grpc"),
             ("service", ""), ("target", "10.0.0.1:19530"))  # fmt: skip
    assert found[(*plain[:1], ("le", "1.0"), *plain[1:])] == (slow.trace_id, 0.7, 1700000000.123)
    assert found[(*plain[:1], ("le", "0.001"), *plain[1:])] == (fast.trace_id, 0.0007, 1700000001.5)
    assert all(dict(labels).get("le") for labels in found)  # buckets only
    assert b"# {trace_id=" in ours
    assert b"trace_id" not in render(metrics.registry, TEXT)[0]  # 0.0.4 has no exemplars


def test_histograms_match_prometheus_client_fed_the_same_observations(
    metrics: ProbeMetrics,
) -> None:
    oracle = CollectorRegistry()
    reference = Histogram(
        "milvus_probe_duration_seconds", "", buckets=latency_buckets(5.0), registry=oracle
    )
    for seconds in [*DURATIONS, 5.0]:
        reference.observe(seconds)
    labels = {"alias": "plain", "target": "10.0.0.1:19530", "namespace": "", "service": "",
              "pod": "", "protocol": "grpc"}  # fmt: skip
    for bound in [*latency_buckets(5.0), float("inf")]:
        le = "+Inf" if bound == float("inf") else str(bound)
        ours = metrics.registry.get_sample_value(
            "milvus_probe_duration_seconds_bucket", {**labels, "le": le}
        )
        expected = oracle.get_sample_value("milvus_probe_duration_seconds_bucket", {"le": le})
        assert ours == expected, le
    for suffix in ("_count", "_sum"):
        name = "milvus_probe_duration_seconds" + suffix
        assert metrics.registry.get_sample_value(name, labels) == pytest.approx(
            oracle.get_sample_value(name)
        )


def test_a_cycle_after_a_scrape_shows_in_the_next_scrape(metrics: ProbeMetrics) -> None:
    def attempts() -> float:
        parsed = families(render(metrics.registry, TEXT)[0], TEXT)
        return next(v for _, labels, v in parsed["milvus_probe_attempts"]
                    if dict(labels)["alias"] == "odd")  # fmt: skip

    before = attempts()
    assert attempts() == before  # rendered from the cache: unchanged
    metrics.record(ODD, result("odd", "10.0.0.2:19530", 0.001))
    assert attempts() == before + 1
    metrics.missed_cycle(ODD)
    parsed = families(render(metrics.registry, TEXT)[0], TEXT)
    missed = {dict(labels)["alias"]: v for _, labels, v in parsed["milvus_probe_missed_cycles"]}
    assert missed == {"plain": 0, "odd": 2}


def test_a_removed_target_leaves_nothing_and_comes_back_at_zero(metrics: ProbeMetrics) -> None:
    metrics.remove_target(PLAIN)
    body = render(metrics.registry, OPENMETRICS)[0].decode()
    assert 'alias="plain"' not in body
    metrics.record(PLAIN, result("plain", "10.0.0.1:19530", 0.001))  # a cycle that was in flight
    assert 'alias="plain"' not in render(metrics.registry, OPENMETRICS)[0].decode()
    metrics.add_target(replace(PLAIN, generation=3))  # the hub's new generation
    parsed = families(render(metrics.registry, OPENMETRICS)[0], OPENMETRICS)
    plain = [v for _, labels, v in parsed["milvus_probe_attempts"]
             if dict(labels)["alias"] == "plain"]  # fmt: skip
    assert plain == [0]


def test_the_app_filters_by_name_and_compresses(metrics: ProbeMetrics) -> None:
    app = metrics_app(metrics.registry)
    answer: list[Any] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "name[]=milvus_probe_attempts_total&name[]=milvus_probe_targets",
        "HTTP_ACCEPT": OPENMETRICS,
        "HTTP_ACCEPT_ENCODING": "gzip",
    }
    body = b"".join(app(environ, lambda status, headers: answer.extend([status, headers])))
    assert answer[0] == "200 OK" and ("Content-Encoding", "gzip") in answer[1]
    parsed = families(gzip.decompress(body), OPENMETRICS)
    assert set(parsed) == {"milvus_probe_attempts", "milvus_probe_targets"}
    assert len(parsed["milvus_probe_attempts"]) == 2
