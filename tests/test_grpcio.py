"""The grpcio internals we rely on (probe/milvus/grpcio.py) and the start-up check.

The installed grpcio must pass the check. A grpcio without the internals can't be
installed here next to the tested one, so the second test takes them away from the
installed one (a double for "another grpcio version") and checks the message.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from types import SimpleNamespace

import pytest

import probe.cli
from probe.milvus import grpcio


def test_the_installed_grpcio_has_every_internal_we_use() -> None:
    grpcio.check()
    ready, failure, shutdown = grpcio.connectivity_states()
    assert len({ready, failure, shutdown}) == 3


def test_a_grpcio_without_them_stops_serve_and_check_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grpcio, "_cygrpc", lambda: SimpleNamespace())
    with pytest.raises(grpcio.GrpcioMismatch, match="cygrpc.ConnectivityState"):
        grpcio.check()
    for command in (["check", "--uri", "127.0.0.1:1"], ["serve", "--config.check"]):
        err = io.StringIO()
        with redirect_stderr(err):
            code = probe.cli.main(command, environ={})
        assert code == probe.cli.EXIT_BAD_INPUT
        assert "lacks internals milvus-probe needs" in err.getvalue()
        assert f"grpcio {grpcio.TESTED}.x" in err.getvalue()
