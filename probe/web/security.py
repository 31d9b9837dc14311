"""The web config file (`--web.config.file`): TLS, client certificates, extra headers and
basic auth for the management port, in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: server.crt            # with key_file: serve HTTPS
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      client_allowed_sans: [prometheus.monitoring.svc]
      min_version: TLS12               # TLS10, TLS11, TLS12 (default), TLS13
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
      prefer_server_cipher_suites: true
      curve_preferences: [X25519]
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2b$10$...           # bcrypt hash

`WebConfigFile` re-reads the file, and the files it names, when any of them changes
(Kubernetes rotates a Secret by swapping its `..data` link): a bad new version is logged
with the field that is wrong and the running one stays. Each connection is served under
the `Security` in force when it arrived.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probe import logs
from probe.config import ConfigError, ConfigIssue
from probe.config.issues import Issues
from probe.web.wsgi import (
    Environ,
    StartResponse,
    WSGIApp,
    is_kubelet_path,
    request_path,
    respond,
)

if TYPE_CHECKING:
    from probe.web.basic_auth import BasicAuth

logger = logging.getLogger(__name__)

CHECK_EVERY = 1.0
"""Seconds between two looks (stat) at the web config file and the files it names."""


class ClientAuth(enum.Enum):
    """`client_auth_type`, as Go's crypto/tls names it."""

    NONE = "NoClientCert"
    REQUEST = "RequestClientCert"
    REQUIRE_ANY = "RequireAnyClientCert"
    VERIFY_IF_GIVEN = "VerifyClientCertIfGiven"
    REQUIRE_AND_VERIFY = "RequireAndVerifyClientCert"

    @property
    def requires(self) -> bool:
        """A request without a verified client certificate is refused (403)."""
        return self in (ClientAuth.REQUIRE_ANY, ClientAuth.REQUIRE_AND_VERIFY)

    @property
    def verifies(self) -> bool:
        """Certificates presented are verified against `client_ca_file`."""
        return self not in (ClientAuth.NONE, ClientAuth.REQUEST)


TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

CIPHER_SUITES = {
    # Go's names (crypto/tls) → OpenSSL's, for TLS 1.2 and below.
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
"""Accepted and, as in Go, not configurable: TLS 1.3 always offers all three."""

CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}

HEADERS: dict[str, tuple[str, ...] | None] = {
    # exporter-toolkit's list: these headers only, some with fixed values.
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True)
class TlsServerConfig:
    """`tls_server_config`."""

    cert_file: str
    key_file: str
    client_auth_type: ClientAuth = ClientAuth.NONE
    client_ca_file: str | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    def files(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file else ()
        )


@dataclass(frozen=True)
class WebConfig:
    """The web config file, parsed and checked."""

    path: str
    tls: TlsServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, str], ...] = ()
    """(user, bcrypt hash) of `basic_auth_users`."""

    def files(self) -> tuple[str, ...]:
        return (self.path,) + (self.tls.files() if self.tls else ())


def _mapping(value: Any, where: str, issues: Issues) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        issues.add(where, f"must be a mapping, got {type(value).__name__}")
        return {}
    return value


def _strings(value: Any, where: str, issues: Issues) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        issues.add(where, "must be a list of strings")
        return ()
    return tuple(value)


