"""The command line: help, `serve --config.check`, and `check`'s exit codes and output.

Exit codes and what reaches the terminal are tested in real subprocesses where it
matters; the rest runs `probe.cli.main` in-process, which returns the exit code.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import probe.cli
from probe.config import CONNECTION_OPTIONS, OPTIONS
from tests.conftest import write
from tests.support import Behaviour, MilvusLite, free_port, milvus_double

REPO = Path(__file__).resolve().parents[1]
TOKEN = "root:S3cr3t-Tok3n"
PASSWORD = "S3cr3t-Pa55w0rd"


def forbidden_strings(*secrets: str) -> list[str]:
    """Each secret, its base64 form, and the password part of a user:password token."""
    found: list[str] = []
    for secret in secrets:
        found += [secret, base64.b64encode(secret.encode()).decode()]
        if ":" in secret:
            found.append(secret.split(":", 1)[1])
    return found


TOKEN_FORMS = forbidden_strings(TOKEN)
PASSWORD_FORMS = forbidden_strings(PASSWORD, f"root:{PASSWORD}")


def clean_environ(**extra: str) -> dict[str, str]:
    """The test process's environment without any MILVUS_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILVUS_")}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probe", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env if env is not None else clean_environ(),
        timeout=60,
    )


@contextmanager
def logging_restored() -> Iterator[None]:
    """`check` configures the root logger for a terminal; undo that after an in-process run."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("grpc", "urllib3")}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)


def run_check(capsys: pytest.CaptureFixture[str], *args: str,
              environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`milvus-probe check ARGS` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    with logging_restored():
        code = probe.cli.main(["check", *args], environ=dict(environ or {}))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- help


def test_top_level_help() -> None:
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: milvus-probe")
    assert re.search(r"^\s+serve\s+run the daemon", done.stdout, re.M)
    assert re.search(r"^\s+check\s+probe once", done.stdout, re.M)


def test_serve_help_names_every_environment_variable_and_shows_examples() -> None:
    done = run_cli("serve", "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for name in ("MILVUS_PROBE_INTERVAL", "MILVUS_URI", "MILVUS_TOKEN", "MILVUS_CONN_ALIAS",
                 "MILVUS_CONN_TIMEOUT"):
        assert name in text
    for option in OPTIONS:
        assert option.flag in text and option.env in text
    for conn in CONNECTION_OPTIONS:
        assert conn.flag in text and conn.env_name in text
    assert "--config.check" in text
    assert "examples:" in text
    assert "milvus-probe serve --uri http://localhost:19530" in text
    assert "milvus-probe serve --config.file probe.yaml --config.check" in text


def test_check_help_lists_exit_codes_and_short_flags() -> None:
    done = run_cli("check", "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "exit codes" in text
    for code in (probe.cli.EXIT_OK, probe.cli.EXIT_BAD_INPUT, probe.cli.EXIT_CONNECTION,
                 probe.cli.EXIT_RPC, probe.cli.EXIT_UNHEALTHY):
        assert re.search(rf"^\s+{code}\s+\S", text, re.M), f"exit code {code} not described"
    assert "-h HOST" in text and "-p PORT" in text and "-a ALIAS" in text
    assert "--output" in text and "-v, --verbose" in text


# --------------------------------------------------------------------------- serve


def test_serve_config_check_accepts_a_valid_file_and_prints_no_secret(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", f"""\
probe:
  interval: 15s
targets:
  - alias: primary
    uri: https://milvus.example.com/analytics
    token: {TOKEN}
  - alias: replica
    host: 10.0.0.9
    user: root
    password: {PASSWORD}
""")
    done = run_cli("serve", "--config.file", str(config_file), "--config.check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "configuration OK: 2 target(s)"
    primary = next(line for line in lines if "alias=primary" in line)
    replica = next(line for line in lines if "alias=replica" in line)
    assert "target=milvus.example.com:443" in primary and "tls=on" in primary
    assert "db=analytics" in primary and "auth=token" in primary and "interval=15s" in primary
    assert "target=10.0.0.9:19530" in replica and "auth=user root" in replica
    for secret in TOKEN_FORMS + PASSWORD_FORMS:
        assert secret not in done.stdout + done.stderr


def test_serve_config_check_rejects_an_invalid_file_listing_every_problem(
        tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", """\
