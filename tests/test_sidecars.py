"""Where Milvus users are: a native sidecar (Kubernetes >= 1.29), the Milvus Operator's
`spec.components.proxy.sidecars`, and a Helm post-renderer for the official Milvus chart,
which has no sidecar key.

The examples in docs/examples carry the container the chart's "milvus-probe.container"
template renders; these tests keep them equal to it, validate them against Kubernetes'
schemas, and run the post-renderer on a stand-in for the official chart (which can't be
fetched here), then play its proxy pod beside a real Milvus container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kit import podman
from tests.conftest import Image
from tests.standalone import Agent, Netns
from tests.support import wait_until
from tests.test_chart import CHART
from tests.test_pods import hosts_file, parent_chart, played, status

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
SIDECAR_VALUES = CHART / "ci" / "sidecar-values.yaml"
STANDIN = ROOT / "tests" / "charts" / "milvus-helm-standin"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
RELEASE = f"my-milvus{podman.SESSION}"


def embedded(helm, tmp_path: Path, *args: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """{containers, volumes} the chart's embedding templates render (release milvus-probe)."""
    chart = tmp_path / "embed" / "milvus-probe"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-embed.yaml").write_text(
        'containers:\n{{- include "milvus-probe.container" . | nindent 2 }}\n'
        'volumes:\n{{- include "milvus-probe.volumes" . | nindent 2 }}\n'
    )
    out = helm("template", "milvus-probe", str(chart), "--namespace", "milvus", *args,
               "--show-only", "templates/zz-embed.yaml").stdout
    return dict(yaml.safe_load(out))


def validate(path: Path, version: str) -> None:
    done = subprocess.run([str(VALIDATE), "--strict", "--quiet", "-k", version, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{path.name} against {version}: {done.stdout}{done.stderr}"


def as_pod(containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
           init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "volumes": volumes}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "milvus-proxy"},
            "spec": spec}


MILVUS = {"name": "proxy", "image": "milvusdb/milvus:v2.5.4"}


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_native_sidecar_is_an_init_container_that_always_restarts(  # type: ignore[no-untyped-def]
    helm, tmp_path: Path, version: str
) -> None:
    """sidecar.native: the parent chart lists the probe in initContainers with
    restartPolicy Always (it starts before Milvus and stops after it); the pod passes
    Kubernetes' 1.29+ schemas, strictly."""
    docs = parent_chart(helm, tmp_path, "--set", "milvusprobe.sidecar.native=true",
                        "--kube-version", version)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["milvus"]
    (probe,) = spec["initContainers"]
    assert probe["name"] == podman.PROBE_CONTAINER and probe["restartPolicy"] == "Always"
    assert probe["startupProbe"] and probe["readinessProbe"]  # allowed for native sidecars
    manifest = tmp_path / "native.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    validate(manifest, version)
    # Without the flag the same container has no restartPolicy (a container may not).
    plain = embedded(helm, tmp_path, "-f", str(SIDECAR_VALUES))["containers"][0]
    assert "restartPolicy" not in plain


def test_native_sidecar_refuses_kubernetes_before_1_29(helm) -> None:  # type: ignore[no-untyped-def]
    done = helm("template", "r", str(CHART), "--set", "sidecar.enabled=true",
                "--set", "sidecar.native=true", "--kube-version", "1.28.9", check=False)
    assert done.returncode != 0
    assert "sidecar.native: native sidecars need Kubernetes >= 1.29" in done.stderr


