"""The management port behind `--web.config.file`: TLS, client certificates, basic auth.

Everything here runs the real thing: an in-process daemon probing milvus-lite, real TLS
handshakes with certificates made by `cryptography`, a real Prometheus scraping, real
`go tool pprof`, the real CLI. Each way in that should fail is tried and must be refused
with the right status (or handshake failure), leaking nothing.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

from kit.net import http_get
from kit.process import Daemon
from probe.app import App
from probe.config import ConfigError
from probe.web.security import load_security
from tests.conftest import DaemonFactory
from tests.support import Certs, MilvusLite, wait_until
from tests.test_chart import kinds, render
from tests.test_monitoring import Prometheus
from tests.test_pprof import go_pprof  # noqa: F401  (a fixture)

PASSWORD = "s3cret-Pa55"
OTHER_PASSWORD = "an0ther-Pa55"


def hashed(password: str) -> str:
    """A bcrypt hash as htpasswd -B writes it ($2y$), at the cheapest cost (tests only)."""
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()[4:]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(certs: Certs, cert: Path | None = None, key: Path | None = None,
                   ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or certs.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def https(port: int, path: str, context: ssl.SSLContext, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one request over TLS to 127.0.0.1:PORT."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def tls_block(certs: Certs, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key), **extra}


# --------------------------------------------------------------------------- the file


BAD_FILES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"tls_config": {}}, "tls_config: unknown key"),
    ("unknown TLS key", {"tls_server_config": {"cert_file": "a", "key_file": "b", "cert": "x"}},
     "tls_server_config.cert: unknown key"),
    ("no key_file", {"tls_server_config": {"cert_file": "CERT"}},
     "tls_server_config.key_file: missing"),
    ("unreadable certificate", {"tls_server_config": {"cert_file": "/nonexistent/server.pem",
                                                      "key_file": "KEY"}},
     "tls_server_config.cert_file: no such file"),
    ("a key that is not the certificate's", {"tls_server_config": {"cert_file": "CERT",
                                                                   "key_file": "CLIENT_KEY"}},
     "tls_server_config.cert_file: cannot load the certificate and key"),
    ("client_auth_type", {"tls_server_config": {"cert_file": "CERT", "key_file": "KEY",
                                                "client_auth_type": "RequireClientCert"}},
     "tls_server_config.client_auth_type: must be one of NoClientCert, RequestClientCert"),
    ("verifying without a CA", {"tls_server_config": {
        "cert_file": "CERT", "key_file": "KEY", "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file: required with client_auth_type"),
    ("a CA nobody uses", {"tls_server_config": {"cert_file": "CERT", "key_file": "KEY",
                                                "client_ca_file": "CA"}},
     "tls_server_config.client_ca_file: set, but client_auth_type NoClientCert"),
    ("min_version", {"tls_server_config": {"cert_file": "CERT", "key_file": "KEY",
                                           "min_version": "TLS1.2"}},
     "tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13"),
    ("max below min", {"tls_server_config": {"cert_file": "CERT", "key_file": "KEY",
                                             "min_version": "TLS13", "max_version": "TLS12"}},
     "tls_server_config.max_version: TLS12 is below min_version TLS13"),
    ("cipher suite", {"tls_server_config": {"cert_file": "CERT", "key_file": "KEY",
                                            "cipher_suites": ["TLS_FOO"]}},
     "tls_server_config.cipher_suites: unknown cipher suite 'TLS_FOO'"),
    ("header", {"http_server_config": {"headers": {"Server": "x"}}},
     "http_server_config.headers.Server: this header can't be configured"),
    ("header value", {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
     "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin"),
    ("not a bcrypt hash", {"basic_auth_users": {"prom": "plaintext"}},
     "basic_auth_users.prom: not a bcrypt hash"),
    ("bcrypt cost", {"basic_auth_users": {"prom": "$2b$99$" + "a" * 53}},
     "basic_auth_users.prom: bcrypt cost 99 is outside 4..31"),
]


@pytest.mark.parametrize(("name", "doc", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_web_config_names_the_field(tmp_path: Path, certs: Certs, name: str,
                                          doc: dict[str, Any], message: str) -> None:
    text = yaml.safe_dump(doc)
    for placeholder, path in (("CLIENT_KEY", certs.client_key), ("CERT", certs.server_cert),
                              ("KEY", certs.server_key), ("CA", certs.ca)):
        text = text.replace(f": {placeholder}\n", f": {path}\n")
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_security(str(path))
    assert f"{path}: {message}" in str(caught.value), str(caught.value)


def test_the_daemon_refuses_to_start_on_a_bad_web_config(tmp_path: Path,
                                                         milvus: MilvusLite) -> None:
    """At start: exit 1 (bad input) and the field on stderr; `--config.check` too."""
    path = write(tmp_path / "web.yml", {"basic_auth_users": {"prom": "hunter2"}})
    for extra in ([], ["--config.check"]):
        done = subprocess.run(
            [sys.executable, "-m", "probe", "serve", "--uri", milvus.address,
             "--web.listen-address", "127.0.0.1:0", "--web.config.file", str(path), *extra],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done
        assert f"{path}: basic_auth_users.prom: not a bcrypt hash" in done.stderr
        assert "hunter2" not in done.stderr + done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "probe", "serve", "--uri", milvus.address, "--config.check",
         "--web.config.file", str(tmp_path / "missing.yml")],
        capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert f"--web.config.file: '{tmp_path / 'missing.yml'}': cannot read" in missing.stderr


# --------------------------------------------------------------------------- basic auth

GUARDED = [("GET", "/metrics"), ("GET", "/"), ("GET", "/targets/lite"),
           ("GET", "/api/v1/targets"), ("GET", "/api/v1/targets/lite/history"),
           ("GET", "/probe?alias=lite"), ("POST", "/-/reload"),
           ("GET", "/debug/pprof/cmdline"), ("GET", "/debug/pprof/goroutine?debug=2"),
           ("GET", "/debug/bundle?seconds=1"), ("HEAD", "/metrics"), ("GET", "/nope")]


def test_basic_auth_guards_every_endpoint(daemon: DaemonFactory, milvus: MilvusLite,
                                          tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """No credentials, a wrong password, a user not in the file: 401 everywhere, with
    `WWW-Authenticate` and nothing else; the right ones get through. Kubelet's paths
    answer without credentials, with the status alone."""
    web = write(tmp_path / "web.yml", {"basic_auth_users": {"prom": hashed(PASSWORD)}})
    app = daemon(uri=milvus.address, alias="lite",
                 **{"probe.interval": "1h", "web.config.file": str(web)})
    wait_until(lambda: app.ledger.snapshot().get(("lite", milvus.address)) == (1, 1), 10,
               "the first cycle")
    port = app.port
    for method, path in GUARDED:
        for headers in ({}, basic("prom", "wrong"), basic("nobody", PASSWORD),
                        {"Authorization": "Bearer " + PASSWORD},
                        {"Authorization": "Basic !!!"}):
            status, got, body = http_get(port, path, method=method, headers=headers)
            assert status == 401, (method, path, headers, status, body)
            assert got["www-authenticate"] == 'Basic realm="milvus-probe"'
            assert body == (b"" if method == "HEAD" else b"unauthorized\n")
        status, _, body = http_get(port, path, method=method, headers=basic("prom", PASSWORD))
        assert status != 401, (method, path, status, body)
    # /probe without credentials ran no cycle: one connection (the first cycle), and
    # the authorised /probe above.
    assert app.ledger.snapshot()[("lite", milvus.address)] == (2, 2)

    for path in ("/healthz", "/livez", "/readyz", "/readyz?verbose", "/readyz/lite?verbose"):
        status, _, body = http_get(port, path)
        assert (status, body) == (200, b"OK\n"), path
    status, _, body = http_get(port, "/readyz?verbose", headers=basic("prom", PASSWORD))
    assert status == 200 and b"[+]" in body  # the full answer, with credentials

    logged = caplog.text
    assert PASSWORD not in logged and base64.b64encode(f"prom:{PASSWORD}".encode()).decode() \
        not in logged


def test_verified_credentials_are_cached(tmp_path: Path) -> None:
    """A bcrypt check at cost 10 costs milliseconds; the same credentials again cost a
    dictionary lookup, and a wrong password is still wrong (exporter-toolkit's cache)."""
    from probe.web.basic_auth import BasicAuth

    hashed10 = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    auth = BasicAuth({"prom": hashed10})
    header = basic("prom", PASSWORD)["Authorization"]
    began = time.perf_counter()
    assert auth.allows(header)
    first = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(100):
        assert auth.allows(header)
    cached = (time.perf_counter() - began) / 100
    assert cached < first / 20, (first, cached)
    assert not auth.allows(basic("prom", "wrong")["Authorization"])
    assert not auth.allows(basic("prom", "wrong")["Authorization"])  # cached as wrong
    assert not auth.allows(basic("nobody", PASSWORD)["Authorization"])


# --------------------------------------------------------------------------- TLS


def test_tls_refuses_every_wrong_way_in(daemon: DaemonFactory, milvus: MilvusLite,
                                        certs: Certs, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Mutual TLS, minimum TLS 1.2: a certificate from our CA gets in; one from another
    CA fails the handshake; none gets 403 (kubelet's paths still answer); plain HTTP
    gets Go's 400; TLS 1.1 fails the handshake."""
    web = write(tmp_path / "web.yml", {"tls_server_config": tls_block(
        certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.ca),
        min_version="TLS12")})
    app = daemon(uri=milvus.address, alias="lite",
                 **{"probe.interval": "1h", "web.config.file": str(web)})
    port = app.port
    ours = client_context(certs, certs.client_cert, certs.client_key)
    status, headers, body = https(port, "/metrics", ours)
    assert status == 200 and b"milvus_probe_attempts_total" in body

    # TLS 1.3: the client learns of the refusal (alert or EOF) when it reads.
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA|unknown ca|EOF occurred"):
        https(port, "/metrics", client_context(certs, certs.stranger_cert, certs.stranger_key))
    assert "certificate verify failed" in caplog.text

    anonymous = client_context(certs)
    status, _, body = https(port, "/metrics", anonymous)
    assert (status, body) == (403, b"a client certificate signed by the configured CA is "
                                   b"required\n")
    assert https(port, "/healthz", anonymous)[::2] == (200, b"OK\n")
    assert https(port, "/readyz?verbose", anonymous)[::2] == (200, b"OK\n")

    status, _, body = http_get(port, "/metrics")
    assert (status, body) == (400, b"Client sent an HTTP request to an HTTPS server.\n")

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
        https(port, "/healthz", old)
    assert https(port, "/healthz", ours)[::2] == (200, b"OK\n")


def test_client_allowed_sans(daemon: DaemonFactory, milvus: MilvusLite, certs: Certs,
                             tmp_path: Path) -> None:
    """A verified certificate whose SANs are not in client_allowed_sans gets 403."""
    web = tmp_path / "web.yml"
    ours = client_context(certs, certs.client_cert, certs.client_key)

    def serve(sans: list[str]) -> App:
        write(web, {"tls_server_config": tls_block(
            certs, client_auth_type="RequireAndVerifyClientCert",
            client_ca_file=str(certs.ca), client_allowed_sans=sans)})
        return daemon(uri=milvus.address, **{"probe.interval": "1h", "web.config.file": str(web)})

    assert https(serve(["milvus-probe-client.monitoring.svc"]).port, "/metrics", ours)[0] == 200
    assert https(serve(["prometheus.monitoring.svc"]).port, "/metrics", ours)[0] == 403


# --------------------------------------------------------------------------- rotation


class SecretVolume:
    """A directory laid out as Kubernetes mounts a Secret: files are links through
    `..data` to a timestamped directory, and an update swaps `..data` atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.version = 0

    def publish(self, files: dict[str, bytes]) -> None:
        self.version += 1
        target = self.root / f"..2026_12_08_00_00_{self.version:02d}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")


def test_rotation_through_a_data_link(daemon: DaemonFactory, milvus: MilvusLite,
                                      certs: Certs, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """Kubernetes swaps `..data`: a new certificate and new users take effect without a
    restart; a scraper holding its connection across the swap is refused once its user
    is gone; a broken version is logged naming the field, and the running one stays."""
    from tests.support import make_certs

    second = make_certs(tmp_path / "second")  # another CA, another server certificate
    volume = SecretVolume(tmp_path / "secret")

    def config(users: dict[str, str], served: Certs) -> dict[str, bytes]:
        doc = {"tls_server_config": {"cert_file": "server.pem", "key_file": "server.key"},
               "basic_auth_users": users}
        return {"web.yml": yaml.safe_dump(doc).encode(),
                "server.pem": served.server_cert.read_bytes(),
                "server.key": served.server_key.read_bytes()}

    volume.publish(config({"prom": hashed(PASSWORD), "old": hashed(OTHER_PASSWORD)}, certs))
    app = daemon(uri=milvus.address,
                 **{"probe.interval": "1h", "web.config.file": str(volume.root / "web.yml")})
    port = app.port
    first_ca = client_context(certs)
    assert https(port, "/metrics", first_ca, headers=basic("old", OTHER_PASSWORD))[0] == 200

    # A scraper connects (handshake done) before the swap and asks after it.
    scraper = http.client.HTTPSConnection("127.0.0.1", port, context=first_ca, timeout=30)
    scraper.connect()
    volume.publish(config({"prom": hashed(PASSWORD)}, second))
    second_ca = client_context(second, ca=second.ca)
    wait_until(lambda: _answers(port, second_ca), 10, "the new certificate to be served")
    scraper.request("GET", "/metrics", headers=basic("old", OTHER_PASSWORD))
    response = scraper.getresponse()
    assert (response.status, response.read()) == (401, b"unauthorized\n")
    scraper.close()
    assert https(port, "/metrics", second_ca, headers=basic("prom", PASSWORD))[0] == 200
    assert https(port, "/metrics", second_ca, headers=basic("old", OTHER_PASSWORD))[0] == 401
    with pytest.raises(ssl.SSLError):  # the first certificate is no longer served
        https(port, "/metrics", first_ca)

    # A broken version: refused, logged with the field, the running one stays.
    caplog.clear()
    broken = config({"prom": "not-a-hash"}, second)
    volume.publish(broken)
    # (The file is looked at when a connection or request arrives: _answers makes one.)
    wait_until(lambda: _answers(port, second_ca)
               and "basic_auth_users.prom: not a bcrypt hash" in caplog.text, 10,
               "the broken config to be rejected")
    assert https(port, "/metrics", second_ca, headers=basic("prom", PASSWORD))[0] == 200
    assert "web config reload rejected" in caplog.text
    assert PASSWORD not in caplog.text


def _answers(port: int, context: ssl.SSLContext) -> bool:
    try:
        return https(port, "/healthz", context)[0] == 200
    except (ssl.SSLError, OSError):
        return False


# --------------------------------------------------------------------------- real clients


def test_prometheus_scrapes_over_tls_with_a_client_cert_and_with_basic_auth(
        daemon: DaemonFactory, milvus: MilvusLite, certs: Certs, tmp_path: Path) -> None:
    """A real Prometheus: `tls_config` with our CA and a client certificate, and
    `basic_auth`; a job with a wrong password is down (so `up` can tell)."""
    web = write(tmp_path / "web.yml", {
        "tls_server_config": tls_block(certs, client_auth_type="VerifyClientCertIfGiven",
                                       client_ca_file=str(certs.ca)),
        "basic_auth_users": {"prom": hashed(PASSWORD)}})
    mtls = write(tmp_path / "mtls.yml", {"tls_server_config": tls_block(
        certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.ca))})
    fast = {"probe.interval": "200ms", "probe.timeout": "150ms"}
    with_auth = daemon(uri=milvus.address, alias="lite", **fast, **{"web.config.file": str(web)})
    with_cert = daemon(uri=milvus.address, alias="lite", **fast,
                       **{"web.config.file": str(mtls)})
    tls = {"ca_file": str(certs.ca), "server_name": "localhost"}
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    (tmp_path / "prometheus").mkdir()
    prometheus = Prometheus(tmp_path / "prometheus", [
        {"job_name": "basic", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": "prom", "password_file": str(password_file)},
         "static_configs": [{"targets": [f"127.0.0.1:{with_auth.port}"]}]},
        {"job_name": "cert", "scheme": "https",
         "tls_config": {**tls, "cert_file": str(certs.client_cert),
                        "key_file": str(certs.client_key)},
         "static_configs": [{"targets": [f"127.0.0.1:{with_cert.port}"]}]},
        {"job_name": "wrong", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": "prom", "password": "wrong"},
         "static_configs": [{"targets": [f"127.0.0.1:{with_auth.port}"]}]},
    ])
    try:
        wait_until(prometheus.ready, 30, "prometheus to be ready")

        def up() -> dict[str, str]:
            return {s["metric"]["job"]: s["value"][1] for s in prometheus.samples("up")}

        wait_until(lambda: up() == {"basic": "1", "cert": "1", "wrong": "0"}, 30,
                   "every job scraped once")
        wait_until(lambda: prometheus.samples(
            'milvus_probe_attempts_total{job="cert",alias="lite"} > 0'), 30,
            "the probe's own series through mutual TLS")
        targets = prometheus.api("targets")["data"]["activeTargets"]
        errors = {t["labels"]["job"]: t["lastError"] for t in targets}
        assert "401" in errors["wrong"], errors
    finally:
        prometheus.stop()


def test_go_tool_pprof_over_https_with_credentials(daemon: DaemonFactory, milvus: MilvusLite,
                                                   certs: Certs, tmp_path: Path,
                                                   go_pprof: Any) -> None:  # noqa: F811
    """`go tool pprof https+insecure://user:password@host/...` fetches a profile."""
    web = write(tmp_path / "web.yml", {"tls_server_config": tls_block(certs),
                                       "basic_auth_users": {"prom": hashed(PASSWORD)}})
    app = daemon(uri=milvus.address, **{"probe.interval": "200ms", "probe.timeout": "150ms",
                                        "web.config.file": str(web)})
    url = f"https+insecure://prom:{PASSWORD}@127.0.0.1:{app.port}"
    top = go_pprof("-top", f"{url}/debug/pprof/profile?seconds=1")
    assert "Type: cpu" in top
    assert "Type: inuse_space" in go_pprof("-top", f"{url}/debug/pprof/heap")


def test_the_bundle_command_takes_the_ca_and_credentials(
        daemon: DaemonFactory, milvus: MilvusLite, certs: Certs, tmp_path: Path) -> None:
    web = write(tmp_path / "web.yml", {
        "tls_server_config": tls_block(certs, client_auth_type="RequireAndVerifyClientCert",
                                       client_ca_file=str(certs.ca)),
        "basic_auth_users": {"prom": hashed(PASSWORD)}})
    app = daemon(uri=milvus.address, **{"probe.interval": "1h", "web.config.file": str(web)})
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    base = [sys.executable, "-m", "probe", "bundle", "--url", f"https://localhost:{app.port}",
            "--seconds", "1", "--cacert", str(certs.ca)]
    cert = ["--cert", str(certs.client_cert), "--key", str(certs.client_key)]
    env = {**os.environ, "MILVUS_PROBE_WEB_PASSWORD": ""}
    env.pop("MILVUS_PROBE_WEB_PASSWORD")

    out = tmp_path / "bundle.tar.gz"
    done = subprocess.run([*base, *cert, "--user", "prom", "--password-file",
                           str(password_file), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:2] == b"\x1f\x8b"

    no_password = subprocess.run([*base, *cert], capture_output=True, text=True, timeout=60,
                                 env=env)
    assert no_password.returncode == 3 and "401" in no_password.stderr
    assert "--user" in no_password.stderr
    no_cert = subprocess.run([*base, "--user", "prom"], capture_output=True, text=True,
                             timeout=60, env={**env, "MILVUS_PROBE_WEB_PASSWORD": PASSWORD})
    assert no_cert.returncode == 3 and "403" in no_cert.stderr
    assert PASSWORD not in done.stderr + no_password.stderr + no_cert.stderr


# --------------------------------------------------------------------------- the default


def test_without_a_web_config_nothing_changes(daemon: DaemonFactory, milvus: MilvusLite) -> None:
    """No web config: plain HTTP, no credentials asked, no extra headers, and neither
    the web config's code nor bcrypt loaded (test_daemon.py checks the latter in a fresh
    process)."""
    app = daemon(uri=milvus.address, **{"probe.interval": "1h"})
    status, headers, _ = http_get(app.port, "/metrics")
    assert status == 200 and "www-authenticate" not in headers
    assert "x-frame-options" not in headers


# --------------------------------------------------------------------------- negotiation

PROMETHEUS_ACCEPTS = [
    # Prometheus 3.0: scrape_protocols default, UTF-8 names (escaping on every type).
    ("3.0 default",
     "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
     "application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,"
     "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
     "text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    # Prometheus 3.x: escaping only on the 1.0.0 formats, by metric_name_escaping_scheme.
    ("3.x default",
     "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
     "application/openmetrics-text;version=0.0.1;q=0.5,"
     "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
     "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("3.x underscores",
     "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,"
     "application/openmetrics-text;version=0.0.1;q=0.5,"
     "text/plain;version=1.0.0;escaping=underscores;q=0.4,"
     "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
    # Native histograms on: protobuf first (which prometheus_client does not write).
    ("3.x protobuf first",
     "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=delimited;q=0.6,"
     "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
     "application/openmetrics-text;version=0.0.1;q=0.4,"
     "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
     "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("scrape_protocols [PrometheusText1.0.0]",
     "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.6,*/*;q=0.5",
     "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("scrape_protocols [PrometheusText0.0.4]", "text/plain;version=0.0.4;q=0.6,*/*;q=0.5",
     "text/plain; version=0.0.4; charset=utf-8"),
    ("scrape_protocols [OpenMetricsText0.0.1]",
     "application/openmetrics-text;version=0.0.1;q=0.6,*/*;q=0.5",
     "text/plain; version=0.0.4; charset=utf-8"),
    # Prometheus 2.x, for comparison.
    ("2.x default",
     "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
]


@pytest.fixture(scope="module")
def reference_app() -> Any:
    """prometheus_client's own WSGI app: its negotiation is the reference."""
    registry = CollectorRegistry()
    Gauge("milvus_probe_reference", "reference", registry=registry).set(1)
    return make_wsgi_app(registry)


@pytest.mark.parametrize(("name", "accept", "content_type"), PROMETHEUS_ACCEPTS,
                         ids=[a[0] for a in PROMETHEUS_ACCEPTS])
def test_prometheus_3_accept_headers(daemon: DaemonFactory, milvus: MilvusLite,
                                     reference_app: Any, name: str, accept: str,
                                     content_type: str) -> None:
    app = daemon(uri=milvus.address, **{"probe.interval": "1h"})
    status, headers, body = http_get(app.port, "/metrics", headers={"Accept": accept})
    assert status == 200
    assert headers["content-type"] == content_type
    got: list[Any] = []
    reference_app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "",
                   "HTTP_ACCEPT": accept},
                  lambda status, headers, exc_info=None: got.append(dict(headers)))
    assert got[0]["Content-Type"] == content_type
    assert body.endswith(b"# EOF\n") == content_type.startswith("application/openmetrics-text")