probe:
  interval: 10x
targets:
  - alias: a
    uri: ./milvus.db
  - alias: a
    port: 70000
""")
    done = run_cli("serve", "--config.file", str(config_file), "--config.check",
                   env=clean_environ(MILVUS_PROBE_FOO="1"))
    assert done.returncode == 1
    assert "configuration OK" not in done.stdout
    assert "invalid configuration (5 problems)" in done.stderr
    for where in ("env MILVUS_PROBE_FOO", f"{config_file}: probe.interval",
                  f"{config_file}: targets[0].uri", f"{config_file}: targets[1].alias",
                  f"{config_file}: targets[1].port"):
        assert f"  {where}: " in done.stderr, where


@pytest.mark.parametrize("command", ["serve", "check"])
def test_unknown_flag_exits_1_not_2(command: str) -> None:
    done = run_cli(command, "--no-such-flag")
    assert done.returncode == 1
    assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_bad_flag_value_exits_1_in_process() -> None:
    with pytest.raises(SystemExit) as caught:
        probe.cli.main(["check", "--output", "yaml"], environ={})
    assert caught.value.code == 1


# --------------------------------------------------------------------------- check


def test_check_exits_0_against_real_milvus(milvus: MilvusLite) -> None:
    done = run_cli("check", "--uri", milvus.address)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"OK default {milvus.address} ")
    version = re.search(r"version=(\S+)", done.stdout)
    assert version and version.group(1) != "-"


def test_check_honours_milvus_uri_from_the_environment(
        milvus: MilvusLite, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(capsys, environ={"MILVUS_URI": f"http://{milvus.address}"})
    assert code == 0, out
    assert out.startswith(f"OK default {milvus.address} ")
    refused = f"127.0.0.1:{free_port()}"
    code, out, _ = run_check(capsys, environ={"MILVUS_URI": refused})
    assert code == probe.cli.EXIT_CONNECTION
    assert out.startswith(f"FAIL default {refused} reason=refused")


def test_check_honours_milvus_uri_in_a_real_process(milvus: MilvusLite) -> None:
    done = run_cli("check", env=clean_environ(MILVUS_URI=milvus.address))
    assert done.returncode == 0, done.stdout + done.stderr
    assert milvus.address in done.stdout


def test_check_without_any_target_dials_127_0_0_1_19530(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(capsys, "--timeout", "1s")
    assert " default 127.0.0.1:19530 " in out
    assert code in (probe.cli.EXIT_OK, probe.cli.EXIT_CONNECTION, probe.cli.EXIT_RPC,
                    probe.cli.EXIT_UNHEALTHY)


def test_check_refused(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, _ = run_check(capsys, "--uri", address)
    assert code == 2
    assert out.startswith(f"FAIL default {address} reason=refused phase=connect")


def test_check_dns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(capsys, "--uri", "no-such-host.invalid:19530")
    assert code == 2
    assert "reason=dns phase=resolve" in out


@pytest.mark.parametrize(
    ("behaviour", "args", "code", "reason"),
    [
        (Behaviour(token="root:Milvus"), ["--token", "root:wrong"], 3, "unauthenticated"),
        (Behaviour(), ["--db-name", "nope"], 3, "db_not_found"),
        (Behaviour(status_code=1), [], 3, "not_ready"),
        (Behaviour(healthy=False, reasons=["querynode 3 is down"]), [], 4, "unhealthy"),
        (Behaviour(token="root:Milvus"), ["--token", "root:Milvus"], 0, None),
        (Behaviour(), ["--db-name", "default"], 0, None),
    ],
    ids=["unauthenticated", "db_not_found", "not_ready", "unhealthy", "good-token",
         "existing-db"],
)
def test_check_exit_codes(capsys: pytest.CaptureFixture[str], behaviour: Behaviour,
                          args: list[str], code: int, reason: str | None) -> None:
    with milvus_double(behaviour) as double:
        got, out, _ = run_check(capsys, "--uri", double.address, *args)
        health_calls = double.count("CheckHealth")
    assert got == code, out
    assert health_calls <= 1  # one cycle, at most one CheckHealth
    if reason is None:
        assert out.startswith(f"OK default {double.address} ")
    else:
        assert out.startswith(f"FAIL default {double.address} reason={reason} ")


def test_check_exit_code_in_a_real_process_for_unhealthy() -> None:
    with milvus_double(Behaviour(healthy=False)) as double:
        done = run_cli("check", "--uri", double.address)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "reason=unhealthy" in done.stdout


def test_check_bad_configuration_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_check(capsys, "--uri", "./milvus.db")
    assert code == 1
    assert "milvus-lite" in err and "invalid configuration (1 problem)" in err


def test_check_unknown_alias_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = write(tmp_path / "probe.yaml",
                        "targets:\n  - alias: a\n    uri: h:1\n  - alias: b\n    uri: h:2\n")
    code, _, err = run_check(capsys, "--config.file", str(config_file), "-a", "c")
    assert code == 1
    assert "no target with alias 'c'" in err and "a, b" in err


def test_check_short_flags_host_port_alias(capsys: pytest.CaptureFixture[str]) -> None:
    with milvus_double() as double:
        code, out, err = run_check(capsys, "-h", "127.0.0.1", "-p", str(double.port),
                                   "-a", "mine")
        calls = double.count("CheckHealth")
    assert code == 0, out + err
    assert "usage:" not in out + err  # -h is the host here, not help
    assert out.startswith(f"OK mine 127.0.0.1:{double.port} ")
    assert calls == 1


def test_check_alias_picks_the_target_from_a_config_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with milvus_double() as good:
        refused = free_port()
        config_file = write(tmp_path / "probe.yaml", f"""\