def parse_web_config(path: str) -> WebConfig:
    """Read and check the web config file at `path`; ConfigError naming every bad field."""
    from probe.config.loader import read_file

    issues = Issues()
    doc = read_file(path, issues)
    if issues.items:  # the file itself: named by the flag that gave it
        raise ConfigError([
            ConfigIssue("--web.config.file",
                        f"{path!r}: {i.message}" if i.where == path else f"{i}")
            for i in issues.items
        ])
    base = os.path.dirname(os.path.abspath(path))

    def where(field: str) -> str:
        return f"{path}: {field}"

    for key in doc:
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            issues.add(where(str(key)), "unknown key")
    tls = _parse_tls(_mapping(doc.get("tls_server_config"), where("tls_server_config"), issues),
                     base, where, issues)
    http = _mapping(doc.get("http_server_config"), where("http_server_config"), issues)
    for key in http:
        if key not in ("headers", "http2"):
            issues.add(where(f"http_server_config.{key}"), "unknown key")
    if not isinstance(http.get("http2", True), bool):
        issues.add(where("http_server_config.http2"), "must be true or false")
    headers: list[tuple[str, str]] = []
    for name, value in _mapping(http.get("headers"), where("http_server_config.headers"),
                                issues).items():
        field = where(f"http_server_config.headers.{name}")
        if name not in HEADERS:
            issues.add(field, f"this header can't be configured; one of: {', '.join(HEADERS)}")
        elif not isinstance(value, str) or "\n" in value or "\r" in value:
            issues.add(field, "must be a one-line string")
        elif (allowed := HEADERS[name]) is not None and value not in allowed:
            issues.add(field, f"must be one of {', '.join(allowed)}, got {value!r}")
        else:
            headers.append((str(name), value))
    users: list[tuple[str, str]] = []
    for user, hashed in _mapping(doc.get("basic_auth_users"), where("basic_auth_users"),
                                 issues).items():
        field = where(f"basic_auth_users.{user}")
        if not isinstance(user, str) or not user or ":" in user:
            issues.add(field, "a user name is a non-empty string without ':'")
            continue
        found = BCRYPT_HASH.fullmatch(hashed) if isinstance(hashed, str) else None
        if found is None:
            issues.add(field, "not a bcrypt hash (like $2y$10$ and 53 characters; make one "
                              "with htpasswd -nBC 10 USER)")
        elif not 4 <= int(found.group(1)) <= 31:
            issues.add(field, f"bcrypt cost {found.group(1)} is outside 4..31")
        else:
            users.append((user, hashed))
    if issues.items:
        raise ConfigError(issues.items)
    return WebConfig(path=path, tls=tls, headers=tuple(headers), users=tuple(users))


def _parse_tls(block: dict[str, Any], base: str, where: Callable[[str], str],
               issues: Issues) -> TlsServerConfig | None:
    if not block:
        return None
    known = ("cert_file", "key_file", "client_auth_type", "client_ca_file",
             "client_allowed_sans", "min_version", "max_version", "cipher_suites",
             "prefer_server_cipher_suites", "curve_preferences")
    for key in block:
        if key not in known:
            hint = " (inline certificates are not supported: use cert_file/key_file)" if key in (
                "cert", "key", "client_ca") else ""
            issues.add(where(f"tls_server_config.{key}"), "unknown key" + hint)

    def file(key: str) -> str | None:
        value = block.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            issues.add(where(f"tls_server_config.{key}"), "must be a file path")
            return None
        return os.path.join(base, value)

    cert, key_file = file("cert_file"), file("key_file")
    if cert is None:
        issues.add(where("tls_server_config.cert_file"), "missing (the server certificate)")
    if key_file is None:
        issues.add(where("tls_server_config.key_file"), "missing (the server certificate's key)")
    try:
        auth = ClientAuth(block.get("client_auth_type") or "NoClientCert")
    except ValueError:
        issues.add(where("tls_server_config.client_auth_type"),
                   f"must be one of {', '.join(a.value for a in ClientAuth)}, "
                   f"got {block.get('client_auth_type')!r}")
        auth = ClientAuth.NONE
    ca = file("client_ca_file")
    if auth.verifies and ca is None:
        issues.add(where("tls_server_config.client_ca_file"),
                   f"required with client_auth_type {auth.value}: the CA that signs client "
                   "certificates")
    if ca is not None and not auth.verifies:
        issues.add(where("tls_server_config.client_ca_file"),
                   f"set, but client_auth_type {auth.value} never verifies a certificate")
    sans = _strings(block.get("client_allowed_sans"), where("tls_server_config."
                                                            "client_allowed_sans"), issues)
    if sans and not auth.verifies:
        issues.add(where("tls_server_config.client_allowed_sans"),
                   "needs a client_auth_type that verifies certificates")
    versions = {}
    for field, default in (("min_version", "TLS12"), ("max_version", None)):
        value = block.get(field, default)
        if value is not None and value not in TLS_VERSIONS:
            issues.add(where(f"tls_server_config.{field}"),
                       f"must be one of {', '.join(TLS_VERSIONS)}, got {value!r}")
            value = default
        versions[field] = value
    low, high = versions["min_version"], versions["max_version"]
    if low and high and TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        issues.add(where("tls_server_config.max_version"), f"{high} is below min_version {low}")
    suites = _strings(block.get("cipher_suites"), where("tls_server_config.cipher_suites"),
                      issues)
    for suite in suites:
        if suite not in CIPHER_SUITES and suite not in TLS13_SUITES:
            issues.add(where("tls_server_config.cipher_suites"), f"unknown cipher suite {suite!r}")
    curves = _strings(block.get("curve_preferences"),
                      where("tls_server_config.curve_preferences"), issues)
    for curve in curves:
        if curve not in CURVES:
            issues.add(where("tls_server_config.curve_preferences"),
                       f"unknown curve {curve!r}; one of {', '.join(CURVES)}")
    prefer = block.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        issues.add(where("tls_server_config.prefer_server_cipher_suites"),
                   "must be true or false")
        prefer = True
    if cert is None or key_file is None:
        return None
    return TlsServerConfig(
        cert_file=cert, key_file=key_file, client_auth_type=auth, client_ca_file=ca,
        client_allowed_sans=sans, min_version=low or "TLS12", max_version=high,
        cipher_suites=suites, prefer_server_cipher_suites=prefer, curve_preferences=curves,
    )


