"""The account of every connection the probers open and close, per target.

Every kind of prober records each connection it opens here and closes it through here;
`milvus_probe_connections_{opened,closed}_total` and `open_connections` are read from it
at scrape time, and shutdown closes whatever is still open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol


class Closable(Protocol):
    """A connection: a gRPC channel, an HTTP connection, a TLS socket."""

    def close(self) -> None: ...


@dataclass
class _Counts:
    opened: int = 0
    closed: int = 0


@dataclass
class ConnectionLedger:
    """Every connection we open and close, per target, and the ones open right now.

    `open_channels` lets shutdown close whatever is still in flight; the counts feed
    `milvus_probe_connections_{opened,closed}_total` and `open_connections` at scrape time.
    Each open channel remembers the counts it was opened under, so a cycle that ends
    after its target was forgotten (and perhaps added back) never skews the new counts.
    """

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counts: dict[tuple[str, str], _Counts] = field(default_factory=dict)
    _open: dict[Closable, _Counts] = field(default_factory=dict)
    _closing: bool = False

    def opened(self, key: tuple[str, str], channel: Closable) -> bool:
        """Record a new channel; False (and the channel closed) while shutting down."""
        with self._lock:
            if self._closing:
                channel.close()
                return False
            counts = self._counts.setdefault(key, _Counts())
            counts.opened += 1
            self._open[channel] = counts
            return True

    def closed(self, channel: Closable) -> None:
        with self._lock:
            counts = self._open.pop(channel, None)
            if counts is not None:
                counts.closed += 1

    def snapshot(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(opened, closed) per (alias, target)."""
        with self._lock:
            return {k: (c.opened, c.closed) for k, c in self._counts.items()}

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a removed target's counts (its series are gone too)."""
        with self._lock:
            self._counts.pop(key, None)

    def close_all(self) -> int:
        """Close every open channel (cancelling their RPCs) and refuse new ones."""
        with self._lock:
            self._closing = True
            channels = list(self._open)
        for channel in channels:
            channel.close()
        return len(channels)
