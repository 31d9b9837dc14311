"""Generate charts/milvus-probe/values.schema.json from values.yaml (`make schema`).

Descriptions come from the `## @param` comments, types from the default values, and
enums, patterns and ranges from the table below; a test checks the committed schema is
what this script produces, so values and schema cannot drift apart.
"""

import json
import re

import yaml

DUR = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
PROM_DUR = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
"""Prometheus durations (alert `for:`, range selectors) take no decimals."""
special = {
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "probe.rpc": {"enum": ["check_health", "get_version"]},
    "readiness.policy": {"enum": ["self", "any", "all", "any-held", "all-held"]},
    "logging.level": {"enum": ["debug", "info", "warn", "error"]},
    "logging.format": {"enum": ["text", "json"]},
    "service.type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "probe.interval": DUR,
    "probe.timeout": DUR,
    "probe.connectInterval": DUR,
    "serviceMonitor.interval": PROM_DUR,
    "serviceMonitor.scrapeTimeout": PROM_DUR,
    "podMonitor.interval": PROM_DUR,
    "podMonitor.scrapeTimeout": PROM_DUR,
    "prometheusRule.failingFor": PROM_DUR,
    "prometheusRule.heldFailingFor": PROM_DUR,
    "prometheusRule.absentFor": PROM_DUR,
    "containerPort": {"minimum": 1, "maximum": 65535},
    "service.port": {"minimum": 1, "maximum": 65535},
    "probe.maxConcurrent": {"minimum": 1, "maximum": 65536},
    "replicaCount": {"minimum": 0},
    "terminationGracePeriodSeconds": {"minimum": 0},
    "readiness.failureThreshold": {"minimum": 1},
    "readiness.successThreshold": {"minimum": 1},
    "prometheusRule.failureRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "prometheusRule.latencySeconds": {"type": "number", "exclusiveMinimum": 0},
    "prometheusRule.slo.objective": {"type": "number", "exclusiveMinimum": 0,
                                     "exclusiveMaximum": 1},
    **{f"prometheusRule.slo.{speed}.{key}": value for speed in ("fast", "slow")
       for key, value in (("burnRate", {"type": "number", "exclusiveMinimum": 0}),
                          ("longWindow", PROM_DUR), ("shortWindow", PROM_DUR),
                          ("for", PROM_DUR),
                          ("severity", {"enum": ["critical", "warning", "info"]}))},
    "namespaceOverride": {"pattern": r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$"},
    "image.digest": {"pattern": r"^(sha256:[a-f0-9]{64})?$"},
}
target_item = {
    "type": "object",
    "additionalProperties": False,
    "description": "One Milvus target; keys as in pymilvus connections.connect. "
    "No token or password: use auth.existingSecret.",
    "properties": {
        "alias": {"type": "string", "minLength": 1, "description": "Name in labels and URLs"},
        "uri": {
            "type": "string",
            "minLength": 1,
            "description": "http://host:port, https://host:port (TLS) or host:port",
        },
        "host": {
            "type": "string",
            "minLength": 1,
            "description": "Milvus host, when no uri is given",
        },
        "port": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65535,
            "description": "Milvus port, when no uri is given",
        },
        "db_name": {"type": "string", "description": "Database; Connect checks that it exists"},
        "user": {
            "type": "string",
            "description": "User name; the password comes from auth.existingSecret "
            "as a user:password token",
        },
        "secure": {"type": "boolean", "description": "Use TLS"},
        "server_name": {
            "type": "string",
            "description": "Name to verify in the server certificate",
        },
        "token_file": {
            "type": "string",
            "description": "Path of a token file mounted by extraVolumes",
        },
        "password_file": {
            "type": "string",
            "description": "Path of a password file mounted by extraVolumes",
        },
        "interval": dict(DUR, description="Per-target interval"),
        "timeout": dict(DUR, description="Per-target timeout"),
        "rpc": {"enum": ["check_health", "get_version"], "description": "Per-target RPC"},
        "connect_interval": dict(DUR, description="Per-target connect interval"),
        "protocol": {"enum": ["grpc", "rest"],
                     "description": "The door to probe: gRPC or the RESTful API"},
        "rest_api": {"enum": ["auto", "v1", "v2"], "description": "REST targets: which API"},
        "management_uri": {
            "type": "string",
            "pattern": "^(https?://)?[^/?#@]+(/(healthz)?)?$",
            "description": "Milvus's management port (http://host:9091), checked beside",
        },
        "management_interval": dict(DUR, description="Least time between management checks"),
        "tls_inspect_interval": dict(DUR, description="Least time between TLS inspections"),
        "held": {
            "type": "boolean",
            "description": "Also keep one long-lived connection, as pymilvus keeps its own, "
            "and call it every cycle (README: Held connections)",
        },
        "canary": {
            "description": "The data-plane canary (README: The data-plane canary): true for "
            "every default, or its settings",
            "anyOf": [
                {"type": "boolean"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean", "description": "Run the canary"},
                        "collection": {
                            "type": "string",
                            "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,254}$",
                            "description": "Collection it searches, queries and writes",
                        },
                        "create": {
                            "type": "boolean",
                            "description": "Create, fill, index and load it when missing "
                            "or not loaded",
                        },
                        "dimension": {"type": "integer", "minimum": 2, "maximum": 512},
                        "rows": {"type": "integer", "minimum": 1, "maximum": 1000},
                        "write": {
                            "type": "boolean",
                            "description": "Also upsert one fixed row and read it back",
                        },
                        "every": {"type": "integer", "minimum": 1, "maximum": 10000},
                        "setup_timeout": dict(DUR, description="Time a setup may take"),
                    },
                },
            ],
        },
    },
    "anyOf": [{"required": ["uri"]}, {"required": ["host"]}],
}


