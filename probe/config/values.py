"""Value parsers: each takes what a flag, variable or YAML key held and returns the setting,
or raises ValueError with a message fit to show after the setting's name."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

from probe.config.settings import LOG_LEVELS

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `10s`, `1m30s`, `1h`, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 10s, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{value!r} is far too large for a duration") from None
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"expected a duration like 500ms, 10s, 1m or 1h, got {value!r}")
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * scale[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 10s, got {type(value).__name__}")
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of `500ms`, `10s`, `1m`, `1h` that says `seconds` exactly."""
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= scale and (seconds / scale).is_integer():
            return f"{int(seconds / scale)}{unit}"
    return f"{seconds * 1000:g}ms"


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}–{high}")
        return value

    return parse


def choice(enum_type: type[enum.StrEnum]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        text = str(value).strip().lower() if isinstance(value, str) else value
        try:
            return enum_type(text)
        except ValueError:
            allowed = ", ".join(m.value for m in enum_type)
            raise ValueError(f"expected one of {allowed}, got {value!r}") from None

    return parse


def auto_bool(value: Any) -> bool | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return parse_bool(value)


def log_level(value: Any) -> str:
    text = str(value).strip().lower()
    text = "warn" if text == "warning" else text
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return text


def parse_listen_address(value: Any) -> tuple[str, int]:
    """`host:port`, `:port` (every interface) or `[v6]:port`."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.%\w]+)\]|([^:\[\]]*)):(\d+)", text)
    if not match:
        raise ValueError(f"expected host:port or :port, got {value!r}")
    host = match.group(1) if match.group(1) is not None else match.group(2)
    port = int(match.group(3))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0–65535")
    return host, port


def string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")
