"""Configuration: precedence, names, uri forms, and validation that reports every problem."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from probe.config import ConfigError, ConfigIssue, Sources, describe, load, parse_duration
from probe.milvus.auth import Secret
from probe.targets import Target
from tests.conftest import write

TOKEN = "root:S3cr3t-Tok3n"
PASSWORD = "Pa55-w0rd-S3cr3t"


def load_from(flags: Mapping[str, Any] | None = None,
              environ: Mapping[str, str] | None = None) -> Any:
    return load(Sources(flags=dict(flags or {}), environ=dict(environ or {})))


def issues_of(flags: Mapping[str, Any] | None = None,
              environ: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_from(flags, environ)
    assert caught.value.issues, "a ConfigError must carry at least one issue"
    return caught.value.issues


def only_target(flags: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> Target:
    config = load_from(flags, environ)
    assert len(config.targets) == 1, config.targets
    target: Target = config.targets[0]
    return target


def by_alias(targets: tuple[Target, ...]) -> dict[str, Target]:
    return {t.alias: t for t in targets}


# --------------------------------------------------------------------------- precedence


def test_daemon_option_precedence_defaults_file_env_flag(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "probe:\n  interval: 30s\n")
    file_flag = {"config.file": str(config_file)}

    assert load_from().probe.interval == 10.0  # the default
    assert load_from(file_flag).probe.interval == 30.0
    environ = {"MILVUS_PROBE_INTERVAL": "20s"}
    assert load_from(file_flag, environ).probe.interval == 20.0
    assert load_from({**file_flag, "probe.interval": "15s"}, environ).probe.interval == 15.0
    # the winner also reaches the target
    assert only_target({**file_flag, "probe.interval": "15s"}, environ).interval == 15.0


def test_config_file_itself_comes_from_the_environment(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "probe:\n  history: 7\n")
    config = load_from(environ={"MILVUS_PROBE_CONFIG_FILE": str(config_file)})
    assert config.probe.history == 7
    assert config.config_file == str(config_file)


def test_conn_timeout_is_below_probe_timeout_and_above_the_file(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "probe:\n  timeout: 2s\n")
    file_flag = {"config.file": str(config_file)}
    assert load_from(file_flag).probe.timeout == 2.0
    assert load_from(file_flag, {"MILVUS_CONN_TIMEOUT": "3"}).probe.timeout == 3.0
    both = {"MILVUS_CONN_TIMEOUT": "3", "MILVUS_PROBE_TIMEOUT": "4s"}
    assert load_from(file_flag, both).probe.timeout == 4.0
    assert load_from({**file_flag, "probe.timeout": "1s"}, both).probe.timeout == 1.0


def test_connection_precedence_file_env_flag(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "targets:\n  - uri: file-host:1001\n")
    file_flag = {"config.file": str(config_file)}
    assert only_target(file_flag).address == "file-host:1001"
    environ = {"MILVUS_URI": "env-host:1002"}
    assert only_target(file_flag, environ).address == "env-host:1002"
    assert only_target({**file_flag, "uri": "flag-host:1003"}, environ).address == \
        "flag-host:1003"
    # without a file: env alone, then the flag over it
    assert only_target(environ=environ).address == "env-host:1002"
    assert only_target({"uri": "flag-host:1003"}, environ).address == "flag-host:1003"


def test_flag_host_and_port_win_over_milvus_uri_in_the_environment() -> None:
    """MILVUS_URI is often exported for pymilvus; `-h/-p` (flags) must still win over it,
    as a flag uri wins over a file target's host/port."""
    target = only_target({"host": "flag-host", "port": "1003"}, {"MILVUS_URI": "env-host:1002"})
    assert target.address == "flag-host:1003"


def test_flag_uri_wins_over_host_in_the_environment() -> None:
    target = only_target({"uri": "flag-host:1003"}, {"MILVUS_PROBE_HOST": "env-host"})
    assert target.address == "flag-host:1003"


# --------------------------------------------------------------------------- env names


def test_pymilvus_environment_names() -> None:
    target = only_target(environ={
        "MILVUS_URI": "https://milvus.example.com/analytics",
        "MILVUS_TOKEN": TOKEN,
        "MILVUS_CONN_ALIAS": "prod",
        "MILVUS_CONN_TIMEOUT": "2s",
    })
    assert target.alias == "prod"
    assert target.address == "milvus.example.com:443"
    assert target.secure
    assert target.db_name == "analytics"
    assert target.timeout == 2.0
    assert target.credentials is not None
    assert target.credentials.authorization() == base64.b64encode(TOKEN.encode()).decode()


