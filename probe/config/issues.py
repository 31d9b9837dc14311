"""Configuration problems: each names where it came from; all of them are reported at once."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigIssue:
    where: str
    """The source and path: `config.yaml: targets[0].port`, `--probe.timeout`, ..."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in the configuration."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class Issues:
    """Collects problems while loading; `ConfigError(issues.items)` reports them."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, where: str, message: str) -> None:
        # One line per problem, whatever a key or value contains: control characters are
        # shown escaped (a key "a\nb" must not forge a second line).
        self.items.append(ConfigIssue(printable(where), printable(message)))

    def parse(
        self, where: str, parse: Callable[[Any], Any], value: Any, default: Any = None
    ) -> Any:
        """`parse(value)`, or `default` with the error recorded under `where`."""
        try:
            return parse(value)
        except ValueError as exc:
            self.add(where, str(exc))
            return default
