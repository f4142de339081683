"""PyTorch datasets over Rerun recordings: the API of ``rerun.experimental.dataloader``.

Code written for Rerun's dataloader runs on rrloader by changing the import::

    from rrloader.dataloader import DataSource, Field, NumericDecoder, RerunIterableDataset

Everything per sample — locating index values, fetching (latest-at queries), decoding
numbers and images, assembling blocks — runs in the native engine (``rrloader._core``);
this module plans epochs (order, shards), wraps the engine's arrays as tensors and calls
user-written Python decoders.

Conventions (the seed API's):

* ``Field.window = (start, end)``: offsets *inclusive on both ends*, added to the sample's
  index value, in the timeline's native unit (integer steps; nanoseconds on timestamp and
  duration timelines, where the window's values walk down from ``v + end`` on the sampling
  grid, as ``SampleIndex.indices_in_range``). A windowed field has a leading time axis.
* Missing values: a field is ``None`` in a sample when, at any of its index values, nothing
  was logged at or before it, the value was cleared (an empty batch), it holds a null, or
  its selector finds nothing. The same rule holds for every decoder. ``collate_samples``
  turns ``None`` into masks; ``skip_incomplete=True`` drops such samples.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, IterableDataset

from . import _core, tracing
from .errors import InvalidArgumentError, RrloaderError

__all__ = [
    "ColumnDecoder",
    "DataSource",
    "Field",
    "FixedRateSampling",
    "ImageDecoder",
    "NumericDecoder",
    "RerunIterableDataset",
    "RerunMapDataset",
    "SampleIndex",
    "SegmentMetadata",
    "Selector",
    "VideoFrameDecoder",
    "collate_samples",
    "tracing_scope",
    "with_tracing",
]

tracing_scope = tracing.tracing_scope
with_tracing = tracing.with_tracing

IndexValue = Any  # int, np.datetime64[ns] or np.timedelta64[ns]

# Decoded blocks waiting for the consumer are bounded in bytes (the engine's ready queue).
DEFAULT_MAX_READY_BYTES = 256 << 20


# --------------------------------------------------------------------------- decoders
class ColumnDecoder(ABC):
    """Base class for column decoders.

    Subclasses convert raw Arrow data into tensors. A Python subclass is called by the
    dataset once per sample with the GIL held, from the iterating thread: ``raw`` is a
    ``pyarrow.ChunkedArray`` with one cell per index value of the field (one without a
    window), ``index_value`` the sample's index value and ``segment_id`` its segment.
    The built-in decoders run natively inside the engine instead.
    """

    def context_range(self, index_value: IndexValue) -> tuple[IndexValue, IndexValue] | None:
        """Extra index-value range needed to decode ``index_value``: ``(start, end)`` inclusive, or None."""
        return None

    @abstractmethod
    def decode(self, raw: pa.ChunkedArray, index_value: IndexValue, segment_id: str) -> Any:
        """Decode raw Arrow data into a tensor, or return None to signal data missing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _cells(raw: pa.Array | pa.ChunkedArray) -> list[Any]:
    chunks = raw.chunks if isinstance(raw, pa.ChunkedArray) else [raw]
    return [cell for chunk in chunks for cell in chunk]


def _flatten_cell(cell: pa.Scalar) -> np.ndarray | None:
    arr = cell.values if hasattr(cell, "values") else None
    if arr is None:
        return None if not cell.is_valid else np.asarray([cell.as_py()])
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            return None
        arr = arr.flatten()
    if arr.null_count:
        return None
    return arr.to_numpy(zero_copy_only=False)


class NumericDecoder(ColumnDecoder):
    """Decode numeric / list-of-numeric cells to a tensor of the column's dtype.

    Every list level is flattened (row-major): one cell gives ``[D]``; a window of ``T``
    cells gives ``[T, D]`` (a window whose cells differ in width is an error). With
    ``Field(join=...)`` the components are joined instance by instance: ``[N, D_total]``.
    """

    _native_kind = "numeric"

    def decode(self, raw: pa.ChunkedArray, index_value: IndexValue, segment_id: str) -> Any:
        rows = [_flatten_cell(c) for c in _cells(raw)]
        if not rows or any(r is None or r.size == 0 for r in rows):
            return None
        if len(rows) == 1:
            return torch.from_numpy(np.array(rows[0]))  # a copy: Arrow's buffers are read-only
        widths = {r.size for r in rows}
        if len(widths) > 1:
            raise InvalidArgumentError(
                f"varying numeric row widths {sorted(widths)} in a window at segment {segment_id!r}, index {index_value}"
            )
        return torch.from_numpy(np.stack(rows))


