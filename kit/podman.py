"""The image and its containers with podman: the base (or a stand-in for it), builds that are
reused while their inputs are unchanged, and containers run the way the chart runs them.

`python -m kit.podman image [--tag T]` is `make image`; `python -m kit.podman base` makes the
base alone. Needs podman, runc and (for the stand-in base) mmdebstrap: `.ci/run` installs
them and writes the containers.conf settings they need here (README, "Container image").
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE = "docker.io/library/python:3.11-slim-bookworm"
"""The Dockerfile's FROM (PYTHON_VERSION=3.11)."""
IMAGE = "localhost/milvus-probe:0.1.0"
STAND_IN = "org.milvus-probe.stand-in"
"""Label on a base made here from Debian's packages instead of pulled from Docker Hub."""
INPUTS = "org.milvus-probe.inputs"
"""Label holding the digest of what an image was built from: same digest, no rebuild."""
IMAGE_INPUTS = (
    "Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "requirements", "probe"
)
"""What the Dockerfile reads (.dockerignore lets only these into the context)."""

STAND_IN_PACKAGES = "python3,python3-venv,ca-certificates"
DEBOOTSTRAP = "localhost/milvus-probe-debootstrap:bookworm"
"""Debian bookworm as mmdebstrap makes it, imported: what the stand-in base is built on."""
STAND_IN_CONTAINERFILE = f"""\
FROM {DEBOOTSTRAP}
# A stand-in for {BASE}: Debian bookworm's python3 (3.11) where the image has
# /usr/local/bin/python.
RUN ln -s /usr/bin/python3 /usr/local/bin/python
LABEL {STAND_IN}="debian bookworm: {STAND_IN_PACKAGES}"
"""

SESSION = f"{os.getpid()}"
"""Suffix of the containers and pods a test session names: two sessions never collide."""

