"""The image. No Docker engine runs here, so: the Dockerfile read statically, and the venv it
builds rebuilt the same way (same base Python, same commands) and run."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


def test_the_venv_the_dockerfile_builds_runs(tmp_path: Path) -> None:
    """Build /opt/milvus-probe's venv the Dockerfile's way and run the entry point."""
    build = parse(DOCKERFILE)[0]
    assert any("python -m venv /opt/milvus-probe" in run for run in build.all("RUN"))
    venv = tmp_path / "opt" / "milvus-probe"
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--no-cache-dir"]
    subprocess.run(
        [*pip, "-r", str(ROOT / "requirements" / "runtime.txt")], check=True, env=env, timeout=600
    )
    # The Dockerfile copies only pyproject.toml, README.md and probe/ into /src.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "probe"), str(src / "probe")], check=True)
    subprocess.run([*pip, "--no-deps", str(src)], check=True, env=env, timeout=300)
    done = subprocess.run(
        [str(venv / "bin" / "milvus-probe"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "check" in done.stdout
    done = subprocess.run(
        [str(venv / "bin" / "milvus-probe"), "serve", "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
    )
    assert done.returncode == 0 and "localhost:19530" in done.stdout


@pytest.mark.parametrize(
    "name", ["grpcio", "protobuf", "prometheus_client", "PyYAML", "kubernetes"]
)
def test_runtime_requirements_pin_every_declared_dependency(name: str) -> None:
    pins = (ROOT / "requirements" / "runtime.txt").read_text().lower()
    assert f"\n{name.lower()}==" in pins
