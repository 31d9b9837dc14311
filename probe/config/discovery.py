"""Kubernetes discovery settings: what to watch, this replica's shard, and the template
every discovered target takes its connection settings from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from probe.config.issues import Issues
from probe.config.settings import DiscoverySettings, ProbeSettings
from probe.config.targets import validate_target

_ORDINAL = re.compile(r"-(\d+)$")


def discovery_settings(
    values: Mapping[str, Any],
    file_doc: Mapping[str, Any],
    file_name: str,
    environ: Mapping[str, str],
    probe: ProbeSettings,
    issues: Issues,
) -> DiscoverySettings:
    service = values["discovery.kubernetes.service"]
    selector = values["discovery.kubernetes.label-selector"]
    if bool(service) == bool(selector):
        issues.add(
            "--discovery.kubernetes.service",
            "discovery needs exactly one of --discovery.kubernetes.service and "
            "--discovery.kubernetes.label-selector",
        )
    index, total = 0, 1
    shard = values["discovery.shard"]
    if shard:
        match = re.fullmatch(r"(\d{1,6}|auto)/(\d{1,6})", shard.strip())
        if not match:
            issues.add("--discovery.shard", f"expected INDEX/TOTAL or auto/TOTAL, got {shard!r}")
        else:
            total = int(match.group(2))
            if match.group(1) == "auto":
                pod = environ.get("POD_NAME") or environ.get("HOSTNAME", "")
                ordinal = _ORDINAL.search(pod)
                if not ordinal:
                    issues.add(
                        "--discovery.shard",
                        f"auto needs a StatefulSet pod name ending "
                        f"in -<ordinal> in POD_NAME, got {pod!r}",
                    )
                index = int(ordinal.group(1)) if ordinal else 0
            else:
                index = int(match.group(1))
            if total < 1 or index >= total:
                issues.add("--discovery.shard", f"shard {index} is outside 0–{total - 1}")
    template = None
    block = file_doc.get("discovery")
    raw_template: dict[str, Any] = {}
    if block is not None:
        if not isinstance(block, dict) or set(block) - {"template"}:
            issues.add(f"{file_name}: discovery", "expected a mapping with one key, template")
        elif block.get("template") is not None:
            if not isinstance(block["template"], dict):
                issues.add(f"{file_name}: discovery.template", "expected a mapping")
            else:
                raw_template = dict(block["template"])
    where = f"{file_name}: discovery.template"
    for key in ("alias", "uri", "host", "port"):
        if key in raw_template:
            issues.add(
                f"{where}.{key}",
                "discovered targets take their alias and address from "
                "the EndpointSlices; remove it",
            )
            raw_template.pop(key)
    template = validate_target(
        {**raw_template, "alias": "template", "host": "template.invalid"}, where, probe, issues
    )
    return DiscoverySettings(
        namespace=values["discovery.kubernetes.namespace"],
        service=service,
        label_selector=selector,
        port_name=values["discovery.kubernetes.port-name"],
        include_service=values["discovery.kubernetes.include-service"],
        management_port=values["discovery.kubernetes.management-port"],
        shard_index=index,
        shard_total=total,
        template=template,
    )