class ImageDecoder(ColumnDecoder):
    """Decode an encoded-image blob (JPEG/PNG) — or a raw ``Image:buffer`` — to ``[C, H, W]`` uint8.

    Windows give ``[T, C, H, W]``. JPEG via libjpeg-turbo, PNG via libspng, natively;
    palette PNGs are expanded to RGB(A); 16-bit images are not supported.
    """

    _native_kind = "image"

    def decode(self, raw: pa.ChunkedArray, index_value: IndexValue, segment_id: str) -> Any:
        frames = []
        for cell in _cells(raw):
            if not cell.is_valid or len(cell) == 0:
                return None
            blob = b"".join(bytes(v.as_py()) for v in cell.values)
            frames.append(torch.from_numpy(_core.decode_encoded_image(blob)))
        if not frames:
            return None
        return frames[0] if len(frames) == 1 else torch.stack(frames)


class VideoFrameDecoder(ColumnDecoder):
    """Decode frames of a Rerun ``VideoStream`` (``/cam:VideoStream:sample``) to ``[3, H, W]`` uint8 RGB.

    H.264 (Annex B or 4-byte length-prefixed AVCC, detected per sample), H.265 (Annex B) and
    AV1, decoded natively by libavcodec (AV1 through libdav1d). Windows give ``[T, 3, H, W]``.

    As a ``Field`` decoder it runs inside the engine, GOP-aware: a sample's frame is the one of
    the latest packet at or before its index value, decoded from the latest keyframe at or
    before that packet; the keyframes come from the stream's ``is_keyframe`` column when the
    segment logs it, else from the bitstream (every sample is checked while the stream is
    indexed), and a marked keyframe is always checked against the bitstream. A block's
    frames are grouped by GOP, each GOP is fed to the decoder once, and open decoder sessions
    (at most ``session_cache_bytes`` per field) let a later block continue a GOP. A sample with
    no keyframe at or before its packet (e.g. before the stream's first frame) is ``None``
    and counted in ``dataset.video_stats()``; frames are never guessed.

    - ``codec``: used when the stream has no ``VideoStream:codec`` component (the component
      wins when logged): ``"h264"``/``"avc"``, ``"h265"``/``"hevc"``, ``"av1"`` (any case).
    - ``keyframe_interval`` / ``fps_estimate``: the seed API's; they only shape
      ``context_range`` (the native path finds the real keyframes).
    - ``size=(H, W)``: resize every delivered frame once, natively (bilinear).
    - ``session_cache_bytes``: bound on the open decoder sessions of the field (32 MiB).
    - ``threads``: libavcodec threads per decoding session (1; GOPs decode in parallel on the
      engine's threads anyway).

    Called directly, ``decode(raw, index_value, segment_id)`` decodes the cells of ``raw`` in
    order (empty cells and consecutive repeats, which a latest-at filled query produces,
    skipped) from the first keyframe and returns the last frame, or ``None`` without a
    keyframe; ``codec`` defaults to H.264 there.
    """

    _native_kind = "video"

    def __init__(
        self,
        codec: str | None = None,
        keyframe_interval: int = 30,
        fps_estimate: float = 30.0,
        *,
        size: tuple[int, int] | None = None,
        session_cache_bytes: int | None = None,
        threads: int = 1,
    ):
        if codec is not None:
            if not isinstance(codec, str):
                raise InvalidArgumentError(f"VideoFrameDecoder codec must be a string such as 'h264', got {codec!r}")
            codec = _core.video_codec_name(codec)  # raises for codecs rrloader does not decode
        if isinstance(keyframe_interval, bool) or int(keyframe_interval) != keyframe_interval or keyframe_interval < 1:
            raise InvalidArgumentError(f"keyframe_interval must be a positive integer, got {keyframe_interval!r}")
        if not (float(fps_estimate) > 0 and math.isfinite(float(fps_estimate))):
            raise InvalidArgumentError(f"fps_estimate must be a positive number, got {fps_estimate!r}")
        if size is not None:
            size = tuple(size)
            if len(size) != 2 or any(isinstance(x, bool) or int(x) != x or int(x) <= 0 for x in size):
                raise InvalidArgumentError(f"size must be (height, width) with both positive, got {size!r}")
            size = (int(size[0]), int(size[1]))
        if session_cache_bytes is None:
            session_cache_bytes = _core.DEFAULT_VIDEO_FIELD_SESSION_CACHE_BYTES
        if int(session_cache_bytes) < 0:
            raise InvalidArgumentError(f"session_cache_bytes must be >= 0, got {session_cache_bytes!r}")
        if int(threads) < 1:
            raise InvalidArgumentError(f"threads must be >= 1, got {threads!r}")
        self.codec = codec
        self.keyframe_interval = int(keyframe_interval)
        self.fps_estimate = float(fps_estimate)
        self.size = size
        self.session_cache_bytes = int(session_cache_bytes)
        self.threads = int(threads)

    def __repr__(self) -> str:
        extra = "" if self.size is None else f", size={self.size}"
        return (
            f"VideoFrameDecoder(codec={self.codec!r}, keyframe_interval={self.keyframe_interval}, "
            f"fps_estimate={self.fps_estimate}{extra})"
        )

    def context_range(self, index_value: IndexValue) -> tuple[IndexValue, IndexValue]:
        """The seed's estimate of the range from the previous keyframe to ``index_value``.

        Integer indices: ``(max(0, v - keyframe_interval), v)``; timestamps and durations:
        ``(v - d, v)`` with ``d = int(keyframe_interval / fps_estimate * 1e9)`` ns (not clamped).
        """
        if isinstance(index_value, (np.datetime64, np.timedelta64)):
            d = np.timedelta64(int(self.keyframe_interval / self.fps_estimate * 1e9), "ns")
            v = index_value.astype(f"{index_value.dtype.kind}8[ns]")
            return (v - d, v)
        v = int(index_value)
        return (max(0, v - self.keyframe_interval), v)

    def decode(self, raw: pa.ChunkedArray, index_value: IndexValue, segment_id: str) -> Any:
        packets: list[bytes] = []
        for cell in _cells(raw):
            if not cell.is_valid or len(cell) == 0:
                continue
            blob = b"".join(bytes(v.as_py()) for v in cell.values if v.is_valid)
            if blob and (not packets or packets[-1] != blob):
                packets.append(blob)
        codec = self.codec or "h264"
        first = None
        for i, p in enumerate(packets):
            try:
                if _core.video_is_keyframe(codec, p):
                    first = i
                    break
            except RrloaderError:
                continue  # a sample the detector cannot parse is no place to start
        if first is None:
            return None
        feed = packets[first:]
        (frame,) = _core.decode_video_packets(
            codec, feed, [len(feed) - 1], size=self.size, threads=self.threads, reject_reordering=True
        )
        return None if frame is None else torch.from_numpy(frame)


