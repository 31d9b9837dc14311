"""Serving /metrics: prometheus_client's formats, with a fast path for per-target families.

prometheus_client formats every sample from a `Sample` object at ~15 µs a line; with
~100 lines per target, 100 targets cost ~200 ms of CPU a scrape (under the GIL the
probes share). Families whose owner can write their own sample lines yield a
`RenderedFamily`: its `text()` is those lines (cached per target by the owner, so a
scrape only formats what changed), and its `samples` are computed only when something
reads them (`registry.get_sample_value`, `?name[]=` filtering, prometheus_client's own
writers), so every other consumer of the registry still sees ordinary metrics.

Everything else (format negotiation, HELP/TYPE lines, escaping, OpenMetrics' `# EOF`)
stays prometheus_client's: headers come from its encoder run on a sample-less copy of
the family. Sample lines themselves are identical in the text format 0.0.4 and in
OpenMetrics, but for exemplars (OpenMetrics only: a family may give `openmetrics_text`);
tests/test_metrics.py proves the output parses to what prometheus_client writes for the
same registry, in both formats, exemplars included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from isal import isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

OPENMETRICS = "application/openmetrics-text"
_EOF = b"# EOF\n"
GZIP_LEVEL = 1
"""Exposition text is repetitive: level 1 compresses it ~25×, and ISA-L's level 1 does
so ~10× faster than zlib's (0.3 vs 2.9 ms for 1.3 MB, 100 targets, here)."""


class RenderedFamily(Metric):
    """A metric family that writes its own sample lines; `samples` are made on demand."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        samples: Callable[[], list[Sample]],
        text: Callable[[], Iterable[bytes]],
        openmetrics_text: Callable[[], Iterable[bytes]] | None = None,
    ) -> None:
        self._make_samples = samples
        self.text = text
        self.openmetrics_text = openmetrics_text
        """Lines for OpenMetrics when they differ from `text` (exemplars); None if not."""
        super().__init__(name, documentation, typ)

    @property
    def samples(self) -> list[Sample]:
        return self._make_samples()

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        """Metric.__init__ assigns an empty list; ours are always computed."""


class _Families:
    """What prometheus_client's encoders take: anything with `collect()`."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(registry: Any, accept: str) -> tuple[list[bytes], str]:
    """The registry in the format `accept` asks for: (body in chunks, Content-Type).

    Chunks, not one buffer: with hundreds of targets the body is megabytes, and joining,
    re-encoding or copying it costs more than writing it (page faults, memmove); the
    per-target chunks are the owners' cached bytes, passed along as they are.
    """
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith(OPENMETRICS)
    plain: list[Metric] = []
    rendered: list[RenderedFamily] = []
    for family in registry.collect():
        (rendered if isinstance(family, RenderedFamily) else plain).append(family)
    chunks = [_without_eof(encoder(_Families(plain)), openmetrics)]
    for family in rendered:
        header = Metric(family.name, family.documentation, family.type)
        chunks.append(_without_eof(encoder(_Families([header])), openmetrics))
        if openmetrics and family.openmetrics_text is not None:
            chunks.extend(family.openmetrics_text())
        else:
            chunks.extend(family.text())
    if openmetrics:
        chunks.append(_EOF)
    return chunks, content_type


def _without_eof(body: bytes, openmetrics: bool) -> bytes:
    return body[: -len(_EOF)] if openmetrics and body.endswith(_EOF) else body


def metrics_app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving the registry the way prometheus_client's `make_wsgi_app` does
    (Accept negotiation, gzip, `?name[]=` filtering), through `render`."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        params = parse_qs(environ.get("QUERY_STRING", ""))
        source: Any = registry
        if "name[]" in params:
            source = registry.restricted_registry(params["name[]"])
        chunks, content_type = render(source, environ.get("HTTP_ACCEPT", ""))
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            gz = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)  # 31: gzip framing
            body = b"".join([*(gz.compress(chunk) for chunk in chunks), gz.flush()])
            headers.append(("Content-Encoding", "gzip"))
        else:
            body = b"".join(chunks)
        start_response("200 OK", headers)
        return [body]

    return app
