"""Property-based tests: configuration from every source, and the HTTP router on real sockets.

Configuration: random YAML documents, mutations of a valid file, random MILVUS_* /
MILVUS_PROBE_* environments and random flag combinations go through the real entry point,
`probe.cli.main(["serve", "--config.check", ...])`. Whatever the input, the answer is exit
0 with the valid configuration printed, or exit 1 with every problem on its own line naming
where it came from — never a traceback, never an exception out of `main`, never a secret.

The router: random methods, paths, percent-encodings (invalid UTF-8, NUL), query strings,
header sets, oversized header lines, header floods and bodies, sent as raw bytes to a
running daemon. Every answer is a well-formed HTTP status line with a 2xx/3xx/4xx status
(503 only where readiness means it) and a body; after every request the daemon still
answers /healthz within 100 ms and has no request thread left behind.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import probe.cli
from probe.app import App
from probe.config import CONNECTION_OPTIONS, OPTIONS, ConfigError, Sources, load
from probe.config.issues import printable
from tests.support import MilvusDouble, free_port, wait_until

TOKEN = "root:S3cr3t-Tok3n-xyzzy"
PASSWORD = "Pa55-w0rd-plugh"
SECRETS = [TOKEN, PASSWORD, "S3cr3t-Tok3n-xyzzy",
           base64.b64encode(TOKEN.encode()).decode(),
           base64.b64encode(f"probe:{PASSWORD}".encode()).decode()]

PHASES = [Phase.explicit, Phase.generate, Phase.shrink]
"""No `explain` phase: its line tracer makes PyYAML's recursive composer crawl."""
CONFIG_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# =========================================================================== configuration


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for config files, plus one readable file and one directory to point at."""
    directory = tmp_path_factory.mktemp("fuzz-config")
    (directory / "readable.pem").write_text("not a certificate, but readable\n")
    (directory / "token").write_text(TOKEN + "\n")
    (directory / "a-directory").mkdir()
    return directory


def run_config_check(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """`milvus-probe serve --config.check ARGV` in-process: (exit code, stdout, stderr).

    argparse's own errors leave through SystemExit (as the real process exits); that is
    the exit code. Any other exception propagates and fails the property.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: Any = probe.cli.main(["serve", "--config.check", *argv], environ=environ)
        except SystemExit as exc:
            code = exc.code if exc.code is not None else 0
    return code, out.getvalue(), err.getvalue()


_ENV_WHERE = re.compile(r"env [A-Z_][A-Z0-9_]*")
_FLAG_WHERE = re.compile(r"--[a-z][a-z0-9.-]*")


def _names_a_source(where: str, config_file: str | None) -> bool:
    # Control characters in a file name are shown escaped (one line per problem).
    if config_file and (where.startswith(config_file) or where.startswith(printable(config_file))):
        return True  # `file: targets[0].uri`, `file:3:2`, or the file itself
    return bool(
        _ENV_WHERE.fullmatch(where)
        or _FLAG_WHERE.fullmatch(where)
        or where.startswith("flags/environment")
        or where == "probe.timeout"  # the interval/timeout rule spans sources; names the field
    )


