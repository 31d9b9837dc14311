"""Build gzipped profile.proto documents that `go tool pprof` reads.

Python frames become pprof Functions (name, file, first line) and Locations (function +
line); there are no mappings or addresses, which pprof accepts ("Main binary filename
not available").
"""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Iterable, Sequence
from types import FrameType

from probe.pprof import profile_pb2 as pb

Frame = tuple[str, str, int, int]
"""(function name, file name, function's first line, current line)."""
Stack = tuple[Frame, ...]
"""Leaf (innermost call) first, as pprof wants."""

MAX_DEPTH = 128


def frame_of(frame: FrameType) -> Frame:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return name, code.co_filename, code.co_firstlineno, frame.f_lineno or 0


def stack_of(frame: FrameType | None) -> Stack:
    """The stack from `frame` outwards, leaf first, at most MAX_DEPTH frames."""
    frames: list[Frame] = []
    while frame is not None and len(frames) < MAX_DEPTH:
        frames.append(frame_of(frame))
        frame = frame.f_back
    return tuple(frames)


class ProfileBuilder:
    """Accumulates samples (stack, values, labels) and encodes them."""

    def __init__(
        self,
        sample_types: Sequence[tuple[str, str]],
        *,
        period_type: tuple[str, str] | None = None,
        period: int = 0,
        comments: Iterable[str] = (),
    ) -> None:
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[str, str, int], int] = {}
        self._locations: dict[tuple[int, int], int] = {}
        self._samples: dict[tuple[Stack, tuple[tuple[str, str], ...]], list[int]] = {}
        self._profile = pb.Profile()
        for type_, unit in sample_types:
            self._profile.sample_type.add(type=self._str(type_), unit=self._str(unit))
        if period_type is not None:
            self._profile.period_type.type = self._str(period_type[0])
            self._profile.period_type.unit = self._str(period_type[1])
            self._profile.period = period
        self._profile.comment.extend(self._str(c) for c in comments)
        self._width = len(sample_types)

    def _str(self, text: str) -> int:
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self._strings)
        return index

    def add(
        self, stack: Stack, values: Sequence[int], labels: dict[str, str] | None = None
    ) -> None:
        key = (stack, tuple(sorted((labels or {}).items())))
        current = self._samples.get(key)
        if current is None:
            self._samples[key] = list(values)
        else:
            for i, value in enumerate(values):
                current[i] += value

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterable[tuple[Stack, dict[str, str], list[int]]]:
        for (stack, labels), values in self._samples.items():
            yield stack, dict(labels), values

    def _location(self, frame: Frame) -> int:
        name, filename, first_line, line = frame
        fkey = (name, filename, first_line)
        function_id = self._functions.get(fkey)
        if function_id is None:
            function_id = self._functions[fkey] = len(self._functions) + 1
            self._profile.function.add(
                id=function_id,
                name=self._str(name),
                system_name=self._str(name),
                filename=self._str(filename),
                start_line=first_line,
            )
        lkey = (function_id, line)
        location_id = self._locations.get(lkey)
        if location_id is None:
            location_id = self._locations[lkey] = len(self._locations) + 1
            location = self._profile.location.add(id=location_id)
            location.line.add(function_id=function_id, line=line)
        return location_id

    def encode(self, *, time_nanos: int | None = None, duration_nanos: int = 0) -> bytes:
        """The gzipped profile.proto bytes."""
        profile = self._profile
        for (stack, labels), values in self._samples.items():
            sample = profile.sample.add(
                location_id=[self._location(f) for f in stack], value=values
            )
            for key, value in labels:
                sample.label.add(key=self._str(key), str=self._str(value))
        profile.time_nanos = time_nanos if time_nanos is not None else time.time_ns()
        profile.duration_nanos = duration_nanos
        # Strings are appended last: _location() and labels may have added some.
        profile.string_table.extend(self._strings)
        return gzip.compress(profile.SerializeToString(), compresslevel=6)


def current_stacks(exclude: Iterable[int] = ()) -> dict[int, Stack]:
    """Every Python thread's stack right now, by thread ident."""
    skip = set(exclude)
    return {
        ident: stack_of(frame)
        for ident, frame in sys._current_frames().items()
        if ident not in skip
    }
