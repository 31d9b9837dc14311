"""The monitoring half of the chart: alert rules, their unit tests, the Grafana dashboard.

- monitoring/alerts.yaml passes `promtool check rules`, and monitoring/alerts.test.yaml
  (`promtool test rules`) makes every alert fire when it should and stay silent otherwise;
- the chart's PrometheusRule renders exactly monitoring/alerts.yaml with the default values,
  and the dashboard ConfigMap carries files/dashboard.json unchanged;
- the SLO group (prometheusRule.slo) records each target's failure ratio over the windows of
  its two burn-rate alerts, follows its values, and goes away when disabled;
- a real Prometheus scrapes a real milvus-probe (probing a real Milvus) and answers every
  PromQL expression of the dashboard and of the rules without an error;
- `promtool check metrics` has nothing to say about our /metrics.

promtool, prometheus and helm are required: a missing tool fails these tests (it does not
skip them), with the way to install it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from kit.process import stop
from tests.conftest import DaemonFactory
from tests.support import MilvusLite, free_port, http_get, wait_until

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "milvus-probe"
ALERTS = REPO / "monitoring" / "alerts.yaml"
ALERTS_TEST = REPO / "monitoring" / "alerts.test.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
RUNBOOK = REPO / "docs" / "runbook.md"
DEFAULT_RUNBOOK_URL = "https://github.com/milvus-probe/milvus-probe/blob/main/docs/runbook.md"

ALERT_NAMES = [
    "MilvusProbeTargetDown",
    "MilvusProbeHighFailureRate",
    "MilvusProbeSlowConnection",
    "MilvusUnhealthy",
    "MilvusQuotaDenying",
    "MilvusCanaryFailing",
    "MilvusRateLimited",
    "MilvusProbeTargetAbsent",
    "MilvusProbeBroken",
    "MilvusServerVersionChanged",
    "MilvusProbeHealthyButUnreachable",
    "MilvusProbeReachableButUnhealthy",
    "MilvusProbeHeldConnectionFailing",
    "MilvusProbeCertificateExpiresSoon",
    "MilvusProbeCertificateExpiresVerySoon",
    "MilvusProbeErrorBudgetFastBurn",
    "MilvusProbeErrorBudgetSlowBurn",
]
# The recording rules of the SLO group, with the default windows (5m/1h fast, 30m/6h slow).
RECORDS = [
    "target:milvus_probe_slo_objective:ratio",
    "target:milvus_probe_attempts:rate5m",
    "target:milvus_probe_failures:rate5m",
    "target:milvus_probe_failures:ratio_rate5m",
    "target:milvus_probe_failures:ratio_rate30m",
    "target:milvus_probe_failures:ratio_rate1h",
    "target:milvus_probe_failures:ratio_rate6h",
]
# What identifies a target in the recorded series: nothing else (job, instance, reason, a
# protocol label) survives the rules' aggregation.
TARGET_LABELS = {"alias", "target", "namespace", "service", "pod"}
GROUPS = ["milvus-probe", "milvus-probe-slo"]
SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
RELEASE = "milvus-probe"

INSTALL_PROMETHEUS = (
    "install the Prometheus server and promtool: `sudo apt-get install prometheus` on "
    "Debian/Ubuntu (the package ships both), or put `prometheus` and `promtool` from "
    "https://prometheus.io/download/ on PATH"
)


# --------------------------------------------------------------------------- tools


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(f"promtool is not installed: {INSTALL_PROMETHEUS}")
    return found


def prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(f"prometheus is not installed: {INSTALL_PROMETHEUS}")
    return found


def helm_binary() -> str:
    local = REPO / ".tools" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("helm")
    if found is None:
        pytest.fail(
            "helm is not installed: run `make tools` (puts helm v3.17.3 in .tools/helm), "
            "or install helm 3 on PATH (https://helm.sh/docs/intro/install/)"
        )
    return found


def helm_template(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart; the rendered documents, parsed."""
    home = tmp_path / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    proc = subprocess.run(
        [helm_binary(), "template", RELEASE, str(CHART), "--namespace", "milvus", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d.get('kind') for d in docs]}"
    return found[0]