def assert_config_answer(code: int, out: str, err: str, config_file: str | None) -> None:
    """Exit 0 with the targets listed, or exit 1 with every problem naming its source."""
    if currently_in_test_context():
        note(f"exit {code}\nstdout:\n{out}\nstderr:\n{err}")
    assert "Traceback" not in out + err
    for secret in SECRETS:
        assert secret not in out + err, f"{secret!r} printed"
    assert code in (0, 1), f"exit code {code!r}"
    if code == 0:
        assert err == ""
        lines = out.split("\n")[:-1]  # "\n" ends a line; other controls are just characters
        match = re.fullmatch(r"configuration OK: (\d+) target\(s\)", lines[0])
        assert match, lines[0]
        targets = lines[1:]
        assert len(targets) == int(match.group(1)), out
        aliases = [re.match(r"  alias=(\S+) target=\S+ ", line) for line in targets]
        assert all(aliases), out
        names = [m.group(1) for m in aliases if m]
        assert len(set(names)) == len(names), f"duplicate aliases in a valid configuration: {out}"
        return
    assert out == "", "an invalid configuration printed something on stdout"
    lines = err.split("\n")[:-1]
    assert lines, "exit 1 without a word"
    header = re.fullmatch(r"milvus-probe: invalid configuration \((\d+) problems?\):", lines[0])
    if header is None:  # argparse: usage, then `milvus-probe serve: error: argument --x: ...`
        # (argparse echoes stray arguments verbatim, newlines included: not checked here.)
        assert lines[0].startswith("usage: milvus-probe"), err
        assert any(re.match(r"milvus-probe( serve)?: error: \S", line) for line in lines), err
        return
    issues = lines[1:]
    assert len(issues) == int(header.group(1)), f"one line per problem expected:\n{err}"
    for line in issues:
        assert line.startswith("  ") and ": " in line, line
        where = line[2:].split(": ", 1)[0]
        if config_file and line[2:].startswith(config_file):
            where = config_file
        assert _names_a_source(where, config_file), f"the error names no source: {line!r}"


# --------------------------------------------------------------------------- values

# Environment and argv strings: any character but NUL (the OS forbids it there), with the
# surrogate escapes Python uses for undecodable bytes.
os_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        st.sampled_from([chr(c) for c in range(0xDC80, 0xDD00)]),
    ),
    max_size=40,
)
# YAML text: any character a UTF-8 file can hold.
any_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)

INTERESTING_STRINGS = [
    "", " ", "\t", "0", "-1", "1", "65535", "65536", "19530", "10s", "500ms", "1m30s", "0s",
    "-1s", "10x", "10 s", "1e400", "inf", "nan", "-inf", ".inf", "１０s", "١٠s", "²", "10s\n",
    "true", "false", "yes", "auto", "null", "~", "check_health", "get_version", "self", "any",
    "all", "debug", "json", "text", "GRPC", "HTTP", "http://milvus:19530", "https://h",
    "h:1", "localhost:70000", "http://[::1", "http://[::1]:19530/db", "ftp://h", "./x.db",
    "http://u:p@h:1", "http://h:1/a/b", "http://h:1?x=1", "grpc://h:0", ":9091", "[::]:0",
    "127.0.0.1:99999", "0/1", "1/1", "auto/3", "9" * 400, "9" * 5000, "1" * 4301 + "s",
    "a" * 300, "0/" + "9" * 5000, "ünïcødé", "名前", "\u202e", "x\ny", "\x7f", "/nonexistent/file",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 65535, 65536, 10**20, 10**308, 10**309, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(INTERESTING_STRINGS),
    any_text,
)
HUGE_INT = "zzhugeintzz"
"""Stands for a 5000-digit integer in a YAML document (PyYAML can't dump one itself)."""
SELF_REF = "zzselfrefzz"
"""Stands for a list that contains itself (`&a [*a]`)."""
markers = st.sampled_from([HUGE_INT, SELF_REF])
# (Nesting a thousand deep is in FOUND_CONFIG_INPUTS rather than drawn here: PyYAML takes
# a second to parse each such document, which would eat the whole time budget.)
leaves = st.one_of(scalars, scalars, scalars, markers)

FILE_KEYS = ["probe", "readiness", "targets", "discovery", "handler", "pool_size", "bogus"]
TARGET_KEYS = sorted({o.name for o in CONNECTION_OPTIONS}
                     | {"interval", "timeout", "rpc", "connect_interval", "handler", "pool",
                        "colour"})
SECTION_KEYS = sorted({o.file_key[1] for o in OPTIONS if o.file_key} | {"handler", "pool_x",
                                                                         "extra"})
keys = st.one_of(st.sampled_from(FILE_KEYS + TARGET_KEYS + SECTION_KEYS), any_text,
                 st.integers(-3, 3), st.booleans(), st.none())

documents = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=25,
)


