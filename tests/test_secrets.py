"""No token or password, nor their base64 forms, ever leaves the probe.

Distinctive secrets go in through every source (flag, `--token=`, environment, config
file, token_file, password_file) and are searched for in every output: metrics (text,
OpenMetrics, gzip), the status page, /probe text and JSON, /readyz, every /debug/pprof
view including the labels and strings of CPU, heap and thread profiles, every member of
the diagnostics bundle (/debug/bundle), debug-level logs in text and JSON, `check` in
every mode, `serve --config.check`, and configuration errors.

A search for base64 covers the three alignments a secret can have inside a longer
encoded blob, with and without padding, standard and URL-safe alphabets.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

import probe.cli
from tests.support import Behaviour, MilvusDouble, attempts, http_get, serve_process, wait_until
from tests.test_cli import logging_restored

TOKEN = "root:S3cr3t-Tok3n-xyzzy"
PASSWORD = "Pa55-w0rd-plugh"
USER = "probe"


def forms(secret: str) -> list[str]:
    """`secret` and every way it could show up encoded."""
    found = {secret}
    raw = secret.encode()
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw).decode()
            # Skip the characters mixed with the prefix, and the last group.
            start = 4 if shift else 0
            found.add(encoded[start:-4])
            if shift == 0:
                found.add(encoded)
                found.add(encoded.rstrip("="))
    return sorted(found, key=len, reverse=True)


SECRETS = sorted({f for s in (TOKEN, PASSWORD, TOKEN.split(":", 1)[1], f"{USER}:{PASSWORD}")
                  for f in forms(s)}, key=len, reverse=True)


def assert_no_secret(where: str, data: str | bytes) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
    for secret in SECRETS:
        assert secret not in text and secret.encode() not in raw, f"{secret!r} in {where}"


def unpack(data: bytes) -> bytes:
    """Profiles come gzipped; search the protobuf inside (its string table)."""
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


# --------------------------------------------------------------------------- doubles


def _authorization(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


class ReflectingDouble(MilvusDouble):
    """A hostile (or badly broken) server that sends the credential it got back to us.

    `where` says in what: the UNAUTHENTICATED error text, CheckHealth's reasons (with
    isHealthy=false), or the version and server info of a healthy answer.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(Behaviour())

    @staticmethod
    def _echo(md: dict[str, str]) -> str:
        header = md.get("authorization", "")
        try:
            decoded = base64.b64decode(header).decode()
        except ValueError:
            decoded = "?"
        password = decoded.split(":", 1)[-1]
        return f"authorization={header} token={decoded} password={password}"

    def _enter(self, method: str, context: grpc.ServicerContext) -> dict[str, str]:
        md = super()._enter(method, context)
        echo = self._echo(md)
        if self.where == "error":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"auth check failure: {echo}")
        self.behaviour.reasons = [f"cannot serve {echo}"]
        self.behaviour.healthy = self.where != "reasons"
        self.behaviour.version = echo if self.where == "version" else "v2.5.0-double"
        return md

    def _connect(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = super()._connect(request, context)
        if self.where == "version":
            echo = self.behaviour.version
            si = response.server_info
            si.build_tags = si.git_commit = si.go_version = si.deploy_mode = echo
            si.build_time = echo
        return response


@contextlib.contextmanager
def doubles(**made: MilvusDouble) -> Iterator[dict[str, MilvusDouble]]:
    try:
        yield made
    finally:
        for double in made.values():
            double.stop()


# --------------------------------------------------------------------------- the daemon


def fetch_everything(port: int, aliases: list[str], profiles: bool = True) -> dict[str, bytes]:
    """Every page and profile the daemon serves, by a name saying where it came from."""
    got: dict[str, bytes] = {}

    def get(path: str, **headers: str) -> None:
        status, response_headers, body = http_get(port, path, headers=headers, timeout=30)
        assert status in (200, 503), (path, status, body[:200])
        if response_headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        got[f"{path} {headers}" if headers else path] = unpack(body)

    get("/metrics")
    get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
    get("/metrics", **{"Accept-Encoding": "gzip"})
    get("/")
    get("/readyz")
    get("/readyz?verbose")
    for alias in aliases:
        get(f"/readyz/{alias}?verbose")
        get(f"/probe?alias={alias}")
        get(f"/probe?alias={alias}&format=json")
    # History: the pages, the API, and past cycles found by their trace ids.
    get("/?window=24h")
    get("/api/v1/targets")
    for alias in aliases:
        get(f"/targets/{alias}?window=15m")
        get(f"/api/v1/targets/{alias}/history?window=15m")
    for listed in json.loads(got["/api/v1/targets"]):
        get(f"/probe?trace={listed['last_trace_id']}")
        get(f"/probe?trace={listed['last_trace_id']}&format=json")
    for view in ("/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine",
                 "/debug/pprof/goroutine?debug=1", "/debug/pprof/goroutine?debug=2",
                 "/debug/pprof/threadcreate"):
        get(view)
    if profiles:  # a second each
        for view in ("/debug/pprof/profile?seconds=1&mode=wall",
                     "/debug/pprof/profile?seconds=1&mode=cpu", "/debug/pprof/heap?seconds=1",
                     "/debug/pprof/allocs?seconds=1",
                     "/debug/pprof/flamegraph?seconds=1&mode=wall"):
            get(view)
    return got


def fetch_bundle(port: int) -> dict[str, bytes]:
    """Every member of the daemon's diagnostics bundle, as `bundle:NAME` (profiles unpacked)."""
    status, headers, body = http_get(port, "/debug/bundle?seconds=1", timeout=60)
    assert status == 200 and headers["content-type"] == "application/gzip", body[:200]
    got = {"/debug/bundle (the archive, gzipped)": body, "/debug/bundle (the tar)": unpack(body)}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        for info in archive.getmembers():
            extracted = archive.extractfile(info)
            assert extracted is not None, info.name
            got[f"bundle:{info.name.split('/', 1)[1]}"] = unpack(extracted.read())
    assert len(got) >= 2 + 14, sorted(got)
    return got


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_daemon_never_shows_a_secret(tmp_path: Path, log_format: str) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with doubles(
        token_ok=MilvusDouble(Behaviour(token=TOKEN)),
        token_bad=MilvusDouble(Behaviour(token="root:something-else")),
        password_ok=MilvusDouble(Behaviour(token=f"{USER}:{PASSWORD}")),
        password_bad=MilvusDouble(Behaviour(token="root:something-else")),
    ) as d:
        targets = [
            {"alias": "file-token-ok", "uri": d["token_ok"].address, "token": TOKEN},
            {"alias": "file-token-bad", "uri": d["token_bad"].address, "token": TOKEN},
            {"alias": "token-file-ok", "uri": d["token_ok"].address,
             "token_file": str(token_file)},
            {"alias": "password-ok", "uri": d["password_ok"].address, "user": USER,
             "password": PASSWORD, "db_name": "default"},
            {"alias": "password-file-bad", "uri": d["password_bad"].address, "user": USER,
             "password_file": str(password_file)},
        ]
        config = tmp_path / "probe.yaml"
        config.write_text(yaml.safe_dump({
            "probe": {"interval": "200ms", "timeout": "150ms"},
            "readiness": {"policy": "all"}, "targets": targets}))
        # The command line carries a token too: /debug/pprof/cmdline must mask it, in
        # both spellings.
        token_flag = ["--token", TOKEN] if log_format == "text" else [f"--token={TOKEN}"]
        aliases = [t["alias"] for t in targets] + ["cli-token"]
        with serve_process(tmp_path, "--config.file", str(config), "--log.level", "debug",
                           "--log.format", log_format, "--alias", "cli-token",
                           "--uri", d["token_ok"].address, *token_flag) as (process, port):
            wait_until(lambda: all(attempts(port, a) >= 3 for a in aliases), 15,
                       "three cycles of every target")
            # Every credential really reached a server.
            assert _authorization(TOKEN) in {md.get("authorization")
                                             for _, md in d["token_ok"].calls}
            assert _authorization(f"{USER}:{PASSWORD}") in {
                md.get("authorization") for _, md in d["password_bad"].calls}
            pages = fetch_everything(port, aliases)
            assert b"unauthenticated" in pages["/probe?alias=file-token-bad"]
            assert b"--token" in pages["/debug/pprof/cmdline"]
            # The target pages show the configuration, saying only that a secret is set.
            assert b"<td class=mono>&lt;set&gt;</td>" in pages["/targets/file-token-ok?window=15m"]
            assert f"&lt;from file {password_file}&gt;".encode() in pages[
                "/targets/password-file-bad?window=15m"]
            assert b"unauthenticated" in pages["/targets/file-token-bad?window=15m"]

            # A reload that the daemon rejects, of a file full of secrets in wrong places.
            config.write_text(yaml.safe_dump({"targets": [
                {"alias": "both", "uri": "h:1", "token": TOKEN, "user": USER,
                 "password": PASSWORD},
                {"alias": "twice", "uri": "h:1", "password": PASSWORD,
                 "password_file": str(password_file)},
                {"alias": "typo", "uri": "h:1", "tokne": TOKEN},
            ]}))
            status, _, body = http_get(port, "/-/reload", method="POST")
            assert status == 500 and b"reload rejected" in body
            pages["POST /-/reload (rejected)"] = body
            process.send_signal(signal.SIGHUP)  # the same, through the signal
            wait_until(lambda: (tmp_path / "daemon.log").read_text().count(
                "reload rejected") >= 6, 10, "both rejections logged")
            # The diagnostics bundle, made after all that: its log holds the rejections.
            members = fetch_bundle(port)
            config_yaml = members["bundle:config.yaml"].decode()
            assert "token: <set>" in config_yaml
            assert f"password: <from file {password_file}>" in config_yaml
            assert b"reload rejected" in members["bundle:log.jsonl"]
            assert b"unauthenticated" in members["bundle:traces.json"]
            assert b"password-file-bad" in members["bundle:history/password-file-bad.json"]
            pages.update(members)
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
    log = (tmp_path / "daemon.log").read_text()
    lines = log.splitlines()
    assert any("level=debug" in line or '"level": "debug"' in line for line in lines), \
        "no debug line was logged"
    if log_format == "json":
        for line in lines:
            json.loads(line)
    assert "target down" in log and "reload rejected" in log
    for where, body in pages.items():
        assert_no_secret(where, body)
    for number, line in enumerate(lines):
        assert_no_secret(f"log line {number + 1}: {line[:200]}", line)


@pytest.mark.parametrize("kind", ["token", "password"])
def test_a_server_that_reflects_the_credential_cannot_make_the_daemon_show_it(
        tmp_path: Path, kind: str) -> None:
    """The server sends the credential back: in its error text, in CheckHealth's reasons,
    in its version and server info. None of it may reach a page, a metric label or a log."""
    credentials = {"token": TOKEN} if kind == "token" else {"user": USER, "password": PASSWORD}
    with doubles(error=ReflectingDouble("error"), reasons=ReflectingDouble("reasons"),
                 version=ReflectingDouble("version")) as d:
        targets = [{"alias": f"reflect-{where}", "uri": double.address, **credentials}
                   for where, double in d.items()]
        config = tmp_path / "probe.yaml"
        config.write_text(yaml.safe_dump({"probe": {"interval": "200ms", "timeout": "150ms"},
                                          "targets": targets}))
        aliases = [t["alias"] for t in targets]
        with serve_process(tmp_path, "--config.file", str(config), "--log.level", "debug",
                           "--log.format", "json") as (process, port):
            wait_until(lambda: all(attempts(port, a) >= 2 for a in aliases), 15,
                       "two cycles of every target")
            # The servers did echo it: the reflections are there to be leaked.
            assert d["version"].count("GetVersion") >= 1 and d["version"].count("Connect") >= 1
            pages = fetch_everything(port, aliases, profiles=False)
            for where in ("error", "reasons"):
                assert b"reflect" in pages[f"/probe?alias=reflect-{where}&format=json"]
            members = fetch_bundle(port)
            assert b"reflect-version" in members["bundle:traces.json"]
            pages.update(members)
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
    log = (tmp_path / "daemon.log").read_text()
    for where, body in pages.items():
        assert_no_secret(where, body)
    for number, line in enumerate(log.splitlines()):
        assert_no_secret(f"log line {number + 1}: {line[:200]}", line)


# --------------------------------------------------------------------------- the CLI


def run_cli(argv: list[str], environ: dict[str, str]) -> tuple[Any, str]:
    """`milvus-probe ARGV` in-process; (exit code, everything printed and logged)."""
    out, err = io.StringIO(), io.StringIO()
    with logging_restored(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: Any = probe.cli.main(argv, environ=environ)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue() + err.getvalue()


MODES = {"text": [], "verbose": ["-v"], "json": ["--output", "json"],
         "verbose-json": ["-v", "--output", "json"]}


def sources(tmp_path: Path, address: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each way to hand `check` a credential: (argv, environment)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"alias": "default", "uri": address,
                                                   "token": TOKEN}]}))
    uri = ["--uri", address]
    return {
        "--token": ([*uri, "--token", TOKEN], {}),
        "--token=": ([*uri, f"--token={TOKEN}"], {}),
        "MILVUS_TOKEN": (uri, {"MILVUS_TOKEN": TOKEN}),
        "--token-file": ([*uri, "--token-file", str(token_file)], {}),
        "--user/--password": ([*uri, "--user", USER, "--password", PASSWORD], {}),
        "MILVUS_PROBE_PASSWORD": (uri, {"MILVUS_PROBE_USER": USER,
                                        "MILVUS_PROBE_PASSWORD": PASSWORD}),
        "--password-file": ([*uri, "--user", USER, "--password-file", str(password_file)], {}),
        "config file": (["--config.file", str(config)], {}),
    }


