"""The chart's pods, played: `helm template` → `podman kube play` → the real image runs with
the chart's args, ConfigMap, Secrets, volumes and security context.

Each pod plays inside a network namespace of its own (its "host network", REFERENCE.md §7),
with a real Milvus (milvus-lite) on 127.0.0.1:19530 there and the targets' names in the
pod's /etc/hosts (the cluster DNS stand-in). What `kit.podman.playable` changes in the
rendered manifests, and why, is in its docstring. The kubelet's part is played by the test:
it asks the liveness and readiness endpoints the chart's probes name.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kit import podman
from kit.scrape import Scrape
from tests.conftest import Image
from tests.standalone import Agent, Netns
from tests.support import (
    Behaviour,
    Certs,
    MilvusDouble,
    make_certs,
    milvus_lite_binary,
    wait_until,
)
from tests.test_chart import CHART, CI_VALUES, render

PARENT = Path(__file__).resolve().parent / "charts" / "milvus-sidecar"
NAMESPACE = "milvus"
PORT = 19530
TOKEN = "root:Milvus"


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Deployments and StatefulSets (not `helm test`'s hook pod)."""
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def needs_api(docs: list[dict[str, Any]]) -> bool:
    """True when the probe container's args turn on discovery or Events (the API server)."""
    for doc in workloads(docs):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            args = container.get("args", [])
            if "--discovery.kubernetes.enabled=true" in args or "--events.enabled=true" in args:
                return True
    return False


PLAYED = ["default-values.yaml", "auth-tls-values.yaml", "everything-values.yaml"]
"""The ci values files whose workload plays here."""
ELSEWHERE = {
    "sidecar-values.yaml": "renders no workload: played beside a Milvus container in "
    "test_sidecar_pod_beside_a_milvus_container",
    "discovery-values.yaml": "needs the Kubernetes API (no API server runs here): the image's "
    "discovery and Events are played in test_image.py against the API double, the "
    "StatefulSet, RBAC and args in test_chart.py",
}


NOT_PLAYED_YET = {
    "web-config-values.yaml": (
        "tests/test_web_security.py",
        "test_the_charts_web_config_serves_kubelet_and_prometheus",
        "its pod serves HTTPS with client certificates, which the in-namespace agent does "
        "not speak yet: the daemon runs with the Secret and the flags this chart renders "
        "(every mode), asked as kubelet and as Prometheus ask",
    ),
}
"""Values files whose workload could play here but is covered, for now, by the named test."""


def test_every_ci_values_file_is_played_or_says_where_it_is_covered(helm) -> None:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parent.parent
    for values in CI_VALUES:
        docs = render(helm, "-f", str(values))
        if values.name in PLAYED:
            assert workloads(docs) and not needs_api(docs), values.name
        elif values.name in NOT_PLAYED_YET:
            path, test, _ = NOT_PLAYED_YET[values.name]
            assert f"def {test}(" in (root / path).read_text(), f"{values.name}: {test}?"
        else:
            assert values.name in ELSEWHERE, f"{values.name}: play it or say where it is covered"
            assert not workloads(docs) or needs_api(docs), values.name


WAIT_FOR_PORT = """
import socket, time
deadline = time.monotonic() + 60
while True:
    try:
        socket.create_connection(("127.0.0.1", {port}), 1).close()
        break
    except OSError:
        assert time.monotonic() < deadline, "milvus-lite never opened its port"
        time.sleep(0.1)  # polling a port: the only signal milvus-lite gives
"""