def to_yaml(document: Any) -> str:
    text = yaml.safe_dump(document, allow_unicode=True, default_flow_style=False)
    text = text.replace(HUGE_INT, "9" * 5000)
    return text.replace(SELF_REF, "&selfref [*selfref]")


def write_config(scratch: Path, text: str) -> str:
    path = scratch / "probe.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


VALID = {
    "probe": {"interval": "10s", "timeout": "5s", "rpc": "check_health",
              "connect_interval": "1h", "max_concurrent": 64, "history": 60},
    "readiness": {"policy": "self", "failure_threshold": 3, "success_threshold": 1},
    "targets": [
        {"alias": "prod", "uri": "https://milvus.example.com:19530/db1", "token": TOKEN},
        {"alias": "analytics", "host": "milvus.analytics.svc", "port": 19530,
         "user": "probe", "password": PASSWORD, "db_name": "analytics", "interval": "30s"},
        {"alias": "local", "uri": "127.0.0.1:19530", "rpc": "get_version", "timeout": "2s"},
    ],
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


SECRET_PATHS = {("targets", 0, "token"), ("targets", 1, "password")}
VALID_PATHS = [p for p in _paths(VALID) if p not in SECRET_PATHS]
"""Where a mutation may go. Secrets stay where they are: an echo anywhere is a leak."""


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(VALID))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(VALID_PATHS))
        parent: Any = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            parent[last]  # noqa: B018 — does the path still exist after earlier mutations?
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, dict | list):
            continue  # an earlier mutation put a scalar here
        action = draw(st.sampled_from(["replace", "replace", "delete", "unknown-key"]))
        if action == "replace":
            parent[last] = draw(st.one_of(scalars, leaves, documents))
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(scalars)
        else:
            parent.append(draw(documents))
    return doc


ENV_NAMES = sorted({o.env for o in OPTIONS} | {a for o in OPTIONS for a in o.env_aliases}
                   | {o.env_name for o in CONNECTION_OPTIONS})
env_names = st.one_of(
    st.sampled_from(ENV_NAMES),
    st.from_regex(r"MILVUS_PROBE_[A-Z0-9_]{0,12}", fullmatch=True),
    st.from_regex(r"MILVUS_[A-Z0-9_]{1,12}", fullmatch=True),
    st.sampled_from(["POD_NAME", "POD_NAMESPACE", "HOSTNAME", "KUBECONFIG"]),
)
env_values = st.one_of(st.sampled_from(INTERESTING_STRINGS), os_text)

SWITCHES = {o.flag for o in OPTIONS if o.switch} | {o.flag for o in CONNECTION_OPTIONS
                                                   if o.is_flag}
VALUE_FLAGS = sorted({o.flag for o in OPTIONS if not o.switch}
                     | {o.flag for o in CONNECTION_OPTIONS if not o.is_flag})


@st.composite
def flag_lists(draw: st.DrawFn, scratch: Path) -> list[str]:
    paths = [str(scratch / "readable.pem"), str(scratch / "token"), str(scratch / "a-directory"),
             str(scratch / "missing.yaml")]
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["value", "value", "switch", "equals", "unknown", "stray"]))
        if kind == "switch":
            argv.append(draw(st.sampled_from(sorted(SWITCHES))))
            if draw(st.booleans()):
                argv.append(draw(st.sampled_from(["true", "false", "1", "no", "maybe", "auto"])))
        elif kind in ("value", "equals"):
            flag = draw(st.sampled_from(VALUE_FLAGS))
            value = draw(st.one_of(env_values, st.sampled_from(paths)))
            if flag == "--token":
                value = TOKEN
            elif flag == "--password":
                value = PASSWORD
            argv += [f"{flag}={value}"] if kind == "equals" else [flag, value]
        elif kind == "unknown":
            argv.append(draw(st.from_regex(r"--[a-z][a-z.-]{0,15}", fullmatch=True)))
        else:
            argv.append(draw(os_text))
    return argv


