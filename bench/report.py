"""The goals, and the one table a run prints."""

from __future__ import annotations

import math
from typing import Any

from bench.common import MIB

SERVERS = (("milvus_lite", "milvus-lite 3.2.2"), ("standalone", "standalone 2.3.5"))


def _goal(
    name: str, measured: float | None, threshold: float, *, at_most: bool, unit: str, where: str
) -> dict[str, Any]:
    value = None if measured is None or math.isnan(measured) else measured
    return {
        "goal": name,
        "where": where,
        "measured": value,
        "unit": unit,
        "threshold": threshold,
        "comparison": "<=" if at_most else ">=",
        "measured_over_threshold": None if value is None else value / threshold,
        "met": None if value is None else (value <= threshold if at_most else value >= threshold),
    }


def _dig(node: Any, *path: str) -> Any:
    """The value at `path`, or None where a family was not measured or has no such figure."""
    for key in path:
        if not isinstance(node, dict) or node.get("measured") is False or key not in node:
            return None
        node = node[key]
    return node


def _hundred_or_most(by_targets: dict[str, Any]) -> str:
    """The goals' size, 100 targets, or the largest measured (a quick run has fewer)."""
    return "100" if "100" in by_targets else max(by_targets, key=int, default="100")


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key, label in SERVERS:
        if _dig(results, "fidelity", key, "ratio") is not None or key == "milvus_lite":
            out.append(
                _goal(
                    "reported/limit",
                    _dig(results, "fidelity", key, "ratio"),
                    1.25,
                    at_most=True,
                    unit="ratio",
                    where=label,
                )
            )
        if _dig(results, "cost", key, "probe_over_raw") is not None or key == "milvus_lite":
            out.append(
                _goal(
                    "probe CPU per cycle / raw cycle CPU",
                    _dig(results, "cost", key, "probe_over_raw"),
                    1.5,
                    at_most=True,
                    unit="ratio",
                    where=label,
                )
            )
    sizes = ", ".join(_dig(results, "scale", "by_targets") or {})
    out.append(
        _goal(
            "fresh-connection probes/s on one core",
            _dig(results, "scale", "max_sustained_rate"),
            300,
            at_most=False,
            unit="probes/s",
            where=f"lowest over {sizes} targets",
        )
    )
    out.append(
        _goal(
            "RSS with 1 target",
            _dig(results, "footprint", "one_target", "rss_mib_median"),
            40,
            at_most=True,
            unit="MiB",
            where="median of starts",
        )
    )
    starts = _dig(results, "footprint", "one_target", "ready_after_seconds", "n")
    out.append(
        _goal(
            "/readyz 200 after start",
            _dig(results, "footprint", "one_target", "ready_after_seconds", "max"),
            1.0,
            at_most=True,
            unit="s",
            where=f"worst of {starts} starts",
        )
    )
    scrape = _dig(results, "scrape", "by_targets") or {}
    size = _hundred_or_most(scrape)
    p99 = _dig(scrape, size, "single", "p99")
    out.append(
        _goal(
            "/metrics p99 (one scraper)",
            None if p99 is None else p99 * 1000,
            10,
            at_most=True,
            unit="ms",
            where=f"{size} targets",
        )
    )
    overhead = _dig(results, "profiling", "overhead_share_of_core")
    out.append(
        _goal(
            "profiling overhead (100 Hz)",
            None if overhead is None else overhead * 100,
            5,
            at_most=True,
            unit="% of a core",
            where=f"{_dig(results, 'profiling', 'targets')} targets",
        )
    )
    memory = _dig(results, "history", "memory", "outages", "rss")
    out.append(
        _goal(
            "history memory per target (full 24 h)",
            None if memory is None else memory["rss_per_target_bytes"] / 1024,
            32,
            at_most=True,
            unit="KiB",
            where=f"RSS over {memory['targets'] if memory else '?'} targets",
        )
    )
    out.append(
        _goal(
            "held call CPU / fresh cycle CPU",
            _dig(results, "held", "cpu_held_over_fresh"),
            0.5,
            at_most=True,
            unit="ratio",
            where="milvus-lite, interleaved, paced",
        )
    )
    rendered = _dig(results, "history", "render") or {}
    size = _hundred_or_most(rendered)
    page = _dig(rendered, size, "status_page_1h", "p99")
    out.append(
        _goal(
            "status page p99",
            None if page is None else page * 1000,
            50,
            at_most=True,
            unit="ms",
            where=f"{size} targets, full day, 1 h window",
        )
    )
    return out


