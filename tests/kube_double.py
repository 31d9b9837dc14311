"""A Kubernetes API server double: EndpointSlices (list + watch), Services, Events.

No kube-apiserver can run here, so the real `kubernetes` client talks to this HTTP
server through a generated kubeconfig. It keeps a resourceVersion log like etcd's,
streams watch events (ADDED/MODIFIED/DELETED/BOOKMARK), answers 410 Gone for versions
older than its compaction point, can fail requests with 5xx, drop watch connections and
restart, hold Event posts (an API server that accepts them and never answers), and records
every Event posted. Objects are complete enough for the client's strict models.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SLICES = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$")
SERVICE = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)$")
EVENTS_V1 = re.compile(r"^/apis/events\.k8s\.io/v1/namespaces/([^/]+)/events(?:/([^/]+))?$")
EVENTS_CORE = re.compile(r"^/api/v1/namespaces/([^/]+)/events(?:/([^/]+))?$")


def endpoint_slice(
    namespace: str,
    service: str,
    pod: str,
    address: str,
    port: int,
    *,
    ready: bool = True,
    terminating: bool = False,
    port_name: str = "grpc",
) -> dict[str, Any]:
    """One EndpointSlice holding one pod (each stand-in pod listens on its own port)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{pod}",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{service}/{pod}")),
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
                "targetRef": {
                    "kind": "Pod",
                    "name": pod,
                    "namespace": namespace,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, pod)),
                },
            }
        ],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


