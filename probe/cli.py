"""`milvus-probe serve` (the daemon) and `milvus-probe check` (one cycle, then exit)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

import probe
from probe import logs
from probe.config import (
    CANARY_OPTIONS,
    CONNECTION_OPTIONS,
    OPTIONS,
    OPTIONS_BY_KEY,
    Config,
    ConfigError,
    Sources,
    describe,
    format_duration,
    load,
)
from probe.result import FailureReason, ProbeResult

logger = logging.getLogger("probe")

# Exit codes of `check`, as grpc-health-probe's.
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_CONNECTION = 2
EXIT_RPC = 3
EXIT_UNHEALTHY = 4

_GROUPS = {
    "web": "Management server",
    "config": "Configuration",
    "probe": "Probing",
    "readiness": "Readiness (/readyz)",
    "history": "History (status pages, /api/v1)",
    "log": "Logging",
    "profiling": "Profiling (/debug/pprof/)",
    "discovery": "Kubernetes (discovery, sharding, events)",
}

SERVE_EPILOG = """\
Settings come from defaults < the YAML file < environment < flags. Durations take
500ms, 10s, 1m, 1h or plain seconds. Every flag has an environment variable
(shown with it); MILVUS_URI, MILVUS_TOKEN, MILVUS_CONN_ALIAS and MILVUS_CONN_TIMEOUT
are read as pymilvus reads them.

examples:
  # probe a local Milvus, serve metrics on :9091
  milvus-probe serve --uri http://localhost:19530

  # TLS with a token from a mounted Secret, on another port (e.g. as a sidecar)
  milvus-probe serve --uri https://milvus.example.com:19530 \\
      --token-file /etc/milvus-probe/token --web.listen-address :9191

  # several targets from a file; check it first
  milvus-probe serve --config.file probe.yaml --config.check
  milvus-probe serve --config.file probe.yaml --readiness.policy all

endpoints: /metrics /healthz /livez /readyz /readyz/<alias> /probe?alias=<alias>
           / (status page) /targets/<alias> /api/v1/targets POST /-/reload
           /debug/pprof/ /debug/bundle?seconds=N (loopback only, unless allowed)
"""

CHECK_EPILOG = """\
exit codes (as grpc-health-probe):
  0  Milvus answered and is healthy
  1  bad arguments or configuration
  2  connection failed (dns, refused, timeout, tls, unavailable)
  3  RPC failed (unauthenticated, permission_denied, db_not_found, not_ready,
     unimplemented, collection_missing, not_loaded, rate_limited, quota_exceeded, error)
  4  Milvus answered but reports it is unhealthy, or the canary got a wrong answer
     (wrong_result)

-v and --db-name also call Milvus Connect, which registers a client in the proxy for
24 h: for frequent exec probes prefer the daemon's /readyz/<alias>.

examples:
  milvus-probe check                                  # 127.0.0.1:19530
  milvus-probe check --uri https://milvus:443 --token-file /secrets/token -v
  milvus-probe check -h milvus.ns.svc -p 19530 --output json