# --------------------------------------------------------------------------- properties


@CONFIG_SETTINGS
@given(document=documents)
def test_random_yaml_documents(scratch: Path, document: Any) -> None:
    config_file = write_config(scratch, to_yaml(document))
    code, out, err = run_config_check(["--config.file", config_file], {})
    assert_config_answer(code, out, err, config_file)


@CONFIG_SETTINGS
@given(text=st.one_of(any_text, st.text(alphabet="{}[]:-,&*!|>'\"#%@ \n\tabc19", max_size=80)))
def test_random_yaml_text(scratch: Path, text: str) -> None:
    config_file = write_config(scratch, text)
    code, out, err = run_config_check(["--config.file", config_file], {})
    assert_config_answer(code, out, err, config_file)


@CONFIG_SETTINGS
@given(document=mutated_configs())
def test_mutations_of_a_valid_config(scratch: Path, document: dict[str, Any]) -> None:
    config_file = write_config(scratch, to_yaml(document))
    code, out, err = run_config_check(["--config.file", config_file], {})
    assert_config_answer(code, out, err, config_file)


def test_the_unmutated_config_is_valid(scratch: Path) -> None:
    """The mutations start from a configuration that passes, so each one is what breaks it."""
    config_file = write_config(scratch, to_yaml(VALID))
    code, out, err = run_config_check(["--config.file", config_file], {})
    assert (code, err) == (0, ""), err
    assert out.startswith("configuration OK: 3 target(s)")


@CONFIG_SETTINGS
@given(environ=st.dictionaries(env_names, env_values, max_size=6),
       with_secrets=st.booleans())
def test_random_environment(scratch: Path, environ: dict[str, str], with_secrets: bool) -> None:
    environ = dict(environ)
    if environ.get("MILVUS_TOKEN"):
        environ["MILVUS_TOKEN"] = TOKEN
    if environ.get("MILVUS_PROBE_PASSWORD"):
        environ["MILVUS_PROBE_PASSWORD"] = PASSWORD
    if with_secrets and "MILVUS_PROBE_USER" in environ:
        environ["MILVUS_PROBE_PASSWORD"] = PASSWORD
    elif with_secrets:
        environ["MILVUS_TOKEN"] = TOKEN
    config_file = environ.get("MILVUS_PROBE_CONFIG_FILE")
    code, out, err = run_config_check([], environ)
    assert_config_answer(code, out, err, config_file)


@CONFIG_SETTINGS
@given(data=st.data())
def test_random_flag_combinations(scratch: Path, data: st.DataObject) -> None:
    argv = data.draw(flag_lists(scratch))
    environ = data.draw(st.dictionaries(env_names, env_values, max_size=3))
    config_file = None
    for index, arg in enumerate(argv):
        if arg == "--config.file" and index + 1 < len(argv):
            config_file = argv[index + 1]
        elif arg.startswith("--config.file="):
            config_file = arg.split("=", 1)[1]
    code, out, err = run_config_check(argv, environ)
    assert_config_answer(code, out, err, config_file or environ.get("MILVUS_PROBE_CONFIG_FILE"))


@CONFIG_SETTINGS
@given(host=st.one_of(st.sampled_from(["milvus", "a b", "a\nb", " ", "a\x00b", "ünï.example",
                                       "x" * 300]), os_text),
       db_name=st.one_of(st.sampled_from(["", "analytics", "db_1", "x\ny", "é", "a b"]),
                         os_text))
def test_accepted_targets_can_be_dialled(host: str, db_name: str) -> None:
    """What validation lets through, a cycle can send: the host has no blanks or control
    characters, and the database name is a valid gRPC metadata value (printable ASCII),
    or Milvus gets `INTERNAL: Invalid metadata` on every cycle."""
    try:
        config = load(Sources(flags={"host": host, "db_name": db_name}, environ={}))
    except ConfigError:
        return
    (target,) = config.targets
    note(f"accepted host={target.host!r} db_name={target.db_name!r}")
    assert not re.search(r"[\s\x00-\x1f\x7f]", target.host), "an undiallable host was accepted"
    assert re.fullmatch(r"[\x20-\x7e]*", target.db_name), \
        "a database name gRPC cannot send was accepted"