class KubeApiDouble:
    def __init__(self, namespace: str = "milvus") -> None:
        self.namespace = namespace
        self._lock = threading.Condition()
        self.version = 100
        self.compacted = 0
        """Watches from a resourceVersion below this get 410 Gone."""
        self.slices: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[int, str, dict[str, Any]]] = []
        self.services: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.event_patches: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_next = 0
        """Answer this many more requests with 500."""
        self.events_v1 = True
        """False: events.k8s.io/v1 answers 404 (an old API server)."""
        self.lists = 0
        self.hold_events = False
        """True: Event posts and patches hang until `release_events()`, then answer 500."""
        self.held_events = 0
        """Event requests held so far (counted when they start to hang)."""
        self._release = threading.Event()
        self._generation = 0
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        double = self

        class Handler(_Handler):
            api = double

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def release_events(self) -> None:
        """Let held Event requests (and any later ones) answer: 500, as a failed server would."""
        self._release.set()

    def stop(self) -> None:
        """Stop serving and end every watch (an API server restart, when followed by start)."""
        self.release_events()
        with self._lock:
            self._generation += 1
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:  # a restart also cuts kept-alive connections
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [
                        {"name": "double", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "double", "user": {}}],
                    "contexts": [
                        {"name": "double", "context": {"cluster": "double", "user": "double"}}
                    ],
                }
            )
        )
        return path

    # ------------------------------------------------------------- state

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.log.append((self.version, kind, obj))
        self._lock.notify_all()

    def put_slice(self, obj: dict[str, Any]) -> None:
        with self._lock:
            name = obj["metadata"]["name"]
            kind = "MODIFIED" if name in self.slices else "ADDED"
            self.slices[name] = copy.deepcopy(obj)
            self._record(kind, obj)

    def delete_slice(self, name: str) -> None:
        with self._lock:
            obj = self.slices.pop(name)
            self._record("DELETED", obj)

    def bookmark(self) -> None:
        with self._lock:
            self.version += 1
            self.log.append(
                (
                    self.version,
                    "BOOKMARK",
                    {
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {"resourceVersion": str(self.version)},
                    },
                )
            )
            self._lock.notify_all()

    def compact(self) -> None:
        """Forget history: watches from older versions now get 410 Gone."""
        with self._lock:
            self.compacted = self.version + 1
            self.version += 1
            self._generation += 1  # end current watches, as etcd compaction does
            self._lock.notify_all()

    def drop_watches(self) -> None:
        with self._lock:
            self._generation += 1
            self._lock.notify_all()

    def add_service(self, name: str, port: int, port_name: str = "grpc") -> None:
        self.services[name] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "resourceVersion": "1",
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            },
            "spec": {
                "ports": [{"name": port_name, "port": port, "protocol": "TCP", "targetPort": port}],
                "type": "ClusterIP",
            },
        }

    def watch_count(self) -> int:
        return sum(1 for method, path in self.requests if "watch=" in path)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, and chunked watch streams, as kube-apiserver answers."""

    api: KubeApiDouble
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.api._lock:
            self.api._connections.add(self.connection)

    def finish(self) -> None:
        with self.api._lock:
            self.api._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._json(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )

    def _failing(self) -> bool:
        api = self.api
        with api._lock:
            api.requests.append((self.command, self.path))
            if api.fail_next > 0:
                api.fail_next -= 1
                failing = True
            else:
                failing = False
        if failing:
            self._status(500, "InternalError", "injected failure")
        return failing

    def do_GET(self) -> None:
        if self._failing():
            return
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if match := SLICES.match(url.path):
            selector = query.get("labelSelector", "")
            if query.get("watch") in ("true", "1"):
                self._watch(
                    selector,
                    int(query.get("resourceVersion") or 0),
                    float(query.get("timeoutSeconds") or 30),
                )
            else:
                self._list(selector)
            return
        if match := SERVICE.match(url.path):
            service = self.api.services.get(match.group(2))
            if service is None:
                self._status(404, "NotFound", f"services {match.group(2)!r} not found")
            else:
                self._json(200, service)
            return
        self._status(404, "NotFound", f"no route {url.path}")

    def _matches(self, obj: dict[str, Any], selector: str) -> bool:
        if not selector:
            return True
        labels = obj["metadata"].get("labels", {})
        for term in selector.split(","):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        return True

    def _list(self, selector: str) -> None:
        api = self.api
        with api._lock:
            api.lists += 1
            items = [copy.deepcopy(o) for o in api.slices.values() if self._matches(o, selector)]
            for item in items:
                item["metadata"].setdefault("resourceVersion", str(api.version))
            version = api.version
        self._json(
            200,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            },
        )

    def _watch(self, selector: str, since: int, timeout: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._stream(selector, since, timeout)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _stream(self, selector: str, since: int, timeout: float) -> None:
        api = self.api
        deadline = time.monotonic() + timeout
        with api._lock:
            generation = api._generation
            if since < api.compacted:
                gone = {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": f"too old resource version: {since} ({api.compacted})",
                        "reason": "Expired",
                        "code": 410,
                    },
                }
                self._line(gone)
                return
        sent = since
        while True:
            with api._lock:
                pending = [(v, k, o) for v, k, o in api.log if v > sent]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or api._generation != generation:
                        return
                    api._lock.wait(min(remaining, 0.2))
                    if api._generation != generation:
                        return
                    continue
            for version, kind, obj in pending:
                sent = version
                if kind != "BOOKMARK" and not self._matches(obj, selector):
                    continue
                self._line({"type": kind, "object": obj})

    def _line(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _held(self) -> bool:
        """With `hold_events`: hang until released, then fail the request with 500."""
        api = self.api
        with api._lock:
            if not api.hold_events:
                return False
            api.held_events += 1
        api._release.wait()
        with contextlib.suppress(OSError):  # the client may have given up meanwhile
            self._status(500, "InternalError", "injected failure after a hang")
        return True

    def do_POST(self) -> None:
        body = self._body()  # always consumed: the connection is kept alive
        if self._failing() or self._held():
            return
        path = urllib.parse.urlsplit(self.path).path
        match = EVENTS_V1.match(path)
        if match and not self.api.events_v1:
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        match = match or EVENTS_CORE.match(path)
        if not match:
            self._status(404, "NotFound", f"no route {path}")
            return
        with self.api._lock:
            self.api.version += 1
            name = body["metadata"].get("generateName", "event.") + uuid.uuid4().hex[:8]
            body["metadata"].update(
                {
                    "name": name,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self.api.version),
                    "namespace": match.group(1),
                }
            )
            body["_api"] = "events.k8s.io/v1" if EVENTS_V1.match(path) else "v1"
            self.api.events[name] = body
        self._json(201, {k: v for k, v in body.items() if k != "_api"})

    def do_PATCH(self) -> None:
        patch = self._body()
        if self._failing() or self._held():
            return
        path = urllib.parse.urlsplit(self.path).path
        match = EVENTS_V1.match(path) or EVENTS_CORE.match(path)
        if not match or not match.group(2) or match.group(2) not in self.api.events:
            self._status(404, "NotFound", f"no event at {path}")
            return
        with self.api._lock:
            event = self.api.events[match.group(2)]
            for key, value in patch.items():
                event[key] = value
            self.api.event_patches.append((match.group(2), patch))
        self._json(200, {k: v for k, v in event.items() if k != "_api"})
