"""Kubernetes discovery, Events and sharding: the real `kubernetes` client against an API
server double (tests/kube_double.py), real milvus-lite servers standing in for pods."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from probe.app import App
from probe.config import Sources, load
from probe.targets import Target
from probe.targets.kubernetes import DiscoveryOptions, Shard, targets_from_slices
from tests.conftest import KUBE_NS, KUBE_SVC, KUBE_TOKEN, DiscoverFactory
from tests.kube_double import KubeApiDouble, endpoint_slice
from tests.support import (
    Behaviour,
    MilvusLite,
    free_port,
    milvus_double,
    wait_until,
)

NS, SVC, TOKEN = KUBE_NS, KUBE_SVC, KUBE_TOKEN


def value(app: App, name: str, **labels: str) -> float | None:
    return app.registry.get_sample_value(name, labels)


def pod_labels(pod: str, target: str) -> dict[str, str]:
    return {"alias": f"{SVC}/{pod}", "target": target, "namespace": NS, "service": SVC, "pod": pod,
            "protocol": "grpc"}


def aliases(app: App) -> set[str]:
    return {t.alias for t in app._current_targets()}


def series_aliases(app: App) -> set[str]:
    return {
        s.labels["alias"]
        for m in app.registry.collect()
        if m.name == "milvus_probe_attempts"
        for s in m.samples
    }


# ------------------------------------------------------------------------ discovery


def test_pods_appear_and_disappear_with_their_series(
    discover: DiscoverFactory,
    kube: KubeApiDouble,
    milvus: MilvusLite,
    milvus_b: MilvusLite,
) -> None:
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover()
    labels0 = pod_labels("proxy-0", milvus.address)
    wait_until(
        lambda: value(app, "milvus_probe_success", **labels0) == 1, 5, "proxy-0 probed and up"
    )

    kube.put_slice(endpoint_slice(NS, SVC, "proxy-1", "127.0.0.1", milvus_b.port))
    labels1 = pod_labels("proxy-1", milvus_b.address)
    wait_until(
        lambda: value(app, "milvus_probe_success", **labels1) == 1,
        2,
        "proxy-1 to appear within a second and pass",
    )

    kube.delete_slice(f"{SVC}-proxy-0")
    wait_until(lambda: "milvus/proxy-0" not in series_aliases(app), 1, "proxy-0's series to go")
    attempts = value(app, "milvus_probe_attempts_total", **labels1) or 0
    wait_until(
        lambda: (value(app, "milvus_probe_attempts_total", **labels1) or 0) > attempts + 2,
        5,
        "proxy-1 to keep being probed",
    )
    assert "milvus/proxy-0" not in series_aliases(app)  # and it stays gone
    assert value(app, "milvus_probe_discovery_targets") == 1


def test_not_ready_and_terminating_endpoints_are_dropped(
    discover: DiscoverFactory, kube: KubeApiDouble, milvus: MilvusLite
) -> None:
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-1", "127.0.0.1", milvus.port, ready=False))
    app = discover()
    wait_until(lambda: aliases(app) == {"milvus/proxy-0"}, 5, "only the ready pod")
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port, terminating=True))
    wait_until(lambda: aliases(app) == set(), 2, "the terminating pod to be dropped")
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-1", "127.0.0.1", milvus.port))
    wait_until(lambda: aliases(app) == {"milvus/proxy-1"}, 2, "proxy-1 once ready")


def test_service_target_uses_the_service_port(
    discover: DiscoverFactory, kube: KubeApiDouble, milvus: MilvusLite
) -> None:
    kube.add_service(SVC, 19999)
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover(**{"discovery.kubernetes.include-service": "true"})
    wait_until(lambda: "milvus" in aliases(app), 5, "the Service target")
    service = next(t for t in app._current_targets() if t.alias == "milvus")
    assert service.address == "milvus.milvus.svc:19999"
    assert (service.namespace, service.service, service.pod) == (NS, SVC, "")


def test_api_server_restart_mid_watch_keeps_probing(
    discover: DiscoverFactory,
    kube: KubeApiDouble,
    milvus: MilvusLite,
    milvus_b: MilvusLite,
) -> None:
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover()
    labels0 = pod_labels("proxy-0", milvus.address)
    wait_until(lambda: value(app, "milvus_probe_success", **labels0) == 1, 5, "proxy-0 up")
    wait_until(lambda: kube.watch_count() >= 1, 5, "a watch to be open")

    kube.stop()  # the API server goes away
    wait_until(
        lambda: (value(app, "milvus_probe_discovery_errors_total", kind="connection") or 0) >= 1,
        10,
        "discovery to notice",
    )
    before = value(app, "milvus_probe_attempts_total", **labels0) or 0
    wait_until(
        lambda: (value(app, "milvus_probe_attempts_total", **labels0) or 0) >= before + 3,
        5,
        "the last known targets to keep being probed",
    )

    kube.start()  # back, same port, same history
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-1", "127.0.0.1", milvus_b.port))
    wait_until(
        lambda: aliases(app) == {"milvus/proxy-0", "milvus/proxy-1"},
        35,
        "discovery to resume and see proxy-1",
    )


def test_410_gone_relists(
    discover: DiscoverFactory,
    kube: KubeApiDouble,
    milvus: MilvusLite,
    milvus_b: MilvusLite,
) -> None:
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover()
    wait_until(lambda: aliases(app) == {"milvus/proxy-0"}, 5, "proxy-0")
    wait_until(lambda: kube.watch_count() >= 1, 5, "a watch to be open")
    lists = kube.lists
    kube.compact()  # the watch ends; resuming from its old version gets 410
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-1", "127.0.0.1", milvus_b.port))
    wait_until(lambda: aliases(app) == {"milvus/proxy-0", "milvus/proxy-1"}, 5, "relist")
    assert kube.lists > lists
    assert (value(app, "milvus_probe_discovery_errors_total", kind="gone") or 0) >= 1


def test_bookmarks_and_dropped_watches_resume_without_relisting(
    discover: DiscoverFactory,
    kube: KubeApiDouble,
    milvus: MilvusLite,
    milvus_b: MilvusLite,
) -> None:
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover()
    wait_until(lambda: kube.watch_count() >= 1, 5, "a watch to be open")
    lists, watches = kube.lists, kube.watch_count()
    kube.bookmark()
    kube.drop_watches()
    wait_until(lambda: kube.watch_count() > watches, 30, "the watch to resume")
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-1", "127.0.0.1", milvus_b.port))
    wait_until(lambda: "milvus/proxy-1" in aliases(app), 2, "the change after the drop")
    assert kube.lists == lists  # resumed from the resourceVersion, no relist


def test_api_errors_back_off_and_recover(
    discover: DiscoverFactory, kube: KubeApiDouble, milvus: MilvusLite
) -> None:
    kube.fail_next = 3
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover()
    wait_until(lambda: aliases(app) == {"milvus/proxy-0"}, 15, "discovery after 3 failures")
    assert value(app, "milvus_probe_discovery_errors_total", kind="api") == 3


def test_readyz_verbose_shows_discovery(
    discover: DiscoverFactory, kube: KubeApiDouble, milvus: MilvusLite
) -> None:
    from tests.support import http_get

    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    app = discover()
    wait_until(lambda: app.discovery.synced.is_set(), 5, "first list")
    status, _, body = http_get(app.port, "/readyz?verbose")
    assert b"[+]discovery 1 target(s)" in body


# ------------------------------------------------------------------------ Events


def events_of(kube: KubeApiDouble, reason: str) -> list[dict[str, Any]]:
    with kube._lock:
        return [e for e in kube.events.values() if e["reason"] == reason]


def test_events_on_state_changes_once_and_aggregated(
    discover: DiscoverFactory, kube: KubeApiDouble
) -> None:
    behaviour = Behaviour(token=TOKEN)
    with milvus_double(behaviour) as double:
        kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", double.port))
        app = discover()
        labels = pod_labels("proxy-0", double.address)
        wait_until(lambda: value(app, "milvus_probe_success", **labels) == 1, 5, "up")
        assert kube.events == {}  # starting healthy is not a change

        behaviour.healthy, behaviour.reasons = False, ["querynode down"]
        wait_until(lambda: len(events_of(kube, "MilvusUnhealthy")) == 1, 5, "a Warning")
        failures = value(app, "milvus_probe_failures_total", reason="unhealthy", **labels) or 0
        wait_until(
            lambda: (
                (value(app, "milvus_probe_failures_total", reason="unhealthy", **labels) or 0)
                >= failures + 3
            ),
            5,
            "more failed cycles",
        )
        assert len(events_of(kube, "MilvusUnhealthy")) == 1  # once per change, not per cycle
        (warning,) = events_of(kube, "MilvusUnhealthy")
        assert warning["type"] == "Warning" and warning["_api"] == "events.k8s.io/v1"
        assert warning["regarding"]["kind"] == "Pod" and warning["regarding"]["name"] == "proxy-0"
        assert "milvus/proxy-0" in warning["note"] and "unhealthy" in warning["note"]

        behaviour.healthy = True
        wait_until(lambda: len(events_of(kube, "MilvusConnectionRecovered")) == 1, 5, "Normal")
        behaviour.healthy = False  # the same failure again: aggregated into the first Event
        wait_until(
            lambda: any(
                name == warning["metadata"]["name"] and p.get("series", {}).get("count") == 2
                for name, p in kube.event_patches
            ),
            5,
            "series count 2",
        )
        assert len(events_of(kube, "MilvusUnhealthy")) == 1
    assert_no_secret(kube)


def test_quota_denying_posts_an_event(discover: DiscoverFactory, kube: KubeApiDouble) -> None:
    behaviour = Behaviour(token=TOKEN)
    with milvus_double(behaviour) as double:
        kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", double.port))
        app = discover()
        wait_until(lambda: "milvus/proxy-0" in series_aliases(app), 5, "target")
        behaviour.quota_states = [5]
        wait_until(lambda: len(events_of(kube, "MilvusQuotaDenying")) == 1, 5, "quota Event")
        assert "DenyToWrite" in events_of(kube, "MilvusQuotaDenying")[0]["note"]


def test_connection_failure_event_and_core_v1_fallback(
    discover: DiscoverFactory, kube: KubeApiDouble
) -> None:
    kube.events_v1 = False  # an old API server
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-9", "127.0.0.1", free_port()))
    discover()
    wait_until(lambda: len(events_of(kube, "MilvusConnectionFailed")) == 1, 5, "core Event")
    (event,) = events_of(kube, "MilvusConnectionFailed")
    assert event["_api"] == "v1" and event["involvedObject"]["name"] == "proxy-9"
    assert "refused" in event["message"] and len(event["message"]) <= 1024
    assert_no_secret(kube)


def test_a_broken_events_api_never_stops_probing(
    discover: DiscoverFactory, kube: KubeApiDouble, milvus: MilvusLite
) -> None:
    """Event posts that hang (the API server takes them and never answers) hold up the
    Events worker only: both targets keep every slot meanwhile, the failing one included,
    whose state change is the Event being posted; the post is counted as failed after."""
    kube.hold_events = True
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-0", "127.0.0.1", milvus.port))
    refused = free_port()
    kube.put_slice(endpoint_slice(NS, SVC, "proxy-9", "127.0.0.1", refused))
    app = discover()
    labels = [pod_labels("proxy-0", milvus.address), pod_labels("proxy-9", f"127.0.0.1:{refused}")]

    def counts(name: str) -> list[float]:
        return [value(app, name, **each) or 0 for each in labels]

    try:
        wait_until(lambda: kube.held_events >= 1, 10, "proxy-9's Event post to hang")
        attempts, missed = counts("milvus_probe_attempts_total"), counts(
            "milvus_probe_missed_cycles_total"
        )
        # 200 ms interval: 5 more cycles each take a second; 5 s is a loaded machine's slack.
        wait_until(
            lambda: all(
                now >= then + 5
                for now, then in zip(counts("milvus_probe_attempts_total"), attempts, strict=True)
            ),
            5,
            "5 more cycles of both targets while the Event post hangs",
        )
        assert counts("milvus_probe_missed_cycles_total") == missed  # not one slot skipped
        assert kube.held_events == 1  # the post is still hanging: nothing else was posted
        assert (value(app, "milvus_probe_events_total", result="failed") or 0) == 0
        assert kube.events == {}
    finally:
        kube.release_events()
    wait_until(
        lambda: (value(app, "milvus_probe_events_total", result="failed") or 0) == 1,
        15,
        "the hung post to be counted as failed",
    )
    assert (value(app, "milvus_probe_events_total", result="created") or 0) == 0


def assert_no_secret(kube: KubeApiDouble) -> None:
    encoded = base64.b64encode(TOKEN.encode()).decode()
    with kube._lock:
        text = repr(kube.events) + repr(kube.event_patches)
    assert "S3cr3t" not in text and encoded not in text


# ------------------------------------------------------------------------ sharding


def _options(shard: Shard, include_service: bool = True) -> DiscoveryOptions:
    template = load(Sources(flags={"uri": "x:1"})).targets[0]
    return DiscoveryOptions(NS, SVC, None, None, include_service, shard, template)


def _slices(count: int) -> list[Any]:
    """EndpointSlice models, deserialized by the client exactly as from the API server."""
    import json

    from kubernetes import client

    api = client.ApiClient()
    return [
        api.deserialize(
            json.dumps(endpoint_slice(NS, SVC, f"proxy-{i}", f"10.0.{i // 250}.{i % 250}", 19530)),
            "V1EndpointSlice",
            "application/json",
        )
        for i in range(count)
    ]


def test_shards_partition_1000_endpoints_evenly_and_disjointly() -> None:
    slices = _slices(1000)
    total = 4
    shards: list[set[str]] = []
    for index in range(total):
        targets: list[Target] = targets_from_slices(slices, _options(Shard(index, total)), {})
        shards.append({t.alias for t in targets if t.pod})
        assert ("milvus" in {t.alias for t in targets}) == (index == 0)  # Service: shard 0
    assert sum(len(s) for s in shards) == 1000
    assert set().union(*shards) == {f"milvus/proxy-{i}" for i in range(1000)}
    for shard in shards:
        assert 200 <= len(shard) <= 300, [len(s) for s in shards]  # 250 ± 20 %


def test_shard_auto_takes_the_statefulset_ordinal() -> None:
    flags = {
        "discovery.kubernetes.enabled": "true",
        "discovery.kubernetes.service": SVC,
        "discovery.shard": "auto/3",
    }
    config = load(Sources(flags=flags, environ={"POD_NAME": "milvus-probe-2"}))
    assert config.discovery is not None
    assert (config.discovery.shard_index, config.discovery.shard_total) == (2, 3)
    assert config.targets == ()  # no pymilvus default target beside discovery


def test_default_process_never_imports_kubernetes(milvus: MilvusLite) -> None:
    code = (
        "import sys; from probe.app import App; from probe.config import load, Sources; "
        f"app = App(load(Sources(flags={{'uri': '{milvus.address}', "
        "'web.listen-address': '127.0.0.1:0'}))); app.start(); app.stop(); "
        "print('kubernetes' in sys.modules, any(m.startswith('kubernetes') for m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"


def test_unusable_kubeconfig_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "probe", "serve", "--discovery.kubernetes.enabled",
         "--discovery.kubernetes.service", SVC, "--kubeconfig", str(tmp_path / "missing"),
         "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "no usable kubeconfig" in done.stderr and "Traceback" not in done.stderr
