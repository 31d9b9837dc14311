"""Targets fixed by configuration; replaced as a whole on reload."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from probe.targets import Target


class StaticTargetSource:
    """The targets from flags, environment and the config file."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self._lock = threading.Lock()
        self._targets = list(targets)
        self._subscribers: list[Callable[[list[Target]], None]] = []

    def current(self) -> list[Target]:
        with self._lock:
            return list(self._targets)

    def subscribe(self, callback: Callable[[list[Target]], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def replace(self, targets: Iterable[Target]) -> None:
        """Swap in a new list (config reload) and tell subscribers."""
        with self._lock:
            self._targets = list(targets)
            snapshot, subscribers = list(self._targets), list(self._subscribers)
        for callback in subscribers:
            callback(snapshot)

    def start(self) -> None:
        """Nothing to watch: the list changes only through `replace`."""

    def stop(self) -> None:
        """Nothing to release."""