def run(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load(ALERTS.read_text())
    return [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in spec["groups"] for rule in group["rules"] if "record" in rule]


def chart_labels() -> dict[str, str]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return {
        "helm.sh/chart": f"{chart['name']}-{chart['version']}",
        "app.kubernetes.io/name": "milvus-probe",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": str(chart["appVersion"]),
        "app.kubernetes.io/managed-by": "Helm",
    }


# --------------------------------------------------------------------------- rules


def test_promtool_check_rules() -> None:
    proc = run(promtool(), "check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = len(ALERT_NAMES) + len(RECORDS)
    assert f"SUCCESS: {count} rules found" in proc.stdout, proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = run(promtool(), "test", "rules", str(ALERTS_TEST))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    suite = yaml.safe_load(ALERTS_TEST.read_text())
    assert suite["rule_files"] == ["alerts.yaml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for test in suite["tests"]:
        for case in test["alert_rule_test"]:
            name = case["alertname"]
            assert name in ALERT_NAMES, f"unit test for an unknown alert {name}"
            if case.get("exp_alerts"):
                firing.add(name)
                for alert in case["exp_alerts"]:
                    assert alert["exp_labels"]["severity"] in SEVERITIES
                    assert set(alert["exp_annotations"]) == ANNOTATIONS
            else:
                silent.add(name)
    assert firing == set(ALERT_NAMES), f"never seen firing: {set(ALERT_NAMES) - firing}"
    assert silent == set(ALERT_NAMES), f"never seen silent: {set(ALERT_NAMES) - silent}"


def test_prometheus_rule_renders_monitoring_alerts_yaml(tmp_path: Path) -> None:
    """The chart's PrometheusRule spec with default values IS monitoring/alerts.yaml."""
    rule = only(
        helm_template(
            tmp_path,
            "--set",
            "prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ),
        "PrometheusRule",
    )
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text()), (
        "monitoring/alerts.yaml differs from the chart's PrometheusRule: run `make rules`"
    )

    # No PrometheusRule CRD schema is available offline (kubernetes-validate knows only the
    # built-in kinds), so the structure the Prometheus Operator needs is asserted here.
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == RELEASE
    labels = rule["metadata"]["labels"]
    assert labels.items() >= chart_labels().items()
    assert set(rule["spec"]) == {"groups"}
    assert [g["name"] for g in rule["spec"]["groups"]] == GROUPS
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert [r["alert"] for r in alerts] == ALERT_NAMES
    records = recording_rules(rule["spec"])
    assert [r["record"] for r in records] == RECORDS
    for r in records:
        assert set(r) == {"record", "expr"}, r
        # Every per-target rule aggregates to the target's labels and no further.
        assert "by (alias, target, namespace, service, pod)" in r["expr"], r
    for r in alerts:
        name = r["alert"]
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert isinstance(r["expr"], str) and r["expr"].strip(), name
        assert re.fullmatch(r"([0-9]+[smhdwy])+", r["for"]), f"{name}: for={r['for']!r}"
        assert r["labels"]["severity"] in SEVERITIES, name
        annotations = r["annotations"]
        assert set(annotations) == ANNOTATIONS, name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == f"{DEFAULT_RUNBOOK_URL}#{name.lower()}"
        # Prometheus templates reach the rule (Helm did not eat them), naming the target
        # (or, for an alert about the probe itself, the probe).
        named = "{{ $labels.instance }}" if name == "MilvusProbeBroken" else "{{ $labels.alias }}"
        assert named in annotations["summary"], name
    severity = {r["alert"]: r["labels"]["severity"] for r in alerts}
    assert severity["MilvusProbeTargetDown"] == "critical"
    assert severity["MilvusServerVersionChanged"] == "info"
    assert severity["MilvusProbeErrorBudgetFastBurn"] == "critical"
    assert severity["MilvusProbeErrorBudgetSlowBurn"] == "warning"


def test_prometheus_rule_uses_its_values(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "prometheusRule": {
                    "enabled": True,
                    "labels": {"release": "kube-prometheus-stack"},
                    "runbookUrl": "https://wiki.example.com/milvus",
                    "failingFor": "2m",
                    "failureRatio": 0.25,
                    "latencySeconds": 0.5,
                    "absentFor": "30m",
                }
            }
        )
    )
    docs = helm_template(
        tmp_path, "--values", str(values), "--show-only", "templates/prometheusrule.yaml"
    )
    rule = only(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert rules["MilvusProbeTargetDown"]["for"] == "2m"
    assert "[2m]" in rules["MilvusProbeTargetDown"]["annotations"]["description"]
    assert rules["MilvusProbeHighFailureRate"]["expr"].rstrip().endswith("> 0.25")
    assert rules["MilvusProbeSlowConnection"]["expr"].rstrip().endswith("> 0.5")
    assert rules["MilvusProbeTargetAbsent"]["for"] == "30m"
    assert "[30m]" in rules["MilvusProbeTargetAbsent"]["expr"]
    for name, r in rules.items():
        assert r["annotations"]["runbook_url"] == f"https://wiki.example.com/milvus#{name.lower()}"
    # Still a valid rules file with other values.
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    proc = run(promtool(), "check", "rules", str(rendered))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_slo_rules_use_their_values(tmp_path: Path) -> None:
    slo = {
        "objective": 0.99,
        "fast": {"burnRate": 10, "longWindow": "2h", "shortWindow": "10m", "for": "1m",
                 "severity": "warning"},
        "slow": {"burnRate": 3, "longWindow": "1d", "shortWindow": "2h", "for": "1h",
                 "severity": "info"},
    }
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"prometheusRule": {"enabled": True, "slo": slo}}))
    docs = helm_template(
        tmp_path, "--values", str(values), "--show-only", "templates/prometheusrule.yaml"
    )
    spec = only(docs, "PrometheusRule")["spec"]
    # One ratio per distinct window: 2h serves both alerts.
    assert [r["record"] for r in recording_rules(spec)] == [
        "target:milvus_probe_slo_objective:ratio",
        "target:milvus_probe_attempts:rate5m",
        "target:milvus_probe_failures:rate5m",
        "target:milvus_probe_failures:ratio_rate10m",
        "target:milvus_probe_failures:ratio_rate2h",
        "target:milvus_probe_failures:ratio_rate1d",
    ]
    objective = recording_rules(spec)[0]["expr"]
    assert objective.startswith("0.99 + 0 * count by (alias, target, namespace, service, pod)")
    alerts = {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}
    fast, slow = alerts["MilvusProbeErrorBudgetFastBurn"], alerts["MilvusProbeErrorBudgetSlowBurn"]
    assert " ".join(fast["expr"].split()) == (
        "target:milvus_probe_failures:ratio_rate2h / (1 - 0.99) > 10 and "
        "target:milvus_probe_failures:ratio_rate10m / (1 - 0.99) > 10"
    )
    assert " ".join(slow["expr"].split()) == (
        "target:milvus_probe_failures:ratio_rate1d / (1 - 0.99) > 3 and "
        "target:milvus_probe_failures:ratio_rate2h / (1 - 0.99) > 3"
    )
    assert (fast["for"], fast["labels"]["severity"]) == ("1m", "warning")
    assert (slow["for"], slow["labels"]["severity"]) == ("1h", "info")
    assert "over the last 1d" in slow["annotations"]["description"]
    assert "(threshold 3x)" in slow["annotations"]["description"]
    assert "humanizePercentage 0.99 }}" in fast["annotations"]["description"]
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump(spec))
    proc = run(promtool(), "check", "rules", str(rendered))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Off: the other alerts stay, the SLO group goes.
    values.write_text(
        yaml.safe_dump({"prometheusRule": {"enabled": True, "slo": {"enabled": False}}})
    )
    docs = helm_template(
        tmp_path, "--values", str(values), "--show-only", "templates/prometheusrule.yaml"
    )
    spec = only(docs, "PrometheusRule")["spec"]
    assert [g["name"] for g in spec["groups"]] == ["milvus-probe"]
    assert [r["alert"] for r in spec["groups"][0]["rules"]] == ALERT_NAMES[:-2]


