"""What the management port asks of the daemon (ManagementApi): pages, the JSON API,
traces, the bundle's members, one probe on demand. The app stays wiring and lifecycle."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from probe import held_views, pages
from probe.health import Check
from probe.history import Cycles
from probe.probers import InfoMode
from probe.result import ProbeResult
from probe.web.wsgi import WSGIApp

if TYPE_CHECKING:
    from probe.app import App


class DaemonApi:
    """The router's view of a running App."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.metrics_app: WSGIApp = app.metrics_app

    @property
    def profiling(self) -> bool:
        return self._app.router.pprof is not None

    def reload(self) -> tuple[bool, str]:
        return self._app.reload()

    def live(self) -> tuple[bool, str]:
        return self._app.health.live()

    def ready(self) -> tuple[bool, list[Check]]:
        return self._app.health.ready()

    def target_check(self, alias: str) -> Check | None:
        return self._app.health.target_check(alias)

    def probe_now(self, alias: str | None) -> tuple[ProbeResult, Cycles]:
        """Run one cycle now for `/probe`, with the target's recent scheduled cycles. It is
        not recorded in metrics or history."""
        target = self._app.hub.pick(alias)
        result = self._app.probers.run(target, InfoMode.VERSION, slot_timeout=target.timeout)
        return result, self._app.history.cycles(target.alias)

    def _window(self, text: str | None) -> float:
        """`?window=` in seconds; ValueError with the reason."""
        settings = self._app.history.settings
        return pages.parse_window(text, settings.retention, settings.resolution)

    def status_page(self, window: str | None = None) -> str:
        seconds = self._window(window)
        ready, _ = self._app.health.ready()
        live, _ = self._app.health.live()
        return pages.status_page(
            self._app.history,
            self._app.health.states(),
            ready,
            live,
            self._app.started,
            seconds,
            profiling=self.profiling,
        )

    def target_page(self, alias: str, window: str | None = None) -> str | None:
        """`/targets/<alias>`, or None for an unknown alias."""
        if self._app.history.summary(alias) is None:
            return None
        seconds = self._window(window)
        ready, _ = self._app.health.ready()
        live, _ = self._app.health.live()
        return pages.target_page(
            self._app.history,
            alias,
            self._app.health.state(alias),
            ready,
            live,
            self._app.started,
            seconds,
            profiling=self.profiling,
            events=self._events(alias),
        )

    def _events(self, alias: str) -> list[dict[str, Any]] | None:
        """The Kubernetes Events posted (or tried) about a target, oldest first; None when
        the daemon posts none."""
        recorder = self._app.cluster.events if self._app.cluster is not None else None
        if recorder is None:
            return None
        return [e for e in recorder.recent() if e["alias"] == alias]

    def targets_api(self) -> list[dict[str, Any]]:
        rows = pages.targets_json(self._app.history.summaries())
        held_views.add_to_targets(rows, self._app.health.states())
        return rows

    def history_api(self, alias: str, window: str | None = None) -> dict[str, Any] | None:
        """One target's rows over `window`, or None for an unknown alias."""
        if self._app.history.summary(alias) is None:
            return None
        seconds = self._window(window)
        buckets = self._app.history.buckets(alias, seconds) or []
        return pages.history_json(alias, seconds, self._app.history.settings.resolution, buckets)

    def bundle_members(self) -> list[Any]:
        """The diagnostics bundle's members the daemon holds itself (probe/bundle.py)."""
        from probe import bundle

        uptime = self._app.clock() - self._app.started
        events = self._app.cluster.events if self._app.cluster is not None else None
        return list(
            bundle.daemon_members(
                self._app.config, self._app.history, time.time() - uptime, uptime, events
            )
        )

    def trace(self, trace_id: str) -> tuple[ProbeResult, Cycles] | None:
        """A past cycle by its trace id while history keeps it, with its target's recent
        scheduled cycles."""
        result = self._app.history.trace(trace_id)
        if result is None:
            return None
        return result, self._app.history.cycles(result.alias)
