"""Targets from the config file's `targets:` list, overlaid by connection flags and the
environment (one target, named by --alias, as pymilvus reads them), each validated."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from probe.config.issues import Issues
from probe.config.options import (
    CANARY_FLAG_KEYS,
    CANARY_KEYS,
    CANARY_OPTIONS,
    CONNECTION_KEYS,
    CONNECTION_OPTIONS,
    TARGET_KEYS,
    TARGET_OVERRIDES,
)
from probe.config.settings import (
    DEFAULT_ALIAS,
    DEFAULT_HOST,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_PORT,
    DEFAULT_TLS_INSPECT_INTERVAL,
    DEFAULT_TLS_PORT,
    PROTOCOLS,
    REST_APIS,
    ProbeSettings,
)
from probe.config.values import format_duration, int_in, parse_bool, parse_duration, string
from probe.milvus.auth import Credentials, Secret, SecretFile
from probe.targets import Canary, Endpoint, Target, TLSFiles, tls_server_name


def check_pool_and_handler(raw: Mapping[Any, Any], where: str, issues: Issues) -> None:
    handler = raw.get("handler")
    if handler is not None and str(handler).upper() != "GRPC":
        issues.add(
            f"{where}handler",
            f"only the GRPC handler is supported (got {handler!r}), as in the Milvus SDK",
        )
    for key in raw:
        if isinstance(key, str) and key.lower().startswith("pool"):
            issues.add(
                f"{where}{key}",
                "connection pool settings are not supported, as in the "
                "Milvus SDK: every cycle opens and closes its own connection",
            )


def _env_target(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for option in CONNECTION_OPTIONS:
        value = environ.get(option.env_name)
        if value is not None and value != "":
            found[option.name] = value
    for canary in CANARY_OPTIONS:
        value = environ.get(canary.env_name)
        if value is not None and value != "":
            found[canary.key] = value
    return found


def file_and_flag_targets(
    file_doc: Mapping[str, Any],
    file_name: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    probe: ProbeSettings,
    issues: Issues,
    default: bool = True,
) -> list[Target]:
    """File targets, overlaid by connection flags/env; the pymilvus default if `default`."""
    raw_list = file_doc.get("targets")
    file_targets: list[tuple[str, dict[str, Any]]] = []
    if raw_list is not None and not isinstance(raw_list, list):
        issues.add(f"{file_name}: targets", "expected a list of targets")
    elif raw_list:
        for index, raw in enumerate(raw_list):
            where = f"{file_name}: targets[{index}]"
            if not isinstance(raw, dict):
                issues.add(where, "expected a mapping with uri or host/port")
                continue
            file_targets.append((where, dict(raw)))

    # Connection settings from the environment and flags describe one target, the
    # one named by --alias / MILVUS_CONN_ALIAS, as in pymilvus; flags win over env.
    overlay = _env_target(environ)
    flag_target = {k: v for k, v in flags.items() if k in CONNECTION_KEYS | CANARY_FLAG_KEYS}
    _drop_other_address_form(overlay, flag_target)
    overlay.update(flag_target)
    overlay_where = "flags/environment"
    alias = overlay.get("alias", DEFAULT_ALIAS)
    has_connection = any(k != "alias" for k in overlay)
    if has_connection or (not file_targets and default):
        for index, (where, raw) in enumerate(file_targets):
            if raw.get("alias", DEFAULT_ALIAS) == alias:
                merged = dict(raw)
                _drop_other_address_form(merged, overlay)
                merged.update(overlay)
                file_targets[index] = (f"{where} (with flags/environment)", merged)
                break
        else:
            file_targets.append((overlay_where, overlay))

    targets: list[Target] = []
    seen: dict[str, str] = {}
    for where, raw in file_targets:
        # The alias the target ends up with (1 → "1", null or "" → "default").
        raw_alias = raw.get("alias")
        alias = str(raw_alias) if raw_alias not in (None, "") else DEFAULT_ALIAS
        if alias in seen:
            issues.add(f"{where}.alias", f"duplicate alias {alias!r} (also used by {seen[alias]})")
        else:
            seen[alias] = where
        target = validate_target(raw, where, probe, issues)
        if target is not None:
            targets.append(target)
    return targets


def _drop_other_address_form(lower: dict[str, Any], higher: Mapping[str, Any]) -> None:
    """A higher-precedence source that gives uri (or host/port) replaces the other form."""
    if "uri" in higher:
        lower.pop("host", None)
        lower.pop("port", None)
    if "host" in higher or "port" in higher:
        lower.pop("uri", None)


_HOST = re.compile(r"[A-Za-z0-9._:%\-\[\]]{1,253}")
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_ALIAS = re.compile(r"[^\s\x00-\x1f\x7f]{1,128}")


def _fold_canary_flags(raw: dict[str, Any]) -> dict[str, Any]:
    """`canary.<key>` flags/environment merged over the target's `canary:` block."""
    flat = {k[len("canary.") :]: raw[k] for k in raw if k in CANARY_FLAG_KEYS}
    if not flat:
        return raw
    folded = {k: v for k, v in raw.items() if k not in CANARY_FLAG_KEYS}
    block = raw.get("canary")
    base = dict(block) if isinstance(block, dict) else {}
    if block not in (None, True, False) and not isinstance(block, dict):
        return folded  # the block's own error is reported; flags can't mend it
    folded["canary"] = {**base, **flat}
    return folded