def test_monitoring_resources_are_off_by_default(tmp_path: Path) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in helm_template(tmp_path)}
    assert not any(kind == "PrometheusRule" for kind, _ in kinds), kinds
    assert ("ConfigMap", f"{RELEASE}-dashboard") not in kinds, kinds


def test_runbook_has_a_section_per_alert() -> None:
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(), re.M)
    for rule in alert_rules():
        name = rule["alert"]
        # GitHub's anchor for "## Name" is #name (lower case): what runbook_url points at.
        assert name in headings, f"docs/runbook.md has no '## {name}' section"
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}")


# --------------------------------------------------------------------------- dashboard


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows included."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def test_dashboard_configmap(tmp_path: Path) -> None:
    docs = helm_template(
        tmp_path,
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.annotations.grafana_folder=Milvus",
        "--show-only",
        "templates/grafana-dashboard.yaml",
    )
    cm = only(docs, "ConfigMap")
    assert cm["apiVersion"] == "v1"
    assert cm["metadata"]["name"] == f"{RELEASE}-dashboard"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"].items() >= chart_labels().items()
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Milvus"}
    assert set(cm["data"]) == {"milvus-probe.json"}
    assert json.loads(cm["data"]["milvus-probe.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "milvus-probe"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "alias"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["definition"] == "label_values(milvus_probe_targets, namespace)"
    assert variables["alias"]["definition"].startswith("label_values(milvus_probe_success")
    assert variables["alias"]["multi"] and variables["alias"]["includeAll"]
    ids = set()
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    types = {p["type"] for p in dashboard["panels"]}
    assert {"timeseries", "heatmap", "table"} <= types
    exprs = "\n".join(e for _, e in dashboard_exprs(dashboard))
    for needle in (
        "milvus_probe_duration_seconds_bucket",
        "milvus_probe_phase_duration_seconds_bucket",
        "milvus_probe_failures_total",
        "milvus_probe_attempts_total",
        "milvus_probe_quota_state",
        "milvus_probe_server_info",
        "rate(process_cpu_seconds_total",
        "process_resident_memory_bytes",
        # The SLO panels read the recording rules: burn rate over the alerts' long windows,
        # budget left from the 5m rates, both against the recorded objective.
        "target:milvus_probe_failures:ratio_rate1h",
        "target:milvus_probe_failures:ratio_rate6h",
        "target:milvus_probe_failures:rate5m",
        "target:milvus_probe_attempts:rate5m",
        "target:milvus_probe_slo_objective:ratio",
    ):
        assert needle in exprs, f"no panel uses {needle}"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Error budget burn rate", "Error budget left (30 days)"} <= titles


# --------------------------------------------------------------------------- real Prometheus

# Concrete values for Grafana's template variables, as Grafana would substitute them.
NAMESPACE = "milvus"
VARIABLES = {
    "namespace": NAMESPACE,
    "alias": "default",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "datasource": "prometheus",
}
# Panels whose query legitimately returns nothing while every cycle succeeds.
EMPTY_WHEN_HEALTHY = {"Failures by reason"}


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown template variable ${name} in {expr!r}"
        return VARIABLES[name]

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)
    assert "$" not in out, out
    return out


class Prometheus:
    """A real Prometheus server, scraping what `scrape_configs` says."""

    def __init__(
        self, directory: Path, scrape_configs: list[dict[str, Any]], *features: str
    ) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": scrape_configs,
                }
            )
        )
        self.log = directory / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    prometheus(),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.console.templates=" + str(directory),
                    "--web.console.libraries=" + str(directory),
                    "--log.level=warn",
                    *(f"--enable-feature={feature}" for feature in features),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        stop(self.process, 15)

    def _alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-3000:]}")

    def ready(self) -> bool:
        self._alive()
        try:
            status, _, _ = http_get(self.port, "/-/ready", timeout=2)
        except OSError:
            return False
        return status == 200

    def api(self, path: str, **params: str | list[str]) -> dict[str, Any]:
        self._alive()
        query = urllib.parse.urlencode(params, doseq=True)
        _, _, body = http_get(self.port, f"/api/v1/{path}?{query}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, promql: str) -> dict[str, Any]:
        return self.api("query", query=promql)

    def samples(self, promql: str) -> list[dict[str, Any]]:
        answer = self.query(promql)
        assert answer["status"] == "success", f"{promql}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


def servicemonitor_endpoint(tmp_path: Path) -> dict[str, Any]:
    monitor = only(
        helm_template(
            tmp_path,
            "--set",
            "serviceMonitor.enabled=true",
            "--show-only",
            "templates/servicemonitor.yaml",
        ),
        "ServiceMonitor",
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    return dict(endpoint)


def test_real_prometheus_scrapes_the_probe_and_answers_every_query(
    milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path
) -> None:
    # Tools first: a missing one must fail before anything starts.
    prometheus()
    endpoint = servicemonitor_endpoint(tmp_path)
    # POD_NAMESPACE as the chart's downward API sets it.
    app = daemon(environ={"POD_NAMESPACE": NAMESPACE}, uri=milvus.address,
                 **{"probe.interval": "200ms", "probe.timeout": "150ms"})

    # The scrape config the chart's ServiceMonitor makes the Prometheus Operator generate,
    # with the target labels it attaches (job = the Service's name), scraping every second.
    scrape = {
        "job_name": RELEASE,
        "metrics_path": endpoint["path"],
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scheme": "http",
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{app.port}"],
                "labels": {
                    "namespace": NAMESPACE,
                    "service": RELEASE,
                    "pod": f"{RELEASE}-0",
                    "container": "milvus-probe",
                    "endpoint": endpoint["port"],
                },
            }
        ],
    }
    server = Prometheus(tmp_path, [scrape])
    try:
        wait_until(server.ready, 30, "prometheus to be ready")
        wait_until(
            lambda: server.samples("milvus_probe_success == 1"),
            30,
            "prometheus to scrape milvus_probe_success == 1",
        )
        p99 = (
            "histogram_quantile(0.99, sum by (le) ("
            'rate(milvus_probe_phase_duration_seconds_bucket{phase="connect"}[1m])))'
        )

        def finite_p99() -> float | None:
            result = server.samples(p99)
            if len(result) != 1:
                return None
            value = float(result[0]["value"][1])
            return value if math.isfinite(value) else None

        connect_p99 = wait_until(finite_p99, 30, "a finite p99 connect latency")
        assert 0 < connect_p99 <= 0.15  # the probe's timeout bounds the histogram

        # The SLO group's recording rules have run on the scraped counters: one series per
        # rule for the one target, labelled by the target and nothing else (a static target
        # exports empty service and pod labels, which Prometheus drops).
        recorded = '{__name__=~"target:milvus_probe_.+"}'
        wait_until(
            lambda: len(server.samples(recorded)) == len(RECORDS),
            30,
            "every recording rule to have a sample",
        )
        by_name = {s["metric"]["__name__"]: s for s in server.samples(recorded)}
        assert sorted(by_name) == sorted(RECORDS)
        for sample in by_name.values():
            labels = set(sample["metric"]) - {"__name__"}
            assert {"alias", "target", "namespace"} <= labels <= TARGET_LABELS, sample
            assert sample["metric"]["alias"] == "default"
            assert sample["metric"]["namespace"] == NAMESPACE
        assert float(by_name["target:milvus_probe_slo_objective:ratio"]["value"][1]) == 0.999
        assert float(by_name["target:milvus_probe_attempts:rate5m"]["value"][1]) > 0

        # Every panel query of the dashboard, with the template variables filled in.
        dashboard = json.loads(DASHBOARD.read_text())
        for title, expr in dashboard_exprs(dashboard):
            promql = substitute(expr)
            answer = server.query(promql)
            assert answer["status"] == "success", f"{title}: {promql}: {answer}"
            if title not in EMPTY_WHEN_HEALTHY:
                assert answer["data"]["result"], f"{title}: no data for {promql}"

        # The variables' label_values(...) queries, through the label values API.
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            selector, label = substitute(match.group(1)), match.group(2)
            answer = server.api(f"label/{label}/values", **{"match[]": [selector]})
            assert answer["status"] == "success", answer
            assert VARIABLES[variable["name"]] in answer["data"], (variable["name"], answer)

        # Every alert expression is valid PromQL on real data, and none holds for a
        # healthy target (the probe just started: a slow first cycle may count for a while).
        exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
        for name, expr in exprs.items():
            answer = server.query(expr)
            assert answer["status"] == "success", f"{name}: {expr}: {answer}"

        holding: dict[str, list[dict[str, Any]]] = {}

        def quiet() -> bool:
            holding.clear()
            for name, expr in exprs.items():
                result = server.samples(expr)
                if result:
                    holding[name] = result
            return not holding

        # One failed cycle early on (a slow first connect past the 150 ms timeout) keeps the
        # slow burn expression (above 0.6 % over 30m) true for ~170 cycles, about 35 s here.
        try:
            wait_until(quiet, 60, "no alert expression to hold for a healthy Milvus")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still holding: {holding}") from None

        # Prometheus loaded monitoring/alerts.yaml and evaluates every rule without error.
        rules: list[dict[str, Any]] = []

        def rules_settled() -> bool:
            answer = server.api("rules")
            assert answer["status"] == "success", answer
            rules[:] = [r for g in answer["data"]["groups"] for r in g["rules"]]
            return bool(rules) and all(
                r["health"] != "unknown" and r.get("state", "inactive") == "inactive"
                for r in rules
            )

        try:
            wait_until(rules_settled, 30, "prometheus to evaluate every rule, none active")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {rules}") from None
        assert [r["name"] for r in rules if r["type"] == "alerting"] == ALERT_NAMES
        assert [r["name"] for r in rules if r["type"] == "recording"] == RECORDS
        for r in rules:
            assert r["health"] == "ok", r
            assert not r.get("lastError"), r
    finally:
        server.stop()