def test_operator_example_carries_the_charts_container(helm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """docs/examples/milvus-operator.yaml: spec.components.proxy.sidecars holds exactly what
    the chart renders with ci/sidecar-values.yaml, its volumes too, and the pod the
    Operator makes of them passes Kubernetes' schemas strictly."""
    example = yaml.safe_load((EXAMPLES / "milvus-operator.yaml").read_text())
    assert (example["apiVersion"], example["kind"]) == ("milvus.io/v1beta1", "Milvus")
    proxy = example["spec"]["components"]["proxy"]
    rendered = embedded(helm, tmp_path, "-f", str(SIDECAR_VALUES))
    assert proxy["sidecars"] == rendered["containers"]
    assert proxy["volumes"] == rendered["volumes"]
    # The Operator adds the sidecar's ports to the proxy Service: the port is named.
    (port,) = proxy["sidecars"][0]["ports"]
    assert (port["name"], port["containerPort"]) == ("http-metrics", 9191)
    pod = tmp_path / "operator-pod.yaml"
    pod.write_text(yaml.safe_dump(as_pod([MILVUS, *proxy["sidecars"]], proxy["volumes"])))
    validate(pod, "1.37.0")


def post_render(tmp_path: Path, chart: Path) -> list[dict[str, Any]]:
    """`helm template` of `chart` through docs/examples/milvus-helm/post-render.sh, with the
    kubectl that `make tools` fetched beside helm."""
    home = tmp_path / "helm-home"
    env = {**os.environ, "KUBECTL": str(ROOT / ".tools" / "kubectl"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    assert (ROOT / ".tools" / "kubectl").exists(), "kubectl is missing: `make tools` fetches it"
    done = subprocess.run(
        [str(ROOT / ".tools" / "helm"), "template", RELEASE, str(chart), "--namespace",
         "milvus", "--post-renderer", str(EXAMPLES / "milvus-helm" / "post-render.sh")],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_post_renderer_adds_the_probe_to_the_official_charts_proxy_pods(  # type: ignore[no-untyped-def]
    helm, image: Image, milvus_image: str, tmp_path: Path
) -> None:
    """The official chart's proxy Deployment gets the chart's container after Milvus's and
    its volumes; the querynode is untouched; the result passes the schemas; played with
    the probe's ConfigMap (ci/sidecar-values.yaml), the probe reaches Milvus on the pod's
    loopback and /readyz/local-proxy answers 200."""
    docs = post_render(tmp_path, STANDIN)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    proxy = deployments[f"{RELEASE}-milvus-proxy"]["spec"]["template"]["spec"]
    querynode = deployments[f"{RELEASE}-milvus-querynode"]["spec"]["template"]["spec"]
    rendered = embedded(helm, tmp_path, "-f", str(SIDECAR_VALUES))
    assert [c["name"] for c in proxy["containers"]] == ["proxy", podman.PROBE_CONTAINER]
    assert proxy["containers"][1] == rendered["containers"][0]
    assert proxy["volumes"][1:] == rendered["volumes"]
    assert [c["name"] for c in querynode["containers"]] == ["querynode"]
    assert [v["name"] for v in querynode["volumes"]] == ["tools"]
    manifest = tmp_path / "post-rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    validate(manifest, "1.37.0")

    config = [d for d in yaml.safe_load_all(helm(
        "template", "milvus-probe", str(CHART), "--namespace", "milvus", "-f",
        str(SIDECAR_VALUES), "--show-only", "templates/configmap.yaml").stdout) if d]
    run, config_maps = podman.playable(
        [*config, deployments[f"{RELEASE}-milvus-proxy"]],
        images={podman.PROBE_CONTAINER: image.tag, "proxy": milvus_image},
        namespace="milvus", hosts=hosts_file(tmp_path / "hosts", config), secrets={},
    )
    ns = Netns.create("mp-helm")
    agent = Agent(ns)
    try:
        began = time.monotonic()
        with played(tmp_path / "pod.yaml", [*config_maps, *run], ns):
            wait_until(lambda: status(agent, 9191, "/readyz/local-proxy") == 200, 90,
                       "the probe beside the official chart's proxy ready")
            print(f"\npost-rendered proxy pod: /readyz/local-proxy 200 "
                  f"{time.monotonic() - began:.1f} s after `podman kube play`")
            assert status(agent, 9191, "/healthz") == 200
    finally:
        agent.close()
        ns.delete()