def server_context(tls: TlsServerConfig, path: str) -> ssl.SSLContext:
    """The server's TLS context; ConfigError naming the field whose file or value fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    field = "cert_file"
    try:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        if tls.max_version:
            context.maximum_version = TLS_VERSIONS[tls.max_version]
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            field = "client_ca_file"
            context.load_verify_locations(cafile=tls.client_ca_file)
        # Python's ssl can't ask for a certificate without verifying it: RequestClientCert
        # asks for none (an unverified certificate proves nothing, and nothing reads it).
        # RequireAnyClientCert verifies against client_ca_file, which it requires here.
        # Certificates are optional at the handshake; a request that needs one without it
        # gets 403, so kubelet's probes (no certificate) can still be answered.
        context.verify_mode = ssl.CERT_OPTIONAL if tls.client_auth_type.verifies else (
            ssl.CERT_NONE)
        field = "cipher_suites"
        if tls.cipher_suites:
            names = [CIPHER_SUITES[s] for s in tls.cipher_suites if s in CIPHER_SUITES]
            if names:
                context.set_ciphers(":".join(names))
        if tls.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        field = "curve_preferences"
        if tls.curve_preferences:  # Python sets one ECDH curve: the first preferred
            context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
        context.set_alpn_protocols(["http/1.1"])
    except FileNotFoundError as exc:
        raise _error(path, field, f"no such file: {exc.filename or ''}".rstrip(": ")) from None
    except PermissionError as exc:
        raise _error(path, field, f"cannot read {exc.filename or 'the file'}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        if field == "cert_file":
            raise _error(path, "cert_file",
                         f"cannot load the certificate and key ({tls.cert_file}, "
                         f"{tls.key_file}): {reason}") from None
        raise _error(path, field, f"rejected: {reason}") from None
    return context


def _error(path: str, field: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(f"{path}: tls_server_config.{field}", message)])


@dataclass(frozen=True)
class Security:
    """What one version of the web config asks of connections and requests."""

    config: WebConfig
    context: ssl.SSLContext | None
    auth: BasicAuth | None

    @property
    def client_auth(self) -> ClientAuth:
        return self.config.tls.client_auth_type if self.config.tls else ClientAuth.NONE

    def peer_allowed(self, cert: dict[str, Any] | None) -> bool:
        """A verified client certificate, whose SANs `client_allowed_sans` allows."""
        if not cert:
            return False
        allowed = self.config.tls.client_allowed_sans if self.config.tls else ()
        if not allowed:
            return True
        names = {str(value) for _, value in cert.get("subjectAltName", ())}
        return bool(names & set(allowed))


def load_security(path: str) -> Security:
    """The web config at `path` with its TLS context and basic auth; ConfigError if bad."""
    config = parse_web_config(path)
    context = server_context(config.tls, path) if config.tls else None
    auth = None
    if config.users:  # the only path that imports bcrypt
        from probe.web.basic_auth import BasicAuth

        auth = BasicAuth(dict(config.users))
    return Security(config, context, auth)


def _signature(paths: Iterable[str]) -> tuple[Any, ...]:
    """What changes when a file or the link to it is replaced (stat follows links)."""
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            out.append((path, exc.errno))
            continue
        out.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class WebConfigFile:
    """The web config in force, re-read when the file or a file it names changes."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._current = load_security(path)  # ConfigError at start: refuse to start
        self._signature = _signature(self._current.config.files())
        self._checked = clock()
        logger.info("web config loaded", extra=logs.fields(**_summary(self._current)))

    def current(self) -> Security:
        """The config in force, after a look (at most every CHECK_EVERY) for changes."""
        with self._lock:
            now = self._clock()
            if now - self._checked < CHECK_EVERY:
                return self._current
            self._checked = now
            running = self._current
            signature = _signature(running.config.files())
            if signature == self._signature:
                return running
        try:
            new = load_security(self.path)
        except ConfigError as exc:
            with self._lock:
                self._signature = signature  # logged once per change, not per connection
            for issue in exc.issues:
                logger.error(
                    "web config reload rejected, the running one stays: %s", issue
                )
            return running
        with self._lock:
            self._current = new
            self._signature = _signature(new.config.files())
        logger.info("web config reloaded", extra=logs.fields(**_summary(new)))
        return new