@contextlib.contextmanager
def network(tmp_path: Path, *milvus_command: str) -> Iterator[tuple[Netns, Agent]]:
    """A network namespace with a Milvus on 127.0.0.1:19530 (milvus-lite unless
    `milvus_command` says otherwise) and an HTTP agent in it."""
    ns = Netns.create("mp-pod")
    log = open(tmp_path / "milvus.log", "wb")  # noqa: SIM115 (closed below)
    milvus = ns.popen(*(milvus_command or (
        milvus_lite_binary(), "server", "--data-dir", str(tmp_path), "--host", "127.0.0.1",
        "--port", str(PORT))), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
    agent = Agent(ns)
    try:
        waited = ns.python("-c", WAIT_FOR_PORT.format(port=PORT), timeout=90)
        assert waited.returncode == 0, (tmp_path / "milvus.log").read_text()[-2000:]
        yield ns, agent
    finally:
        agent.close()
        assert milvus.stdin is not None
        milvus.stdin.close()
        milvus.terminate()
        milvus.wait(10)
        log.close()
        ns.delete()


@contextlib.contextmanager
def played(manifest: Path, docs: list[dict[str, Any]], ns: Netns) -> Iterator[None]:
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    podman.play(manifest, ns.name)
    try:
        yield
    finally:
        podman.down(manifest)


def hosts_file(path: Path, docs: list[dict[str, Any]]) -> Path:
    """/etc/hosts for the pod: every name its ConfigMap's targets use → 127.0.0.1."""
    names = {"localhost"}
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "config.yaml" in doc.get("data", {}):
            config = yaml.safe_load(doc["data"]["config.yaml"])
            for target in config.get("targets") or []:
                address = str(target.get("uri") or target.get("host") or "localhost")
                names.add(address.split("://")[-1].split(":")[0].split("/")[0])
    path.write_text("".join(f"127.0.0.1 {name}\n" for name in sorted(names)))
    path.chmod(0o644)
    return path


def probe_endpoint(doc: dict[str, Any], kind: str) -> str:
    """The path the chart's `kind` probe (livenessProbe, readinessProbe) asks."""
    (container,) = [c for c in doc["spec"]["template"]["spec"]["containers"]
                    if c["name"] == podman.PROBE_CONTAINER]
    probe = container[kind]["httpGet"]
    assert probe["port"] == "http-metrics"
    return str(probe["path"])


def management_port(doc: dict[str, Any]) -> int:
    (container,) = [c for c in doc["spec"]["template"]["spec"]["containers"]
                    if c["name"] == podman.PROBE_CONTAINER]
    return int(container["ports"][0]["containerPort"])


def status(agent: Agent, port: int, path: str) -> int | None:
    try:
        return agent.get(port, path, timeout=3)[0]
    except OSError:
        return None


@pytest.mark.parametrize("values", PLAYED)
def test_the_charts_pod_plays_is_ready_and_probes_its_targets(  # type: ignore[no-untyped-def]
    helm, image: Image, tmp_path: Path, values: str
) -> None:
    out = helm("template", f"rel{podman.SESSION}", str(CHART), "--namespace", NAMESPACE,
               "-f", str(CHART / "ci" / values)).stdout
    docs = [d for d in yaml.safe_load_all(out)
            if d and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
    (workload,) = workloads(docs)
    certs = make_certs(tmp_path / "certs", ("milvus.prod.example.com",))
    secrets = {
        "milvus-probe-token": podman.secret_folder(tmp_path / "token", {"token": TOKEN}),
        "milvus-probe-tls": podman.secret_folder(tmp_path / "tls", {
            "ca.crt": certs.ca.read_bytes(), "client.crt": certs.client_cert.read_bytes(),
            "client.key": certs.client_key.read_bytes()}),
    }
    # auth-tls-values.yaml: mutual TLS with a token and a database. milvus-lite speaks
    # neither TLS nor auth, so its targets' Milvus is the double, which checks all three.
    milvus = (sys.executable, "-m", "tests.test_pods", "tls-milvus", str(certs.directory)) \
        if values == "auth-tls-values.yaml" else ()
    run, config_maps = podman.playable(
        docs, images={podman.PROBE_CONTAINER: image.tag, "log-shipper": podman.BASE},
        namespace=NAMESPACE, hosts=hosts_file(tmp_path / "hosts", docs), secrets=secrets,
    )
    pod = f"{workload['metadata']['name']}-pod-0"
    container = f"{pod}-{podman.PROBE_CONTAINER}"
    port = management_port(workload)
    with network(tmp_path, *milvus) as (ns, agent):
        began = time.monotonic()
        with played(tmp_path / "pod.yaml", [*config_maps, *run], ns):
            check_pod(values, workload, container, config_maps, agent, began, port)


def check_pod(
    values: str, workload: dict[str, Any], container: str, config_maps: list[dict[str, Any]],
    agent: Agent, began: float, port: int,
) -> None:
    ready_path = probe_endpoint(workload, "readinessProbe")
    live_path = probe_endpoint(workload, "livenessProbe")
    wait_until(lambda: status(agent, port, ready_path) == 200, 60,
               f"{values}: {ready_path} 200")
    print(f"\n{values}: ready {time.monotonic() - began:.1f} s after `podman kube play`")
    assert status(agent, port, live_path) == 200
    assert status(agent, port, probe_endpoint(workload, "startupProbe")) == 200
    config = yaml.safe_load(config_maps[0]["data"]["config.yaml"])
    aliases = [t["alias"] for t in config["targets"]]

    def probed() -> Scrape:
        metrics = Scrape(agent.get(port, "/metrics")[1])
        return metrics if all((metrics.value("milvus_probe_attempts_total", alias=a) or 0)
                              >= 1 for a in aliases) else None  # type: ignore[return-value]

    metrics = wait_until(probed, 60, f"{values}: every target probed")
    assert metrics.value("milvus_probe_success", alias=aliases[0]) == 1.0, [
        (s.labels["alias"], s.labels["reason"]) for s in metrics.find("milvus_probe_failures_total")
        if s.value]
    # The container runs the chart's args, as the chart's user, with its namespace.
    rendered = next(c for c in workload["spec"]["template"]["spec"]["containers"]
                    if c["name"] == podman.PROBE_CONTAINER)
    cmdline = podman.Container(container).exec("cat", "/proc/1/cmdline").stdout
    assert cmdline.split("\0")[2:-1] == rendered["args"], cmdline
    assert podman.Container(container).exec("id", "-u").stdout.strip() == "10001"
    env = podman.Container(container).exec("printenv", "POD_NAMESPACE").stdout.strip()
    assert env == workload["metadata"]["namespace"]
    inspect = podman.podman("inspect", "--format",
                            "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}",
                            container).stdout
    assert inspect.startswith("true"), inspect
    logs = podman.Container(container).logs()
    assert "Traceback" not in logs and TOKEN not in logs
    pod = container[: -len(podman.PROBE_CONTAINER) - 1]
    for other in workload["spec"]["template"]["spec"]["containers"]:
        assert podman.Container(f"{pod}-{other['name']}").running(), other["name"]


# --------------------------------------------------------------------------- sidecar


def parent_chart(helm, tmp_path: Path, *args: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """tests/charts/milvus-sidecar rendered, with this chart as its dependency (a copy in
    charts/, as `helm dependency build` would put it)."""
    chart = tmp_path / "milvus-sidecar"
    shutil.copytree(PARENT, chart)
    shutil.copytree(CHART, chart / "charts" / "milvus-probe")
    out = helm("template", f"rel{podman.SESSION}", str(chart), "--namespace", NAMESPACE,
               *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_sidecar_pod_beside_a_milvus_container(  # type: ignore[no-untyped-def]
    helm, image: Image, milvus_image: str, tmp_path: Path
) -> None:
    """One pod: a Milvus container (milvus-lite) and the probe from the chart's
    "milvus-probe.container" template. The probe reaches Milvus on the pod's loopback; the
    Milvus container's readiness is the probe's /readyz/local. Milvus stopped: the probe
    says `refused` within one interval, /readyz/local turns 503 and liveness stays 200;
    started again: it recovers."""
    docs = parent_chart(helm, tmp_path)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert list(containers) == ["milvus", podman.PROBE_CONTAINER]
    readiness = containers["milvus"]["readinessProbe"]["httpGet"]
    assert readiness == {"path": "/readyz/local", "port": 9191}
    liveness = containers[podman.PROBE_CONTAINER]["livenessProbe"]["httpGet"]["path"]
    run, config_maps = podman.playable(
        docs, images={podman.PROBE_CONTAINER: image.tag, "milvus": milvus_image},
        namespace=NAMESPACE, hosts=hosts_file(tmp_path / "hosts", docs), secrets={},
    )
    interval = 2.0
    assert yaml.safe_load(config_maps[0]["data"]["config.yaml"])["probe"]["interval"] == "2s"
    milvus = podman.Container(f"{deployment['metadata']['name']}-pod-0-milvus")
    ns = Netns.create("mp-sidecar")
    agent = Agent(ns)
    try:
        began = time.monotonic()
        with played(tmp_path / "pod.yaml", [*config_maps, *run], ns):
            wait_until(lambda: status(agent, 9191, readiness["path"]) == 200, 90,
                       "the Milvus container ready")
            print(f"\nsidecar pod: Milvus ready {time.monotonic() - began:.1f} s after "
                  "`podman kube play`")

            def refused() -> float:
                metrics = Scrape(agent.get(9191, "/metrics")[1])
                return metrics.value("milvus_probe_failures_total", alias="local",
                                     reason="refused") or 0.0

            before = refused()  # cycles before milvus-lite opened its port were refused too
            podman.podman("stop", "--time=5", milvus.name)
            stopped = time.monotonic()
            wait_until(lambda: refused() > before, interval + 2, "the probe says refused")
            said = time.monotonic() - stopped
            print(f"Milvus stopped: `refused` after {said:.1f} s (interval {interval:.0f} s)")
            assert said <= interval + 0.5, said
            assert status(agent, 9191, readiness["path"]) == 503
            assert status(agent, 9191, liveness) == 200
            podman.podman("start", milvus.name, netns=ns.name)  # the pod's network
            restarted = time.monotonic()
            wait_until(lambda: status(agent, 9191, readiness["path"]) == 200, 60,
                       "ready again")
            print(f"Milvus started again: ready after {time.monotonic() - restarted:.1f} s")
            assert status(agent, 9191, liveness) == 200
    finally:
        agent.close()
        ns.delete()


# --------------------------------------------------------------------------- in the namespace


def tls_milvus(directory: str) -> int:
    """A Milvus double on 127.0.0.1:19530 with mutual TLS, token TOKEN and database
    `analytics` (what auth-tls-values.yaml's targets need); stops when stdin closes."""
    base = Path(directory)
    certs = Certs(base, base / "ca.pem", base / "server.pem", base / "server.key",
                  base / "client.pem", base / "client.key", base / "other_ca.pem")
    double = MilvusDouble(Behaviour(token=TOKEN, databases={"default", "analytics"}),
                          tls=certs.server_credentials(mutual=True), port=PORT)
    try:
        sys.stdin.read()
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    assert sys.argv[1] == "tls-milvus", sys.argv
    sys.exit(tls_milvus(sys.argv[2]))
