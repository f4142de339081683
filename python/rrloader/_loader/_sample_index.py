"""The sample space of a dataset: segments, their index values, and how it is built (internal).

One ``SampleIndex`` serves both front ends (the two generations mean the same by it); it
takes both constructor spellings: the seed's ``SampleIndex(segments, ns_per_sample,
is_timestamp, *, is_duration)`` and rerun 0.41's ``SampleIndex(segments, *, ns_per_sample,
ns_dtype)``. What differs between the generations is how a ``Field.window`` is read: each
front end's ``Field`` answers ``_native_window(kind, step)`` (the explicit offsets in the
index's native unit) and ``_native_extent(kind)`` (the trim of the sample space), and
``build`` asks them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from .. import tracing
from ..errors import InvalidArgumentError

IndexValue: TypeAlias = int | np.datetime64 | np.timedelta64
"""A concrete index value: ``int`` (integer timelines), ``datetime64[ns]`` (timestamp timelines)
or ``timedelta64[ns]`` (duration timelines)."""

_NS_DTYPES = ("datetime64[ns]", "timedelta64[ns]")


def index_value_to_int(value: Any) -> int:
    """The raw integer of an index value (nanoseconds for timestamps and durations)."""
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return int(value.astype(f"{value.dtype.kind}8[ns]").view(np.int64))
    return int(value)


@dataclasses.dataclass(frozen=True)
class FixedRateSampling:
    """Sample timestamp (or duration) timelines on a grid ``index_start + k * ns_per_sample``."""

    rate_hz: float

    @property
    def ns_per_sample(self) -> int:
        """``round(1e9 / rate_hz)`` ns (at least 1); ``ValueError`` for a rate that is not positive and finite."""
        if not isinstance(self.rate_hz, (int, float)) or not self.rate_hz > 0 or not math.isfinite(self.rate_hz):
            raise InvalidArgumentError(f"FixedRateSampling.rate_hz must be a positive number, got {self.rate_hz!r}")
        return max(1, round(1e9 / self.rate_hz))


@dataclasses.dataclass(frozen=True)
class SegmentMetadata:
    """Per-segment sampling metadata: inclusive ``[index_start, index_end]`` (window-trimmed)."""

    segment_id: str
    index_start: int
    index_end: int
    num_samples: int


class SampleIndex:
    """The complete sample space: every segment's valid index values, in segment order.

    Integer timelines step by 1 (every integer of ``[index_start, index_end]`` is a sample);
    timestamp and duration timelines use a fixed-rate grid from each segment's trimmed start.
    """

    def __init__(
        self,
        segments: list[SegmentMetadata],
        ns_per_sample: int | None = None,
        is_timestamp: bool | None = None,
        *,
        is_duration: bool | None = None,
        ns_dtype: str | None = None,
    ):
        if ns_dtype is not None and ns_dtype not in _NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {_NS_DTYPES} or None, got {ns_dtype!r}")
        from_flags = "datetime64[ns]" if is_timestamp else "timedelta64[ns]" if is_duration else None
        if is_timestamp and is_duration:
            raise ValueError("a timeline cannot be both a timestamp and a duration timeline")
        if (is_timestamp is not None or is_duration is not None) and ns_dtype is not None and from_flags != ns_dtype:
            raise ValueError(
                f"ns_dtype={ns_dtype!r} contradicts is_timestamp={is_timestamp!r}, is_duration={is_duration!r}"
            )
        self._segments = list(segments)
        self._ns_per_sample = ns_per_sample
        self._ns_dtype = ns_dtype if ns_dtype is not None else from_flags
        counts = np.array([s.num_samples for s in self._segments], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def segments(self) -> list[SegmentMetadata]:
        return self._segments

    @property
    def total_samples(self) -> int:
        return int(self._offsets[-1])

    @property
    def ns_per_sample(self) -> int | None:
        return self._ns_per_sample

    @property
    def ns_dtype(self) -> str | None:
        """``"datetime64[ns]"``, ``"timedelta64[ns]"``, or ``None`` for integer timelines."""
        return self._ns_dtype

    @property
    def is_timestamp(self) -> bool:
        return self._ns_dtype == "datetime64[ns]"

    @property
    def is_duration(self) -> bool:
        return self._ns_dtype == "timedelta64[ns]"

    @property
    def segment_offsets(self) -> np.ndarray:
        """Cumulative offsets: ``segments[i]`` covers global indices ``[offsets[i], offsets[i + 1])``."""
        return self._offsets

    @property
    def step(self) -> int:
        return self._ns_per_sample or 1

    @property
    def kind(self) -> str:
        """The timeline kind: ``"sequence"``, ``"timestamp"`` or ``"duration"``."""
        return "timestamp" if self.is_timestamp else "duration" if self.is_duration else "sequence"

    def typed(self, value: int) -> IndexValue:
        """``value`` as this timeline's index value type."""
        if self._ns_dtype == "datetime64[ns]":
            return np.datetime64(int(value), "ns")
        if self._ns_dtype == "timedelta64[ns]":
            return np.timedelta64(int(value), "ns")
        return int(value)

    def resolve_local_index(self, seg: SegmentMetadata, pos: int) -> IndexValue:
        """The index value of sample ``pos`` of ``seg`` (datetime64/timedelta64 on time timelines)."""
        return self.typed(seg.index_start + int(pos) * self.step)

    def global_to_local(self, idx: int) -> tuple[SegmentMetadata, IndexValue]:
        """Map a global index in ``[0, total_samples)`` to ``(segment, index value)``."""
        idx = int(idx)
        if idx < 0 or idx >= self.total_samples:
            raise IndexError(f"Index {idx} out of range [0, {self.total_samples})")
        k = int(np.searchsorted(self._offsets[1:], idx, side="right"))
        seg = self._segments[k]
        return seg, self.resolve_local_index(seg, idx - int(self._offsets[k]))

    def indices_in_range(self, lo: int, hi: int) -> list[int]:
        """Valid index values in ``[lo, hi]``: every integer, or the grid walking down from ``hi``."""
        lo, hi = int(lo), int(hi)
        if hi < lo:
            return []
        if self._ns_per_sample is None:
            return list(range(lo, hi + 1))
        return list(range(hi, lo - 1, -self._ns_per_sample))

    def offset_index(self, index_value: IndexValue, offset: int | float) -> IndexValue:
        """rerun 0.41's window arithmetic: ``index_value`` plus an explicit offset.

        Time timelines take the offset in seconds (``round(offset * 1e9)`` ns); integer
        timelines need an integral offset (``ValueError`` otherwise).
        """
        if self._ns_dtype is not None:
            return self.typed(index_value_to_int(index_value) + round(float(offset) * 1e9))
        if int(offset) != offset:
            raise ValueError(f"Integer timelines require integral window offsets, got {offset!r}")
        return index_value_to_int(index_value) + int(offset)

    def output_index_values(self, index_value: IndexValue, field: Any) -> tuple[IndexValue, ...]:
        """The index values ``field`` reads for the sample at ``index_value``, in its window's order."""
        offsets = field._native_window(self.kind, self._ns_per_sample)
        v = index_value_to_int(index_value)
        if offsets is None:
            return (self.typed(v),)
        return tuple(self.typed(v + o) for o in offsets)

    @staticmethod
    def build(
        source: Any,
        index: str,
        fields: Mapping[str, Any],
        *,
        timeline_sampling: FixedRateSampling | None = None,
    ) -> SampleIndex:
        """Build from the catalog's per-segment index ranges (no data is read).

        Every window stays inside its segment: the start is trimmed by the most negative
        window offset, the end by the most positive; a segment left empty is dropped.
        """
        with tracing.tracing_scope("SampleIndex.build"):
            ids = source.segment_ids()
            if not ids:
                return SampleIndex([])
            dataset = source.native_dataset()
            kinds = dict(dataset.timelines())
            if index not in kinds:
                raise InvalidArgumentError(
                    f"index {index!r} is not a timeline of the dataset (timelines: {sorted(kinds)})"
                )
            kind = kinds[index]
            if kind == "sequence":
                if timeline_sampling is not None:
                    warnings.warn(
                        f"timeline_sampling is ignored for the integer timeline {index!r}", UserWarning, stacklevel=3
                    )
                step = None
            else:
                if timeline_sampling is None:
                    raise TypeError(
                        f"{index!r} is a {kind} timeline: pass timeline_sampling=FixedRateSampling(rate_hz) "
                        "to sample it on a fixed-rate grid"
                    )
                step = timeline_sampling.ns_per_sample
            neg, pos = 0, 0
            for f in fields.values():
                extent = f._native_extent(kind)
                if extent is not None:
                    neg, pos = max(neg, -extent[0]), max(pos, extent[1])
            ranges = dataset.filter_segments(ids).get_index_ranges(index)
            seg_col = ranges["rerun_segment_id"].to_pylist()
            starts = dict(zip(seg_col, _ints(ranges[f"{index}:start"]), strict=True))
            ends = dict(zip(seg_col, _ints(ranges[f"{index}:end"]), strict=True))
            segments = []
            for sid in ids:
                lo, hi = starts.get(sid), ends.get(sid)
                if lo is None or hi is None:
                    continue  # the segment has no data on this timeline
                lo, hi = lo + neg, hi - pos
                if lo > hi:
                    continue
                n = hi - lo + 1 if step is None else (hi - lo) // step + 1
                end = lo + (n - 1) * (step or 1)
                segments.append(SegmentMetadata(sid, int(lo), int(end), int(n)))
            ns_dtype = {"timestamp": "datetime64[ns]", "duration": "timedelta64[ns]"}.get(kind)
            return SampleIndex(segments, ns_per_sample=step, ns_dtype=ns_dtype)


def _ints(arr: pa.ChunkedArray | pa.Array) -> Iterable[int | None]:
    if pa.types.is_timestamp(arr.type) or pa.types.is_duration(arr.type):
        arr = arr.cast(pa.int64())
    return arr.to_pylist()
