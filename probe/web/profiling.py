"""/debug/pprof/* on the management port, built when first asked for."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from probe.config.settings import ProfilingSettings


class LazyProfiling:
    """/debug/pprof/*, built on its first request: the default process never pays for the
    profiler's modules (0.3 MiB) unless someone profiles it. With `--profiling.heap` it is
    built at once, since allocations are traced from start."""

    def __init__(self, settings: ProfilingSettings, secret_flags: Sequence[str]) -> None:
        self._settings = settings
        self._secret_flags = tuple(secret_flags)
        self._lock = threading.Lock()
        self._app: Any = None
        if settings.heap:
            self.app  # noqa: B018 - built now

    @property
    def app(self) -> Any:
        with self._lock:
            if self._app is None:
                from probe.pprof import ProfilingApp

                self._app = ProfilingApp(self._settings, self._secret_flags)
            return self._app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)
