"""How a target's held connection shows beside its fresh cycles: trace lines (`/probe`,
`check -v`), the status page's line, the JSON API's fields. Plain text in, text out.

The two lines read together: fresh ok and held failing says "the network path or the
client library, not Milvus"; both failing says Milvus (or the whole path) is down.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from probe.health import TargetState
from probe.result import HeldView, ProbeResult


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}ms"


def trace_lines(result: ProbeResult) -> list[str]:
    """`fresh ...` and `held ...` one above the other, with the held channel's changes."""
    held = result.held
    if held is None:
        return []
    fresh = "ok" if result.success else f"FAILED {result.reason}"
    lines = [
        f"fresh     {_ms(result.duration):>12}  {fresh} (a new connection, opened and closed)",
        f"held      {_ms(held.duration):>12}  {held.summary()}",
    ]
    if held.changes:
        lines.append("  channel " + ", ".join(f"{c.state} {_clock(c.at)}" for c in held.changes))
    return lines


def _clock(at: float) -> str:
    """`00:18:45.981Z`: the time of day (UTC) of a state change."""
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def status_html(state: TargetState | None) -> str:
    """The status page's line: the fresh cycle's outcome beside the held call's."""
    if state is None or state.held is None:
        return ""
    held = state.held
    last = state.last
    fresh = "-" if last is None else "ok" if last.success else f"FAILED {last.reason}"
    fresh_cls = "up" if last is not None and last.success else "down"
    held_cls = "up" if held.success else "down"
    return (
        '<div class="small muted">'
        f'fresh connection: <span class="{fresh_cls}">{html.escape(fresh)}</span> · '
        f'held connection: <span class="{held_cls}">{html.escape(held.summary())}</span>'
        "</div>"
    )


def held_dict(view: HeldView | None) -> dict[str, Any] | None:
    return None if view is None else view.to_dict()


def add_to_targets(rows: list[dict[str, Any]], states: Sequence[TargetState]) -> None:
    """`/api/v1/targets`: each row of a target with a held connection gains `held`."""
    held = {s.target.alias: s.held for s in states if s.target.held}
    for row in rows:
        if row["alias"] in held:
            row["held"] = held_dict(held[row["alias"]])