CHART_SECURITY = (
    "--user=10001:10001",
    "--read-only",
    "--tmpfs=/tmp:rw,size=64m,mode=1777",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
"""What the chart's securityContext and /tmp emptyDir ask, as `podman run` flags."""


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its command and output."""


def podman(
    *args: str, timeout: float = 120.0, check: bool = True, netns: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`; raise PodmanError with its output when `check` and it fails.

    With `netns`, podman runs in that network namespace (nsenter switches only the network):
    a container on the host network that it starts gets that namespace as its network.
    """
    prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    done = subprocess.run(
        [*prefix, "podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done


def labels(image: str) -> dict[str, str] | None:
    """The labels of a local image; None when there is no such image."""
    done = podman("image", "inspect", "--format", "{{json .Labels}}", image, check=False)
    if done.returncode != 0:
        return None
    return dict(json.loads(done.stdout) or {})


def size(image: str) -> int:
    """The image's size in bytes, as `podman images` counts it."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)


def digest(root: Path, names: Iterable[str], extra: str = "") -> str:
    """sha256 over the files under `names` (relative to root), bytecode left out."""
    sha = hashlib.sha256(extra.encode())
    for name in sorted(names):
        path = root / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_dir() or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            sha.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return sha.hexdigest()


def ensure_base(work: Path) -> bool:
    """Make the Dockerfile's base available; True when it is a stand-in made here.

    Pulled when the registry answers; otherwise built from Debian's packages with
    mmdebstrap (bookworm, python3 3.11) and tagged with the base's own name, so the
    Dockerfile builds unchanged with --pull=never.
    """
    found = labels(BASE)
    if found is None and podman("pull", "--quiet", BASE, timeout=300, check=False).returncode == 0:
        found = labels(BASE)
    if found is not None:
        return STAND_IN in found
    work.mkdir(parents=True, exist_ok=True)
    if labels(DEBOOTSTRAP) is None:
        tar = work / "bookworm.tar"
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", f"--include={STAND_IN_PACKAGES}",
             "bookworm", str(tar)],
            check=True, timeout=900, capture_output=True,
        )
        podman("import", str(tar), DEBOOTSTRAP, timeout=300)
        tar.unlink()
    (work / "Containerfile").write_text(STAND_IN_CONTAINERFILE)
    podman("build", "--pull=never", "--tag", BASE, str(work), timeout=300)
    return True


def pip_conf(directory: Path) -> Path:
    """A pip.conf for builds: the host's CA bundle (a proxy's CA lives there, not in images)."""
    cert = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    lines = ["[global]", f"cert = {cert}"]
    if os.environ.get("PIP_INDEX_URL"):
        lines.append(f"index-url = {os.environ['PIP_INDEX_URL']}")
    path = directory / "pip.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def built(
    tag: str, context: Path = ROOT, inputs: Sequence[str] = IMAGE_INPUTS,
    containerfile: str = "Dockerfile",
) -> bool:
    """True when an image `tag` exists that was built from these very inputs."""
    return (labels(tag) or {}).get(INPUTS) == digest(context, [*inputs, containerfile])


def build(
    tag: str = IMAGE,
    context: Path = ROOT,
    inputs: Sequence[str] = IMAGE_INPUTS,
    containerfile: str = "Dockerfile",
) -> float:
    """Build `tag` from `context` unless an image of that tag has the same inputs' digest.

    Seconds the build took (0 when reused). pip in the build reaches the index through the
    host's network and CA bundle (mounted for the build only, not in the image); podman's
    layer cache keeps the dependency layer across source changes.
    """
    if built(tag, context, inputs, containerfile):
        return 0.0
    wanted = digest(context, [*inputs, containerfile])
    previous = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="milvus-probe-build-") as tmp:
        conf = pip_conf(Path(tmp))
        cert = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")).parent
        podman(
            "build", "--pull=never", "--network=host", "--layers",
            f"--volume={cert}:{cert}:ro", f"--volume={conf}:/etc/pip.conf:ro",
            f"--label={INPUTS}={wanted}", "--file", str(context / containerfile),
            "--tag", tag, str(context),
            timeout=1800,
        )
    took = time.monotonic() - began
    # Each rebuild leaves the image it replaced and the build stage's layers behind: drop the
    # old image, and layers unused for a day (the dependency layer is rebuilt at most daily).
    if previous:
        podman("rmi", previous, check=False)
    podman("image", "prune", "--force", "--filter", "until=24h", check=False)
    return took


@dataclass
class Container:
    """A container started by `run`; `remove()` stops and deletes it."""

    name: str

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def signal(self, name: str) -> None:
        podman("kill", f"--signal={name}", self.name)

    def wait(self, timeout: float = 30.0) -> int:
        """Its exit code, once it has exited."""
        return int(podman("wait", self.name, timeout=timeout).stdout.split()[0])

    def running(self) -> bool:
        done = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def changes(self) -> list[str]:
        """`podman diff`: what it changed in its root filesystem (tmpfs mounts not included)."""
        done = podman("diff", "--format", "json", self.name)
        found = json.loads(done.stdout or "{}")
        return sorted(f"{kind[0].upper()} {path}" for kind, paths in found.items()
                      for path in paths or [])

    def exec(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *args, timeout=timeout, check=False)

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.name, check=False)


def run(
    image: str,
    *args: str,
    name: str,
    options: Sequence[str] = CHART_SECURITY,
    entrypoint: str | None = None,
) -> Container:
    """`podman run --detach` on the host network, as the chart runs it unless `options` say."""
    podman("rm", "--force", "--time=0", name, check=False)
    flags = [f"--entrypoint={entrypoint}"] if entrypoint else []
    podman("run", "--detach", f"--name={name}", "--network=host", *options, *flags, image, *args)
    return Container(name)


# --------------------------------------------------------------------------- pods

PROBE_CONTAINER = "milvus-probe"
WORKLOADS = ("Deployment", "StatefulSet", "Pod")


def playable(
    docs: Sequence[dict[str, Any]],
    *,
    images: Mapping[str, str],
    namespace: str,
    hosts: Path,
    secrets: Mapping[str, Path],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(workloads, the ConfigMaps they mount) of rendered manifests, changed only where
    podman 4.3 can't run them here (REFERENCE.md §7), each a stand-in for what a cluster gives:

    - no pod network: `hostNetwork: true` (the test plays the pod inside a network
      namespace of its own), and no `containerPort`s (podman refuses them on the host
      network); one replica (replicas would share that network and its port);
    - the downward API's `metadata.namespace` (unsupported) becomes the workload's namespace
      (`namespace` when it names none);
    - cluster DNS: `hosts` is mounted at /etc/hosts in every container;
    - Secret volumes mount the folder `secrets[name]` (podman 4.3 writes a Secret's values
      base64-encoded into the files, and crashes unless `optional` is set);
    - images: `images[container name]` (the chart's image is the one the tests built);
    - the kubelet's probes are left to the test, which asks them itself.
    """
    workloads: list[dict[str, Any]] = []
    mounted: set[str] = set()
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        doc = copy.deepcopy(doc)
        if doc["kind"] == "StatefulSet":
            doc["kind"] = "Deployment"
            for key in ("serviceName", "podManagementPolicy"):
                doc["spec"].pop(key, None)
        if doc["kind"] != "Pod":
            doc["spec"]["replicas"] = 1
        spec = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        volumes = spec.setdefault("volumes", [])
        for volume in volumes:
            if "configMap" in volume:
                mounted.add(volume["configMap"]["name"])
            if "secret" in volume:
                name = volume.pop("secret")["secretName"]
                volume["hostPath"] = {"path": str(secrets[name]), "type": "Directory"}
        volumes.append({"name": "cluster-dns", "hostPath": {"path": str(hosts), "type": "File"}})
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            container.pop("ports", None)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                container.pop(probe, None)
            container.pop("restartPolicy", None)
            if container["name"] in images:
                container["image"] = images[container["name"]]
                container["imagePullPolicy"] = "Never"
            for env in container.get("env", []):
                field = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if field == "metadata.namespace":
                    env.pop("valueFrom")
                    env["value"] = doc["metadata"].get("namespace", namespace)
            container.setdefault("volumeMounts", []).append(
                {"name": "cluster-dns", "mountPath": "/etc/hosts", "readOnly": True}
            )
        workloads.append(doc)
    config_maps = [copy.deepcopy(d) for d in docs
                   if d.get("kind") == "ConfigMap" and d["metadata"]["name"] in mounted]
    return workloads, config_maps


def secret_folder(directory: Path, items: Mapping[str, str | bytes]) -> Path:
    """A folder holding a Secret's items as files the pod's uid 10001 (group) can read."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, value in items.items():
        path = directory / name
        path.write_bytes(value.encode() if isinstance(value, str) else value)
        os.chown(path, 0, 10001)
        path.chmod(0o440)
    return directory


def play(manifest: Path, netns: str | None = None) -> None:
    """`podman kube play` the manifest, inside network namespace `netns` when given: the
    pod's host network is then that namespace (nsenter switches only the network)."""
    done = podman("kube", "play", str(manifest), timeout=300, check=False, netns=netns)
    if done.returncode != 0:
        down(manifest)
        raise PodmanError(f"podman kube play {manifest}: {done.stderr[-3000:]}")


def down(manifest: Path) -> None:
    """`podman kube down`: stop and remove the pods the manifest created."""
    podman("kube", "down", str(manifest), timeout=120, check=False)


def pod_containers(pod: str) -> list[str]:
    """Names of the containers in a pod (its infra container left out)."""
    done = podman("ps", "--all", "--filter", f"pod={pod}", "--format", "{{.Names}}")
    return [n for n in done.stdout.split() if not n.endswith("-infra")]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.podman", description=__doc__)
    parser.add_argument("what", choices=["image", "base"])
    parser.add_argument("--tag", default=IMAGE)
    parser.add_argument("--work", default=str(ROOT / ".tools" / "base"), help="stand-in scratch")
    options = parser.parse_args(argv)
    stand_in = ensure_base(Path(options.work))
    print(f"base {BASE}: {'a stand-in from Debian packages' if stand_in else 'pulled'}")
    if options.what == "image":
        took = build(options.tag)
        how = f"built in {took:.0f} s" if took else "unchanged"
        print(f"{options.tag}: {size(options.tag) / 1e6:.0f} MB ({how}); "
              f"base {size(BASE) / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
