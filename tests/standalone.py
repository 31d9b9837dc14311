"""The real Milvus standalone server (PyPI `milvus` 2.3.5, Go) in a private network namespace.

The embedded standalone binds 19530, 9091 and a dozen internal ports (etcd, coordinators,
nodes) on every interface, so each instance runs in a network namespace of its own that has
only a loopback interface. Everything that talks to it runs in that namespace too, through
`ip netns exec`: the probe (`python -m probe check|serve`), pymilvus, and the reads of the
probe's HTTP endpoints (`Agent`, a small HTTP client that lives in the namespace).

On the test side: `Netns` (create, run commands in, delete), `Standalone` (start and stop
Milvus in a namespace, read its log), `Agent`, `daemon()` (`probe serve` in the namespace:
a `kit.process.Daemon` with an `ip netns exec` prefix, read through the agent).

Run as a module, this file is what runs *inside* the namespace:

    python -m tests.standalone launch SPEC.json   start Milvus, report its ports and when it
                                                  answers CheckHealth as healthy (JSON lines on
                                                  stdout); stop it when stdin closes or on SIGTERM
    python -m tests.standalone agent              answer HTTP requests read as JSON lines
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from kit.process import Daemon, clean_env

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVICE = "milvus.proto.milvus.MilvusService"

START_TIMEOUT = 90.0
"""Seconds Milvus may take to answer CheckHealth as healthy (a fresh data dir takes ~4 s)."""


class Unavailable(RuntimeError):
    """This machine can't run the end-to-end suite (not root, no `ip`, no netns support)."""