def test_milvus_probe_environment_names() -> None:
    config = load_from(environ={
        "MILVUS_PROBE_INTERVAL": "1m30s",
        "MILVUS_PROBE_TIMEOUT": "500ms",
        "MILVUS_PROBE_RPC": "get_version",
        "MILVUS_PROBE_CONNECT_INTERVAL": "1h",
        "MILVUS_PROBE_MAX_CONCURRENT": "8",
        "MILVUS_PROBE_HISTORY": "12",
        "MILVUS_PROBE_READINESS_POLICY": "all",
        "MILVUS_PROBE_READINESS_FAILURE_THRESHOLD": "5",
        "MILVUS_PROBE_WEB_LISTEN_ADDRESS": "127.0.0.1:9999",
        "MILVUS_PROBE_LOG_LEVEL": "debug",
        "MILVUS_PROBE_HOST": "env-host",
        "MILVUS_PROBE_PORT": "2000",
        "MILVUS_PROBE_DB_NAME": "sales",
        "MILVUS_PROBE_USER": "alice",
        "MILVUS_PROBE_PASSWORD": PASSWORD,
    })
    assert config.probe.interval == 90.0
    assert config.probe.timeout == 0.5
    assert config.probe.rpc == "get_version"
    assert config.probe.connect_interval == 3600.0
    assert config.probe.max_concurrent == 8
    assert config.probe.history == 12
    assert config.readiness.policy == "all"
    assert config.readiness.failure_threshold == 5
    assert config.listen_address == ("127.0.0.1", 9999)
    assert config.log_level == "debug"
    (target,) = config.targets
    assert target.address == "env-host:2000"
    assert target.db_name == "sales"
    assert target.credentials is not None and target.credentials.user == "alice"
    assert target.credentials.authorization() == \
        base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


def test_unknown_milvus_probe_variable_is_an_error_naming_it() -> None:
    issues = issues_of(environ={"MILVUS_PROBE_FOO": "1", "MILVUS_PROBE_INTERVAL": "20s"})
    assert [i.where for i in issues] == ["env MILVUS_PROBE_FOO"]
    assert "unknown" in issues[0].message


def test_unrelated_environment_is_ignored() -> None:
    config = load_from(environ={"MILVUS_SOMETHING_ELSE": "x", "PATH": "/bin",
                                "MILVUS_PROBE_INTERVAL": ""})
    assert config.probe.interval == 10.0  # an empty variable counts as unset


def test_bad_environment_value_names_the_variable() -> None:
    issues = issues_of(environ={"MILVUS_CONN_TIMEOUT": "soon"})
    assert [i.where for i in issues] == ["env MILVUS_CONN_TIMEOUT"]


# --------------------------------------------------------------------------- targets


def test_no_target_configured_means_default_on_localhost() -> None:
    config = load_from()
    assert [(t.alias, t.host, t.port, t.secure, t.db_name, t.credentials)
            for t in config.targets] == [("default", "localhost", 19530, False, "", None)]
    assert config.targets[0].address == "localhost:19530"


@pytest.mark.parametrize(
    ("uri", "address", "secure", "db_name"),
    [
        ("milvus.ns.svc:19531", "milvus.ns.svc:19531", False, ""),
        ("milvus.ns.svc", "milvus.ns.svc:19530", False, ""),
        ("http://10.0.0.7:19532", "10.0.0.7:19532", False, ""),
        ("https://milvus.example.com", "milvus.example.com:443", True, ""),
        ("https://milvus.example.com:19530", "milvus.example.com:19530", True, ""),
        ("http://milvus:19530/analytics", "milvus:19530", False, "analytics"),
        ("http://milvus:19530/analytics/", "milvus:19530", False, "analytics"),
        ("[::1]:19530", "[::1]:19530", False, ""),
        ("http://[fe80::1]:19533/db1", "[fe80::1]:19533", False, "db1"),
    ],
)
def test_uri_forms(uri: str, address: str, secure: bool, db_name: str) -> None:
    target = only_target({"uri": uri})
    assert (target.address, target.secure, target.db_name) == (address, secure, db_name)


