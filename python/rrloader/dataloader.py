"""PyTorch datasets over Rerun recordings: the seed API generation.

This is the API of the seed documents (``../shared/seeds/dataloader-api.txt``); rerun-sdk 0.41's
newer generation is ``rrloader.experimental.dataloader``. Code written for the seed API runs on
rrloader by changing the import::

    from rrloader.dataloader import DataSource, Field, NumericDecoder, RerunIterableDataset

Everything per sample — locating index values, fetching (latest-at queries), decoding
numbers, images and video, dropping incomplete samples — runs in the native engine
(``rrloader._core``); this module describes fields, plans epochs (order, shards) and calls
user-written Python decoders, over the machinery both generations share (``rrloader._loader``).

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
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, IterableDataset

from . import _core, tracing
from ._loader._collate import collate_samples
from ._loader._config import (
    SEED,
    DataSourceBase,
    EngineField,
    VideoOptions,
    as_source,
    check_generation,
    native_kind,
)
from ._loader._datasets import (
    DEFAULT_MAX_READY_BYTES,
    EngineDataset,
    Iteration,
    live_ddp_topology,
    worker_topology,
)
from ._loader._resume import merge_states
from ._loader._sample_index import FixedRateSampling, IndexValue, SampleIndex, SegmentMetadata
from ._loader._shuffle import InterleavedShuffle, ShuffleStrategy, bind_strategy, seed_shard_order, shard_plan
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
    "merge_states",
    "tracing_scope",
    "with_tracing",
]

tracing_scope = tracing.tracing_scope
with_tracing = tracing.with_tracing


# --------------------------------------------------------------------------- decoders
class ColumnDecoder(ABC):
    """Base class for column decoders (the seed API's contract).

    Subclasses convert raw Arrow data into tensors. A Python subclass is called by the
    dataset once per sample with the GIL held, from the iterating thread: ``raw`` is a
    ``pyarrow.ChunkedArray`` with one cell per index value of the field (one without a
    window), ``index_value`` the sample's index value and ``segment_id`` its segment.
    The built-in decoders run natively inside the engine instead.
    """

    _rrl_generation = SEED

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

    _rrl_generation: ClassVar[str] = SEED

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or self.path.count(":") < 2:
            raise InvalidArgumentError(f"Field path must be 'entity:Archetype:component', got {self.path!r}")
        check_generation(self.decode, SEED, f"Field {self.path!r}: the decoder")
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

    # How the shared sample index and the engine read the seed's window: an inclusive range
    # in the index's native unit; on a time timeline, the grid values walking down from v + end.
    def _native_extent(self, kind: str) -> tuple[int, int] | None:
        return self.window

    def _native_window(self, kind: str, step: int | None) -> tuple[int, ...] | None:
        if self.window is None:
            return None
        lo, hi = self.window
        step = step or 1
        return tuple(range(hi - (hi - lo) // step * step, hi + 1, step))

    def _engine_field(self, key: str, kind: str, step: int | None) -> EngineField:
        native = native_kind(self.decode)
        video = VideoOptions()
        if native == "video":
            h, w = self.decode.size or (0, 0)
            video = VideoOptions(self.decode.codec or "", h, w, self.decode.session_cache_bytes, self.decode.threads)
        return EngineField(
            key=key,
            path=self.path,
            kind=native,
            window=self._native_window(kind, step),
            select=self.select.query if self.select is not None else "",
            join=tuple(self.join or ()),
            video=video,
            semantics=SEED,
            decoder=self.decode,
            context_range=native == "raw" and type(self.decode).context_range is not ColumnDecoder.context_range,
        )


@dataclasses.dataclass(frozen=True)
class DataSource(DataSourceBase):
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

    _rrl_generation: ClassVar[str] = SEED

    def __post_init__(self) -> None:
        native = self.native_dataset()
        if native is not self.dataset:
            object.__setattr__(self, "dataset", native)


# --------------------------------------------------------------------------- datasets
def _distributed() -> tuple[int, int]:
    """``(rank, world_size)`` of this process's DDP process group; ``(0, 1)`` outside one."""
    return live_ddp_topology() or (0, 1)


def _worker() -> tuple[int, int]:
    """``(worker id, number of workers)`` of this DataLoader worker; ``(0, 1)`` outside one."""
    return worker_topology()


def _prepare(source: Any, index: str, fields: Mapping[str, Field], timeline_sampling) -> tuple:
    source = as_source(source, SEED, DataSource)
    for key, f in fields.items():
        check_generation(f, SEED, f"field {key!r}")
        if not isinstance(f, Field):
            raise InvalidArgumentError(f"field {key!r} must be an rrloader.dataloader.Field, got {f!r}")
    si = SampleIndex.build(source, index, fields, timeline_sampling=timeline_sampling)
    engine_fields = [f._engine_field(key, si.kind, si.ns_per_sample) for key, f in fields.items()]
    return source, si, engine_fields


class RerunIterableDataset(EngineDataset, IterableDataset):
    """Iterable dataset: fetches ``fetch_size`` samples per engine block and yields them one by one.

    The index list is partitioned across DDP ranks (when ``torch.distributed`` is
    initialized; in spawned DataLoader workers, the rank of the process that made them) and
    DataLoader workers inside the dataset. With ``shuffle=True`` the whole list is permuted
    once per epoch from ``(seed, epoch)`` before partitioning; call ``set_epoch`` between
    epochs. The engine fetches block N+1 while block N decodes.

    ``shuffle_strategy``: instead of ``shuffle``, one of ``rrloader.experimental.dataloader``'s
    strategies (rerun 0.41's orders, or the decode-once ``InterleavedShuffle`` for video);
    its order is cut into shards and fetch blocks with 0.41's rules.

    ``state_dict()`` / ``load_state_dict()``: save and resume the epoch mid-way, exactly (see
    ``docs/dataloader.md``).

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
        shuffle_strategy: ShuffleStrategy | None = None,
        decode_threads: int | None = None,
        skip_incomplete: bool = False,
        max_consecutive_skips: int = 1000,
        prefetch_blocks: int = 2,
        max_ready_bytes: int = DEFAULT_MAX_READY_BYTES,
        thread_nice: int = 10,
    ):
        if int(fetch_size) < 1:
            raise InvalidArgumentError(f"fetch_size must be >= 1, got {fetch_size}")
        if shuffle_strategy is not None and not isinstance(shuffle_strategy, ShuffleStrategy):
            raise TypeError(f"shuffle_strategy must be a ShuffleStrategy, got {shuffle_strategy!r}")
        source, si, engine_fields = _prepare(source, index, fields, timeline_sampling)
        self._source = source
        self._fields = dict(fields)
        self._timeline_sampling = timeline_sampling
        self._setup(
            source.native_dataset(),
            index,
            engine_fields,
            si,
            decode_threads=decode_threads,
            thread_nice=thread_nice,
            video_sessions=(
                functools.partial(shuffle_strategy.video_sessions, fetch_block_size=int(fetch_size))
                if isinstance(shuffle_strategy, InterleavedShuffle)
                else None
            ),
        )
        self._strategy = None if shuffle_strategy is None else bind_strategy(shuffle_strategy, self)
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
        return self._shard_plan()[0]

    def _shard_plan(self, exclude: np.ndarray | None = None, topology: tuple | None = None):
        """This process's (or ``topology``'s shard's) order and fetch block ends of the current epoch."""
        if topology is None:
            rank, world = _distributed()
            if (rank, world) == (0, 1) and self._parent_ddp_topology is not None:
                rank, world = self._parent_ddp_topology  # a spawned worker of a DDP rank
            wid, nw = _worker()
        else:
            rank, world, wid, nw = topology
        epoch = int(self._epoch.item())
        if self._strategy is not None:
            return shard_plan(
                self._strategy,
                self._sample_index,
                fetch_block_size=self._fetch_size,
                epoch=epoch,
                rank=rank,
                world_size=world,
                worker=wid,
                num_workers=nw,
                exclude=exclude,
            )
        order = seed_shard_order(
            self._sample_index.total_samples,
            shuffle=self._shuffle,
            seed=self._seed,
            epoch=epoch,
            rank=rank,
            world_size=world,
            worker=wid,
            num_workers=nw,
            exclude=exclude,
        )
        return order, None

    def _state_header(self) -> dict[str, Any]:
        strategy = repr(self._strategy) if self._strategy is not None else f"shuffle={self._shuffle}, seed={self._seed}"
        return {
            **super()._state_header(),
            "generation": "seed",
            "epoch": int(self._epoch.item()),
            "strategy": strategy,
            "fetch_size": self._fetch_size,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = _distributed()
        if (rank, world) == (0, 1) and self._parent_ddp_topology is not None:
            rank, world = self._parent_ddp_topology
        wid, nw = _worker()

        def plan(r: int, w: int, k: int, n: int, exclude: np.ndarray | None = None):
            return self._shard_plan(exclude, (r, w, k, n))

        order, ends, positions, restore, progress = self._resumable(
            int(self._epoch.item()), rank, world, wid, nw, plan
        )
        it = Iteration(
            order=order,
            block_ends=ends,
            block_size=self._fetch_size,
            skip_incomplete=self._skip_incomplete,
            max_consecutive_skips=self._max_consecutive_skips,
            positions=positions,
            restore=restore,
            progress=progress,
        )
        return self._iterate(it, prefetch_blocks=self._prefetch_blocks, max_ready_bytes=self._max_ready_bytes)


class RerunMapDataset(EngineDataset, Dataset):
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
        source, si, engine_fields = _prepare(source, index, fields, timeline_sampling)
        self._source = source
        self._fields = dict(fields)
        self._timeline_sampling = timeline_sampling
        self._setup(
            source.native_dataset(), index, engine_fields, si, decode_threads=decode_threads, thread_nice=thread_nice
        )

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.__getitems__([idx])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        with tracing.tracing_scope("RerunMapDataset.__getitems__"):
            return self._run(indices)