# --------------------------------------------------------------------------- found by fuzzing

FOUND_CONFIG_INPUTS: dict[str, tuple[str | None, list[str], dict[str, str]]] = {
    # (file content, flags, environment)
    # YAML ints over Python's 4,300-digit limit raise ValueError inside yaml.safe_load.
    "yaml-int-over-4300-digits": ("probe:\n  history: " + "9" * 5000 + "\n", [], {}),
    # parse_duration(int) does float(value): OverflowError beyond ~1.8e308.
    "yaml-duration-beyond-float": ("probe:\n  interval: " + "9" * 400 + "\n", [], {}),
    # PyYAML's composer recurses per nesting level: RecursionError.
    "yaml-nested-1000-deep": ("targets: " + "[" * 1000 + "]" * 1000 + "\n", [], {}),
    # open() raises ValueError, not OSError, for a path with NUL.
    "nul-in-token-file": ('targets:\n  - uri: h:1\n    token_file: "/tmp/a\\0b"\n', [], {}),
    "nul-in-server-pem-path": ('targets:\n  - uri: h:1\n    server_pem_path: "/tmp/a\\0b"\n',
                               [], {}),
    # int() of a 5,000-digit shard total, outside issues.parse.
    "shard-total-over-4300-digits": (None, [
        "--discovery.kubernetes.enabled", "--discovery.kubernetes.service", "milvus",
        "--discovery.shard", "0/" + "9" * 5000], {}),
    # The duplicate-alias check looks at the raw value, not the alias it becomes: `alias:
    # 1` twice, or `alias: null` / `alias: ""` beside a target without one, all pass.
    "duplicate-numeric-alias": ("targets:\n  - {alias: 1, uri: 'a:1'}\n"
                                "  - {alias: 1, uri: 'b:1'}\n", [], {}),
    "duplicate-null-alias": ("targets:\n  - {alias: null, uri: 'a:1'}\n"
                             "  - {uri: 'b:1'}\n", [], {}),
    "duplicate-empty-alias": ("targets:\n  - {alias: '', uri: 'a:1'}\n"
                              "  - {uri: 'b:1'}\n", [], {}),
    # A YAML reader error (a control character) is reported over two lines.
    "yaml-control-character": ("probe: {}\n\x08\n", [], {}),
    # A path is echoed raw: its newline splits the problem over two lines.
    "newline-in-a-path": (None, [], {"MILVUS_PROBE_PASSWORD_FILE": "10s\n"}),
    # Hosts are not validated: a newline is accepted, and splits the listing.
    "newline-in-a-host": (None, ["--host", "milvus\n  alias=forged target=x:1 "], {}),
}


@pytest.mark.parametrize("name", sorted(FOUND_CONFIG_INPUTS))
def test_config_inputs_the_fuzzer_found(scratch: Path, name: str) -> None:
    """The shrunk inputs of every configuration failure found, kept as regressions."""
    text, argv, environ = FOUND_CONFIG_INPUTS[name]
    config_file = None
    if text is not None:
        config_file = write_config(scratch, text)
        argv = ["--config.file", config_file, *argv]
    code, out, err = run_config_check(argv, dict(environ))
    assert_config_answer(code, out, err, config_file)


# =========================================================================== HTTP router