TEMPLATE_KEYS = ("db_name", "user", "secure", "server_name", "interval", "timeout", "rpc",
                 "connect_interval", "token_file", "password_file", "protocol", "rest_api",
                 "tls_inspect_interval", "canary", "held")


def node(path, value):
    d = desc.get(path)
    if path == "discovery.template":
        props = {k: v for k, v in target_item["properties"].items() if k in TEMPLATE_KEYS}
        return {"type": "object", "additionalProperties": False, "description": d,
                "properties": props}
    if path == "targets":
        return {"type": "array", "description": d, "items": target_item}
    if isinstance(value, dict) and d is None:
        props = {k: node(f"{path}.{k}" if path else k, v) for k, v in value.items()}
        return {"type": "object", "additionalProperties": False, "properties": props}
    if isinstance(value, bool):
        t = {"type": "boolean"}
    elif isinstance(value, int):
        t = {"type": "integer"}
    elif isinstance(value, float):
        t = {"type": "number"}
    elif isinstance(value, str):
        t = {"type": "string"}
    elif isinstance(value, list):
        t = {"type": "array"}
    elif isinstance(value, dict):
        t = {"type": "object"}
    else:
        raise SystemExit(f"no type for {path}")
    t.update(special.get(path, {}))
    if "enum" in t:
        t.pop("type", None)
    if d is None:
        raise SystemExit(f"no description for {path}")
    t["description"] = d
    return t


PARAM = re.compile(r"^\s*## @param (\S+) (.+)$")
COMMENT = re.compile(r"^\s*## ?(.*)$")


def params(src: str) -> dict[str, str]:
    """Every `## @param KEY DESCRIPTION` of values.yaml, in order. A description goes on over
    the `##` lines right below it, up to a blank line, a value or the next `@` keyword."""
    found: dict[str, str] = {}
    key = None
    for line in src.splitlines():
        param = PARAM.match(line)
        if param:
            key = param.group(1)
            found[key] = param.group(2).strip()
            continue
        comment = COMMENT.match(line)
        text = comment.group(1).strip() if comment else ""
        if key is None or not text or text.startswith("@"):
            key = None
            continue
        found[key] += " " + text
    return found


def generate(values_path: str = "charts/milvus-probe/values.yaml") -> str:
    with open(values_path, encoding="utf-8") as fh:
        src = fh.read()
    desc.clear()
    desc.update(params(src))
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "milvus-probe chart values",
    }
    schema.update(node("", yaml.safe_load(src)))
    # Helm passes `global` to every subchart: without it, a parent chart could not embed this one.
    schema["properties"]["global"] = {  # type: ignore[index]
        "type": "object",
        "description": "Helm's global values (set when this chart is a subchart)",
    }
    return json.dumps(schema, indent=2) + "\n"


desc: dict[str, str] = {}


def values_table(values_path: str = "charts/milvus-probe/values.yaml") -> str:
    """The chart README's values table: every `## @param`, its default and description."""
    with open(values_path, encoding="utf-8") as fh:
        src = fh.read()
    values = yaml.safe_load(src)
    rows = ["| value | default | description |", "|---|---|---|"]
    for key, text in params(src).items():
        default: object = values
        for part in key.split("."):
            default = default[part]  # type: ignore[index]
        shown = json.dumps(default) if not isinstance(default, str) else f'"{default}"'
        if len(shown) > 60:
            shown = "see values.yaml"
        escaped = text.replace("|", "\\|")
        rows.append(f"| `{key}` | `{shown}` | {escaped} |")
    return "\n".join(rows) + "\n"


START, END = "<!-- values:start -->", "<!-- values:end -->"


def readme_with_table(readme: str, values_path: str = "charts/milvus-probe/values.yaml") -> str:
    """`readme` with the text between the values markers replaced by a fresh table."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{values_table(values_path)}{END}{tail}"


if __name__ == "__main__":
    import sys

    if "--readme" in sys.argv:
        path = sys.argv[sys.argv.index("--readme") + 1]
        with open(path, encoding="utf-8") as fh:
            text = readme_with_table(fh.read())
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(generate(), end="")