_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def _canary(block: Any, where: str, issues: Issues) -> Canary | None:
    """The target's canary from its `canary:` block (true: every default; false/null: off)."""
    where = f"{where}.canary"
    if block is None or block is False:
        return None
    if block is True:
        return Canary()
    if not isinstance(block, dict):
        issues.add(where, "expected true, false or a mapping of canary settings")
        return None
    values: dict[str, Any] = {}
    for key, value in block.items():
        option = next((o for o in CANARY_OPTIONS if o.name == key), None)
        if option is None:
            issues.add(
                f"{where}.{key}", f"unknown key; expected one of {', '.join(sorted(CANARY_KEYS))}"
            )
            continue
        if value is None:
            continue
        parsed = issues.parse(f"{where}.{key}", option.parse, value, None)
        if parsed is not None:
            values[key] = parsed
    collection = values.get("collection")
    if collection is not None and not _COLLECTION.fullmatch(collection):
        issues.add(
            f"{where}.collection",
            f"{collection!r} is not a Milvus collection name (a letter or _, then letters, "
            "digits or _; at most 255)",
        )
    timeout = values.get("setup_timeout")
    if timeout is not None and timeout > 3600:
        issues.add(f"{where}.setup_timeout", "must be at most 1h")
    if values.pop("enabled", True) is False:
        return None
    return Canary(**values)