@pytest.mark.parametrize("server", ["accepting", "rejecting", "reflecting"])
def test_check_never_prints_a_secret(tmp_path: Path, server: str) -> None:
    """`check` in every mode, with the credential from every source, against a server
    that accepts it, one that rejects it, and one that reflects it back."""
    expected = {"accepting": None, "rejecting": "root:nobody-has-this", "reflecting": None}
    made: MilvusDouble = (ReflectingDouble("error") if server == "reflecting"
                          else MilvusDouble(Behaviour(token=expected[server])))
    runs = 0
    with doubles(server=made) as d:
        for name, (argv, environ) in sources(tmp_path, d["server"].address).items():
            for mode, flags in MODES.items():
                code, printed = run_cli(["check", *argv, *flags], environ)
                runs += 1
                assert code == (0 if server == "accepting" else 3), (name, mode, printed)
                assert_no_secret(f"check {mode} with {name} against a {server} server",
                                 printed)
        assert len(d["server"].calls) >= runs  # every run reached the server
    assert runs == 32


def test_config_check_lists_targets_without_their_secrets(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump({"targets": [
        {"alias": "a", "uri": "h:1", "token": TOKEN},
        {"alias": "b", "uri": "h:2", "user": USER, "password": PASSWORD},
        {"alias": "c", "uri": "h:3", "user": USER, "password_file": str(password_file)},
    ]}))
    code, printed = run_cli(["serve", "--config.check", "--config.file", str(config),
                             "--alias", "d", "--uri", "h:4", "--token", TOKEN], {})
    assert code == 0 and "configuration OK: 4 target(s)" in printed, printed
    assert_no_secret("serve --config.check", printed)