def _native_kind(decoder: ColumnDecoder) -> str:
    """'numeric'/'image'/'video' when the engine can run `decoder` natively, else 'raw' (Python)."""
    for base in (NumericDecoder, ImageDecoder, VideoFrameDecoder):
        if isinstance(decoder, base) and type(decoder).decode is base.decode:
            return base._native_kind
    return "raw"


def _video_options(decoder: ColumnDecoder) -> tuple[str, int, int, int, int]:
    """The engine's video settings of a field: (codec, height, width, session cache bytes, threads)."""
    if _native_kind(decoder) != "video":
        return ("", 0, 0, 0, 1)
    h, w = decoder.size or (0, 0)
    return (decoder.codec or "", h, w, decoder.session_cache_bytes, decoder.threads)


# --------------------------------------------------------------------------- fields
class Selector:
    """A jq-like path into a component's cell: ``.name``, ``.[i]`` (``.[-1]`` from the end), chains.

    A cell is the list of instances logged at one time: ``.[0]`` is the first instance,
    ``.[0].dog`` its ``dog`` struct field, ``.pose`` the ``pose`` field of every instance.
    A path that does not exist in the column's type is an error when the dataset is built;
    an index past the end of a particular cell makes that value missing.
    """

    def __init__(self, query: str):
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError(f"Selector needs a query string such as '.[0].value', got {query!r}")
        self.query = query

    def __repr__(self) -> str:
        return f"Selector({self.query!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other.query == self.query

    def __hash__(self) -> int:
        return hash(self.query)