def validate_target(
    raw: dict[str, Any], where: str, probe: ProbeSettings, issues: Issues
) -> Target | None:
    before = len(issues.items)
    raw = _fold_canary_flags(raw)
    check_pool_and_handler(raw, f"{where}.", issues)
    for key in raw:
        if key == "handler" or (isinstance(key, str) and key.lower().startswith("pool")):
            continue
        if key not in TARGET_KEYS:
            issues.add(
                f"{where}.{key}", f"unknown key; expected one of {', '.join(sorted(TARGET_KEYS))}"
            )

    def get(key: str, parse: Callable[[Any], Any] = string) -> Any:
        if key not in raw or raw[key] is None:
            return None
        return issues.parse(f"{where}.{key}", parse, raw[key])

    alias = get("alias") or DEFAULT_ALIAS
    if not _ALIAS.fullmatch(alias):
        issues.add(f"{where}.alias", "must be 1–128 printable characters without spaces")

    secure = get("secure", parse_bool)
    host, port, uri_db, uri_secure = DEFAULT_HOST, DEFAULT_PORT, None, False
    uri = get("uri")
    if uri is not None and ("host" in raw or "port" in raw):
        issues.add(f"{where}.uri", "set either uri or host/port, not both")
    elif uri is not None:
        parsed = _parse_uri(uri)
        if isinstance(parsed, str):
            issues.add(f"{where}.uri", parsed)
        else:
            host, port, uri_db, uri_secure = parsed
    else:
        host = get("host") or DEFAULT_HOST
        port_value = get("port", int_in(1, 65535))
        port = port_value if port_value is not None else DEFAULT_PORT
    if uri_secure and secure is False:
        issues.add(f"{where}.secure", "the uri is https:// but secure is false")

    if not _HOST.fullmatch(host):
        issues.add(f"{where}.host", f"{host!r} is not a host name or address")
    db_name = get("db_name") or ""
    if db_name and not _DB_NAME.fullmatch(db_name):
        issues.add(
            f"{where}.db_name",
            f"{db_name!r} is not a Milvus database name (a letter or "
            "_, then letters, digits or _; at most 255)",
        )
    if uri_db and db_name and uri_db != db_name:
        issues.add(
            f"{where}.db_name", f"the uri names database {uri_db!r} but db_name is {db_name!r}"
        )
    db_name = db_name or uri_db or ""

    credentials = _credentials(raw, where, get, issues)

    tls_values = {
        k: get(k)
        for k in (
            "server_pem_path",
            "server_name",
            "client_pem_path",
            "client_key_path",
            "ca_pem_path",
        )
    }
    if tls_values["server_name"]:
        try:
            tls_server_name(tls_values["server_name"])
        except ValueError as exc:
            issues.add(f"{where}.server_name", str(exc))
    tls_files = {k: v for k, v in tls_values.items() if v and k != "server_name"}
    use_tls = bool(secure) or uri_secure or (secure is None and bool(tls_files))
    if tls_files and secure is False:
        issues.add(f"{where}.secure", f"{', '.join(sorted(tls_files))} set but secure is false")
    if bool(tls_values["client_pem_path"]) != bool(tls_values["client_key_path"]):
        issues.add(
            f"{where}.client_key_path", "mutual TLS needs both client_pem_path and client_key_path"
        )
    for key, path in tls_files.items():
        _check_readable(path, f"{where}.{key}", issues)

    interval = get("interval", parse_duration) or probe.interval
    timeout = get("timeout", parse_duration) or probe.timeout
    if timeout >= interval and ("interval" in raw or "timeout" in raw):
        issues.add(
            f"{where}.timeout",
            f"the timeout ({format_duration(timeout)}) must be "
            f"shorter than the interval ({format_duration(interval)})",
        )

    rpc = get("rpc", TARGET_OVERRIDES["rpc"]) or probe.rpc
    connect_interval = get("connect_interval", parse_duration) or probe.connect_interval
    protocol = get("protocol", _one_of(PROTOCOLS)) or "grpc"
    rest_api = get("rest_api", _one_of(REST_APIS)) or "auto"
    if "rest_api" in raw and protocol != "rest":
        issues.add(f"{where}.rest_api", "only REST targets have one; set protocol: rest")
    management = None
    management_uri = get("management_uri")
    if management_uri is not None:
        parsed_management = _parse_management_uri(management_uri)
        if isinstance(parsed_management, str):
            issues.add(f"{where}.management_uri", parsed_management)
        else:
            management = parsed_management
    management_interval = get("management_interval", parse_duration) or 0.0
    if "management_interval" in raw and management_uri is None:
        issues.add(f"{where}.management_interval", "set, but there is no management_uri")
    tls_inspect_interval = (
        get("tls_inspect_interval", parse_duration) or DEFAULT_TLS_INSPECT_INTERVAL
    )
    canary = _canary(raw.get("canary"), where, issues)
    held = bool(get("held", parse_bool))
    if held and protocol != "grpc":
        issues.add(f"{where}.held", "only gRPC targets have a held connection; set protocol: grpc")
    if len(issues.items) > before:
        return None
    return Target(
        alias=alias,
        host=host,
        port=port,
        interval=interval,
        timeout=timeout,
        rpc=rpc,
        connect_interval=connect_interval,
        secure=use_tls,
        db_name=db_name,
        credentials=credentials,
        tls=TLSFiles(**tls_values) if use_tls else None,
        protocol=protocol,
        rest_api=rest_api,
        management=management,
        management_interval=management_interval,
        tls_inspect_interval=tls_inspect_interval,
        canary=canary,
        held=held,
    )


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(text)

    return parse


