"""The image: the Dockerfile read statically, then built with podman and run as the chart runs it.

The `image` fixture (tests/conftest.py) builds it from the Dockerfile unchanged, on a
stand-in for python:3.11-slim-bookworm made from Debian's packages when the registry can't
be reached (as on these machines). Containers run on the host network, as uid 10001 with a
read-only root, a /tmp tmpfs, every capability dropped and no new privileges
(`kit.podman.CHART_SECURITY`), and are removed by the test that started them.
"""

from __future__ import annotations

import ast
import datetime
import fnmatch
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kit import podman
from tests.conftest import KUBE_NS, KUBE_SVC, Image
from tests.kube_double import KubeApiDouble, endpoint_slice
from tests.support import MilvusLite, SilentServer, free_port, http_get, scrape, wait_until
from tests.test_abuse import ClosedBy
from tests.test_daemon import write_config
from tests.test_signals import SHUTDOWN_LIMIT

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """Dockerfile → stages of (KEYWORD, arguments), continuation lines joined."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def test_two_stages_and_a_slim_base() -> None:
    stages = parse(DOCKERFILE)
    assert len(stages) == 2 and stages[0].name == "build"
    for stage in stages:
        assert "slim" in stage.base


def test_final_stage_runs_as_uid_10001_with_exec_form_entrypoint() -> None:
    final = parse(DOCKERFILE)[-1]
    assert final.all("USER") == ["10001:10001"]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["milvus-probe"]
    assert json.loads(final.all("CMD")[-1]) == ["serve"]
    assert final.all("EXPOSE") == ["9091"]
    labels = " ".join(final.all("LABEL"))
    for key in ("title", "source", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_final_stage_has_no_build_tools_or_caches() -> None:
    final = parse(DOCKERFILE)[-1]
    runs = " ".join(final.all("RUN"))
    for tool in ("pip install", "apt-get", "gcc", "build-essential", "make"):
        assert tool not in runs
    copies = final.all("COPY")
    assert copies == ["--from=build /opt/milvus-probe /opt/milvus-probe"]
    build = parse(DOCKERFILE)[0]
    assert all("--no-cache-dir" in run for run in build.all("RUN") if "pip install" in run)


def test_dependencies_are_installed_before_the_source() -> None:
    build = parse(DOCKERFILE)[0]
    order = [(kw, args) for kw, args in build.instructions if kw in ("COPY", "RUN")]
    deps = next(i for i, (kw, a) in enumerate(order) if kw == "RUN" and "runtime.txt" in a)
    source = next(i for i, (kw, a) in enumerate(order) if kw == "COPY" and "probe" in a)
    assert deps < source


def test_every_copy_source_exists_and_survives_dockerignore() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in ignore:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    for stage in parse(DOCKERFILE):
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if args.startswith("--from"):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), source
                assert included(source), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "name", ["grpcio", "protobuf", "prometheus_client", "PyYAML", "kubernetes"]
)
def test_runtime_requirements_pin_every_declared_dependency(name: str) -> None:
    pins = (ROOT / "requirements" / "runtime.txt").read_text().lower()
    assert f"\n{name.lower()}==" in pins


# --------------------------------------------------------------------------- built and run

BUDGET = 100e6
"""Bytes the image may add to its base (README, "Container image")."""


def test_image_adds_at_most_100_mb_to_its_base_as_the_readme_says(image: Image) -> None:
    added = image.size - image.base_size
    print(f"\nimage {image.size / 1e6:.0f} MB, base {image.base_size / 1e6:.0f} MB "
          f"({'stand-in' if image.stand_in_base else 'pulled'}), added {added / 1e6:.0f} MB")
    assert added <= BUDGET, f"the image adds {added / 1e6:.0f} MB to its base"
    section = readme_section("Container image")
    stated = re.search(r"adds \*\*(\d+) MB\*\* to its base", section)
    assert stated, "the README's Container image section states what the image adds"
    assert abs(int(stated.group(1)) - added / 1e6) <= 3, (
        f"README says {stated.group(1)} MB, measured {added / 1e6:.0f} MB: update it"
    )


def named(what: str) -> str:
    """A container name of this session's own (another session may run at the same time)."""
    return f"milvus-probe-test-{what}-{podman.SESSION}"