def _summary(security: Security) -> dict[str, Any]:
    """What a log line says of a web config (never a hash or a user name)."""
    return {
        "file": security.config.path,
        "tls": security.context is not None,
        "client_auth": security.client_auth.value,
        "users": len(security.config.users),
    }


class Guard:
    """WSGI: what the web config in force asks of each request, before the router.

    The server says in the environ whether the connection's client certificate was
    verified (at its handshake). Refused: a request without the certificate the config
    requires (403), without valid basic-auth credentials (401, `WWW-Authenticate`): by
    the config in force at the request, so a user removed while a scraper holds its
    connection open is refused from then on. Kubelet's probe paths are answered either
    way, with their status and a bare body.
    """

    def __init__(self, app: WSGIApp, current: Callable[[], Security]) -> None:
        self._app = app
        self._current = current

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        security = self._current()
        extra = list(security.config.headers)

        def with_headers(status: str, headers: list[tuple[str, str]],
                         exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        refusal = self._refusal(security, environ)
        if refusal is None:
            return self._app(environ, with_headers)
        if is_kubelet_path(request_path(environ)):
            return self._bare(environ, with_headers)
        status, text, headers = refusal
        logger.debug("http %s refused: %s", environ.get("REMOTE_ADDR"), text.strip())
        answer = respond(with_headers, status, text, headers=headers)
        return [] if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD" else answer

    @staticmethod
    def _refusal(security: Security, environ: Environ
                 ) -> tuple[int, str, list[tuple[str, str]]] | None:
        if security.client_auth.requires and not environ.get("probe.client_verified"):
            return 403, "a client certificate signed by the configured CA is required\n", []
        if security.auth is not None and not security.auth.allows(
                environ.get("HTTP_AUTHORIZATION")):
            return 401, "unauthorized\n", [("WWW-Authenticate", 'Basic realm="milvus-probe"')]
        return None

    def _bare(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """A kubelet probe without credentials: the status, and no detail."""
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status]
            return lambda data: None

        body = self._app({**environ, "QUERY_STRING": ""}, capture)
        if hasattr(body, "close"):
            body.close()
        code = int(captured[0].split()[0]) if captured else 500
        answer = respond(start_response, code, "OK\n" if code == 200 else "not OK\n")
        return [] if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD" else answer