def _parse_management_uri(uri: str) -> Endpoint | str:
    """The management endpoint from `http://host:9091`, or an error message."""
    text = uri.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f"cannot parse {uri!r}: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported scheme {parts.scheme!r}; use http:// or https://"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "credentials, a query or a fragment are not allowed here"
    if parts.path.strip("/") not in ("", "healthz"):
        return f"give the port only (the probe asks /healthz), not the path {parts.path!r}"
    host = parts.hostname
    if not host or not _HOST.fullmatch(host):
        return f"no valid host in {uri!r}"
    return Endpoint(host, port or DEFAULT_MANAGEMENT_PORT, parts.scheme.lower() == "https")


def _credentials(
    raw: Mapping[str, Any], where: str, get: Callable[..., Any], issues: Issues
) -> Credentials | None:
    token, token_file = get("token"), get("token_file")
    user, password, password_file = get("user"), get("password"), get("password_file")
    if token and token_file:
        issues.add(f"{where}.token_file", "set either token or token_file, not both")
    if password and password_file:
        issues.add(f"{where}.password_file", "set either password or password_file, not both")
    if (token or token_file) and (user or password or password_file):
        issues.add(f"{where}.token", "set either token or user/password, not both")
    if (password or password_file) and not user:
        issues.add(f"{where}.user", "a password needs a user")
    if user and not (password or password_file):
        issues.add(f"{where}.password", f"user {user!r} needs a password or password_file")
    for key, path in (("token_file", token_file), ("password_file", password_file)):
        if path:
            _check_readable(path, f"{where}.{key}", issues)
    if token or token_file:
        return Credentials(token=Secret(token) if token else SecretFile(token_file))
    if user:
        secret = Secret(password) if password else SecretFile(password_file)
        return Credentials(user=user, password=secret)
    return None


def _check_readable(path: str, where: str, issues: Issues) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issues.add(where, f"cannot read {path!r}: {reason}")


def _parse_uri(uri: str) -> tuple[str, int, str | None, bool] | str:
    """(host, port, database, secure) from a pymilvus-style uri, or an error message.

    Messages never echo credentials a uri may carry (`user:password@`).
    """
    shown = re.sub(r"(//)?[^/@\s]*@", r"\1***@", uri)
    text = uri.strip()
    if not text:
        return "must not be empty"
    if "://" not in text:
        if text.endswith(".db") or text.startswith(("/", ".")):
            return (
                f"{shown!r} looks like a milvus-lite local file; the probe needs a server: "
                "run `milvus-lite server` and give its host:port"
            )
        text = "http://" + text
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        return f"cannot parse {shown!r}: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "tcp", "grpc"):
        return f"unsupported scheme {parts.scheme!r}; use http://, https:// or host:port"
    if parts.username or parts.password:
        return "credentials in the uri are not supported; use token or token_file"
    if parts.query or parts.fragment:
        return "a query or fragment is not allowed in the uri"
    try:
        port = parts.port
    except ValueError:
        return f"the port in {shown!r} is not a number in 1–65535"
    host = parts.hostname
    if not host:
        return f"no host in {shown!r}"
    secure = scheme == "https"
    if port is None:
        port = DEFAULT_TLS_PORT if secure else DEFAULT_PORT
    if not 1 <= port <= 65535:
        return f"port {port} is outside 1–65535"
    path = parts.path.strip("/")
    if "/" in path:
        return f"the uri path names a database and may have one segment, got {parts.path!r}"
    return host, port, path or None, secure