def require_netns() -> None:
    """Raise `Unavailable` with the reason when network namespaces can't be used here."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"network namespaces need Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise Unavailable(
            "the end-to-end suite creates network namespaces (`ip netns add`) and must run "
            f"as root (euid is {os.geteuid()})"
        )
    if shutil.which("ip") is None:
        raise Unavailable("`ip` (iproute2) is not installed: apt-get install -y iproute2")


# --------------------------------------------------------------------------- network namespace


class Netns:
    """A network namespace with only `lo` up. `delete()` ends what still runs in it.

    `etc` files (name → text, e.g. `resolv.conf`) replace /etc's for every command run in
    it: `ip netns exec` bind-mounts /etc/netns/NAME/* over /etc (shared/REFERENCE.md §8).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, prefix: str, etc: dict[str, str] | None = None) -> Netns:
        name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        _ip("netns", "add", name)
        ns = cls(name)
        try:
            if etc:
                ns.etc_dir.mkdir(parents=True)
                for file, text in etc.items():
                    (ns.etc_dir / file).write_text(text)
            _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        except BaseException:
            ns.delete()
            raise
        return ns

    @property
    def etc_dir(self) -> Path:
        return Path("/etc/netns") / self.name

    def new_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket of this process that lives in the namespace (bind it to reach it from
        there): made by a short-lived thread that enters the namespace first, since a
        network namespace is a property of the thread that makes the socket."""
        made: list[socket.socket | BaseException] = []

        def make() -> None:
            try:
                with open(f"/run/netns/{self.name}") as fd:
                    if _libc().setns(fd.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {self.name} failed")
                made.append(socket.socket(family, kind))
            except BaseException as exc:  # handed to the caller's thread
                made.append(exc)

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace; its output is captured as text."""
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=env or clean_env(),
            check=False,
        )

    def python(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the venv's Python in the namespace (`-m probe ...`, `-c ...`)."""
        return self.run(PYTHON, *args, timeout=timeout)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("cwd", REPO)
        kwargs.setdefault("env", clean_env())
        return subprocess.Popen(self.command(*args), **kwargs)

    def pids(self) -> list[int]:
        found = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(p) for p in found.stdout.split()]

    def delete(self) -> None:
        """Kill what is left in the namespace (all of it started by us), then delete it."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        _ip("netns", "delete", self.name)
        shutil.rmtree(self.etc_dir, ignore_errors=True)


_CLONE_NEWNET = 0x40000000


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        command = " ".join(args)
        raise Unavailable(f"`ip {command}` failed ({done.returncode}): {done.stderr.strip()}")


# --------------------------------------------------------------------------- Milvus standalone


@dataclass(frozen=True)
class Spec:
    """How to run one standalone: its `milvus` package settings and how to reach it.

    `settings` are the package's configurable items (its config.yaml.template):
    `authorization_enabled`, `tls_mode` (1 one-way, 2 mutual), `server_pem_path`,
    `server_key_path`, `ca_pem_path`. The rest tells the launcher how to make the
    CheckHealth call that decides the server is up.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass
class Ports:
    proxy: int
    """gRPC, 19530 unless it was busy."""
    web: int
    """Milvus's own management port (/healthz, /metrics), 9091 unless busy."""
    pid: int
    base_dir: Path


class Standalone:
    """Milvus standalone in a namespace: `start()` (fresh data dir every time) and `stop()`."""

    def __init__(self, ns: Netns, spec: Spec, work_dir: Path, bin_cache: Path) -> None:
        self.ns, self.spec, self.work_dir, self.bin_cache = ns, spec, work_dir, bin_cache
        self.ports: Ports | None = None
        self.starts = 0
        self._base: Path | None = None
        self._launcher: subprocess.Popen[bytes] | None = None
        self._launcher_log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        assert self.ports is not None, "Milvus is not running"
        return self.ports.proxy

    @property
    def log_path(self) -> Path:
        """Milvus's stdout, which carries every log line (the launcher's file per start)."""
        assert self.ports is not None, "Milvus was never started"
        return self.ports.base_dir / "logs" / "milvus-stdout.log"

    def log_lines(self, *needles: str) -> list[str]:
        """Lines of Milvus's own log that contain every needle."""
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return [line for line in log if all(n in line for n in needles)]

    def start(self) -> float:
        """Start Milvus on a fresh data dir; return once CheckHealth says healthy.

        Returns the wall-clock time (Unix seconds) of the launcher's first healthy answer.
        """
        assert self._launcher is None, "already running"
        self.starts += 1
        base = self._base = self.work_dir / f"run-{self.starts}"
        base.mkdir(parents=True)
        spec_path = base / "spec.json"
        where = {"base_dir": str(base), "bin_cache": str(self.bin_cache)}
        spec_path.write_text(json.dumps({**asdict(self.spec), **where}))
        self._launcher_log = open(base / "launcher.log", "wb")  # noqa: SIM115 (closed in stop)
        self._launcher = self.ns.popen(
            PYTHON,
            "-m",
            "tests.standalone",
            "launch",
            str(spec_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._launcher_log,
        )
        try:
            started = self._expect("started")
            self.ports = Ports(started["proxy_port"], started["web_port"], started["pid"], base)
            ready = self._expect("ready")
            return float(ready["at"])
        except BaseException:
            self.stop()
            raise

    def _expect(self, event: str) -> dict[str, Any]:
        assert self._launcher is not None and self._launcher.stdout is not None
        line = self._launcher.stdout.readline()  # the launcher has its own START_TIMEOUT
        if not line:
            code = self._launcher.wait(10)
            raise RuntimeError(
                f"the Milvus launcher exited ({code}) before '{event}': {self._launcher_tail()}"
            )
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise RuntimeError(f"the Milvus launcher said {message} (expected '{event}')")
        return message

    def _launcher_tail(self) -> str:
        assert self._base is not None
        text = (self._base / "launcher.log").read_text(errors="replace")
        return text[-3000:]

    def stop(self) -> None:
        """Stop Milvus as the `milvus` package does (SIGTERM, then SIGKILL after 1 s).

        Returns when Milvus has exited, so its port refuses connections.
        """
        launcher, self._launcher = self._launcher, None
        if launcher is not None:
            assert launcher.stdin is not None and launcher.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                launcher.stdin.close()  # the launcher's signal to stop Milvus and exit
            try:
                launcher.wait(30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
            launcher.stdout.close()
        if self._launcher_log is not None:
            self._launcher_log.close()
            self._launcher_log = None
        if self._base is not None and launcher is not None:
            # ~140 MB of etcd and rocksmq files; the logs and the config stay for post-mortems.
            shutil.rmtree(self._base / "data", ignore_errors=True)


# --------------------------------------------------------------------------- HTTP in the namespace


class Agent:
    """An HTTP client living in the namespace: one Python process, one request per line.

    Starting a Python per request would cost ~50 ms; the agent answers in about a
    millisecond, which readiness transitions need.
    """

    def __init__(self, ns: Netns) -> None:
        self._process = ns.popen(
            PYTHON, "-m", "tests.standalone", "agent", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._lock = threading.Lock()

    def request(
        self,
        port: int,
        path: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], str]:
        """(status, lower-cased headers, body) of a request to 127.0.0.1:PORT in the namespace."""
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        ask = {"port": port, "path": path, "method": method, "headers": headers or {}}
        ask["timeout"] = timeout
        with self._lock:
            process.stdin.write(json.dumps(ask).encode() + b"\n")
            process.stdin.flush()
            line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the HTTP agent exited ({process.wait(5)})")
        answer = json.loads(line)
        if "error" in answer:
            raise OSError(f"{method} {path}: {answer['error']}")
        return answer["status"], answer["headers"], answer["body"]

    def get(self, port: int, path: str, **kwargs: Any) -> tuple[int, str]:
        status, _, body = self.request(port, path, **kwargs)
        return status, body

    def http(self, port: int, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        """`request()` with the body as bytes: a `kit.process.Request`."""
        status, headers, body = self.request(port, path, **kwargs)
        return status, headers, body.encode("utf-8")

    def close(self) -> None:
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


# --------------------------------------------------------------------------- probe daemon


def daemon(
    ns: Netns, agent: Agent, log_path: Path, port: int, *args: str
) -> contextlib.AbstractContextManager[Daemon]:
    """`python -m probe serve ...` in the namespace, read through the agent; stopped with
    SIGTERM (killed after 10 s) when the block ends."""
    return Daemon(log_path, *args, port=port, prefix=ns.command(), request=agent.http).serving()


# =========================================================================== in the namespace


def _launch(spec_path: str) -> int:
    """Start Milvus, say `started` and `ready` on stdout, stop it when stdin closes."""
    spec = json.loads(Path(spec_path).read_text())
    base = Path(spec["base_dir"])

    def say(**message: Any) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    import milvus  # type: ignore[import-untyped]

    _patch_port_check(milvus)
    _binaries(milvus, Path(spec["bin_cache"]), base)
    server = milvus.MilvusServer(milvus.MilvusServerConfig(), wait_for_started=False)
    server.set_base_dir(str(base))
    for key, value in spec["settings"].items():
        if key not in server.config.configurable_items:
            raise SystemExit(f"the milvus package has no setting {key!r}")
        server.config.set(key, value)
        if server.config.get(key) != value:  # set() silently ignores a value of the wrong type
            raise SystemExit(f"setting {key}={value!r} did not take (the type must match)")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        say(
            event="started",
            pid=server.server_proc.pid,
            proxy_port=server.listen_port,
            web_port=server.webservice_port,
            base_dir=str(base),
        )
        began = time.monotonic()

        def wait_for_eof() -> None:
            sys.stdin.buffer.read()
            stop.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
        healthy_at = _wait_healthy(server, spec, stop)
        if healthy_at is None:
            return 1
        say(event="ready", at=healthy_at, after=round(time.monotonic() - began, 3))
        stop.wait()
    finally:
        server.stop()  # SIGTERM, 1 s, SIGKILL: Milvus 2.3.5 does not exit after its cleanup
    return 0


def _patch_port_check(milvus: Any) -> None:
    """Check ports the way the Go server will bind them: with SO_REUSEADDR.

    The package tests a port by binding it without SO_REUSEADDR, which fails while
    connections of a stopped Milvus linger in TIME_WAIT on it; it would then quietly
    move Milvus to another port. Go listeners set SO_REUSEADDR, so the port is free.
    """

    def try_bind_port(self: Any, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except (OSError, OverflowError):
            sock.close()
            return None
        return sock

    milvus.MilvusServerConfig.try_bind_port = try_bind_port


def _binaries(milvus: Any, cache: Path, base: Path) -> None:
    """Unpack the package's Milvus binaries once (~5 s) and link them into the data dir."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        milvus._initialize_data_files(str(cache))  # skips files whose checksum matches
    (base / "bin").symlink_to(cache / "bin", target_is_directory=True)


def _wait_healthy(server: Any, spec: dict[str, Any], stop: threading.Event) -> float | None:
    """Poll CheckHealth with the spec's credentials until Milvus says it is healthy.

    Returns the wall-clock time of the healthy answer (None: there was none).
    """
    import grpc

    from probe.milvus import wire_pb2 as wire

    metadata = []
    if spec["token"]:
        import base64

        metadata.append(("authorization", base64.b64encode(spec["token"].encode()).decode()))
    credentials = None
    if spec["settings"].get("tls_mode"):

        def read(key: str) -> bytes | None:
            return Path(spec[key]).read_bytes() if spec[key] else None

        credentials = grpc.ssl_channel_credentials(
            read("ca"), read("client_key"), read("client_cert")
        )
    address = f"localhost:{server.listen_port}"
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer yet"
    while not stop.is_set():
        if server.server_proc.poll() is not None:
            print(f"Milvus exited {server.server_proc.returncode}", file=sys.stderr)
            return None
        if time.monotonic() > deadline:
            print(f"Milvus not healthy after {START_TIMEOUT:g}s: {last}", file=sys.stderr)
            return None
        options = [("grpc.use_local_subchannel_pool", 1)]
        if credentials is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            channel = grpc.secure_channel(address, credentials, options=options)
        try:
            call = channel.unary_unary(
                f"/{SERVICE}/CheckHealth",
                request_serializer=wire.CheckHealthRequest.SerializeToString,
                response_deserializer=wire.CheckHealthResponse.FromString,
            )
            answer = call(wire.CheckHealthRequest(), timeout=1, metadata=metadata)
            if answer.status.code == 0 and answer.isHealthy:
                return time.time()
            last = f"status {answer.status.code} healthy={answer.isHealthy} {list(answer.reasons)}"
        except grpc.RpcError as exc:
            last = f"{exc.code()}: {exc.details()}"
        finally:
            channel.close()
        stop.wait(0.05)
    return None


def _agent() -> int:
    """Answer {"port", "path", "method", "headers", "timeout"} lines with {"status", ...}."""
    for line in sys.stdin:
        ask = json.loads(line)
        conn = http.client.HTTPConnection("127.0.0.1", ask["port"], timeout=ask["timeout"])
        try:
            conn.request(ask["method"], ask["path"], headers=ask["headers"])
            response = conn.getresponse()
            answer: dict[str, Any] = {
                "status": response.status,
                "headers": {k.lower(): v for k, v in response.getheaders()},
                "body": response.read().decode("utf-8", errors="replace"),
            }
        except OSError as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            conn.close()
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["launch"] and len(argv) == 2:
        return _launch(argv[1])
    if argv == ["agent"]:
        return _agent()
    print("usage: python -m tests.standalone launch SPEC.json | agent", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