def readme_section(title: str) -> str:
    """The README's `### title` (or `## title`) section, up to the next heading."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"^#{{2,3}} {re.escape(title)}\n(.*?)(?=^#{{2,3}} |\Z)", text, re.M | re.S)
    assert found, f"README has no {title} section"
    return found.group(1)


def in_image(image: Image, script: str, name: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script inside the image as the chart runs it; removed afterwards."""
    try:
        return podman.podman(
            "run", "--rm", f"--name={name}", "--network=host", *podman.CHART_SECURITY,
            "--entrypoint=python", image.tag, "-c", script, timeout=120, check=False,
        )
    finally:
        podman.podman("rm", "--force", "--time=0", name, check=False)


KUBE_MODULES = ("probe/kube.py", "probe/targets/kubernetes.py", "probe/events.py")


def kubernetes_names() -> set[str]:
    """Every `client.X` the probe's Kubernetes modules use."""
    names: set[str] = set()
    for path in KUBE_MODULES:
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "client"):
                names.add(node.attr)
    return names


def test_what_the_kubernetes_features_use_imports_inside_the_image(image: Image) -> None:
    """The image drops kubernetes/aio and the API classes the probe never calls: everything
    probe/kube.py, probe/targets/kubernetes.py and probe/events.py use still imports, and the
    Dockerfile keeps exactly the API modules the probe names."""
    names = kubernetes_names()
    apis = {n for n in names if n.endswith("Api") and n != "ApiClient"}
    assert apis == {"CoreV1Api", "DiscoveryV1Api", "EventsV1Api"}, apis
    kept = set(re.findall(r"! -name (\w+)_api\.py", DOCKERFILE.read_text()))
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", n[: -len("Api")]).lower() for n in apis}
    assert kept == snake, f"Dockerfile keeps {kept}, probe/ uses {snake}"
    script = (
        "import probe.kube, probe.targets.kubernetes, probe.events, probe.cli\n"
        "from kubernetes import client, config, watch\n"
        "from kubernetes.client.exceptions import ApiException\n"
        "from kubernetes.config.config_exception import ConfigException\n"
        f"for name in {sorted(names)!r}:\n"
        "    getattr(client, name)\n"
        "client.CoreV1Api(client.ApiClient()); watch.Watch()\n"
        "import importlib.util as u\n"
        "gone = ['kubernetes.aio', 'pip', 'setuptools', 'aiohttp']\n"
        "print('missing', [m for m in gone if u.find_spec(m) is None])\n"
    )
    done = in_image(image, script, named("imports"))
    assert done.returncode == 0, done.stderr
    assert "missing ['kubernetes.aio', 'pip', 'setuptools', 'aiohttp']" in done.stdout


def serve(image: Image, name: str, port: int, *args: str, options: tuple[str, ...] = ()) -> Any:
    """`serve` in the image as the chart runs it, listening on 127.0.0.1:PORT (host network)."""
    return podman.run(
        image.tag, "serve", f"--web.listen-address=127.0.0.1:{port}", *args, name=name,
        options=(*podman.CHART_SECURITY, *options),
    )


def test_serve_as_the_chart_runs_it_is_ready_and_probes_milvus(
    image: Image, milvus: MilvusLite
) -> None:
    port = free_port()
    began = time.monotonic()
    container = serve(image, named("serve"), port, f"--uri={milvus.address}",
                      "--probe.interval=500ms", "--probe.timeout=400ms")
    try:
        wait_until(lambda: _status(port, "/readyz", container) == 200, 30, "/readyz 200")
        ready = time.monotonic() - began
        print(f"\nready {ready:.2f} s after `podman run`")
        wait_until(lambda: (scrape(port).value("milvus_probe_attempts_total", alias="default")
                            or 0) >= 2, 10, "two cycles")
        metrics = scrape(port)
        assert metrics.value("milvus_probe_success", alias="default") == 1.0
        assert _status(port, "/healthz") == 200
        assert _status(port, "/readyz/default") == 200
        pid1 = container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
        assert pid1[1:3] == ["/opt/milvus-probe/bin/milvus-probe", "serve"], pid1
        ids = container.exec("id", "-u").stdout.strip()
        assert ids == "10001"
        assert "Traceback" not in container.logs()
    finally:
        container.remove()