# --------------------------------------------------------------------------- the chart


CHART_MODES = {
    "TLS and basic auth": {"tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
                           "basic_auth_users": {"prom": "HASH"}},
    "mutual TLS required": {"tls_server_config": {
        "cert_file": "tls.crt", "key_file": "tls.key", "client_ca_file": "client-ca.crt",
        "client_auth_type": "RequireAndVerifyClientCert"}},
    "basic auth over HTTP": {"basic_auth_users": {"prom": "HASH"}},
}


@pytest.mark.parametrize("mode", sorted(CHART_MODES))
def test_the_charts_web_config_serves_kubelet_and_prometheus(
        helm: Any, mode: str, certs: Certs, milvus: MilvusLite, tmp_path: Path) -> None:
    """`webConfig` rendered by the chart, run by the daemon with the container's own
    flags: kubelet's probes as the chart renders them (HTTPS without verifying, no
    credentials) pass, and the ServiceMonitor's scheme, TLS and credentials get in,
    where none get 401 or 403."""
    config = yaml.safe_load(yaml.safe_dump(CHART_MODES[mode]).replace("HASH", hashed(PASSWORD)))
    files = {"tls.crt": certs.server_cert.read_text(), "tls.key": certs.server_key.read_text(),
             "client-ca.crt": certs.ca.read_text()}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "webConfig": {"enabled": True, "config": config, "files": files, "scrape": {
            "tlsConfig": {"ca": {"secret": {"name": "scrape", "key": "ca.crt"}}},
            "basicAuth": {"username": {"name": "scrape", "key": "username"},
                          "password": {"name": "scrape", "key": "password"}}}},
        "serviceMonitor": {"enabled": True}, "targets": [{"alias": "lite",
                                                          "uri": milvus.address}]}))
    docs = kinds(render(helm, "-f", str(values)))
    (secret,) = docs["Secret"]
    mount = tmp_path / "web"
    mount.mkdir()
    for name, text in secret["stringData"].items():
        (mount / name).write_text(text)
    container = docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace("/etc/milvus-probe/web", str(mount)) for a in container["args"][1:]
            if not a.startswith(("--config.file", "--web.listen-address"))]
    (endpoint,) = docs["ServiceMonitor"][0]["spec"]["endpoints"]
    tls = "tls_server_config" in config
    assert endpoint.get("scheme", "http") == ("https" if tls else "http")
    assert ("tlsConfig" in endpoint) == tls and "basicAuth" in endpoint

    kubelet = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # kubelet does not verify
    kubelet.check_hostname, kubelet.verify_mode = False, ssl.CERT_NONE

    def as_kubelet(port: int, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        if not tls:
            return http_get(port, path, **kwargs)
        return https(port, path, kubelet, kwargs.get("method", "GET"), kwargs.get("headers"))

    with Daemon(tmp_path / "daemon.log", "--uri", milvus.address, "--alias", "lite", *args,
                request=as_kubelet, grace=0).serving() as daemon:
        port = daemon.port
        daemon.wait_ready()
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get.get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP")
            if tls:
                assert https(port, get["path"], kubelet)[::2] == (200, b"OK\n"), probe
            else:
                assert http_get(port, get["path"])[::2] == (200, b"OK\n"), probe

        scraper = client_context(certs, certs.client_cert, certs.client_key)
        auth = basic("prom", PASSWORD) if "basic_auth_users" in config else {}
        if tls:
            assert https(port, "/metrics", scraper, headers=auth)[0] == 200
            assert https(port, "/metrics", client_context(certs))[0] in (401, 403)
        else:
            assert http_get(port, "/metrics", headers=auth)[0] == 200
            assert http_get(port, "/metrics")[0] == 401