ROUTER_SETTINGS = settings(
    max_examples=1500,
    deadline=None,
    database=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UNICODE_ALIAS = "ünï/cödé"
HEALTHZ_BUDGET = 0.100
"""Seconds /healthz may take between two fuzz requests: the issue's requirement."""


@pytest.fixture(scope="module")
def router_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One daemon for the whole fuzz run: a healthy target, a refused one, a unicode alias."""
    double = MilvusDouble()
    config = tmp_path_factory.mktemp("fuzz-router") / "probe.yaml"
    config.write_text(yaml.safe_dump({
        "probe": {"interval": "200ms", "timeout": "150ms"},
        "targets": [{"alias": "ok", "uri": double.address},
                    {"alias": "down", "uri": f"127.0.0.1:{free_port()}"},
                    {"alias": UNICODE_ALIAS, "uri": double.address}],
    }, allow_unicode=True))
    sources = Sources(flags={"config.file": str(config), "web.listen-address": "127.0.0.1:0",
                             "profiling.max-seconds": "1"}, environ={})
    app = App(load(sources), load_config=lambda: load(sources))
    app.start()
    try:
        yield app
    finally:
        app.stop()
        double.stop()


def request_threads() -> int:
    """Threads the HTTP server started for requests (ThreadingMixIn names them so)."""
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, str]:
    """Send raw bytes on a fresh connection; read until the server closes it.

    Returns the bytes received and what ended the exchange ("eof" or the error).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        ended = "eof"
        try:
            sock.sendall(request)
        except OSError as exc:  # the server may answer (and hang up) before reading it all
            ended = f"send: {exc!r}"
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                ended = f"recv: {exc!r}"
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks), ended


def healthz_latency(port: int) -> tuple[int, float]:
    began = time.perf_counter()
    response, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n", timeout=5)
    took = time.perf_counter() - began
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return (int(match.group(1)) if match else 0), took


# --------------------------------------------------------------------------- requests

token_chars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
methods = st.one_of(
    st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                     "TRACE", "CONNECT", "get", "head", "post", "BREW", "M-SEARCH"]),
    st.text(alphabet=token_chars + "\x00\x7f\xff\x01é", min_size=1, max_size=12),
)
ROUTES = ["/", "/metrics", "/healthz", "/livez", "/readyz", "/readyz/", "/readyz/ok",
          "/readyz/down", "/readyz/" + "%C3%BCn%C3%AF%2Fc%C3%B6d%C3%A9", "/readyz/ünï/cödé",
          "/probe", "/-/reload", "/debug/pprof", "/debug/pprof/", "/debug/pprof/goroutine",
          "/debug/pprof/threadcreate", "/debug/pprof/cmdline", "/debug/pprof/nope",
          "//healthz", "/healthz/", "/metrics/", "/favicon.ico", "*", "http://x/healthz"]
LONG_PROFILES = ("profile", "heap", "allocs", "flamegraph")
"""pprof endpoints that run for seconds by design; the fuzz leaves them out."""
PERCENT = ["%ff", "%00", "%FF%FE", "%zz", "%", "%4", "%e2%82", "%c3%28", "%ed%a0%80", "%2F",
           "%25", "%C3%BC", "%0d%0a", "%20", "%7f", "%c0%af"]
segment = st.lists(
    st.one_of(st.sampled_from(PERCENT), st.text(alphabet=token_chars + "é名\x7f:;@=,", max_size=6),
              st.sampled_from(["..", ".", "readyz", "debug", "pprof", "probe", "metrics"])),
    max_size=5,
).map("".join)
paths = st.one_of(
    st.sampled_from(ROUTES),
    st.tuples(st.sampled_from(ROUTES), segment).map(lambda p: p[0] + p[1]),
    st.lists(segment, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
).filter(lambda p: not any(f"pprof/{name}" in p for name in LONG_PROFILES))
QUERY_KEYS = ["alias", "format", "verbose", "exclude", "debug", "name[]", "x", "alias%00",
              "%ff", "", "seconds", "hz", "mode"]
query_values = st.one_of(
    st.sampled_from(["ok", "down", "nope", "", "json", "text", "xml", "0", "1", "2", "3",
                     "-1", "%ff", "%00", "%C3%BCn%C3%AF%2Fc%C3%B6d%C3%A9", "a+b", "%", "=",
                     "milvus_probe_targets", "9" * 50]),
    st.lists(st.sampled_from(PERCENT + ["a", "1", "&", "=", ";"]), max_size=4).map("".join),
)
queries = st.one_of(
    st.just(""),
    st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.booleans(), query_values),
             max_size=5).map(lambda pairs: "?" + "&".join(
                 k + ("=" + v if has_value else "") for k, has_value, v in pairs)),
    st.sampled_from(["?", "?&", "?==", "?" + "&".join(f"k{i}=v" for i in range(40)), "?\xff"]),
)
ACCEPTS = ["*/*", "application/json", "text/plain", "text/html",
           "application/openmetrics-text", "application/openmetrics-text; version=1.0.0",
           "application/openmetrics-text; version=0.0.1", "application/openmetrics-text; version=",
           "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
           "text/plain; version=0.0.4", "text/plain;version=1.0.0;escaping=values",
           "application/openmetrics-text;q=0.5, text/plain;q=0.1", ";;;,,,", "\xff\xfe"]