"""


class _Parser(argparse.ArgumentParser):
    """Bad arguments exit 1 (as `check`'s exit codes promise), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _describe_default(value: Any) -> str:
    if isinstance(value, tuple):
        host, port = value
        return f"{host}:{port}"
    if isinstance(value, float):
        return format_duration(value)
    return str(value)


def _add_options(parser: argparse.ArgumentParser) -> None:
    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    for option in OPTIONS:
        envs = " or ".join((option.env, *option.env_aliases))
        default = "" if option.default is None else f"; default {_describe_default(option.default)}"
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if option.switch else {}
        groups[option.group].add_argument(
            option.flag,
            dest=f"opt:{option.key}",
            metavar=option.metavar,
            default=argparse.SUPPRESS,
            help=f"{option.help} (env {envs}{default})",
            **extra,
        )


def _add_connection(parser: argparse.ArgumentParser, *, short: bool) -> None:
    group = parser.add_argument_group(
        "Milvus connection (one target, as pymilvus connections.connect)"
    )
    shorts = {"host": "-h", "port": "-p", "alias": "-a"} if short else {}
    for option in CONNECTION_OPTIONS:
        flags = [f for f in (shorts.get(option.name), option.flag) if f]
        kwargs: dict[str, Any] = {
            "dest": f"conn:{option.name}",
            "default": argparse.SUPPRESS,
            "help": f"{option.help} (env {option.env_name})",
        }
        if option.is_flag:
            kwargs["action"] = "store_const"
            kwargs["const"] = True
        else:
            kwargs["metavar"] = option.name.upper()
        group.add_argument(*flags, **kwargs)


def _add_canary(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Data-plane canary (the flag target; a config file target has a `canary:` block)"
    )
    for option in CANARY_OPTIONS:
        group.add_argument(
            option.flag,
            dest=f"conn:{option.key}",
            metavar=option.metavar,
            default=argparse.SUPPRESS,
            help=f"{option.help} (env {option.env_name})",
        )


CANARY_EPILOG = """\
Sets the canary's collection up once (create, insert the known rows, FLAT index, load),
so the daemon can run with `create: false` and a user that may only search, query and
(with write: true) upsert. Changes nothing that is already right; never drops anything.

examples:
  milvus-probe canary init --uri http://milvus:19530 --token-file /secrets/admin-token
  milvus-probe canary init --config.file probe.yaml --alias prod
"""


BUNDLE_EPILOG = """\
Fetches GET /debug/bundle?seconds=N from a running daemon: a .tar.gz of its version,
redacted configuration, readiness, metrics, targets, 24 h history, recent traces, logs
and Events, a thread dump, a heap summary and a CPU profile of N seconds. The daemon
serves it to loopback peers only (use kubectl port-forward) unless started with
--profiling.allow-remote, and not at all with --profiling.enabled=false.

A port secured by --web.config.file: give https:// and the CA that signed its
certificate (--cacert), a client certificate if it asks for one (--cert, --key), and
basic-auth credentials (--user, with the password in MILVUS_PROBE_WEB_PASSWORD or
--password-file).

exit codes:
  0  the bundle was written
  1  bad arguments, or the file could not be written
  2  the daemon could not be reached (refused, unknown host, timeout)
  3  the daemon refused: not allowed from here (403), profiling off (404), busy (429)

examples:
  kubectl -n milvus port-forward deploy/milvus-probe 9091 &
  milvus-probe bundle                                 # http://localhost:9091, 10 s profile
  milvus-probe bundle --url http://localhost:9191 --seconds 30 -o /tmp/probe.tar.gz
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="milvus-probe",
        description="Opens a fresh gRPC connection to Milvus, proves it can talk, measures "
        "every step and closes it; exports what it saw to Prometheus and Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"milvus-probe {probe.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Probe every target on its interval and serve metrics, health and status.",
        epilog=SERVE_EPILOG,
    )
    serve.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print it, and exit (0 valid, 1 invalid)",
    )
    _add_options(serve)
    _add_connection(serve, short=False)
    _add_canary(serve)

    check = commands.add_parser(
        "check",
        help="probe once and exit with a status code (for exec probes and humans)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        description="Run one probe cycle and exit 0 if Milvus answered and is healthy.",
        epilog=CHECK_EPILOG,
    )
    check.add_argument("--help", action="help", help="show this help and exit")
    check.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every phase and the server info (calls Connect)",
    )
    check.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (default) or one JSON object",
    )
    check.add_argument(
        "--timeout",
        dest="opt:probe.timeout",
        metavar="DURATION",
        default=argparse.SUPPRESS,
        help="time the whole check may take (env MILVUS_CONN_TIMEOUT; default 5s)",
    )
    check.add_argument(
        "--rpc",
        dest="opt:probe.rpc",
        metavar="RPC",
        default=argparse.SUPPRESS,
        help="check_health (default) or get_version",
    )
    check.add_argument(
        "--config.file",
        dest="opt:config.file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="take the target (by --alias) from this config file",
    )
    _add_connection(check, short=True)
    _add_canary(check)

    canary = commands.add_parser(
        "canary",
        help="the data-plane canary's collection: `canary init` sets it up once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Manage the data-plane canary's collection.",
        epilog=CANARY_EPILOG,
    )
    canary.add_argument("action", choices=("init",), help="init: set the collection up once")
    canary.add_argument(
        "--config.file",
        dest="opt:config.file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="take the target (by --alias) and its canary block from this config file",
    )
    canary.add_argument(
        "--timeout",
        dest="opt:probe.timeout",
        metavar="DURATION",
        default=argparse.SUPPRESS,
        help="time to wait for a connection (default 5s); the setup itself has "
        "--canary.setup-timeout",
    )
    _add_connection(canary, short=False)
    _add_canary(canary)

    bundle = commands.add_parser(
        "bundle",
        help="download a diagnostics bundle (.tar.gz) from a running daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the diagnostics bundle of a running milvus-probe.",
        epilog=BUNDLE_EPILOG,
    )
    bundle.add_argument(
        "--url",
        default="http://localhost:9091",
        help="the daemon's management port (default http://localhost:9091)",
    )
    bundle.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it (default: the name the daemon gives, in this directory)",
    )
    bundle.add_argument(
        "--seconds",
        type=int,
        default=10,
        metavar="N",
        help="length of the CPU profile in the bundle (default 10; the daemon allows at "
        "most --profiling.max-seconds)",
    )
    _add_port_client(bundle)
    return parser


def _add_port_client(parser: argparse.ArgumentParser) -> None:
    """How a client of the management port gets past its web config (as curl names it)."""
    group = parser.add_argument_group("a port secured by --web.config.file")
    group.add_argument("--cacert", metavar="FILE", help="CA that signed the port's certificate")
    group.add_argument(
        "-k", "--insecure", action="store_true", help="don't verify the port's certificate"
    )
    group.add_argument("--cert", metavar="FILE", help="client certificate (PEM)")
    group.add_argument("--key", metavar="FILE", help="its key (PEM; default: in --cert)")
    group.add_argument("-u", "--user", metavar="USER", help="basic-auth user")
    group.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the basic-auth password (or MILVUS_PROBE_WEB_PASSWORD)",
    )


@dataclass(frozen=True)
class PortClient:
    """What a CLI client presents to the management port."""

    cacert: str | None = None
    insecure: bool = False
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: dict[str, str]) -> PortClient:
        """From the flags; ValueError naming the flag whose file can't be read."""
        password = environ.get("MILVUS_PROBE_WEB_PASSWORD")
        if args.password_file:
            try:
                with open(args.password_file, encoding="utf-8") as fh:
                    password = fh.read().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(
                    f"--password-file: cannot read {args.password_file}: {exc.strerror}"
                ) from None
        if password is not None and not args.user:
            raise ValueError("a password is given (--password-file or "
                             "MILVUS_PROBE_WEB_PASSWORD) but no --user")
        return cls(args.cacert, args.insecure, args.cert, args.key, args.user, password)

    def opener(self) -> Any:
        """A urllib opener: no proxy (the port is reached directly), this TLS, these
        credentials; ValueError naming the flag whose file is bad."""
        import base64
        import ssl
        import urllib.request

        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if self.cacert or self.insecure or self.cert:
            try:
                context = ssl.create_default_context(cafile=self.cacert)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"--cacert: cannot load {self.cacert}: {exc}") from None
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.cert:
                try:
                    context.load_cert_chain(self.cert, self.key)
                except (OSError, ssl.SSLError) as exc:
                    raise ValueError(f"--cert/--key: cannot load {self.cert}: {exc}") from None
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        if self.user:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            opener.addheaders = [*opener.addheaders, ("Authorization", f"Basic {token}")]
        return opener


