"""The one parser of a Prometheus text exposition (a /metrics answer, or blackbox's /probe)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from kit.net import http_get


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Scrape:
    """One exposition, parsed. Label arguments select series by equality."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one matching series; None when there is none."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
        return found[0].value if found else None

    def one(self, name: str, **labels: str) -> float:
        """The value of the one matching series, which must exist."""
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name}{labels} matches {len(found)} series"
        return found[0].value

    def total(self, name: str, **labels: str) -> float:
        """The sum over every matching series (0 when none matches)."""
        return sum(s.value for s in self.find(name, **labels))

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative (le, count) of histogram `name`, summed over the matching series."""
        total: dict[float, float] = {}
        for s in self.find(f"{name}_bucket", **labels):
            le = float(s.labels["le"])
            total[le] = total.get(le, 0.0) + s.value
        return sorted(total.items())

    def aliases(self) -> set[str]:
        return {s.labels["alias"] for s in self.samples if "alias" in s.labels}

    def series_of(self, alias: str) -> list[Sample]:
        return [s for s in self.samples if s.labels.get("alias") == alias]


def scrape(port: int, path: str = "/metrics") -> Scrape:
    """GET /metrics from a daemon on 127.0.0.1:PORT, which must answer 200."""
    status, _, body = http_get(port, path)
    assert status == 200, f"GET {path} answered {status}: {body[:300]!r}"
    return Scrape(body.decode("utf-8"))