def _status(port: int, path: str, container: podman.Container | None = None) -> int | None:
    """The status of GET PATH; None while nothing answers (fails at once if `container` exited)."""
    if container is not None and not container.running():
        raise AssertionError(f"{container.name} exited:\n{container.logs()[-2000:]}")
    try:
        return http_get(port, path, timeout=2)[0]
    except OSError:
        return None


@pytest.mark.parametrize(
    ("where", "code"), [("milvus", 0), ("refused", 2), ("bad", 1)]
)
def test_check_exit_codes_in_the_image(
    image: Image, milvus: MilvusLite, where: str, code: int
) -> None:
    uri = {"milvus": milvus.address, "refused": f"127.0.0.1:{free_port()}",
           "bad": "http://"}[where]
    name = named(f"check-{where}")
    try:
        done = podman.podman("run", "--rm", f"--name={name}", "--network=host",
                             *podman.CHART_SECURITY, image.tag, "check", f"--uri={uri}",
                             "--timeout=3s", timeout=60, check=False)
    finally:
        podman.podman("rm", "--force", "--time=0", name, check=False)
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_to_pid_1_with_cycles_in_flight_exits_0_within_2_s(
    image: Image, tmp_path: Path
) -> None:
    """Three targets that accept TCP and never answer: a cycle of each is in flight when
    podman sends SIGTERM to PID 1 (the probe itself, no init). Every connection it opened
    sees EOF, it says it closed them, and exits 0 within 2 s."""
    silent = [SilentServer() for _ in range(3)]
    config = tmp_path / "config"
    config.mkdir()
    write_config(config / "config.yaml",
                 [{"alias": f"hung{i}", "uri": f"127.0.0.1:{s.port}"}
                  for i, s in enumerate(silent)], interval="10s", timeout="5s")
    config.chmod(0o755)
    (config / "config.yaml").chmod(0o644)
    port = free_port()
    container = serve(image, named("sigterm"), port,
                      "--config.file=/etc/milvus-probe/config/config.yaml",
                      options=(f"--volume={config}:/etc/milvus-probe/config:ro",))
    try:
        def all_in_flight() -> bool:
            if _status(port, "/metrics", container) != 200:
                return False
            m = scrape(port)
            return all(m.value("milvus_probe_open_connections", alias=f"hung{i}") == 1
                       for i in range(3)) and all(s.connections for s in silent)

        wait_until(all_in_flight, 20, "a cycle of every target in flight")
        accepted = [conn for s in silent for conn in s.connections]
        watcher = ClosedBy(accepted)
        try:
            began = time.monotonic()
            container.signal("TERM")
            code = container.wait(SHUTDOWN_LIMIT + 5)
            took = time.monotonic() - began
            wait_until(lambda: watcher.poll() == len(accepted), 2,
                       "EOF on every connection the probe opened")
        finally:
            watcher.close()
        assert code == 0, container.logs()[-2000:]
        # From the probe's "shutting down" (it has the signal) to the container's exit,
        # both on this host's clock; podman kill and podman wait add their own start-up.
        logs = container.logs().splitlines()
        (shutting,) = [line for line in logs if 'msg="shutting down"' in line]
        handled = datetime.datetime.strptime(shutting.split()[0], "ts=%Y-%m-%dT%H:%M:%S.%fZ")
        handled = handled.replace(tzinfo=datetime.timezone.utc)
        finished = int(podman.podman("inspect", "--format", "{{.State.FinishedAt.UnixNano}}",
                                     container.name).stdout) / 1e9
        inside = finished - handled.timestamp()
        print(f"\nSIGTERM: exit {inside:.2f} s after the probe had it, {took:.2f} s around "
              "podman kill + podman wait")
        assert 0 <= inside < SHUTDOWN_LIMIT, f"shutdown took {inside:.2f}s"
        assert took < SHUTDOWN_LIMIT + 3, f"podman kill to exit took {took:.2f}s"
        stopped = [line for line in logs if 'msg="milvus-probe stopped"' in line]
        assert len(stopped) == 1, container.logs()[-2000:]
        assert "closed_in_flight=3" in stopped[0] and "all_cycles_finished=True" in stopped[0]
    finally:
        container.remove()
        for server in silent:
            server.stop()