@dataclasses.dataclass(frozen=True)
class Field:
    """Declarative spec for one field of a training sample.

    - ``path``: ``entity_path:Archetype:component`` (e.g. ``"/camera:EncodedImage:blob"``).
    - ``decode``: a ColumnDecoder.
    - ``select``: optional Selector applied to each cell before decoding.
    - ``window``: optional ``(start_offset, end_offset)``, inclusive, in the index's native unit.
    - ``join``: optional other components of the same entity and archetype (names such as
      ``"colors"`` or full column names) joined instance by instance with ``path``'s
      component, which is primary: its instance count sets N; a shorter component repeats
      its last instance, a longer one is cut. Output ``[N, D_path + D_1 + ...]`` in the
      components' promoted dtype. NumericDecoder only.
    """

    path: str
    decode: ColumnDecoder
    select: Selector | str | None = None
    window: tuple[int, int] | None = None
    join: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or self.path.count(":") < 2:
            raise InvalidArgumentError(f"Field path must be 'entity:Archetype:component', got {self.path!r}")
        if not isinstance(self.decode, ColumnDecoder):
            raise InvalidArgumentError(f"Field {self.path!r}: decode must be a ColumnDecoder, got {self.decode!r}")
        if isinstance(self.select, str):
            object.__setattr__(self, "select", Selector(self.select))
        if self.window is not None:
            w = tuple(self.window)
            if len(w) != 2:
                raise InvalidArgumentError(f"Field {self.path!r}: window must be (start, end), got {self.window!r}")
            if any(isinstance(x, float) and not float(x).is_integer() for x in w):
                raise InvalidArgumentError(f"Field {self.path!r}: window offsets must be integers, got {w!r}")
            start, end = int(w[0]), int(w[1])
            if start > end:
                raise InvalidArgumentError(f"Field {self.path!r}: window start {start} > end {end}")
            object.__setattr__(self, "window", (start, end))
        if self.join is not None:
            object.__setattr__(self, "join", tuple(self.join) if not isinstance(self.join, str) else (self.join,))


@dataclasses.dataclass(frozen=True)
class FixedRateSampling:
    """Sample timestamp (or duration) timelines on a grid ``index_start + k * ns_per_sample``."""

    rate_hz: float

    @property
    def ns_per_sample(self) -> int:
        if not self.rate_hz > 0 or not math.isfinite(self.rate_hz):
            raise InvalidArgumentError(f"FixedRateSampling.rate_hz must be a positive number, got {self.rate_hz!r}")
        return max(1, round(1e9 / self.rate_hz))


@dataclasses.dataclass(frozen=True)
class DataSource:
    """An immutable reference to a dataset with an optional segment filter.

    ``dataset`` is an ``rrloader.LocalDataset`` (or a view of one), or a dataset on a Rerun
    catalog server: a rerun-sdk ``DatasetEntry`` (``rr.catalog.CatalogClient(url).get_dataset(name)``),
    a ``DatasetSelection`` of one, or an ``rrloader.RemoteDataset`` (which sets the remote
    options; rerun-sdk objects are wrapped in one with the defaults). ``segments``: an
    allow-list; the dataset's own segment order is kept, unknown ids are ignored and
    ``[]`` means no segments.
    """

    dataset: Any
    segments: list[str] | None = None

    def __post_init__(self) -> None:
        from ._remote import as_dataset

        wrapped = as_dataset(self.dataset)
        if wrapped is not self.dataset:
            object.__setattr__(self, "dataset", wrapped)

    def filter_segments(self, segment_ids: Sequence[str]) -> DataSource:
        return dataclasses.replace(self, segments=list(segment_ids))

    def segment_ids(self) -> list[str]:
        ids = list(self.dataset.segment_ids())
        if self.segments is not None:
            keep = set(self.segments)
            ids = [s for s in ids if s in keep]
        return ids


