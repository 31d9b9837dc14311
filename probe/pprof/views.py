"""Text and HTML renderings of profiles: thread dumps, the index, the flame graph."""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from probe.pprof.builder import Frame, Stack
from probe.pprof.sampler import ThreadInfo


def _frame_line(frame: Frame) -> str:
    name, filename, _, line = frame
    return f"{name}()\n\t{filename}:{line}"


def threads_grouped(stacks: dict[int, Stack], infos: dict[int, ThreadInfo]) -> str:
    """Go's `goroutine?debug=1`: identical stacks grouped, with counts."""
    groups: dict[Stack, list[str]] = {}
    for ident, stack in stacks.items():
        info = infos.get(ident)
        groups.setdefault(stack, []).append(info.name if info else str(ident))
    lines = [f"thread profile: total {len(stacks)}"]
    for stack, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{len(names)} @ {', '.join(sorted(names))}")
        for name, filename, _, line in stack:
            lines.append(f"#\t{name}\t{filename}:{line}")
        lines.append("")
    return "\n".join(lines) + "\n"


def threads_full(stacks: dict[int, Stack], infos: dict[int, ThreadInfo]) -> str:
    """Go's `goroutine?debug=2`: every thread with its name, ident, daemon flag and stack."""
    blocks = []
    for ident, stack in sorted(stacks.items(), key=lambda kv: infos.get(kv[0]) is None):
        info = infos.get(ident)
        name = info.name if info else "?"
        daemon = info.daemon if info else False
        native = info.native_id if info else None
        head = f'thread {ident} "{name}" [native_id={native}, daemon={str(daemon).lower()}]:'
        blocks.append("\n".join([head, *(_frame_line(f) for f in stack)]))
    return "\n\n".join(blocks) + "\n"


PROFILES: tuple[tuple[str, str], ...] = (
    (
        "profile",
        "CPU profile of every Python thread. ?seconds=N (default 30), ?hz= (default "
        "100), ?mode=cpu (threads on the CPU) or ?mode=wall (all threads, waiting too).",
    ),
    (
        "heap",
        "Live Python memory by allocation site (tracemalloc). With --profiling.heap: "
        "everything live now; otherwise traces for ?seconds=N (default 10) and shows what "
        "was allocated in that window and is still live.",
    ),
    (
        "allocs",
        "The same window view as heap, as alloc_space/alloc_objects. Allocations freed "
        "within the window are not counted (tracemalloc keeps live blocks only).",
    ),
    (
        "goroutine",
        "Stacks of all Python threads. ?debug=1 groups identical stacks as text, "
        "?debug=2 dumps every thread with name, ident and daemon flag.",
    ),
    ("threadcreate", "Threads by the function they were started to run."),
    ("cmdline", "The command line, NUL-separated, secrets masked."),
    (
        "flamegraph",
        "A self-contained HTML flame graph of a fresh CPU profile. ?seconds=N "
        "(default 10), ?mode=cpu|wall.",
    ),
)


def index_page(host: str) -> str:
    rows = "".join(
        f'<tr><td><a href="{name}{"?debug=1" if name == "goroutine" else ""}">{name}</a></td>'
        f"<td>{html.escape(text)}</td></tr>"
        for name, text in PROFILES
    )
    base = html.escape(f"http://{host}/debug/pprof")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>/debug/pprof/</title>
<link rel="icon" href="data:,">
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1d2430}}
td{{padding:.3em .8em;vertical-align:top}}code,pre{{font-family:ui-monospace,monospace}}
pre{{background:#f5f7f9;padding:.8em}}</style></head>
<body><h1>/debug/pprof/</h1>
<p>Profiles of this milvus-probe process, in the format of Go's net/http/pprof.</p>
<table>{rows}</table>
<h2>With go tool pprof</h2>
<pre>go tool pprof -top {base}/profile?seconds=30
go tool pprof -http=:8080 {base}/profile?seconds=30&amp;mode=wall
go tool pprof -top {base}/heap?seconds=10
curl -s {base}/goroutine?debug=2</pre>
<p>From a laptop: <code>kubectl port-forward pod/&lt;probe-pod&gt; 9091</code>, then use
<code>localhost:9091</code>. Requests from non-loopback peers are refused unless the probe
runs with <code>--profiling.allow-remote</code>.</p>
</body></html>
"""


# ------------------------------------------------------------------ flame graph


@dataclass
class _Node:
    name: str
    where: str
    value: int = 0
    children: dict[tuple[str, str], _Node] = field(default_factory=dict)


def _build_tree(samples: Iterable[tuple[Stack, int]]) -> _Node:
    root = _Node("all", "")
    for stack, value in samples:
        root.value += value
        node = root
        for name, filename, first_line, _ in reversed(stack):  # root first
            key = (name, f"{filename}:{first_line}")
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(name, key[1])
            child.value += value
            node = child
    return root


def _color(name: str) -> str:
    h = int(hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()[:6], 16)
    return f"hsl({10 + h % 40},{70 + h % 20}%,{55 + h % 12}%)"


def _amount(value: int, unit: str) -> str:
    return f"{value / 1e9:.3f} s" if unit == "ns" else f"{value} {unit}"


def flamegraph_page(samples: Sequence[tuple[Stack, int]], title: str, unit: str) -> str:
    """An SVG flame graph (root at the bottom) in a page with no external assets."""
    root = _build_tree(samples)
    width, row = 1200.0, 18
    total = root.value or 1
    boxes: list[tuple[int, float, float, _Node]] = []  # depth, x, width, node

    def place(node: _Node, x: float, depth: int) -> None:
        w = node.value / total * width
        if w < 0.3:
            return
        boxes.append((depth, x, w, node))
        for child in sorted(node.children.values(), key=lambda c: c.name):
            place(child, x, depth + 1)
            x += child.value / total * width

    place(root, 0.0, 0)
    height = (max((b[0] for b in boxes), default=0) + 1) * row + 4
    body = []
    for depth, x, w, node in boxes:
        y = height - (depth + 1) * row
        share = node.value / total * 100
        label = f"{node.name} ({node.where}) — {share:.2f}%, {_amount(node.value, unit)}"
        fill = "#bbb" if depth == 0 else _color(node.name)
        text = ""
        if w > 40:
            chars = int(w / 7)
            shown = node.name if len(node.name) <= chars else node.name[: max(chars - 2, 1)] + ".."
            text = f'<text x="{x + 3:.1f}" y="{y + 13}">{html.escape(shown)}</text>'
        body.append(
            f'<g><title>{html.escape(label)}</title><rect x="{x:.1f}" y="{y}" '
            f'width="{w:.1f}" height="{row - 1}" fill="{fill}" rx="2"/>{text}</g>'
        )
    empty = "" if root.value else "<p>No samples: nothing ran on the CPU during the profile.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>body{{font:13px system-ui,sans-serif;margin:1em;color:#1d2430}}
svg text{{font:11px ui-monospace,monospace;fill:#1d2430;pointer-events:none}}
svg g:hover rect{{stroke:#000;stroke-width:.8}}</style></head>
<body><h1 style="font-size:1.2em">{html.escape(title)}</h1>
<p>{_amount(root.value, unit)} in all (summed over threads).
Hover a frame for its function, file:line and share. Root at the bottom; width is time.</p>{empty}
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}"
 viewBox="0 0 {width:.0f} {height}">{"".join(body)}</svg>
</body></html>
"""