def test_ipv6_host_is_kept_without_brackets_and_labelled_with_them() -> None:
    target = only_target({"uri": "[::1]:19530"})
    assert target.host == "::1"
    assert target.address == "[::1]:19530"


@pytest.mark.parametrize("uri", ["./milvus.db", "/var/lib/milvus/milvus.db", "milvus_demo.db"])
def test_milvus_lite_local_file_is_rejected_clearly(uri: str) -> None:
    (issue,) = issues_of({"uri": uri})
    assert issue.where.endswith(".uri")
    assert "milvus-lite" in issue.message and "server" in issue.message
    assert uri in issue.message


@pytest.mark.parametrize("uri", ["http://root:Milvus@milvus:19530", "root:Milvus@milvus:19530"])
def test_credentials_in_the_uri_are_rejected(uri: str) -> None:
    (issue,) = issues_of({"uri": uri})
    assert issue.where.endswith(".uri")
    assert "credentials" in issue.message
    assert "Milvus" not in issue.message  # the password is not echoed back


@pytest.mark.parametrize("uri", ["ftp://milvus:19530", "unix://milvus.sock"])
def test_unsupported_scheme(uri: str) -> None:
    (issue,) = issues_of({"uri": uri})
    assert issue.where.endswith(".uri")
    assert "scheme" in issue.message


@pytest.mark.parametrize("uri", ["[::1", "http://[::1:19530", "https://[fe80::1/db"])
def test_malformed_ipv6_uri_is_a_config_error_not_a_crash(uri: str) -> None:
    (issue,) = issues_of({"uri": uri})
    assert issue.where.endswith(".uri")


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".example", "bad\x00name"])
def test_a_server_name_tls_cannot_send_is_a_config_error(name: str) -> None:
    (issue,) = issues_of({"uri": "https://milvus:19530", "server_name": name})
    assert issue.where.endswith(".server_name")
    assert "is not a host name TLS can send" in issue.message


def test_an_international_server_name_is_sent_as_idna() -> None:
    t = only_target({"uri": "https://milvus:19530", "server_name": "mïlvus.example"})
    assert t.tls is not None and t.tls.server_name == "mïlvus.example"


@pytest.mark.parametrize("uri", ["", "http://", "http://h:abc", "http://h:1/a/b", "http://h:1?x=1"])
def test_other_bad_uris(uri: str) -> None:
    (issue,) = issues_of({"uri": uri})
    assert issue.where.endswith(".uri")


def test_uri_and_host_port_from_the_same_source_conflict() -> None:
    (issue,) = issues_of({"uri": "a:1", "host": "b"})
    assert issue.where.endswith(".uri")
    assert "not both" in issue.message