targets:
  - alias: broken
    uri: 127.0.0.1:{refused}
  - alias: working
    uri: {good.address}
""")
        code, out, _ = run_check(capsys, "--config.file", str(config_file), "-a", "working")
        assert code == 0, out
        assert out.startswith(f"OK working {good.address} ")
        code, out, _ = run_check(capsys, "--config.file", str(config_file), "--alias", "broken")
        assert code == 2
        assert out.startswith(f"FAIL broken 127.0.0.1:{refused} reason=refused")


def test_check_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    with milvus_double(Behaviour(version="v2.5.9-json")) as double:
        code, out, _ = run_check(capsys, "--uri", double.address, "--output", "json", "-a", "j")
    assert code == 0
    body = json.loads(out)  # exactly one JSON document
    assert isinstance(body, dict)
    assert body["alias"] == "j"
    assert body["target"] == double.address
    assert body["success"] is True
    assert body["reason"] is None
    assert body["server_version"] == "v2.5.9-json"
    assert body["exit_code"] == 0
    phases = body["phases"]
    assert {"resolve", "connect", "rpc", "close"} <= set(phases)
    assert all(isinstance(v, float) and v >= 0 for v in phases.values())
    assert body["duration_seconds"] >= sum(phases.values())


def test_check_json_output_on_failure(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, _ = run_check(capsys, "--uri", address, "--output", "json")
    assert code == 2
    body = json.loads(out)
    assert (body["success"], body["reason"], body["failed_phase"], body["exit_code"]) == \
        (False, "refused", "connect", 2)
    assert body["target"] == address
    assert "connect" in body["phases"]


def test_check_verbose_prints_every_phase_and_server_info(
        capsys: pytest.CaptureFixture[str]) -> None:
    with milvus_double(Behaviour(version="v2.5.9-verbose")) as double:
        code, out, _ = run_check(capsys, "--uri", double.address, "-v")
        connects = double.count("Connect")
    assert code == 0, out
    lines = out.splitlines()
    starts = [line.split()[0] for line in lines if line.strip()]
    for phase in ("resolve", "connect", "rpc", "info", "close", "total", "result"):
        assert phase in starts, f"no {phase} line in:\n{out}"
    assert starts.index("resolve") < starts.index("connect") < starts.index("rpc") \
        < starts.index("close")
    server = next(line for line in lines if line.startswith("server "))
    assert "build_tags=v2.5.9-verbose" in server and "git_commit=abc123" in server
    assert "deploy_mode=STANDALONE" in server
    assert connects == 1  # -v calls Connect


def test_check_verbose_against_real_milvus(milvus: MilvusLite,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(capsys, "--uri", milvus.address, "-v")
    assert code == 0, out
    assert "result    success" in out
    assert re.search(r"^server\s+build_tags=", out, re.M)


def test_check_timeout_longer_than_the_daemon_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """`check` runs once and has no interval; --timeout is the whole check's budget."""
    with milvus_double() as double:
        code, out, err = run_check(capsys, "--uri", double.address, "--timeout", "15s")
    assert code == 0, out + err


