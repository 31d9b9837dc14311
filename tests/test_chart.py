"""The Helm chart, checked by the real tools: helm lint/template, Kubernetes schemas and
our own config check."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "milvus-probe"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def render(helm, *args: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = helm("template", "rel", str(CHART), "--namespace", "milvus", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        found.setdefault(doc["kind"], []).append(doc)
    return found


def test_lint_strict(helm) -> None:  # type: ignore[no-untyped-def]
    helm("lint", "--strict", str(CHART))
    for values in CI_VALUES:
        helm("lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
@pytest.mark.parametrize("version", ["1.27", "1.37"])
def test_manifests_pass_kubernetes_schemas(
    helm,
    values: Path,
    version: str,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    validate = Path(sys.executable).parent / "kubernetes-validate"
    assert validate.exists(), "kubernetes-validate is missing: pip install -e .[test]"
    docs = render(helm, "-f", str(values))
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    done = subprocess.run(
        [str(validate), "--strict", "--quiet", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The Prometheus Operator CRDs have no schema available offline: their structure is
    # asserted explicitly in test_monitors_structure and tests/test_monitoring.py.


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = kinds(docs)["Deployment"]
    return deployment


def test_secure_defaults(helm) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm)
    pod = _deployment(docs)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"] == [
        {"name": "http-metrics", "containerPort": 9091, "protocol": "TCP"}
    ]
    (service,) = kinds(docs)["Service"]
    assert service["spec"]["ports"][0]["name"] == "http-metrics"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_no_rbac_and_no_secret_in_config(helm, values: Path) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, "-f", str(values))
    wants_api = values.name == "discovery-values.yaml"
    assert bool(RBAC_KINDS & set(kinds(docs))) == wants_api, "RBAC only when a feature needs it"
    for cm in kinds(docs).get("ConfigMap", []):
        for text in cm.get("data", {}).values():
            lowered = text.lower()
            assert "token:" not in lowered and "password:" not in lowered
    assert "Secret" not in kinds(docs)  # credentials come from existing Secrets only


def test_auth_and_tls_come_from_mounted_secrets(helm) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, "-f", str(CHART / "ci" / "auth-tls-values.yaml"))
    config = yaml.safe_load(kinds(docs)["ConfigMap"][0]["data"]["config.yaml"])
    for target in config["targets"]:
        assert target["token_file"] == "/etc/milvus-probe/auth/token"
        assert target["ca_pem_path"] == "/etc/milvus-probe/tls/ca.crt"
        assert target["client_pem_path"] == "/etc/milvus-probe/tls/client.crt"
        assert target["server_name"] == "milvus.prod.example.com"
    pod = _deployment(docs)["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"milvus-probe-token", "milvus-probe-tls"}
    env = pod["containers"][0].get("env", [])
    assert not any("TOKEN" in e["name"] or "PASSWORD" in e["name"] for e in env)


def test_inline_token_is_refused(helm) -> None:  # type: ignore[no-untyped-def]
    done = helm(
        "template",
        "rel",
        str(CHART),
        "--set",
        "targets[0].alias=a",
        "--set",
        "targets[0].uri=x:1",
        "--set",
        "targets[0].token=root:Milvus",
        check=False,
    )
    assert done.returncode != 0 and "token" in done.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_config_is_one_the_daemon_accepts(
    helm,
    values: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    docs = render(helm, "-f", str(values))
    text = kinds(docs)["ConfigMap"][0]["data"]["config.yaml"]
    # The mounted Secret files exist in the pod; here they are stand-ins in tmp_path.
    mounts = tmp_path / "etc"
    for name in ("auth/token", "tls/ca.crt", "tls/client.crt", "tls/client.key"):
        (mounts / name).parent.mkdir(parents=True, exist_ok=True)
        (mounts / name).write_text("stand-in\n")
    config = tmp_path / "config.yaml"
    config.write_text(text.replace("/etc/milvus-probe/", f"{mounts}/"))
    # With the container's own flags where a workload is rendered (sidecar mode has none),
    # and the StatefulSet pod name that --discovery.shard=auto reads.
    workloads = kinds(docs).get("Deployment", []) + kinds(docs).get("StatefulSet", [])
    args = (
        workloads[0]["spec"]["template"]["spec"]["containers"][0]["args"][1:] if workloads else []
    )
    args = [a for a in args if not a.startswith("--config.file")]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "probe",
            "serve",
            *args,
            "--config.check",
            "--config.file",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "POD_NAME": "rel-milvus-probe-1"},
    )
    assert done.returncode == 0, done.stderr


def test_checksum_rolls_pods_when_targets_change(helm) -> None:  # type: ignore[no-untyped-def]
    def checksum(*args: str) -> str:
        pod = _deployment(render(helm, *args))["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    base = checksum()
    assert checksum() == base
    assert checksum("--set", "targets[0].uri=http://other:19530") != base
    assert checksum("--set", "probe.interval=20s") != base
    assert checksum("--set", "replicaCount=3") == base


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("probe.rpc=ping", "probe.rpc"),
        ("probe.interval=soon", "probe.interval"),
        ("containerPort=70000", "containerPort"),
        ("readiness.policy=most", "readiness.policy"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("logging.level=loud", "logging.level"),
        ("namespaceOverride=Not_A_Namespace", "namespaceOverride"),
        ("unknownKey=1", "unknownKey"),
        ("prometheusRule.slo.objective=1", "prometheusRule.slo.objective"),
        ("prometheusRule.slo.fast.longWindow=1.5h", "prometheusRule.slo.fast.longWindow"),
        ("prometheusRule.slo.slow.severity=page", "prometheusRule.slo.slow.severity"),
    ],
)
def test_bad_values_make_helm_fail(helm, flag: str, message: str) -> None:  # type: ignore[no-untyped-def]
    done = helm("template", "rel", str(CHART), "--set", flag, check=False)
    assert done.returncode != 0
    assert message in done.stderr


def test_wrong_type_in_a_values_file_fails(helm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    values = tmp_path / "bad.yaml"
    values.write_text("replicaCount: two\nprobe:\n  maxConcurrent: -1\n")
    done = helm("template", "rel", str(CHART), "-f", str(values), check=False)
    assert done.returncode != 0
    assert "replicaCount" in done.stderr and "maxConcurrent" in done.stderr


def test_sidecar_mode_renders_no_deployment_and_warns_on_9091(helm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, "-f", str(CHART / "ci" / "sidecar-values.yaml"))
    assert "Deployment" not in kinds(docs) and "Service" not in kinds(docs)
    assert "ConfigMap" in kinds(docs) and "PodMonitor" in kinds(docs)
    assert "WARNING: containerPort is 9091" in notes(
        helm, tmp_path, "--set", "sidecar.enabled=true"
    )
    sidecar = notes(helm, tmp_path, "-f", str(CHART / "ci" / "sidecar-values.yaml"))
    assert "WARNING" not in sidecar and "milvus-probe.container" in sidecar


def notes(helm, tmp_path: Path, *args: str) -> str:  # type: ignore[no-untyped-def]
    """NOTES.txt as `helm install` would print it (which needs a cluster): rendered with tpl
    from a ConfigMap in a throwaway copy of the chart."""
    chart = tmp_path / "notes-chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes.txt")
        (chart / "templates" / "notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
        )
    out = helm(
        "template",
        "rel",
        str(chart),
        "--namespace",
        "milvus",
        "--show-only",
        "templates/notes.yaml",
        *args,
    ).stdout
    return str(yaml.safe_load(out)["data"]["notes"])


def test_notes_explain_port_forward_and_warn_on_risky_values(helm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    default = notes(helm, tmp_path)
    assert "kubectl -n milvus port-forward deploy/rel-milvus-probe 9091:9091" in default
    assert "/debug/pprof/profile" in default and "/metrics" in default
    risky = notes(helm, tmp_path, "--set", "profiling.allowRemote=true")
    assert "WARNING: profiling.allowRemote=true" in risky


PORT_FORWARD = {
    # ci values file: (the command NOTES prints, the workload kind rendered)
    "default-values.yaml": ("port-forward deploy/rel-milvus-probe 9091:9091", "Deployment"),
    "auth-tls-values.yaml": ("port-forward deploy/rel-milvus-probe 9091:9091", "Deployment"),
    "everything-values.yaml": ("port-forward deploy/rel-milvus-probe 9091:9091", "Deployment"),
    # A StatefulSet's pods each hold one shard: name the pod, not the set.
    "discovery-values.yaml": ("port-forward pod/rel-milvus-probe-0 9091:9091", "StatefulSet"),
    "sidecar-values.yaml": ("port-forward pod/<milvus-pod> 9191:9191", None),
}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_notes_port_forward_follows_the_workload_kind(helm, tmp_path: Path, values: Path) -> None:  # type: ignore[no-untyped-def]
    command, workload = PORT_FORWARD[values.name]
    args = ("-f", str(values), "--set", "namespaceOverride=probes")
    text = notes(helm, tmp_path, *args)
    assert f"kubectl -n probes {command}" in text
    assert text.count("port-forward ") == 1, text
    # helm test runs where the release lives, which namespaceOverride does not move.
    has_test_pod = values.name not in NO_TEST_POD
    assert ("  helm test rel -n milvus    # one `milvus-probe check`" in text) == has_test_pod
    assert ("helm test has no pod" in text) != has_test_pod
    docs = kinds(render(helm, *args))
    # The command names what is rendered, in the namespace it is rendered in.
    rendered = [k for k in ("Deployment", "StatefulSet") if k in docs]
    assert rendered == ([workload] if workload else [])
    if workload:
        (obj,) = docs[workload]
        assert obj["metadata"]["namespace"] == "probes"
        assert obj["metadata"]["name"] == "rel-milvus-probe"
    if workload == "StatefulSet":
        assert "shard 0 of 3" in text


def test_container_template_embeds_in_another_pod(helm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The sidecar pattern: another chart includes "milvus-probe.container" in its pod."""
    chart = tmp_path / "milvus-probe"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "host-pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: milvus-proxy\nspec:\n  containers:\n"
        "    - name: proxy\n      image: milvusdb/milvus:v2.5.4\n"
        '    {{- include "milvus-probe.container" . | nindent 4 }}\n'
        '  volumes:\n    {{- include "milvus-probe.volumes" . | nindent 4 }}\n'
    )
    out = helm(
        "template",
        "rel",
        str(chart),
        "-f",
        str(CHART / "ci" / "sidecar-values.yaml"),
        "--show-only",
        "templates/host-pod.yaml",
    ).stdout
    pod = yaml.safe_load(out)
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["proxy", "milvus-probe"]
    probe = pod["spec"]["containers"][1]
    assert "--web.listen-address=:9191" in probe["args"]
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(out)
    validate = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(validate), "--strict", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_monitors_structure(helm) -> None:  # type: ignore[no-untyped-def]
    docs = kinds(render(helm, "-f", str(CHART / "ci" / "everything-values.yaml")))
    (sm,) = docs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s" and endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    assert sm["spec"]["selector"]["matchLabels"] == docs["Service"][0]["spec"]["selector"]
    pm = kinds(render(helm, "--set", "podMonitor.enabled=true"))["PodMonitor"][0]
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http-metrics"


CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "Namespace"}


def _namespaces(docs: list[dict[str, Any]]) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = {}
    for doc in docs:
        if doc["kind"] not in CLUSTER_KINDS:
            found.setdefault(doc["kind"], set()).add(doc["metadata"].get("namespace"))
    return found


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_namespaced_resource_names_its_namespace(helm, values: Path) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, "-f", str(values), "--set", "namespaceOverride=probes")
    where = _namespaces(docs)
    own = {kind: spaces for kind, spaces in where.items() if kind not in RBAC_KINDS}
    assert own and all(spaces == {"probes"} for spaces in own.values()), own
    for monitor in kinds(docs).get("ServiceMonitor", []) + kinds(docs).get("PodMonitor", []):
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["probes"]
    # Without the override, the release namespace, written out (not left to kubectl's context).
    plain = _namespaces(render(helm, "-f", str(values), "--set", "namespaceOverride="))
    assert all(
        spaces == {"milvus"} for kind, spaces in plain.items() if kind not in RBAC_KINDS
    ), plain


def test_namespace_override_moves_rbac_and_discovery_with_the_probe(helm) -> None:  # type: ignore[no-untyped-def]
    docs = kinds(
        render(
            helm,
            "-f",
            str(CHART / "ci" / "discovery-values.yaml"),
            "--set",
            "namespaceOverride=probes",
        )
    )
    # Events are created in the probe's own namespace; discovery reads where it watches.
    assert {r["metadata"]["namespace"] for r in docs["Role"]} == {"probes", "milvus-prod"}
    for binding in docs["RoleBinding"]:
        (subject,) = binding["subjects"]
        assert subject["namespace"] == "probes"
    # With no discovery.namespace, discovery watches the probe's own namespace.
    docs = kinds(
        render(
            helm,
            "-f",
            str(CHART / "ci" / "discovery-values.yaml"),
            "--set",
            "namespaceOverride=probes,discovery.namespace=",
        )
    )
    args = docs["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--discovery.kubernetes.namespace=probes" in args
    assert {r["metadata"]["namespace"] for r in docs["Role"]} == {"probes"}


def test_extra_containers_follow_the_probe_and_grace_period_is_set(helm) -> None:  # type: ignore[no-untyped-def]
    everything = CHART / "ci" / "everything-values.yaml"
    pod = _deployment(render(helm, "-f", str(everything)))["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["milvus-probe", "log-shipper"]
    assert pod["containers"][1]["volumeMounts"] == [{"name": "extra", "mountPath": "/extra"}]
    assert pod["terminationGracePeriodSeconds"] == 30
    default = _deployment(render(helm))["spec"]["template"]["spec"]
    assert [c["name"] for c in default["containers"]] == ["milvus-probe"]
    assert default["terminationGracePeriodSeconds"] == 10
    sharded = kinds(
        render(
            helm,
            "-f",
            str(CHART / "ci" / "discovery-values.yaml"),
            "--set",
            "terminationGracePeriodSeconds=0",
            "--set-json",
            'extraContainers=[{"name": "shipper", "image": "busybox"}]',
        )
    )["StatefulSet"][0]["spec"]["template"]["spec"]
    assert [c["name"] for c in sharded["containers"]] == ["milvus-probe", "shipper"]
    assert sharded["terminationGracePeriodSeconds"] == 0
    done = helm(
        "template", "rel", str(CHART), "--set", "terminationGracePeriodSeconds=-1", check=False
    )
    assert done.returncode != 0 and "terminationGracePeriodSeconds" in done.stderr


def test_image_tag_and_digest(helm) -> None:  # type: ignore[no-untyped-def]
    def image(*args: str) -> str:
        return str(
            _deployment(render(helm, *args))["spec"]["template"]["spec"]["containers"][0]["image"]
        )

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert image() == f"ghcr.io/milvus-probe/milvus-probe:{chart['appVersion']}"
    assert image("--set", "image.tag=dev") == "ghcr.io/milvus-probe/milvus-probe:dev"
    digest = "sha256:" + "a" * 64
    assert image("--set", f"image.digest={digest}") == f"ghcr.io/milvus-probe/milvus-probe@{digest}"


def _chart_schema():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import chart_schema
    finally:
        sys.path.pop(0)
    return chart_schema


def test_schema_and_readme_table_are_generated_from_values() -> None:
    chart_schema = _chart_schema()
    values = str(CHART / "values.yaml")
    expected = chart_schema.generate(values)
    assert (CHART / "values.schema.json").read_text() == expected, "run `make schema`"
    readme = (CHART / "README.md").read_text()
    assert chart_schema.readme_with_table(readme, values) == readme, "run `make chart-docs`"


def test_multi_line_param_descriptions_are_kept_whole(tmp_path: Path) -> None:
    chart_schema = _chart_schema()
    values = tmp_path / "values.yaml"
    values.write_text(
        "## @section Things\n"
        "## @param first What the first value does,\n"
        "##   continued on a second line\n"
        "## and a third.\n"
        "first: 1\n"
        "## A plain comment about the block below: not part of any description.\n"
        "block:\n"
        "  ## @param block.one One line only\n"
        "  one: true\n"
        "  ## @param block.two Ends at the next keyword\n"
        "  ## @skip block.three\n"
        "  two: \"\"\n"
        "## @param last Ends at a blank line\n"
        "\n"
        "## Not this.\n"
        "last: []\n"
    )
    schema = json.loads(chart_schema.generate(str(values)))
    props = schema["properties"]
    assert props["first"]["description"] == (
        "What the first value does, continued on a second line and a third."
    )
    assert props["block"]["properties"]["one"]["description"] == "One line only"
    assert props["block"]["properties"]["two"]["description"] == "Ends at the next keyword"
    assert props["last"]["description"] == "Ends at a blank line"
    table = chart_schema.values_table(str(values))
    row = "| `first` | `1` | What the first value does, continued on a second line and a third. |"
    assert row in table
    # The chart's own multi-line description reaches the schema whole.
    committed = json.loads((CHART / "values.schema.json").read_text())
    assert committed["properties"]["targets"]["description"].endswith(
        "use auth.existingSecret, which is mounted as a file."
    )


def _test_pod(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    pods = [
        d
        for d in kinds(docs).get("Pod", [])
        if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert len(pods) <= 1
    return pods[0] if pods else None


def test_helm_test_pod_runs_check(helm) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, "-f", str(CHART / "ci" / "auth-tls-values.yaml"))
    pod = _test_pod(docs)
    assert pod is not None
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "check" and "--alias=prod" in args
    assert "--config.file=/etc/milvus-probe/config/config.yaml" in args


def test_helm_test_pod_dials_the_discovered_service(helm) -> None:  # type: ignore[no-untyped-def]
    """`check` does no discovery: with discovery the pod checks the Service the daemon
    watches, with the discovery template's settings and the mounted token."""
    docs = render(helm, "-f", str(CHART / "ci" / "discovery-values.yaml"))
    pod = _test_pod(docs)
    assert pod is not None
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "check" and not any(a.startswith("--config.file") for a in args)
    assert "--uri=my-milvus.milvus-prod.svc:19530" in args
    assert {
        "--db-name=analytics",
        "--timeout=3s",
        "--token-file=/etc/milvus-probe/auth/token",
    } <= set(args)
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/etc/milvus-probe/auth" in mounts
    # Static targets beside discovery: the first of them, still as flags.
    docs = render(
        helm,
        "-f",
        str(CHART / "ci" / "discovery-values.yaml"),
        "--set",
        "targets[0].alias=a,targets[0].uri=https://milvus-a:19530,targets[0].rpc=get_version",
    )
    args = _test_pod(docs)["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert "--uri=https://milvus-a:19530" in args and "--alias=a" in args
    assert "--rpc=get_version" in args and "--timeout=5s" in args


def test_helm_test_pod_skips_what_only_the_milvus_pod_reaches(helm) -> None:  # type: ignore[no-untyped-def]
    # Sidecar targets are the Milvus pod's own loopback: the test pod would dial itself.
    sidecar = CHART / "ci" / "sidecar-values.yaml"
    assert _test_pod(render(helm, "-f", str(sidecar))) is None
    for address in ("localhost:19530", "http://127.0.0.1:19530", "https://[::1]:443"):
        assert _test_pod(render(helm, "--set", f"targets[0].uri={address}")) is None
    pod = _test_pod(
        render(
            helm,
            "-f",
            str(sidecar),
            "--set",
            "targets[1].alias=svc,targets[1].uri=http://localhost.example.com:19530",
        )
    )
    assert pod is not None and "--alias=svc" in pod["spec"]["containers"][0]["args"]
    # Discovery by label selector alone has no one address to dial.
    selector = render(
        helm,
        "-f",
        str(CHART / "ci" / "discovery-values.yaml"),
        "--set",
        "discovery.service=,discovery.labelSelector=app=milvus",
    )
    assert _test_pod(selector) is None


# The ci values whose targets are all reachable only from inside the Milvus pod.
NO_TEST_POD = {"sidecar-values.yaml"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_test_pod_args_are_ones_check_accepts(  # type: ignore[no-untyped-def]
    helm, values: Path, tmp_path: Path
) -> None:
    """The rendered test pod's args, run through the real `milvus-probe check` with the
    rendered config and stand-ins for the mounted Secrets, against a port that refuses:
    it must fail as a connection failure (exit 2), not as bad arguments or config (exit 1)."""
    docs = render(helm, "-f", str(values))
    pod = _test_pod(docs)
    if values.name in NO_TEST_POD:
        assert pod is None
        return
    assert pod is not None
    (container,) = pod["spec"]["containers"]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    root = tmp_path / "etc"
    for name in ("auth/token", "tls/ca.crt", "tls/client.crt", "tls/client.key"):
        if f"/etc/milvus-probe/{name.split('/')[0]}" in mounted:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("stand-in\n")
    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        here = f"127.0.0.1:{refusing.getsockname()[1]}"

        def local(address: str) -> str:
            return re.sub(r"^([a-zA-Z]+://)?[^/]+", lambda m: (m.group(1) or "") + here, address)

        config = yaml.safe_load(kinds(docs)["ConfigMap"][0]["data"]["config.yaml"])
        for target in config["targets"]:
            target["uri"] = local(target.pop("uri", None) or target.pop("host"))
            target.pop("port", None)
        (root / "config").mkdir(parents=True, exist_ok=True)
        (root / "config" / "config.yaml").write_text(
            yaml.safe_dump(config).replace("/etc/milvus-probe/", f"{root}/")
        )
        args = [
            f"--uri={local(a.split('=', 1)[1])}" if a.startswith("--uri=") else a
            for a in container["args"]
        ]
        args = [a.replace("/etc/milvus-probe/", f"{root}/") for a in args]
        assert args[0] == "check"
        done = subprocess.run(
            [str(Path(sys.executable).parent / "milvus-probe"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        )
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "reason=refused" in done.stdout and here in done.stdout


def test_discovery_renders_least_rbac_and_a_statefulset(helm) -> None:  # type: ignore[no-untyped-def]
    docs = kinds(render(helm, "-f", str(CHART / "ci" / "discovery-values.yaml")))
    roles = {r["metadata"]["namespace"]: r["rules"] for r in docs["Role"]}
    # Discovery reads only where it watches; Events are created there and in our own namespace.
    assert {
        (g, tuple(r["resources"]), tuple(r["verbs"]))
        for r in roles["milvus-prod"]
        for g in r["apiGroups"]
    } >= {
        ("discovery.k8s.io", ("endpointslices",), ("get", "list", "watch")),
        ("", ("services",), ("get",)),
    }
    assert all("endpointslices" not in r["resources"] for r in roles["milvus"])
    assert {b["metadata"]["namespace"] for b in docs["RoleBinding"]} == {"milvus", "milvus-prod"}
    (sts,) = docs["StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    pod = sts["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    args = pod["containers"][0]["args"]
    assert "--discovery.shard=auto/3" in args and "--events.enabled=true" in args
    assert "--discovery.kubernetes.namespace=milvus-prod" in args
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    config = yaml.safe_load(docs["ConfigMap"][0]["data"]["config.yaml"])
    assert config["discovery"]["template"] == {
        "db_name": "analytics",
        "timeout": "3s",
        "token_file": "/etc/milvus-probe/auth/token",
    }


CONFLICTS = {
    "sharding without discovery": (
        ["sharding.enabled=true"],
        "sharding.enabled: sharding splits discovered pods between replicas",
    ),
    "sharding in sidecar mode": (
        ["sharding.enabled=true", "discovery.enabled=true", "discovery.service=m"]
        + ["sidecar.enabled=true"],
        "sharding.enabled: sharding runs a StatefulSet, and sidecar.enabled renders no workload",
    ),
    "discovery of nothing": (
        ["discovery.enabled=true"],
        "discovery.service: discovery needs exactly one of",
    ),
    "discovery of two things": (
        ["discovery.enabled=true", "discovery.service=m", "discovery.labelSelector=app=m"],
        "discovery.service: discovery needs exactly one of",
    ),
    "mutual TLS without a Secret": (
        ["tls.enabled=true", "tls.mutual=true"],
        "tls.mutual: the client certificate and key come from tls.existingSecret",
    ),
}


def _template_with(helm, sets: list[str]) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    flags = [arg for value in sets for arg in ("--set", value)]
    return helm("template", "rel", str(CHART), *flags, check=False)  # type: ignore[no-any-return]


@pytest.mark.parametrize("conflict", CONFLICTS, ids=str)
def test_each_value_conflict_fails_alone(helm, conflict: str) -> None:  # type: ignore[no-untyped-def]
    sets, message = CONFLICTS[conflict]
    done = _template_with(helm, sets)
    assert done.returncode != 0
    assert "VALUES VALIDATION:" in done.stderr and message in done.stderr
    others = [m for name, (_, m) in CONFLICTS.items() if m != message]
    assert not any(m in done.stderr for m in others), done.stderr


def test_value_conflicts_are_reported_together_in_one_failure(helm) -> None:  # type: ignore[no-untyped-def]
    sharding, sharding_message = CONFLICTS["sharding without discovery"]
    tls, tls_message = CONFLICTS["mutual TLS without a Secret"]
    done = _template_with(helm, sharding + tls)
    assert done.returncode != 0
    assert done.stderr.count("VALUES VALIDATION:") == 1
    assert sharding_message in done.stderr and tls_message in done.stderr
    # In sidecar mode too, where no workload is rendered (the ConfigMap calls the check).
    sidecar = _template_with(
        helm, ["sidecar.enabled=true", "discovery.enabled=true", *tls]
    )
    assert sidecar.returncode != 0 and sidecar.stderr.count("VALUES VALIDATION:") == 1
    assert tls_message in sidecar.stderr
    assert CONFLICTS["discovery of nothing"][1] in sidecar.stderr
