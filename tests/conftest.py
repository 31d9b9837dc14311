"""Fixtures: a real milvus-lite server, Milvus doubles, certificates, and a running daemon."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.app import App
from probe.config import Sources, load
from tests.support import Certs, MilvusLite, make_certs, start_milvus_lite


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLite]:
    """A real Milvus server (milvus-lite 3.2.2) shared by the session."""
    server = start_milvus_lite(tmp_path_factory.mktemp("milvus-lite"))
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


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Capture logs at debug level, so secret checks see every line we could write."""
    caplog.set_level(logging.DEBUG, logger="probe")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