def test_check_host_and_port_flags_win_over_milvus_uri(capsys: pytest.CaptureFixture[str]) -> None:
    with milvus_double() as double:
        code, out, err = run_check(capsys, "-h", "127.0.0.1", "-p", str(double.port),
                                   environ={"MILVUS_URI": f"127.0.0.1:{free_port()}"})
    assert code == 0, out + err
    assert out.startswith(f"OK default 127.0.0.1:{double.port} ")


# --------------------------------------------------------------------------- secrets


MODES = {"text": [], "verbose": ["-v"], "json": ["--output", "json"],
         "verbose-json": ["-v", "--output", "json"]}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "rejected"])
def test_check_never_prints_the_token(capsys: pytest.CaptureFixture[str],
                                      caplog: pytest.LogCaptureFixture,
                                      mode: str, accepted: bool) -> None:
    expected = TOKEN if accepted else "root:Milvus"
    with milvus_double(Behaviour(token=expected)) as double:
        code, out, err = run_check(capsys, "--uri", double.address, "--token", TOKEN,
                                   *MODES[mode])
        seen = [md.get("authorization") for _, md in double.calls]
    assert seen and all(a == base64.b64encode(TOKEN.encode()).decode() for a in seen)
    assert code == (0 if accepted else 3), out + err
    if not accepted:
        assert "unauthenticated" in out
    everything = out + err + caplog.text
    for secret in TOKEN_FORMS:
        assert secret not in everything, f"{secret!r} printed in {mode} mode"


@pytest.mark.parametrize("mode", ["text", "verbose", "json"])
def test_check_never_prints_the_password(capsys: pytest.CaptureFixture[str],
                                         caplog: pytest.LogCaptureFixture, mode: str) -> None:
    with milvus_double(Behaviour(token="root:Milvus")) as double:
        code, out, err = run_check(capsys, "--uri", double.address, "--user", "root",
                                   "--password", PASSWORD, *MODES[mode])
    assert code == 3, out + err
    everything = out + err + caplog.text
    for secret in PASSWORD_FORMS:
        assert secret not in everything, f"{secret!r} printed in {mode} mode"


def test_check_never_prints_the_token_in_a_real_process() -> None:
    """Through MILVUS_TOKEN, rejected, verbose: whatever a terminal shows has no secret."""
    with milvus_double(Behaviour(token="root:Milvus")) as double:
        done = run_cli("check", "--uri", double.address, "-v",
                       env=clean_environ(MILVUS_TOKEN=TOKEN))
        json_done = run_cli("check", "--uri", double.address, "--output", "json",
                            "--token", TOKEN)
    assert done.returncode == 3 and json_done.returncode == 3
    assert json.loads(json_done.stdout)["reason"] == "unauthenticated"
    for secret in TOKEN_FORMS:
        for text in (done.stdout, done.stderr, json_done.stdout, json_done.stderr):
            assert secret not in text