def test_connection_flags_overlay_the_file_target_with_the_same_alias(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", """\
targets:
  - alias: default
    uri: file-host:1001
    db_name: sales
    interval: 30s
  - alias: other
    host: other-host
""")
    config = load_from({"config.file": str(config_file), "uri": "flag-host:1003"})
    targets = by_alias(config.targets)
    assert list(targets) == ["default", "other"]
    assert targets["default"].address == "flag-host:1003"  # from the flag
    assert targets["default"].db_name == "sales"  # kept from the file
    assert targets["default"].interval == 30.0
    assert targets["other"].address == "other-host:19530"


def test_flag_host_replaces_the_file_targets_uri(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml",
                        "targets:\n  - alias: a\n    uri: file-host:1001\n")
    target = only_target({"config.file": str(config_file), "alias": "a", "host": "flag-host"})
    assert target.address == "flag-host:19530"


def test_flag_target_with_another_alias_is_added_beside_file_targets(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", """\
targets:
  - alias: a
    uri: a-host:1001
  - alias: b
    uri: b-host:1002
""")
    config = load_from({"config.file": str(config_file), "alias": "c", "uri": "c-host:1003"})
    assert [(t.alias, t.address) for t in config.targets] == [
        ("a", "a-host:1001"), ("b", "b-host:1002"), ("c", "c-host:1003")]


def test_alias_alone_does_not_add_a_target_beside_file_targets(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "targets:\n  - alias: a\n    uri: a-host:1\n")
    config = load_from({"config.file": str(config_file)}, {"MILVUS_CONN_ALIAS": "zzz"})
    assert [t.alias for t in config.targets] == ["a"]


def test_per_target_overrides_and_inherited_settings(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", """\
probe:
  interval: 20s
  timeout: 4s
  rpc: get_version
targets:
  - alias: fast
    uri: h:1
    interval: 2s
    timeout: 1s
    rpc: check_health
  - alias: inherit
    uri: h:2
""")
    targets = by_alias(load_from({"config.file": str(config_file)}).targets)
    assert (targets["fast"].interval, targets["fast"].timeout, targets["fast"].rpc) == \
        (2.0, 1.0, "check_health")
    assert (targets["inherit"].interval, targets["inherit"].timeout, targets["inherit"].rpc) == \
        (20.0, 4.0, "get_version")


def test_tls_files_imply_secure(tmp_path: Path) -> None:
    ca = write(tmp_path / "ca.pem", "not checked for content here\n")
    target = only_target({"uri": "milvus:19530", "server_pem_path": str(ca)})
    assert target.secure
    assert target.tls is not None and target.tls.server_pem_path == str(ca)


# --------------------------------------------------------------------------- validation


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    readable = write(tmp_path / "client.pem", "pem\n")
    missing = tmp_path / "missing" / "ca.pem"
    name = str(write(tmp_path / "probe.yaml", f"""\
bogus: 1
handler: HTTP
pool_size: 4
probe:
  interval: 10x
  colour: red
  pool_timeout: 3
readiness:
  failure_threshold: 0
targets:
  - alias: a
    uri: localhost:19530
    extra: 1
  - alias: a
    host: h
    port: 0
  - alias: c
    uri: ./milvus.db
  - alias: d
    port: 70000
  - alias: e
    server_pem_path: {missing}
  - alias: f
    handler: HTTP
    pool_size: 10
  - alias: g
    token: {TOKEN}
    user: alice
    password: {PASSWORD}
  - alias: h
    password: {PASSWORD}
  - alias: i
    client_pem_path: {readable}
  - alias: j
    secure: false
    server_pem_path: {readable}
  - alias: k
    interval: 2s
    timeout: 3s
  - alias: l
    interval: soon
    timeout: -1s
"""))
    with pytest.raises(ConfigError) as caught:
        load_from({"config.file": name})
    found = [(i.where, i.message) for i in caught.value.issues]
    wheres = [w for w, _ in found]
    expected = [
        f"{name}: bogus",
        f"{name}: handler",
        f"{name}: pool_size",
        f"{name}: probe.colour",
        f"{name}: probe.pool_timeout",
        f"{name}: probe.interval",
        f"{name}: readiness.failure_threshold",
        f"{name}: targets[0].extra",
        f"{name}: targets[1].alias",
        f"{name}: targets[1].port",
        f"{name}: targets[2].uri",
        f"{name}: targets[3].port",
        f"{name}: targets[4].server_pem_path",
        f"{name}: targets[5].handler",
        f"{name}: targets[5].pool_size",
        f"{name}: targets[6].token",
        f"{name}: targets[7].user",
        f"{name}: targets[8].client_key_path",
        f"{name}: targets[9].secure",
        f"{name}: targets[10].timeout",
        f"{name}: targets[11].interval",
        f"{name}: targets[11].timeout",
    ]
    assert sorted(wheres) == sorted(expected), found
    messages = dict(found)
    assert "unknown key" in messages[f"{name}: bogus"]
    assert "GRPC" in messages[f"{name}: handler"]
    assert "pool" in messages[f"{name}: pool_size"]
    assert "pool" in messages[f"{name}: targets[5].pool_size"]
    assert "duplicate alias 'a'" in messages[f"{name}: targets[1].alias"]
    assert "70000" in messages[f"{name}: targets[3].port"]
    assert "cannot read" in messages[f"{name}: targets[4].server_pem_path"]
    assert "not both" in messages[f"{name}: targets[6].token"]
    assert "needs a user" in messages[f"{name}: targets[7].user"]
    assert "secure is false" in messages[f"{name}: targets[9].secure"]
    assert "shorter than the interval" in messages[f"{name}: targets[10].timeout"]
    # and the error as a whole lists them all, one per line, without the secrets
    text = str(caught.value)
    assert len(text.splitlines()) == len(expected)
    assert TOKEN not in text and PASSWORD not in text


@pytest.mark.parametrize("other_problem", ["port: 0", "extra: 1", "user: alice"])
def test_rpc_and_connect_interval_errors_are_reported_beside_other_target_errors(
        tmp_path: Path, other_problem: str) -> None:
    config_file = write(tmp_path / "probe.yaml", f"""\
targets:
  - alias: a
    host: h
    rpc: ping
    connect_interval: soon
    {other_problem}
""")
    issues = issues_of({"config.file": str(config_file)})
    wheres = {i.where for i in issues}
    assert f"{config_file}: targets[0].rpc" in wheres
    assert f"{config_file}: targets[0].connect_interval" in wheres
    assert len(wheres) == 3


def test_global_timeout_must_be_below_the_interval() -> None:
    (issue,) = issues_of({"probe.interval": "5s", "probe.timeout": "5s"})
    assert issue.where == "probe.timeout"
    assert "(5s)" in issue.message and "shorter" in issue.message
    (issue,) = issues_of(environ={"MILVUS_PROBE_INTERVAL": "1s", "MILVUS_CONN_TIMEOUT": "2s"})
    assert issue.where == "probe.timeout"


def test_target_timeout_must_be_below_the_target_interval(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml",
                        "targets:\n  - alias: a\n    uri: h:1\n    interval: 4s\n")
    (issue,) = issues_of({"config.file": str(config_file)})  # global timeout 5s >= 4s
    assert issue.where == f"{config_file}: targets[0].timeout"


@pytest.mark.parametrize(("port", "fragment"), [("0", "0 is outside"), ("70000", "70000"),
                                                ("http", "whole number")])
def test_port_range(port: str, fragment: str) -> None:
    (issue,) = issues_of({"host": "milvus", "port": port})
    assert issue.where.endswith(".port")
    assert fragment in issue.message


def test_unreadable_certificate_and_secret_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    issues = issues_of({"uri": "h:1", "ca_pem_path": str(missing), "token_file": str(tmp_path)})
    messages = {i.where.rsplit(".", 1)[-1]: i.message for i in issues}
    assert set(messages) == {"ca_pem_path", "token_file"}
    assert str(missing) in messages["ca_pem_path"] and "cannot read" in messages["ca_pem_path"]
    assert "cannot read" in messages["token_file"]


def test_credential_combinations() -> None:
    assert {i.where.rsplit(".", 1)[-1] for i in issues_of(
        {"token": TOKEN, "user": "alice", "password": PASSWORD})} == {"token"}
    assert {i.where.rsplit(".", 1)[-1] for i in issues_of({"password": PASSWORD})} == {"user"}
    assert {i.where.rsplit(".", 1)[-1] for i in issues_of({"user": "alice"})} == {"password"}


def test_client_certificate_without_key(tmp_path: Path) -> None:
    cert = write(tmp_path / "client.pem", "pem\n")
    (issue,) = issues_of({"uri": "h:1", "client_pem_path": str(cert)})
    assert issue.where.endswith(".client_key_path")
    assert "client_pem_path" in issue.message


def test_tls_files_with_secure_false(tmp_path: Path) -> None:
    ca = write(tmp_path / "ca.pem", "pem\n")
    (issue,) = issues_of({"uri": "h:1", "server_pem_path": str(ca), "secure": "false"})
    assert issue.where.endswith(".secure")
    assert "server_pem_path" in issue.message


def test_https_uri_with_secure_false() -> None:
    (issue,) = issues_of({"uri": "https://h", "secure": "false"})
    assert issue.where.endswith(".secure")


@pytest.mark.parametrize(("option", "value"), [("probe.interval", "10x"),
                                               ("probe.timeout", "-1s"),
                                               ("probe.connect-interval", "0")])
def test_bad_duration_flags_name_the_flag(option: str, value: str) -> None:
    issues = issues_of({option: value})
    assert f"--{option}" in [i.where for i in issues]


def test_bad_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "probe:\n  interval: 10s\n timeout: 5s\n")
    (issue,) = issues_of({"config.file": str(config_file)})
    assert issue.where == f"{config_file}:3:2"
    assert "not valid YAML" in issue.message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "- uri: h:1\n- uri: h:2\n")
    (issue,) = issues_of({"config.file": str(config_file)})
    assert issue.where == str(config_file)
    assert "mapping" in issue.message and "list" in issue.message


def test_config_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    (issue,) = issues_of({"config.file": str(missing)})
    assert issue.where == str(missing)
    assert "No such file" in issue.message


def test_empty_config_file_is_fine(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", "# nothing yet\n")
    assert only_target({"config.file": str(config_file)}).address == "localhost:19530"


def test_flag_and_environment_problems_are_reported_together(tmp_path: Path) -> None:
    issues = issues_of({"probe.history": "0", "uri": "ftp://h"},
                       {"MILVUS_PROBE_READINESS_POLICY": "sometimes", "MILVUS_PROBE_X": "1"})
    wheres = {i.where for i in issues}
    assert {"--probe.history", "env MILVUS_PROBE_READINESS_POLICY", "env MILVUS_PROBE_X",
            "flags/environment.uri"} == wheres


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("10s", 10.0), ("1m30s", 90.0), ("1h", 3600.0), ("2.5", 2.5),
    ("1h2m3s", 3723.0), (" 10s ", 10.0), (3, 3.0), (0.25, 0.25),
])
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "10x", "s", "10 s", "-1s", "-5", "0", "0s", 0,
                                  -1.0, True, False, None, "1.5.2s", "ten seconds"])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --------------------------------------------------------------------------- secrets


def test_secret_masks_itself() -> None:
    secret = Secret(TOKEN)
    assert secret.reveal() == TOKEN
    assert TOKEN not in repr(secret) and TOKEN not in str(secret) and TOKEN not in f"{secret}"


def test_loaded_config_never_prints_token_or_password(tmp_path: Path) -> None:
    config_file = write(tmp_path / "probe.yaml", f"""\
targets:
  - alias: with-password
    uri: h:1
    user: alice
    password: {PASSWORD}
""")
    config = load_from({"config.file": str(config_file), "alias": "with-token",
                        "uri": "h:2", "token": TOKEN})
    assert {t.alias for t in config.targets} == {"with-password", "with-token"}
    forbidden = [TOKEN, PASSWORD, base64.b64encode(TOKEN.encode()).decode(),
                 base64.b64encode(f"alice:{PASSWORD}".encode()).decode()]
    texts = [repr(config), str(config), *describe(config)]
    for t in config.targets:
        texts += [repr(t), str(t), repr(t.credentials), str(t.credentials)]
    for text in texts:
        for secret in forbidden:
            assert secret not in text, text
    # describe still says what kind of auth each target uses
    lines = {line.split()[0]: line for line in describe(config)}
    assert "auth=user alice" in lines["alias=with-password"]
    assert "auth=token" in lines["alias=with-token"]
    assert "target=h:2" in lines["alias=with-token"]


def test_a_key_with_a_newline_is_reported_on_one_line(tmp_path: Path) -> None:
    """Found by hypothesis: an unknown key "\\n" split its problem over two lines."""
    path = tmp_path / "probe.yaml"
    path.write_text('"a\\nb": 1\nprobe:\n  "x\\ty": 2\n')
    with pytest.raises(ConfigError) as error:
        load(Sources(flags={"config.file": str(path)}))
    for issue in error.value.issues:
        assert "\n" not in str(issue) and "\t" not in str(issue)
    assert any("a\\nb" in str(issue) for issue in error.value.issues)


# --------------------------------------------------------------------------- history


def test_history_settings_from_flags_env_and_file(tmp_path: Path) -> None:
    assert load_from().history.retention == 86400 and load_from().history.resolution == 60
    config = load_from(environ={"MILVUS_PROBE_HISTORY_RETENTION": "6h"})
    assert (config.history.retention, config.history.rows) == (21600, 360)
    path = write(tmp_path / "c.yaml", "history:\n  retention: 2h\n  resolution: 30s\n")
    config = load_from({"config.file": str(path)})
    assert (config.history.retention, config.history.resolution) == (7200, 30)
    path = write(tmp_path / "bad.yaml", "history:\n  retension: 2h\n")
    (issue,) = issues_of({"config.file": str(path)})
    assert issue.where.endswith("history.retension") and "unknown key" in issue.message


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"history.resolution": "500ms"}, "at least 1s"),
        ({"history.retention": "30s"}, "at least the resolution (1m)"),
        ({"history.retention": "90s"}, "whole number of resolution steps (1m)"),
        ({"history.retention": "168h", "history.resolution": "10s"}, "60480 rows"),
        ({"history.retention": "forever"}, "expected a duration"),
    ],
)
def test_bad_history_settings_say_why(flags: dict[str, str], fragment: str) -> None:
    (issue,) = issues_of(flags)
    assert issue.where.split()[-1].lstrip("-").startswith("history.")
    assert fragment in issue.message