INVALID = {
    # (argv, environment, file content or None)
    "token and user/password flags": (
        ["--uri", "h:1", "--token", TOKEN, "--user", USER, "--password", PASSWORD], {}, None),
    "token and token_file": (["--uri", "h:1", "--token", TOKEN, "--token-file", "/nonexistent"],
                             {}, None),
    "password without user": (["--uri", "h:1", "--password", PASSWORD], {}, None),
    "token env and user env": (["--uri", "h:1"], {"MILVUS_TOKEN": TOKEN,
                                                 "MILVUS_PROBE_USER": USER,
                                                 "MILVUS_PROBE_PASSWORD": PASSWORD}, None),
    "token with a bad uri": (["--uri", "ftp://h:1", "--token", TOKEN], {}, None),
    "file: token and user": ([], {}, {"targets": [{"uri": "h:1", "token": TOKEN,
                                                   "user": USER, "password": PASSWORD}]}),
    "file: token of the wrong type": ([], {}, {"targets": [{"uri": "h:1", "token": [TOKEN]}]}),
    "file: password of the wrong type": ([], {}, {"targets": [{"uri": "h:1", "user": USER,
                                                               "password": {"p": PASSWORD}}]}),
    "file: misspelt key holding the token": ([], {}, {"targets": [{"uri": "h:1",
                                                                   "tokne": TOKEN}]}),
    "file: secret under a pool key": ([], {}, {"pool_token": TOKEN,
                                               "targets": [{"uri": "h:1"}]}),
    "file: credentials written into a malformed uri": (
        [], {}, {"targets": [{"uri": f"http://{USER}:{PASSWORD}@[::1:19530"}]}),
    "MILVUS_URI with credentials and a bad port": (
        [], {"MILVUS_URI": f"http://{USER}:{PASSWORD}@h:99999"}, None),
}


@pytest.mark.parametrize("name", sorted(INVALID))
@pytest.mark.parametrize("command", ["serve", "check"])
def test_configuration_errors_never_echo_a_secret(tmp_path: Path, name: str,
                                                  command: str) -> None:
    argv, environ, document = INVALID[name]
    if document is not None:
        config = tmp_path / "probe.yaml"
        config.write_text(yaml.safe_dump(document))
        argv = [*argv, "--config.file", str(config)]
    full = ["serve", "--config.check", *argv] if command == "serve" else ["check", *argv]
    code, printed = run_cli(full, dict(environ))
    assert code == 1, printed
    assert "invalid configuration" in printed, printed
    assert_no_secret(f"{command}: {name}", printed)