def test_promtool_check_metrics_finds_nothing(milvus: MilvusLite, daemon: DaemonFactory) -> None:
    tool = promtool()
    app = daemon(uri=milvus.address, **{"probe.interval": "200ms", "probe.timeout": "150ms"})

    def after_a_success() -> str | None:
        status, _, body = http_get(app.port, "/metrics")
        assert status == 200
        text = body.decode("utf-8")
        return text if re.search(r"^milvus_probe_success\{.*\} 1\.0$", text, re.M) else None

    text = wait_until(after_a_success, 30, "a successful cycle")
    proc = run(tool, "check", "metrics", stdin=text)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), proc.stdout + proc.stderr


def test_prometheus_stores_exemplars_that_lead_to_the_cycles_trace(
    milvus: MilvusLite, daemon: DaemonFactory, tmp_path: Path
) -> None:
    prometheus()
    app = daemon(uri=milvus.address, **{"probe.interval": "200ms", "probe.timeout": "150ms",
                                         "probe.history": "2000"})  # fmt: skip
    scrape = {"job_name": "probe", "static_configs": [{"targets": [f"127.0.0.1:{app.port}"]}]}
    server = Prometheus(tmp_path, [scrape], "exemplar-storage")
    try:
        wait_until(server.ready, 30, "prometheus to be ready")

        def stored() -> list[dict[str, Any]]:
            now = time.time()
            answer = server.api(
                "query_exemplars",
                query="milvus_probe_duration_seconds_bucket",
                start=str(now - 300),
                end=str(now + 60),
            )
            assert answer["status"] == "success", answer
            return [e for series in answer["data"] for e in series["exemplars"]]

        found = wait_until(stored, 30, "exemplars of milvus_probe_duration_seconds")
        exemplar = found[-1]
        trace_id = exemplar["labels"]["trace_id"]
        assert re.fullmatch(r"[0-9a-f]{16}", trace_id), exemplar
        assert 0 < float(exemplar["value"]) < 0.15
        # The exemplar leads to the cycle's full trace while the probe keeps it.
        status, _, body = http_get(app.port, f"/probe?trace={trace_id}")
        assert status == 200, body
        assert "Probe of alias=default" in body.decode() and "result    success" in body.decode()
    finally:
        server.stop()
    heatmap = next(p for p in json.loads(DASHBOARD.read_text())["panels"]
                   if p["title"] == "Cycle duration")  # fmt: skip
    assert heatmap["targets"][0]["exemplar"] is True
