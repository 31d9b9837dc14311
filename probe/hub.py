"""The hub: the current target table, and the one way results reach the sinks.

Target sources (static config, Kubernetes discovery) hand the hub whole lists; the hub
diffs each against its table and tells every listener what was added and removed, in
the order they registered (the scheduler first, so nothing it does for a removed target
can bring the target back). Each entry carries a *generation*, stamped on the Target
itself: a target whose series key changes (address, labels, protocol, RPC) is a new
target with a new generation.

Results come back through `publish()`, which hands them to the sinks (metrics, health,
Events, history) only if the result's target still holds the table's generation — a
late result of a removed or replaced target is dropped by construction. The checks
beside the cycles (management port, TLS inspection) end on their own schedule and come
back the same way through `publish_view()`.

The generation is the one identity of a target: a sink keeps its state under the Target
the hub hands it (by alias, as the table does, for the generation it holds) and starts
over when a listener call brings a new generation. It never re-derives identity from
the result's alias or address.

A sink that raises does not stop the others: it is logged and counted
(`on_sink_error`), and the rest still see the result.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from probe import logs
from probe.result import ProbeResult, SideView
from probe.targets import Target

logger = logging.getLogger(__name__)


class UnknownAlias(LookupError):
    """No target has that alias."""


class AliasRequired(ValueError):
    """Several targets exist and the request did not say which."""


@dataclass(frozen=True)
class TargetDiff:
    """One change of the table: what left, what came, and the whole table after it."""

    added: tuple[Target, ...]
    removed: tuple[Target, ...]
    """Targets that left, including the old side of targets replaced under the same alias."""
    current: tuple[Target, ...]
    first_round: bool = False
    """The table's first fill, at start-up."""


Listener = Callable[[TargetDiff], None]
Sink = Callable[[Target, ProbeResult], None]
"""Takes a current target's result. Called under the hub's lock: be quick, never block."""
ViewSink = Callable[[Target, SideView], None]
"""Takes a side check's view of a current target (management port, certificates, held
connection), under the same rules."""


class Hub:
    """The target table (thread-safe)."""

    def __init__(self, on_sink_error: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.Lock()
        self._table: dict[str, Target] = {}
        self._generation = 0
        self._listeners: list[Listener] = []
        self._sinks: list[Sink] = []
        self._view_sinks: list[ViewSink] = []
        self._on_sink_error = on_sink_error
        self._closed = False

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def view_sink(self, sink: ViewSink) -> None:
        self._view_sinks.append(sink)

    def update(self, targets: Iterable[Target], *, first_round: bool = False) -> None:
        """Make `targets` the table; tell the listeners what changed."""
        with self._lock:
            old, new = self._table, {}
            added: list[Target] = []
            removed: list[Target] = []
            for target in targets:
                previous = old.get(target.alias)
                if previous is not None and previous.series_key == target.series_key:
                    # Same series: the same target with new settings (interval, auth, ...).
                    new[target.alias] = dataclasses.replace(target, generation=previous.generation)
                    continue
                self._generation += 1
                new[target.alias] = dataclasses.replace(target, generation=self._generation)
                added.append(new[target.alias])
                if previous is not None:
                    removed.append(previous)
            removed.extend(t for alias, t in old.items() if alias not in new)
            self._table = new
            diff = TargetDiff(tuple(added), tuple(removed), tuple(new.values()), first_round)
            for listener in self._listeners:
                listener(diff)
        if not first_round:
            _log_diff(diff)

    def publish(self, target: Target, result: ProbeResult) -> bool:
        """Hand a result to the sinks; False (dropped) if its target left the table."""
        return self._deliver(target, result, self._sinks)

    def publish_view(self, target: Target, view: SideView) -> bool:
        """Hand a side check's view to the view sinks; False if its target left the table."""
        return self._deliver(target, view, self._view_sinks)

    def _deliver(self, target: Target, item: Any, sinks: list[Any]) -> bool:
        with self._lock:
            current = self._table.get(target.alias)
            if self._closed or current is None or current.generation != target.generation:
                return False
            for sink in sinks:
                try:
                    sink(current, item)
                except Exception:  # one sink's bug must not keep the result from the rest
                    logger.exception(
                        "a sink failed to take a result", extra=logs.fields(alias=target.alias)
                    )
                    self._on_sink_error()
            return True

    def close(self) -> None:
        """Drop every result from now on (shutdown)."""
        with self._lock:
            self._closed = True

    def targets(self) -> list[Target]:
        with self._lock:
            return list(self._table.values())

    def pick(self, alias: str | None) -> Target:
        """The target with `alias`, or the only one when `alias` is None."""
        with self._lock:
            table = dict(self._table)
        if alias is None:
            if len(table) != 1:
                raise AliasRequired(
                    "say which target with ?alias=NAME; targets: " + ", ".join(sorted(table))
                )
            return next(iter(table.values()))
        target = table.get(alias)
        if target is None:
            raise UnknownAlias(f"no target with alias {alias!r}")
        return target


def _log_diff(diff: TargetDiff) -> None:
    came = {t.alias for t in diff.added}
    for target in diff.removed:
        message = "target changed" if target.alias in came else "target removed"
        logger.info(message, extra=logs.fields(alias=target.alias, target=target.address))
    went = {t.alias for t in diff.removed}
    for target in diff.added:
        if target.alias not in went:
            logger.info(
                "target added", extra=logs.fields(alias=target.alias, target=target.address)
            )