accepts = st.one_of(
    st.sampled_from(ACCEPTS),
    st.lists(st.tuples(st.sampled_from(["application/openmetrics-text", "text/plain",
                                        "application/json", "*/*", ""]),
                       st.lists(st.tuples(st.sampled_from(["version", "escaping", "q", "charset",
                                                          ""]),
                                          st.sampled_from(["1.0.0", "0.0.4", "1", "2.0",
                                                           "x", "", "1.0.x", "allow-utf-8",
                                                           "values", "0.5"])), max_size=3)),
             min_size=1, max_size=3).map(lambda types: ", ".join(
                 media + "".join(f"; {k}={v}" for k, v in params) for media, params in types)),
)
header_names = st.one_of(
    st.sampled_from(["Host", "Accept", "Accept-Encoding", "Content-Length", "Content-Type",
                     "Transfer-Encoding", "Connection", "Expect", "User-Agent", "Cookie",
                     "Authorization", "Range", "X-Forwarded-For", "If-None-Match"]),
    st.text(alphabet=token_chars, min_size=1, max_size=20),
)
latin1_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF),
                       max_size=40)
header_values = st.one_of(
    latin1_value,
    st.sampled_from(ACCEPTS),
    st.tuples(st.sampled_from(["application/openmetrics-text", "text/plain"]),
              st.sampled_from(["version", "escaping", "q", "charset"]),
              latin1_value).map(lambda t: f"{t[0]}; {t[1]}={t[2]}"),
    st.sampled_from(["gzip", "gzip, deflate", "identity;q=0", "chunked", "close",
                     "keep-alive", "100-continue", "bytes=0-1", "\x00", "a\rb", ""]),
)
content_lengths = st.one_of(
    st.integers(0, 70_000).map(str),
    st.sampled_from(["-1", " 5", "5 ", "0x10", "1e3", "", "00000000000000000000001",
                     "65536", "65537", "99999999999999999999999", "²", "¹³", "1²", "٣",
                     "9" * 5000]),
    st.text(alphabet="0123456789²³¹ ", min_size=1, max_size=6),
)


