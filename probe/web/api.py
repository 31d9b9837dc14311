"""What the management port asks of the daemon (ManagementApi): pages, the JSON API,
traces, the bundle's members, one probe on demand. The app stays wiring and lifecycle."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from probe import held_views, pages
from probe.config import Config
from probe.health import Check, Health
from probe.history import Cycles, History
from probe.hub import Hub
from probe.probers import InfoMode, Probers
from probe.result import ProbeResult
from probe.web.wsgi import WSGIApp


class DaemonApi:
    """The router's view of a running daemon, from the parts it reads."""

    def __init__(
        self,
        *,
        metrics_app: WSGIApp,
        hub: Hub,
        probers: Probers,
        health: Health,
        history: History,
        config: Callable[[], Config],
        reload: Callable[[], tuple[bool, str]],
        started: float,
        clock: Callable[[], float],
        profiling: bool,
        events: Any = None,
    ) -> None:
        self.metrics_app = metrics_app
        self._hub, self._probers = hub, probers
        self._health, self._history = health, history
        self._config, self.reload = config, reload
        self._started, self._clock = started, clock
        self.profiling = profiling
        self._events_recorder = events
        """The Kubernetes EventRecorder, or None when the daemon posts no Events."""

    def live(self) -> tuple[bool, str]:
        return self._health.live()

    def ready(self) -> tuple[bool, list[Check]]:
        return self._health.ready()

    def target_check(self, alias: str) -> Check | None:
        return self._health.target_check(alias)

    def probe_now(self, alias: str | None) -> tuple[ProbeResult, Cycles]:
        """Run one cycle now for `/probe`, on the on-demand slots (never the schedule's),
        with the target's recent scheduled cycles. It is not recorded in metrics or history."""
        target = self._hub.pick(alias)
        result = self._probers.run(
            target, InfoMode.VERSION, slot_timeout=target.timeout, on_demand=True
        )
        return result, self._history.cycles(target.alias)

    def _window(self, text: str | None) -> float:
        """`?window=` in seconds; ValueError with the reason."""
        settings = self._history.settings
        return pages.parse_window(text, settings.retention, settings.resolution)

    def status_page(self, window: str | None = None) -> str:
        seconds = self._window(window)
        ready, _ = self._health.ready()
        live, _ = self._health.live()
        return pages.status_page(
            self._history,
            self._health.states(),
            ready,
            live,
            self._started,
            seconds,
            profiling=self.profiling,
        )

    def target_page(self, alias: str, window: str | None = None) -> str | None:
        """`/targets/<alias>`, or None for an unknown alias."""
        if self._history.summary(alias) is None:
            return None
        seconds = self._window(window)
        ready, _ = self._health.ready()
        live, _ = self._health.live()
        return pages.target_page(
            self._history,
            alias,
            self._health.state(alias),
            ready,
            live,
            self._started,
            seconds,
            profiling=self.profiling,
            events=self._events(alias),
        )

    def _events(self, alias: str) -> list[dict[str, Any]] | None:
        """The Kubernetes Events posted (or tried) about a target, oldest first; None when
        the daemon posts none."""
        if self._events_recorder is None:
            return None
        return [e for e in self._events_recorder.recent() if e["alias"] == alias]

    def targets_api(self) -> list[dict[str, Any]]:
        rows = pages.targets_json(self._history.summaries())
        held_views.add_to_targets(rows, self._health.states())
        return rows

    def history_api(self, alias: str, window: str | None = None) -> dict[str, Any] | None:
        """One target's rows over `window`, or None for an unknown alias."""
        if self._history.summary(alias) is None:
            return None
        seconds = self._window(window)
        buckets = self._history.buckets(alias, seconds) or []
        return pages.history_json(alias, seconds, self._history.settings.resolution, buckets)

    def bundle_members(self) -> list[Any]:
        """The diagnostics bundle's members the daemon holds itself (probe/bundle.py)."""
        from probe import bundle

        uptime = self._clock() - self._started
        return list(
            bundle.daemon_members(
                self._config(), self._history, time.time() - uptime, uptime, self._events_recorder
            )
        )

    def trace(self, trace_id: str) -> tuple[ProbeResult, Cycles] | None:
        """A past cycle by its trace id while history keeps it, with its target's recent
        scheduled cycles."""
        result = self._history.trace(trace_id)
        if result is None:
            return None
        return result, self._history.cycles(result.alias)
