"""Fixtures: real milvus-lite servers, a silent server, certificates, a running daemon, and
a daemon discovering its targets from a Kubernetes API double."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kit import podman
from probe.app import App
from probe.config import Sources, load
from tests.kube_double import KubeApiDouble
from tests.support import Certs, MilvusLite, SilentServer, make_certs, start_milvus_lite

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "images"
MILVUS_IMAGE = "localhost/milvus-lite:3.2.2"


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLite]:
    """A real Milvus server (milvus-lite 3.2.2) shared by the session."""
    server = start_milvus_lite(tmp_path_factory.mktemp("milvus-lite"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLite]:
    """A second real Milvus server (another "pod"), shared by the session."""
    server = start_milvus_lite(tmp_path_factory.mktemp("milvus-lite-b"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    """A server that accepts TCP connections and never says a word (a half-dead Milvus)."""
    server = SilentServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


DaemonFactory = Callable[..., App]


@pytest.fixture
def daemon() -> Iterator[DaemonFactory]:
    """Start an in-process daemon on 127.0.0.1:<free port> from flags; stopped after the test.

    Keys with a dot are daemon options (`probe.interval`), others connection settings
    (`uri`, `token`, ...). `environ=` passes environment variables.
    """
    apps: list[App] = []

    def start(environ: dict[str, str] | None = None, **flags: Any) -> App:
        flags.setdefault("web.listen-address", "127.0.0.1:0")
        sources = Sources(flags=flags, environ=environ or {})
        app = App(load(sources), load_config=lambda: load(sources))
        apps.append(app)
        app.start()
        return app

    yield start
    for app in apps:
        app.stop()


KUBE_NS, KUBE_SVC = "milvus", "milvus"
"""Namespace and Service the `discover` fixture's daemon watches."""
KUBE_TOKEN = "root:S3cr3t-Tok3n"
"""The token of the discovered targets (the discovery template's)."""


@pytest.fixture
def kube() -> Iterator[KubeApiDouble]:
    """A Kubernetes API server double (no kube-apiserver can run here) for namespace KUBE_NS."""
    api = KubeApiDouble(KUBE_NS)
    try:
        yield api
    finally:
        api.stop()


DiscoverFactory = Callable[..., App]


@pytest.fixture
def discover(daemon: DaemonFactory, kube: KubeApiDouble, tmp_path: Path) -> DiscoverFactory:
    """Start a daemon whose targets are the ready endpoints of Service KUBE_SVC, discovered
    through `kube`, with Events on, probing every 200 ms (timeout 150 ms) and failing
    readiness after one failure; keyword arguments override or add daemon options."""

    def start(**extra: Any) -> App:
        config = tmp_path / "probe.yaml"
        config.write_text(f"discovery:\n  template:\n    token: {KUBE_TOKEN}\n")
        flags = {
            "config.file": str(config),
            "discovery.kubernetes.enabled": "true",
            "discovery.kubernetes.namespace": KUBE_NS,
            "discovery.kubernetes.service": KUBE_SVC,
            "discovery.kubernetes.include-service": "false",
            "kubeconfig": str(kube.kubeconfig(tmp_path)),
            "events.enabled": "true",
            "probe.interval": "200ms",
            "probe.timeout": "150ms",
            "readiness.failure-threshold": "1",
        }
        flags.update(extra)
        return daemon(**flags)

    return start


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """`helm ARGS` (.tools/helm, which `make tools` fetches) with its homes in a temp folder."""
    binary = ROOT / ".tools" / "helm"
    assert binary.exists(), "helm is missing: `make tools` fetches it (make test does)"
    home = tmp_path_factory.mktemp("helm")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(binary), *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}"
        return done

    return run


@dataclass(frozen=True)
class Image:
    """The probe's image as the tests built it."""

    tag: str
    stand_in_base: bool
    """True when its base is a stand-in made from Debian's packages (no registry here)."""
    size: int
    base_size: int


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image built once per session from the Dockerfile unchanged (`make image`, kit.podman).

    Its base, python:3.11-slim-bookworm, can't be pulled on these machines: a stand-in with
    the same Debian release and Python minor version is made from Debian's packages
    (mmdebstrap) and tagged with the base's name. An image whose inputs are unchanged is
    reused, and podman's layer cache keeps the dependency layer across source changes.
    """
    stand_in = podman.ensure_base(tmp_path_factory.mktemp("base"))
    podman.build(podman.IMAGE)
    return Image(podman.IMAGE, stand_in, podman.size(podman.IMAGE), podman.size(podman.BASE))


@pytest.fixture(scope="session")
def milvus_image(image: Image, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Milvus container image: milvus-lite 3.2.2 on the probe image's base, built once
    (reused while tests/images/milvus-lite/Containerfile is unchanged). Its wheels are
    downloaded by the host's pip (its index and cache) and installed with --no-index."""
    context = tmp_path_factory.mktemp("milvus-lite-image")
    shutil.copy(IMAGES / "milvus-lite" / "Containerfile", context / "Containerfile")
    if not podman.built(MILVUS_IMAGE, context, (), "Containerfile"):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--dest", str(context / "wheels"), "milvus-lite==3.2.2", "pymilvus==3.0.2"],
            check=True, timeout=600,
        )
        podman.build(MILVUS_IMAGE, context, (), "Containerfile")
    return MILVUS_IMAGE


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Capture logs at debug level, so secret checks see every line we could write."""
    caplog.set_level(logging.DEBUG, logger="probe")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