# --------------------------------------------------------------------------- sample index
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
        is_timestamp: bool = False,
        *,
        is_duration: bool = False,
    ):
        self._segments = list(segments)
        self._ns_per_sample = ns_per_sample
        self._is_timestamp = bool(is_timestamp)
        self._is_duration = bool(is_duration)
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
    def is_timestamp(self) -> bool:
        return self._is_timestamp

    @property
    def is_duration(self) -> bool:
        return self._is_duration

    @property
    def segment_offsets(self) -> np.ndarray:
        return self._offsets

    @property
    def step(self) -> int:
        return self._ns_per_sample or 1

    def _typed(self, value: int) -> IndexValue:
        if self._is_timestamp:
            return np.datetime64(int(value), "ns")
        if self._is_duration:
            return np.timedelta64(int(value), "ns")
        return int(value)

    def resolve_local_index(self, seg: SegmentMetadata, pos: int) -> IndexValue:
        """The index value of sample ``pos`` of ``seg`` (datetime64/timedelta64 on time timelines)."""
        return self._typed(seg.index_start + int(pos) * self.step)

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

    @staticmethod
    def build(
        source: DataSource,
        index: str,
        fields: Mapping[str, Field],
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
            kinds = dict(source.dataset.timelines())
            if index not in kinds:
                raise InvalidArgumentError(
                    f"index {index!r} is not a timeline of the dataset (timelines: {sorted(kinds)})"
                )
            kind = kinds[index]
            ranges = source.dataset.filter_segments(ids).get_index_ranges(index)
            start_col, end_col = f"{index}:start", f"{index}:end"
            seg_col = ranges["rerun_segment_id"].to_pylist()

            def ints(col: str) -> list[int | None]:
                arr = ranges[col]
                if pa.types.is_timestamp(arr.type) or pa.types.is_duration(arr.type):
                    arr = arr.cast(pa.int64())
                return arr.to_pylist()

            starts = dict(zip(seg_col, ints(start_col), strict=True))
            ends = dict(zip(seg_col, ints(end_col), strict=True))
            offsets = [o for f in fields.values() if f.window is not None for o in f.window]
            neg = max(0, -min(offsets)) if offsets else 0
            pos = max(0, max(offsets)) if offsets else 0
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
            return SampleIndex(
                segments, ns_per_sample=step, is_timestamp=kind == "timestamp", is_duration=kind == "duration"
            )


# --------------------------------------------------------------------------- datasets
_KEEP_ALIVE_AFTER_FORK: list[Any] = []  # native objects inherited through fork: never destroyed


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _worker() -> tuple[int, int]:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _RerunDataset:
    """What both datasets share: the sample index, the native engine, sample assembly."""

    def __init__(
        self,
        source: DataSource,
        index: str,
        fields: Mapping[str, Field],
        timeline_sampling: FixedRateSampling | None,
        decode_threads: int | None,
        thread_nice: int = 10,
    ):
        if not isinstance(source, DataSource):
            source = DataSource(source)
        if not fields:
            raise InvalidArgumentError("a dataset needs at least one field")
        self._source = source
        self._index = index
        self._fields = dict(fields)
        self._timeline_sampling = timeline_sampling
        if decode_threads is not None and decode_threads < 1:
            raise InvalidArgumentError(f"decode_threads must be >= 1, got {decode_threads}")
        self._decode_threads = decode_threads
        if not 0 <= int(thread_nice) <= 19:
            raise InvalidArgumentError(f"thread_nice must be in 0..19, got {thread_nice}")
        self._thread_nice = int(thread_nice)
        self._sample_index = SampleIndex.build(source, index, self._fields, timeline_sampling=timeline_sampling)
        self._engine_obj: Any = None
        self._engine_pid: int | None = None
        self._carrier = tracing.current_carrier()
        self._engine()  # validates fields against the schema now, not at the first sample

    # pickling (spawned DataLoader workers): the engine is rebuilt in the new process.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_engine_obj"] = None
        state["_engine_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        tracing.attach_carrier(self._carrier)

    @property
    def sample_index(self) -> SampleIndex:
        return self._sample_index

    def __len__(self) -> int:
        return self._sample_index.total_samples

    def _engine(self) -> Any:
        pid = os.getpid()
        if self._engine_obj is not None and self._engine_pid == pid:
            return self._engine_obj
        dataset = self._source.dataset
        if self._engine_obj is not None:
            # Inherited through fork: the parent's threads do not exist here and its locks may
            # be held, so the native objects are neither used nor destroyed; reopen the files.
            _KEEP_ALIVE_AFTER_FORK.append((self._engine_obj, dataset))
            dataset = dataset._reopened()
            self._source = dataclasses.replace(self._source, dataset=dataset)
        segs = self._sample_index.segments
        specs = []
        for key, f in self._fields.items():
            specs.append(
                (
                    key,
                    f.path,
                    _native_kind(f.decode),
                    f.window,
                    f.select.query if f.select is not None else "",
                    list(f.join or ()),
                    _video_options(f.decode),
                )
            )
        threads = self._decode_threads
        if threads is None:
            threads = 1 if _worker()[1] > 1 else (os.cpu_count() or 1)
        self._engine_obj = _core.Engine(
            dataset._core,
            [s.segment_id for s in segs],
            np.arange(len(segs), dtype=np.int64),
            np.array([s.index_start for s in segs], dtype=np.int64),
            np.array([s.num_samples for s in segs], dtype=np.int64),
            int(self._sample_index.step),
            specs,
            self._index,
            int(threads),
            self._thread_nice,
        )
        self._engine_pid = pid
        return self._engine_obj

    def video_stats(self) -> dict[str, dict[str, int]]:
        """Per video field (``VideoFrameDecoder`` run natively): what its decoding cost so far.

        Counters since this process built its engine (a DataLoader worker has its own):
        ``frames_decoded`` (frames out of libavcodec), ``frames_delivered`` (distinct frames
        converted to RGB for blocks), ``slots_filled`` (frames handed to samples, repeats
        included), ``gops_started`` (of which ``sessions_recycled`` reused an idle decoder's
        memory), ``gop_requests``, ``session_hits`` / ``session_misses``,
        ``missing_no_keyframe`` (samples without a keyframe at or before their packet,
        ``missing_before_first_packet`` of them before the stream's first packet),
        ``missing_not_decoded``, ``streams_indexed`` (stream indexes created),
        ``clusters_loaded`` (parts of streams read: groups of chunks that overlap in time, one
        per GOP chunk on GOP-chunked data), ``keyframes_rejected`` (``is_keyframe`` marks the
        bitstream refuted, in the parts read); and now: ``bytes_cached`` / ``sessions_cached`` (open
        decoder sessions). ``frames_decoded / frames_delivered`` is the decoding overhead:
        1.0 when nothing is decoded that is not delivered.
        """
        engine = self._engine()
        return {
            key: dict(engine.video_stats(i))
            for i, (key, f) in enumerate(self._fields.items())
            if _native_kind(f.decode) == "video"
        }

    def _record_spans(self, stats: Mapping[str, int]) -> None:
        if not tracing.enabled():
            return
        common = {"rrloader.samples": stats["samples"]}
        tracing.record_span(
            "rrloader.fetch",
            stats["fetch_start_ns"],
            stats["fetch_end_ns"],
            {
                **common,
                "rrloader.fetch.queries": stats["queries"],
                "rrloader.fetch.rows": stats["rows_fetched"],
                "rrloader.fetch.chunks_loaded": stats["chunks_loaded"],
            },
        )
        tracing.record_span(
            "rrloader.decode",
            stats["decode_start_ns"],
            stats["decode_end_ns"],
            {
                **common,
                "rrloader.decode.bytes": stats["bytes_out"],
                "rrloader.decode.missing": stats["missing"],
                "rrloader.decode.video_gops": stats["video_gops"],
                "rrloader.decode.video_frames_decoded": stats["video_frames_decoded"],
                "rrloader.decode.video_frames_delivered": stats["video_frames_delivered"],
            },
        )

    def _assemble(self, block: tuple) -> list[dict[str, Any]]:
        """Per-sample dicts from one engine block (tensors view the engine's buffers)."""
        global_ids, seg_pos, values, fields, stats = block
        self._record_spans(stats)
        n = len(global_ids)
        samples: list[dict[str, Any]] = [{} for _ in range(n)]
        for (key, field), out in zip(self._fields.items(), fields, strict=True):
            if "raw_slots" in out:
                if field.window is None and _overrides_context_range(field.decode):
                    self._context_decode(key, field, seg_pos, values, samples)
                else:
                    self._python_decode(key, field, out, seg_pos, values, samples)
                continue
            valid = out["valid"].tolist()
            # unbind: all per-sample views of the [B, ...] buffer in one native call.
            items = torch.from_numpy(out["batch"]).unbind(0) if "batch" in out else out["items"]
            for sample, item, ok in zip(samples, items, valid, strict=True):
                sample[key] = None if not ok or item is None else item
            if "batch" not in out:
                for sample in samples:
                    if sample[key] is not None:
                        sample[key] = torch.from_numpy(sample[key])
        return samples

    def _python_decode(self, key, field, out, seg_pos, values, samples) -> None:
        column = out["raw_column"]
        slots = int(out["raw_slots"])
        rows = out["raw_rows"]
        col = pa.ChunkedArray._import_from_c_capsule(column) if column is not None else None
        segs = self._sample_index.segments
        for i in range(len(samples)):
            r = rows[i * slots : (i + 1) * slots]
            seg_id = segs[int(seg_pos[i])].segment_id
            value = self._sample_index._typed(int(values[i]))
            if col is None:
                raw = pa.chunked_array([], type=pa.null())
            else:
                raw = col.take(pa.array(r, mask=r < 0, type=pa.int64()))
            samples[i][key] = field.decode.decode(raw, value, seg_id)


    def _context_decode(self, key, field, seg_pos, values, samples) -> None:
        """A Python decoder with a ``context_range``: it gets every row in its inclusive range.

        As in the seed API, the block's query asks for the union of the ranges' index values
        (``indices_in_range``) with latest-at fill, and each sample's decoder receives the
        rows of its own segment whose index lies in its range (a window takes precedence
        over ``context_range``).
        """
        si = self._sample_index
        segs = si.segments
        ranges: list[tuple[int, int]] = []
        wanted: dict[str, set[int]] = {}
        for i in range(len(samples)):
            v = int(values[i])
            r = field.decode.context_range(si._typed(v))
            lo, hi = (v, v) if r is None else (_as_ns_int(r[0]), _as_ns_int(r[1]))
            ranges.append((lo, hi))
            bucket = wanted.setdefault(segs[int(seg_pos[i])].segment_id, set())
            bucket.update(si.indices_in_range(lo, hi))
            bucket.add(v)
        entity = field.path.split(":", 1)[0]
        table = self._source.dataset.reader(
            self._index,
            using_index_values={sid: np.array(sorted(vs), dtype=np.int64) for sid, vs in wanted.items()},
            fill_latest_at=True,
            contents=["/**" if entity == "/" else f"{entity}/**"],
        )
        column = table[field.path] if field.path in table.column_names else None
        index_col = table[self._index]
        if pa.types.is_timestamp(index_col.type) or pa.types.is_duration(index_col.type):
            index_col = index_col.cast(pa.int64())
        index_np = index_col.to_numpy(zero_copy_only=False)
        seg_np = np.asarray(table["rerun_segment_id"].to_pylist(), dtype=object)
        for i, (lo, hi) in enumerate(ranges):
            sid = segs[int(seg_pos[i])].segment_id
            rows = np.flatnonzero((seg_np == sid) & (index_np >= lo) & (index_np <= hi))
            raw = column.take(pa.array(rows, type=pa.int64())) if column is not None else pa.chunked_array([], pa.null())
            samples[i][key] = field.decode.decode(raw, si._typed(int(values[i])), sid)


def _overrides_context_range(decoder: ColumnDecoder) -> bool:
    return type(decoder).context_range is not ColumnDecoder.context_range


def _as_ns_int(value: Any) -> int:
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return int(value.astype(f"{value.dtype.kind}8[ns]").view(np.int64))
    return int(value)


class RerunIterableDataset(_RerunDataset, IterableDataset):
    """Iterable dataset: fetches ``fetch_size`` samples per engine block and yields them one by one.

    The index list is partitioned across DDP ranks (when ``torch.distributed`` is
    initialized) and DataLoader workers inside the dataset. With ``shuffle=True`` the whole
    list is permuted once per epoch from ``(seed, epoch)`` before partitioning; call
    ``set_epoch`` between epochs. The engine fetches block N+1 while block N decodes.

    ``skip_incomplete=True`` drops samples with a missing field; more than
    ``max_consecutive_skips`` in a row raises (a field that is never present would
    otherwise silently empty the epoch).

    ``thread_nice`` (both datasets, default 10): niceness added to the engine's own threads
    (fetch, decode, decode pool; never the iterating thread), so that the consumer — the
    training step, the collate function and torch's OpenMP threads — gets the CPU first;
    0 keeps the process's priority.
    """

    def __init__(
        self,
        source: DataSource,
        index: str,
        fields: Mapping[str, Field],
        timeline_sampling: FixedRateSampling | None = None,
        fetch_size: int = 128,
        shuffle: bool = True,
        *,
        seed: int = 0,
        decode_threads: int | None = None,
        skip_incomplete: bool = False,
        max_consecutive_skips: int = 1000,
        prefetch_blocks: int = 2,
        max_ready_bytes: int = DEFAULT_MAX_READY_BYTES,
        thread_nice: int = 10,
    ):
        if int(fetch_size) < 1:
            raise InvalidArgumentError(f"fetch_size must be >= 1, got {fetch_size}")
        super().__init__(source, index, fields, timeline_sampling, decode_threads, thread_nice)
        self._fetch_size = int(fetch_size)
        self._shuffle = bool(shuffle)
        self._seed = int(seed)
        # The epoch lives in shared memory so that set_epoch reaches persistent DataLoader
        # workers too (their dataset copies are made once, at the first iter(loader)).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skip_incomplete = bool(skip_incomplete)
        self._max_consecutive_skips = int(max_consecutive_skips)
        self._prefetch_blocks = int(prefetch_blocks)
        self._max_ready_bytes = int(max_ready_bytes)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for shuffling (like DistributedSampler.set_epoch); reaches persistent workers."""
        self._epoch.fill_(int(epoch))

    def shard_order(self) -> np.ndarray:
        """This process's global sample numbers for the current epoch, in iteration order."""
        total = self._sample_index.total_samples
        order = _core.epoch_order(total, self._seed, int(self._epoch.item()), self._shuffle)
        rank, world = _distributed()
        b, e = _core.shard_bounds(len(order), rank, world)
        order = order[b:e]
        wid, nw = _worker()
        b, e = _core.shard_bounds(len(order), wid, nw)
        return np.ascontiguousarray(order[b:e])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.shard_order()
        engine = self._engine()
        pipe = engine.iterate(order, self._fetch_size, self._prefetch_blocks, self._max_ready_bytes)
        skipped = 0
        try:
            while True:
                # Nothing here may keep a block alive while the next one is asked for: the
                # engine decodes the block after next as soon as this call takes one, and a
                # block still referenced then is one more block in memory (354 MB of three
                # 640x480 cameras at fetch_size 128).
                block = pipe.next()
                if block is None:
                    break
                samples = self._assemble(block)
                del block
                samples.reverse()
                while samples:
                    sample = samples.pop()
                    if self._skip_incomplete and any(v is None for v in sample.values()):
                        skipped += 1
                        if skipped > self._max_consecutive_skips:
                            missing = [k for k, v in sample.items() if v is None]
                            raise RrloaderError(
                                f"more than {self._max_consecutive_skips} consecutive samples were incomplete "
                                f"(the last one misses {missing}); check the fields or raise max_consecutive_skips"
                            )
                        continue
                    skipped = 0
                    yield sample
                    del sample
        finally:
            pipe.close()


class RerunMapDataset(_RerunDataset, Dataset):
    """Map-style dataset: random access by global index; ``__getitems__`` is one engine request per batch."""

    def __init__(
        self,
        source: DataSource,
        index: str,
        fields: Mapping[str, Field],
        timeline_sampling: FixedRateSampling | None = None,
        *,
        decode_threads: int | None = None,
        thread_nice: int = 10,
    ):
        super().__init__(source, index, fields, timeline_sampling, decode_threads, thread_nice)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.__getitems__([idx])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        ids = np.asarray(indices, dtype=np.int64).reshape(-1)
        total = self._sample_index.total_samples
        bad = ids[(ids < 0) | (ids >= total)]
        if bad.size:
            raise IndexError(f"Index {int(bad[0])} out of range [0, {total})")
        with tracing.tracing_scope("RerunMapDataset.__getitems__"):
            return self._assemble(self._engine().run(np.ascontiguousarray(ids)))


# --------------------------------------------------------------------------- collate
def _consecutive_view(values: Sequence[Any]) -> Any:
    """``values`` stacked as a view, when they already lie back to back in one buffer; else None.

    The engine decodes a block's samples of a field into one ``[B, ...]`` buffer and yields
    views of it, so the samples of a batch taken in order from one block are consecutive
    there and need no copy.
    """
    first = values[0]
    if not first.is_contiguous():
        return None
    ptr, step, offset = first.untyped_storage().data_ptr(), first.numel(), first.storage_offset()
    for k, v in enumerate(values):
        if (
            v.untyped_storage().data_ptr() != ptr
            or v.storage_offset() != offset + k * step
            or v.shape != first.shape
            or v.dtype != first.dtype
            or not v.is_contiguous()
        ):
            return None
    return torch.as_strided(first, (len(values), *first.shape), (step, *first.stride()), offset)


def _stack(values: Sequence[Any]) -> Any:
    from torch.utils.data import default_collate, get_worker_info

    if get_worker_info() is not None:
        # In a DataLoader worker, torch's own collate stacks straight into shared memory, so
        # the batch crosses to the main process without another copy.
        return default_collate(list(values))
    view = _consecutive_view(values)
    return view if view is not None else torch.stack(list(values))


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stack a list of samples into batch tensors: ``(batch, missing)``.

    ``batch[name]`` is ``[B, ...]``; a missing value (``None``) is a zero-filled slot and
    ``missing[name]`` is a ``[B]`` bool tensor that is True there. A field missing in every
    sample is ``None`` in ``batch``. Shapes must agree across present samples (ragged
    fields: collate them yourself).

    No copy where none is needed: in the iterating process, a batch of consecutive samples
    of one engine block (an iterable dataset's batch, usually) is a view of the block's
    buffer; in a DataLoader worker the batch is stacked into shared memory, as torch's
    ``default_collate`` does.
    """
    if not samples:
        return {}, {}
    batch: dict[str, Any] = {}
    missing: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        mask = torch.tensor([v is None for v in values], dtype=torch.bool)
        missing[key] = mask
        present = [v for v in values if v is not None]
        if not present:
            batch[key] = None
            continue
        shapes = {tuple(v.shape) for v in present}
        if len(shapes) > 1:
            raise InvalidArgumentError(f"field {key!r} has samples of different shapes {sorted(shapes)}; cannot stack")
        if len(present) == len(values):
            batch[key] = _stack(values)
        else:
            zero = torch.zeros_like(present[0])
            batch[key] = _stack([zero if v is None else v for v in values])
    return batch, missing
