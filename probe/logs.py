"""Logging setup: logfmt-style text or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: key/value pairs rendered after the message."""
    return {"fields": values}


def _timestamp(record: logging.LogRecord) -> str:
    ms = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"


def _logfmt(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t\\'):
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=probe.app msg="..." key=value ...`"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record)}",
            f"level={_NAMES.get(record.levelno, 'info')}",
            f"logger={record.name}",
            f"msg={_logfmt(record.getMessage())}",
        ]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_logfmt(value)}")
        if record.exc_info:
            parts.append(f"exc={_logfmt(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": _NAMES.get(record.levelno, "info"),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


RECENT_RECORDS = 1000
"""Log records the in-memory ring keeps for the diagnostics bundle (`log.jsonl`)."""
RECENT_LINE_LIMIT = 16 * 1024
"""Longest line the ring keeps (characters); longer ones are cut and say so."""


class RecentRecords(logging.Handler):
    """The last RECENT_RECORDS records at every level the logger emitted, as JSON lines.

    Formatted when emitted (the record's arguments may change later); bounded in count and
    line length. Secrets are already out: the code that logs redacts them.
    """

    def __init__(self, size: int = RECENT_RECORDS) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(JsonFormatter())
        self._lines: deque[str] = deque(maxlen=size)
        self._ring_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(line) > RECENT_LINE_LIMIT:
            cut = {"ts": _timestamp(record), "level": _NAMES.get(record.levelno, "info"),
                   "logger": record.name, "msg": line[: RECENT_LINE_LIMIT // 2],
                   "truncated_from_chars": len(line)}  # fmt: skip
            line = json.dumps(cut, ensure_ascii=False)
        with self._ring_lock:
            self._lines.append(line)

    def lines(self) -> list[str]:
        """The kept records, oldest first, one JSON object each."""
        with self._ring_lock:
            return list(self._lines)


RECENT = RecentRecords()
"""The process's ring of recent records; attached to the root logger by setup()."""


def keep_recent() -> None:
    """Attach RECENT to the root logger, once (setup does; so does the daemon in-process)."""
    root = logging.getLogger()
    if RECENT not in root.handlers:
        root.addHandler(RECENT)


def setup(level: str, fmt: str, stream: Any = None) -> None:
    """Configure the root logger for the daemon (replaces earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.addHandler(RECENT)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # grpcio and urllib3 are chatty at debug; their lines never carry our secrets, but
    # they carry nothing an operator of the probe needs either.
    for noisy in ("grpc", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))