# --------------------------------------------------------------------------- formatting


def ms(seconds: float | None, digits: int = 2) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    return f"{seconds * 1000:.{digits}f} ms"


def pair_ms(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{a * 1000:.2f} / {b * 1000:.2f} ms"


def x(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}×"


def pct(share: float | None) -> str:
    return "—" if share is None or math.isnan(share) else f"{share * 100:.0f} % of a core"


def mib(value: float | None) -> str:
    return "—" if value is None else f"{value / MIB:.1f} MiB"


def _cell(section: dict[str, Any], render: Any) -> str:
    if not section or not section.get("measured", True):
        reason = section.get("reason", "not measured") if section else "not measured"
        return f"not measured: {reason}"
    try:
        return str(render(section))
    except (KeyError, TypeError):
        return "—"


def _blackbox(render: Any) -> Any:
    return lambda s: _cell(s["blackbox_exporter"], render)


PER_SERVER_ROWS: tuple[tuple[str, str, str, Any], ...] = (
    ("1 limit", "raw grpcio cycle, paced, median / p99", "limit",
     lambda s: pair_ms(s["raw_cycle_median"], s["raw_cycle_p99"])),
    ("", "raw grpcio cycle, paced, CPU", "limit", lambda s: ms(s["raw_cycle_cpu"], 3)),
    ("", "  back to back: median / CPU", "limit",
     lambda s: f"{ms(s['hot_cycle_median'])} / {ms(s['hot_cycle_cpu'], 3)}"),
    ("", "  grpc.health.v1 cycle, paced: median / CPU", "limit",
     lambda s: f"{ms(s['health_v1_cycle_median'])} / {ms(s['health_v1_cycle_cpu'], 3)}"
     if "health_v1_cycle_median" in s else "—"),
    ("", "  other work on the client core meanwhile", "limit",
     lambda s: pct(s["client_core_other_share"])),
    ("", "raw TCP connect+close median / p99", "limit",
     lambda s: pair_ms(s["tcp_connect_median"], s["tcp_connect_p99"])),
    ("2 fidelity", "milvus-probe duration median / p99", "fidelity",
     lambda s: pair_ms(s["probe_median"], s["probe_p99"])),
    ("", "  cycles measured (failed)", "fidelity",
     lambda s: f"{s['probe_cycles']:.0f} ({s['probe_failures']:.0f})"),
    ("", "  connect / rpc phase mean", "fidelity",
     lambda s: pair_ms(s["probe_connect_mean"], s["probe_rpc_mean"])),
    ("", "  histogram median (as Prometheus)", "fidelity",
     lambda s: ms(s["probe_histogram_median"])),
    ("", "  other work on the client core meanwhile", "fidelity",
     lambda s: pct(s["client_core_other_share"])),
    ("", "reported / limit (goal ≤ 1.25)", "fidelity", lambda s: x(s["ratio"])),
    ("", "rpc phase added by injected delay", "fidelity",
     lambda s: f"{ms(s['delay']['rpc_added'])} for {ms(s['delay']['injected'], 0)} "
     f"({x(s['delay']['rpc_added_over_injected'])})" if "delay" in s else "—"),
    ("3 cost", "milvus-probe CPU per cycle", "cost", lambda s: ms(s["probe_cpu_per_cycle"], 3)),
    ("", "probe / raw CPU (goal ≤ 1.5)", "cost", lambda s: x(s["probe_over_raw"])),
    ("", "  marginal (idle CPU taken off) / raw", "cost",
     lambda s: x(s.get("probe_marginal_over_raw"))),
    ("4 peers", "pymilvus connect+disconnect median / p99", "peers",
     lambda s: pair_ms(s["pymilvus"]["median"], s["pymilvus"]["p99"])),
    ("", "pymilvus CPU per cycle (/ raw)", "peers",
     lambda s: f"{ms(s['pymilvus']['cpu_per_cycle'], 3)} ({x(s['pymilvus']['cpu_over_raw'])})"),
    ("", "pymilvus TCP connections per cycle", "peers",
     lambda s: f"{s['pymilvus']['tcp_connections_per_cycle']:.2f}"),
    ("", "blackbox_exporter probe median / p99", "peers",
     _blackbox(lambda b: pair_ms(b["median"], b["p99"]))),
    ("", "  / raw cycle, / raw health.v1 cycle", "peers",
     _blackbox(lambda b: f"{x(b['median_over_limit'])}, "
               f"{x(b.get('median_over_health_v1_limit'))}")),
    ("", "blackbox_exporter /probe wall median", "peers",
     _blackbox(lambda b: ms(b["wall_median"]))),
    ("", "blackbox_exporter CPU per probe", "peers",
     _blackbox(lambda b: ms(b["cpu_per_probe"], 3))),
    ("", "  / raw cycle, / raw health.v1 cycle", "peers",
     _blackbox(lambda b: f"{x(b['cpu_over_raw'])}, {x(b.get('cpu_over_health_v1_raw'))}")),
)  # fmt: skip


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for family, measurement, key, render in PER_SERVER_ROWS:
        cells = [_cell(results[key].get(server, {}), render) for server, _ in SERVERS]
        rows.append((family, measurement, cells[0], cells[1]))
    _family(rows, "5 footprint", results.get("footprint"), _footprint_rows)
    _family(rows, "6 scale", results.get("scale"), _scale_rows)
    _family(rows, "7 scrape", results.get("scrape"), _scrape_rows)
    _family(rows, "8 profiling", results.get("profiling"), _profiling_rows)
    _family(rows, "9 history", results.get("history"), _history_rows)
    _family(rows, "10 rest", results.get("rest"), _rest_rows)
    _family(rows, "11 held", results.get("held"), _held_rows)

    header = ("family", "measurement", SERVERS[0][1], SERVERS[1][1])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    lines.append("")
    lines.append("goals (measured / threshold)")
    for g in results["goals"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[g["met"]]
        measured = "—" if g["measured"] is None else f"{g['measured']:.3g} {g['unit']}"
        ratio_text = (
            "" if g["measured_over_threshold"] is None else f"{g['measured_over_threshold']:.2f}"
        )
        lines.append(
            f"  {verdict:<7} {g['goal']} [{g['where']}]: {measured} "
            f"(goal {g['comparison']} {g['threshold']:g}; ratio {ratio_text})"
        )
    if results.get("not_measured"):
        lines.append("")
        lines.append("not measured")
        for item in results["not_measured"]:
            lines.append(f"  {item['what']}: {item['reason']}")
    return "\n".join(lines)


def _family(rows: list[tuple[str, str, str, str]], label: str, section: Any, render: Any) -> None:
    """Rows of a one-server family; one "not measured" row when it was not."""
    start = len(rows)

    def single(family: str, measurement: str, value: str) -> None:
        rows.append((family, measurement, value, ""))

    if not isinstance(section, dict) or section.get("measured") is False:
        reason = section.get("reason", "") if isinstance(section, dict) else "missing"
        single(label, "", f"not measured: {reason}")
        return
    try:
        render(section, single)
    except (KeyError, TypeError, ValueError) as exc:
        del rows[start:]
        single(label, "", f"cannot show: {type(exc).__name__}: {exc}")
        return
    if len(rows) > start:
        family, measurement, value, other = rows[start]
        rows[start] = (family or label, measurement, value, other)


def _footprint_rows(section: dict[str, Any], single: Any) -> None:
    fp = section
    one, many = fp["one_target"], fp["many_targets"]
    single("5 footprint", "RSS, 1 target (goal ≤ 40 MiB)", mib(one["rss_bytes_median"]))
    low = fp["floor"]
    own = mib(one["rss_bytes_median"] - low["rss_bytes"])
    single(
        "",
        "  floor: required libraries + raw cycles alone",
        f"{mib(low['rss_bytes'])} (milvus-probe's own: {own})",
    )
    single("", f"RSS, {many['targets']} targets", mib(many["rss_bytes"]))
    ready = one["ready_after_seconds"]
    single(
        "",
        "/readyz 200 after start, median / worst (goal ≤ 1 s)",
        f"{ready['median']:.2f} / {ready['max']:.2f} s ({ready['n']} starts)",
    )
    serving = one["serving_after_seconds"]
    single(
        "",
        "  first HTTP answer after start, median / worst",
        f"{serving['median']:.2f} / {serving['max']:.2f} s",
    )
    single(
        "",
        f"/readyz 200 after start, {many['targets']} targets",
        f"{many['ready_after_seconds']:.2f} s",
    )
    single(
        "",
        "idle CPU, 1 target at 10 s",
        f"{one['idle'].get('cpu_share_of_core', math.nan) * 100:.2f} % of a core",
    )
    single(
        "",
        "kubernetes imported by the daemon",
        "yes" if fp["imports"]["kubernetes_imported"] else "no",
    )


def _scale_rows(section: dict[str, Any], single: Any) -> None:
    for n, data in section["by_targets"].items():
        bound = "≥ " if data["max_sustained_is_lower_bound"] else ""
        estimate = data.get("rate_at_full_core")
        single(
            "",
            f"{_targets(n)}: max sustained rate",
            f"{bound}{data['max_sustained_rate']:g}/s"
            + (f" (CPU-bound estimate {estimate:.0f}/s)" if estimate else ""),
        )
        for lv in data["levels"]:
            again = " (2nd try)" if "earlier_try" in lv else ""
            single(
                "",
                f"  {lv['offered_rate']:g}/s offered{again}",
                f"{lv['achieved_rate']:.0f}/s run, lag p50/p99 {ms(lv['lag_p50_seconds'], 1)}"
                f"/{ms(lv['lag_p99_seconds'], 1)}, missed {lv['missed']:.0f}, "
                f"CPU {lv['cpu_share_of_core'] * 100:.0f} % (others "
                f"{(lv.get('client_core_other_share') or 0) * 100:.0f} %), "
                f"{'sustained' if lv['sustained'] else 'NOT sustained'}",
            )


def _scrape_rows(section: dict[str, Any], single: Any) -> None:
    first = True
    for n, data in section["by_targets"].items():
        single(
            "7 scrape" if first else "",
            f"{_targets(n)}: size (gzip on wire)",
            f"{data['size_bytes'] / 1024:.0f} KiB ({data['size_on_wire_bytes'] / 1024:.0f} KiB)",
        )
        first = False
        single(
            "", "  one scraper p50 / p99", pair_ms(data["single"]["median"], data["single"]["p99"])
        )
        c = data["concurrent"]
        lower = "≥ " if c["p99_is_lower_bound"] else ""
        single(
            "",
            f"  {c['scrapers']} concurrent p50 / p99",
            f"{ms(c['median'])} / {lower}{ms(c['p99'])} ({c['completed']}/{c['requests']} done"
            + (f"; the rest: {', '.join(c['errors'])}" if c["errors"] else "")
            + ")",
        )
        single(
            "",
            "  during a CPU profile p50 / p99",
            pair_ms(data["while_profiling"]["median"], data["while_profiling"]["p99"]),
        )


def _rest_rows(section: dict[str, Any], single: Any) -> None:
    """Standalone 2.3.5 only (milvus-lite has no REST API): the REST prober / http.client."""
    single(
        "10 rest",
        f"REST {section['api']} prober / raw http.client cycle, median (standalone)",
        f"{pair_ms(section['probe_latency']['median'], section['raw_latency']['median'])} "
        f"({x(section['latency_ratio'])})",
    )
    single(
        "",
        "  CPU per cycle prober / raw",
        f"{ms(section['probe_cpu']['median'], 3)} / {ms(section['raw_cpu']['median'], 3)} "
        f"({x(section['cpu_ratio'])})",
    )
    single("", "  cycles (failed)", f"{section['cycles']} ({section['failures']})")


def _held_rows(section: dict[str, Any], single: Any) -> None:
    """milvus-lite: the held call (nothing opened) against the fresh cycle beside it."""
    fresh, held = section["fresh"], section["held"]
    single(
        "11 held",
        "held call / fresh cycle, median latency",
        f"{pair_ms(held['latency_seconds']['median'], fresh['latency_seconds']['median'])} "
        f"({x(section['latency_held_over_fresh'])})",
    )
    single(
        "",
        "  CPU per cycle held / fresh",
        f"{ms(held['cpu_seconds']['median'], 3)} / {ms(fresh['cpu_seconds']['median'], 3)} "
        f"({x(section['cpu_held_over_fresh'])})",
    )
    single("", "  cycles (failed held, fresh)",
           f"{section['cycles']} ({held['failed']}, {fresh['failed']})")  # fmt: skip


def _profiling_rows(section: dict[str, Any], single: Any) -> None:
    prof = section
    single(
        "8 profiling",
        f"daemon CPU off / on ({prof['targets']} targets)",
        f"{prof['cpu_share_off'] * 100:.1f} % / {prof['cpu_share_on'] * 100:.1f} % of a core",
    )
    others = [
        w["client_core_other_share"]
        for w in prof["windows"]
        if w.get("client_core_other_share") is not None
    ]
    if others:
        single("", "  other work on the client core meanwhile", pct(sum(others) / len(others)))
    single(
        "",
        "100 Hz profiling overhead (goal ≤ 5 %)",
        f"{prof['overhead_share_of_core'] * 100:.2f} % of a core",
    )


def _history_rows(section: dict[str, Any], single: Any) -> None:
    for mode, memory in section["memory"].items():
        rss, traced = memory["rss"], memory["traced"]
        single(
            "9 history",
            f"memory per target, full 24 h ({mode}; goal ≤ 32 KiB)",
            f"{rss['rss_per_target_bytes'] / 1024:.1f} KiB RSS ({rss['targets']} targets), "
            f"{traced['bytes_per_target'] / 1024:.1f} KiB traced",
        )
    names = (
        ("status_page_1h", "status page, 1 h window"),
        ("status_page_24h", "status page, 24 h window"),
        ("api_targets", "/api/v1/targets"),
        ("target_page_24h", "a target page, 24 h"),
        ("api_history_24h", "a target's 24 h history JSON"),
    )
    for count, render in section["render"].items():
        for key, label in names:
            r = render[key]
            single(
                "",
                f"{label}, {_targets(count)} (rendered; median / p99, size)",
                f"{pair_ms(r['median'], r['p99'])}, {r['bytes'] / 1024:.0f} KiB",
            )
    for count, http in section["http"].items():
        for key in ("status_page", "api_targets", "target_page", "api_history"):
            r = http[key]
            single(
                "",
                f"GET {key.replace('_', ' ')}, {_targets(count)} (HTTP; median / p99)",
                pair_ms(r["median"], r["p99"]),
            )
        b = http.get("bundle")
        if b:
            single(
                "",
                f"GET /debug/bundle?seconds={b['profile_seconds']}, {_targets(count)}",
                f"{ms(b['median'], 0)} median ({ms(b['beyond_profile_median'], 0)} beyond the "
                f"profile), {b['bytes'] / 1024:.0f} KiB, {b['members']} members",
            )


def _targets(count: str) -> str:
    return "1 target" if count == "1" else f"{count} targets"