def sources_from(namespace: argparse.Namespace, environ: dict[str, str]) -> Sources:
    flags: dict[str, Any] = {}
    for dest, value in vars(namespace).items():
        if dest.startswith("opt:"):
            flags[dest[4:]] = value
        elif dest.startswith("conn:"):
            flags[dest[5:]] = value
    return Sources(flags=flags, environ=environ)


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    env = dict(os.environ) if environ is None else environ
    if args.command in ("serve", "check", "canary"):
        from probe.milvus import grpcio

        try:
            grpcio.check()
        except grpcio.GrpcioMismatch as exc:
            print(f"milvus-probe: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.command == "serve":
        return serve(args, env)
    if args.command == "check":
        return check(args, env, sys.stdout)
    if args.command == "canary":
        return canary_init(args, env, sys.stdout)
    if args.command == "bundle":
        try:
            client = PortClient.from_args(args, env)
        except ValueError as exc:
            print(f"milvus-probe: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return fetch_bundle(
            args.url, args.output, args.seconds, sys.stdout, sys.stderr, client
        )
    parser.print_help(sys.stderr)
    return EXIT_BAD_INPUT


def _print_config_error(exc: ConfigError, stream: TextIO) -> None:
    count = len(exc.issues)
    print(
        f"milvus-probe: invalid configuration ({count} problem{'s' * (count != 1)}):", file=stream
    )
    for issue in exc.issues:
        print(f"  {issue}", file=stream)


def serve(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from probe.app import App
    from probe.web import ListenError

    sources = sources_from(args, environ)

    def load_config() -> Config:
        return load(sources)

    try:
        config = load_config()
    except ConfigError as exc:
        _print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    if args.config_check:
        if config.web.config_file:
            from probe.web.security import load_security

            try:
                load_security(config.web.config_file)
            except ConfigError as exc:
                _print_config_error(exc, sys.stderr)
                return EXIT_BAD_INPUT
        print(f"configuration OK: {len(config.targets)} target(s)")
        for line in describe(config):
            print(f"  {line}")
        return EXIT_OK

    logs.setup(config.log_level, config.log_format.value)
    # Signals are taken synchronously by the main thread (sigwait) rather than by
    # handlers that could interrupt it while it holds a lock; threads started after
    # this inherit the mask and never see them.
    handled = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        app = App(config, load_config=load_config)
    except ListenError as exc:
        logger.error("cannot start", extra=logs.fields(error=exc.strerror))
        return EXIT_BAD_INPUT
    except ConfigError as exc:  # the web config file
        _print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # KubeConfigError; imported lazily with kubernetes itself
        if type(exc).__name__ != "KubeConfigError":
            raise
        logger.error("cannot start", extra=logs.fields(error=str(exc)))
        return EXIT_BAD_INPUT
    app.start()
    try:
        while True:
            received = signal.sigwait(handled)
            if received == signal.SIGHUP:
                logger.info("SIGHUP: reloading the configuration")
                app.reload()
                continue
            logger.info("shutting down", extra=logs.fields(signal=signal.Signals(received).name))
            break
    finally:
        app.stop()
    return EXIT_OK


def exit_code(result: ProbeResult) -> int:
    if result.success:
        return EXIT_OK
    assert result.reason is not None
    if result.reason in (FailureReason.UNHEALTHY, FailureReason.WRONG_RESULT):
        return EXIT_UNHEALTHY
    if result.reason.is_connection_failure:
        return EXIT_CONNECTION
    return EXIT_RPC


def _one_target(args: argparse.Namespace, environ: dict[str, str]) -> Any:
    """The one target `check` and `canary init` work on, or the exit code of bad input."""
    sources = sources_from(args, environ)
    flags = dict(sources.flags)
    given = set(flags) | {o.name for o in CONNECTION_OPTIONS if environ.get(o.env_name)}
    if (
        not given & {"uri", "host"}
        and "config.file" not in flags
        and not environ.get(OPTIONS_BY_KEY["config.file"].env)
    ):
        flags["host"] = "127.0.0.1"  # the Milvus CLI's default
    # One cycle has no interval; keep the daemon's "timeout < interval" rule out of the way.
    flags.setdefault("probe.interval", "24h")
    try:
        config = load(Sources(flags=flags, environ=environ))
    except ConfigError as exc:
        _print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    target = _pick_target(config, flags.get("alias") or environ.get("MILVUS_CONN_ALIAS"))
    if isinstance(target, str):
        print(f"milvus-probe: {target}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return target


def check(args: argparse.Namespace, environ: dict[str, str], out: TextIO) -> int:
    from probe.milvus.channel import warm_up
    from probe.probers import InfoMode, Probers
    from probe.probers.canary import CanarySetups

    target = _one_target(args, environ)
    if isinstance(target, int):
        return target
    logs.setup("error", "text")
    info = InfoMode.FULL if (args.verbose or target.db_name) else InfoMode.VERSION
    warm_up()
    # One cycle: a canary's setup could not finish before exit; `canary init` does it.
    probers = Probers(max_concurrent=1, canary_setups=CanarySetups(background=False))
    result = probers.run(target, info)
    probers.close()  # a held connection (`--held`) was opened for this one check
    code = exit_code(result)
    if args.output == "json":
        body = result.to_dict()
        body["exit_code"] = code
        print(json.dumps(body, indent=2), file=out)
    elif args.verbose:
        from probe.pages import trace_text

        print(trace_text(result), end="", file=out)
    elif result.success:
        print(
            f"OK {target.alias} {target.address} {result.duration * 1000:.1f}ms "
            f"version={result.version or '-'}",
            file=out,
        )
    else:
        print(
            f"FAIL {target.alias} {target.address} reason={result.reason} "
            f"phase={result.failed_phase}: {result.error}",
            file=out,
        )
    return code


def canary_init(args: argparse.Namespace, environ: dict[str, str], out: TextIO) -> int:
    """`milvus-probe canary init`: set the target's canary collection up once."""
    import dataclasses

    from probe.milvus.channel import warm_up
    from probe.probers.canary import SetupError, footprint_bytes
    from probe.probers.grpc import GrpcProber
    from probe.targets import Canary

    target = _one_target(args, environ)
    if isinstance(target, int):
        return target
    logs.setup("error", "text")
    canary = target.canary or Canary()
    target = dataclasses.replace(target, canary=dataclasses.replace(canary, create=True))
    warm_up()
    try:
        done = GrpcProber().set_up(target)
    except SetupError as exc:
        print(f"FAIL {target.alias} {target.address} canary init: {exc}", file=out)
        return EXIT_RPC
    what = "; ".join(done) or "already set up, nothing to do"
    print(
        f"OK {target.alias} {target.address} collection {canary.collection!r} "
        f"({canary.rows} rows, dimension {canary.dimension}, "
        f"~{footprint_bytes(canary)} bytes of vectors): {what}",
        file=out,
    )
    return EXIT_OK


def _pick_target(config: Config, alias: str | None) -> Any:
    if alias is not None:
        for target in config.targets:
            if target.alias == alias:
                return target
        return f"no target with alias {alias!r}; targets: " + ", ".join(
            t.alias for t in config.targets
        )
    if len(config.targets) == 1:
        return config.targets[0]
    for target in config.targets:
        if target.alias == "default":
            return target
    return "several targets are configured; choose one with --alias: " + ", ".join(
        t.alias for t in config.targets
    )


# ----------------------------------------------------------------------- bundle

BUNDLE_LIMIT = 256 << 20
"""Largest bundle `milvus-probe bundle` accepts (the daemon's are far smaller)."""


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def _bundle_file_name(disposition: str | None) -> str:
    """The file name from Content-Disposition, made safe; a plain default otherwise."""
    import re

    found = re.search(r'filename="?([^";]+)"?', disposition or "")
    name = os.path.basename(found.group(1)) if found else ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", name):
        return "milvus-probe-bundle.tar.gz"
    return name


def fetch_bundle(
    url: str,
    output: str | None,
    seconds: int,
    out: TextIO,
    err: TextIO,
    client: PortClient | None = None,
) -> int:
    """`milvus-probe bundle`: GET /debug/bundle, showing progress; the exit code."""
    import threading
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    if not 1 <= seconds <= 3600:
        print(f"milvus-probe: --seconds must be from 1 to 3600, got {seconds}", file=err)
        return EXIT_BAD_INPUT
    base = url if "://" in url else f"http://{url}"
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print(f"milvus-probe: --url must be http://HOST:PORT, got {url!r}", file=err)
        return EXIT_BAD_INPUT
    address = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/debug/bundle"
    # The management port is reached directly (often through a port-forward), never
    # through a proxy from the environment.
    try:
        opener = (client or PortClient()).opener()
    except ValueError as exc:
        print(f"milvus-probe: {exc}", file=err)
        return EXIT_BAD_INPUT
    answer: dict[str, Any] = {}

    def fetch() -> None:
        try:
            with opener.open(f"{address}?seconds={seconds}", timeout=seconds + 60) as response:
                answer["name"] = _bundle_file_name(response.headers.get("Content-Disposition"))
                answer["data"] = response.read(BUNDLE_LIMIT + 1)
        except BaseException as exc:  # handed to the main thread
            answer["error"] = exc

    worker = threading.Thread(target=fetch, name="bundle-fetch", daemon=True)
    began = time.monotonic()
    worker.start()
    tty = err.isatty()
    shown = -1
    while worker.is_alive():
        elapsed = int(time.monotonic() - began)
        if elapsed != shown:
            shown = elapsed
            line = (
                f"collecting: {elapsed}/{seconds} s"
                if elapsed <= seconds
                else f"collecting: {seconds}/{seconds} s, packing the bundle"
            )
            if tty:
                print(f"\r{line}  ", end="", file=err, flush=True)
            elif elapsed <= seconds + 1:  # a line a second, then one saying it packs
                print(line, file=err, flush=True)
        # Wake at the next whole second (a tty's line is redrawn in place anyway).
        worker.join(timeout=max(shown + 1 - (time.monotonic() - began), 0.05))
    if tty and shown >= 0:
        print(file=err)

    error = answer.get("error")
    if isinstance(error, urllib.error.HTTPError):
        body = error.read(4096).decode("utf-8", "replace").strip()
        hint = {
            401: "the port asks for basic auth: give --user and the password "
            "(MILVUS_PROBE_WEB_PASSWORD or --password-file)",
            403: "a client certificate is required (--cert, --key), or the daemon serves "
            "the bundle to loopback peers only: use kubectl port-forward, or start it with "
            "--profiling.allow-remote",
            404: "profiling is off (--profiling.enabled=false), or this daemon is older than "
            "/debug/bundle",
            429: "the daemon is busy with another bundle or profile; retry in "
            f"{error.headers.get('Retry-After', 'a few')} s",
        }.get(error.code, "")
        print(f"milvus-probe: {address} answered {error.code} {error.reason}: {body}", file=err)
        if hint:
            print(f"milvus-probe: {hint}", file=err)
        return EXIT_BAD_INPUT if error.code == 400 else EXIT_RPC
    if isinstance(error, OSError):  # URLError, timeouts
        reason = getattr(error, "reason", error)
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused: is the daemon running there (or the port-forward up)?"
        else:
            why = str(reason)
        print(f"milvus-probe: cannot fetch {address}: {why}", file=err)
        return EXIT_CONNECTION
    if error is not None:
        print(f"milvus-probe: cannot fetch {address}: {type(error).__name__}: {error}", file=err)
        return EXIT_CONNECTION
    data: bytes = answer["data"]
    if len(data) > BUNDLE_LIMIT:
        print(f"milvus-probe: the answer is over {_size(BUNDLE_LIMIT)}; not a bundle", file=err)
        return EXIT_RPC
    if data[:2] != b"\x1f\x8b":
        print(f"milvus-probe: {address} did not answer with a .tar.gz", file=err)
        return EXIT_RPC
    path = output or answer["name"]
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        print(f"milvus-probe: cannot write {path}: {exc.strerror or exc}", file=err)
        return EXIT_BAD_INPUT
    print(f"wrote {os.path.abspath(path)} ({_size(len(data))})", file=out)
    return EXIT_OK