class Request:
    """A raw request. Not a dataclass: Hypothesis prints dataclasses field by field."""

    def __init__(self, method: str, path: str, raw: bytes) -> None:
        self.method, self.path, self.raw = method, path, raw

    def __repr__(self) -> str:
        # Runs of one byte (the oversized header, the body) shown by their length, so a
        # failing example prints in a few lines.
        shown = re.sub(rb"(.)\1{63,}", lambda m: b"<%d x %r>" % (len(m.group(0)), m.group(1)),
                       self.raw, flags=re.S)
        return f"Request({shown[:3000]!r}, {len(self.raw)} bytes)"


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A raw HTTP/1.x request."""
    method = draw(methods)
    path = draw(paths) + draw(queries)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    headers: list[tuple[str, str]] = []
    # The headers the router and the metrics app read themselves, drawn often.
    # (Each optional part is drawn so that shrinking leaves it out.)
    if draw(st.integers(0, 2)) == 2:
        headers.append(("Content-Length", draw(content_lengths)))
    if draw(st.integers(0, 2)) == 2:
        headers.append(("Accept", draw(accepts)))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(header_names)
        value = draw(content_lengths if name == "Content-Length" else header_values)
        headers.append((name, value))
    flood = draw(st.sampled_from([0, 0, 0, 0, 99, 101, 150]))
    headers += [(f"X-Flood-{i}", "y") for i in range(flood)]
    if draw(st.integers(0, 9)) == 9:  # an oversized header line, around the 64 KiB limit
        headers.append(("X-Big", "b" * draw(st.sampled_from([60_000, 65_000, 65_600, 70_000]))))
    body = b""
    if draw(st.integers(0, 4)) == 4:
        size = draw(st.sampled_from([0, 1, 100, 65_536, 65_537, 70_000]))
        body = b"z" * size
        if draw(st.booleans()):
            headers.append(("Content-Length", str(size)))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return Request(method, path, head.encode("latin-1", "replace") + b"\r\n" + body)


def parse_response(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
    assert match, f"not an HTTP status line: {lines[0][:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


@ROUTER_SETTINGS
@given(request=requests())
def test_router_answers_every_request(router_daemon: App, request: Request) -> None:
    method, path = request.method, request.path
    port = router_daemon.port
    response, ended = exchange(port, request.raw)
    note(f"response: {response[:600]!r} ({ended})")
    assert response, f"no answer at all ({ended})"
    status, headers, body = parse_response(response)
    assert status < 500 or (status == 503 and path.startswith("/readyz")), \
        f"{status} for {method} {path[:200]!r}: {body[:300]!r}"
    assert status >= 200, status
    if method.upper() != "HEAD":
        assert body, f"{status} without a body"
    if status == 405:
        assert headers.get("allow"), "405 without Allow"

    # The server is alive and its liveness endpoint fast, and no request thread lingers.
    status, took = healthz_latency(port)
    assert status == 200
    assert took < HEALTHZ_BUDGET, f"/healthz took {took * 1000:.1f} ms after that request"
    wait_until(lambda: request_threads() == 0, 5, "the request threads to end")


FOUND_REQUESTS = {
    # str.isdigit() is true for superscripts (latin-1 ¹²³), int() refuses them.
    "content-length-superscript": b"GET /healthz HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",
    # ...and int() refuses more than 4,300 digits.
    "content-length-5000-digits": b"GET /healthz HTTP/1.1\r\nContent-Length: "
                                  + b"9" * 5000 + b"\r\n\r\n",
    # prometheus_client compares a non-numeric version with a tuple of ints: TypeError.
    "openmetrics-version-not-a-number": b"GET /metrics HTTP/1.1\r\n"
                                        b"Accept: application/openmetrics-text; version=x\r\n\r\n",
    "text-plain-version-not-a-number": b"GET /metrics HTTP/1.1\r\n"
                                       b"Accept: text/plain; version=a.b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(FOUND_REQUESTS))
def test_requests_the_fuzzer_found(router_daemon: App, name: str) -> None:
    response, ended = exchange(router_daemon.port, FOUND_REQUESTS[name])
    status, _, body = parse_response(response)
    assert 200 <= status < 500, f"{status}: {body[:200]!r}"
    assert body


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/"])
def test_head_advertises_the_length_of_get(router_daemon: App, path: str) -> None:
    """HEAD's Content-Length is what GET would send (RFC 9110 §9.3.2), or absent — never 0.

    Every GET here has a body, so a HEAD that says `Content-Length: 0` describes a
    different representation.
    """
    get = parse_response(exchange(router_daemon.port,
                                  f"GET {path} HTTP/1.1\r\n\r\n".encode())[0])
    head = parse_response(exchange(router_daemon.port,
                                   f"HEAD {path} HTTP/1.1\r\n\r\n".encode())[0])
    assert get[0] == head[0] and get[2], (get[0], head[0])
    assert head[2] == b""
    if "content-length" in head[1]:
        assert int(head[1]["content-length"]) > 0, f"HEAD {path}: Content-Length 0"