def test_the_process_writes_nothing_outside_tmp(image: Image, milvus: MilvusLite) -> None:
    """The same container with a writable root: after cycles, pages, a profile, a bundle and
    SIGTERM, `podman diff` (which leaves out the /tmp tmpfs) lists no change. (--passwd=false:
    podman itself would add uid 10001 to /etc/passwd and /etc/group.)"""
    port = free_port()
    writable = (*(o for o in podman.CHART_SECURITY if o != "--read-only"), "--passwd=false")
    container = podman.run(
        image.tag, "serve", f"--web.listen-address=127.0.0.1:{port}", f"--uri={milvus.address}",
        "--probe.interval=200ms", "--probe.timeout=150ms", name=named("writes"),
        options=writable,
    )
    try:
        wait_until(lambda: (_status(port, "/metrics", container) == 200 and (scrape(port).value(
            "milvus_probe_attempts_total", alias="default") or 0) >= 3), 30, "three cycles")
        for path in ("/", "/readyz?verbose", "/api/v1/targets", "/probe?alias=default",
                     "/debug/pprof/profile?seconds=1", "/debug/bundle?seconds=1"):
            status = http_get(port, path, timeout=30)[0]
            assert status in (200, 503), (path, status)
        container.signal("TERM")
        assert container.wait(10) == 0
        # podman bind-mounts /etc/hosts, /etc/hostname and /etc/resolv.conf and creates the
        # mount points the base lacks, which changes /etc itself; a file the probe wrote would
        # be listed on its own line.
        assert [c for c in container.changes() if c != "C /etc"] == []
    finally:
        container.remove()


def test_discovery_and_events_work_inside_the_image(
    image: Image, milvus: MilvusLite, kube: KubeApiDouble, tmp_path: Path
) -> None:
    """The Kubernetes features from the slimmed image: EndpointSlices listed and watched
    through the API double (no API server runs here), the ready pod probed, an Event posted
    through events.k8s.io/v1 for the pod that refuses."""
    kube.put_slice(endpoint_slice(KUBE_NS, KUBE_SVC, "proxy-0", "127.0.0.1", milvus.port))
    kube.put_slice(endpoint_slice(KUBE_NS, KUBE_SVC, "proxy-9", "127.0.0.1", free_port()))
    folder = tmp_path / "kube"
    folder.mkdir(mode=0o755)
    kube.kubeconfig(folder).chmod(0o644)
    port = free_port()
    container = serve(
        image, named("discovery"), port, "--kubeconfig=/etc/kube/kubeconfig",
        "--discovery.kubernetes.enabled=true", f"--discovery.kubernetes.namespace={KUBE_NS}",
        f"--discovery.kubernetes.service={KUBE_SVC}",
        "--discovery.kubernetes.include-service=false",
        "--events.enabled=true", "--probe.interval=300ms", "--probe.timeout=250ms",
        options=(f"--volume={folder}:/etc/kube:ro",),
    )
    try:
        alias = f"{KUBE_SVC}/proxy-0"
        wait_until(lambda: _status(port, "/metrics", container) == 200 and scrape(port).value(
            "milvus_probe_success", alias=alias) == 1.0, 30, "the discovered pod probed")
        wait_until(lambda: [e for e in list(kube.events.values())
                            if e["reason"] == "MilvusConnectionFailed"], 15, "an Event")
        (event,) = [e for e in list(kube.events.values())
                    if e["reason"] == "MilvusConnectionFailed"]
        assert event["_api"] == "events.k8s.io/v1", event["_api"]
        assert "Traceback" not in container.logs()
    finally:
        container.remove()
