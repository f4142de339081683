"""Epoch orders: shuffle strategies, shards across ranks and workers, fetch blocks (internal).

Per epoch, in Python (a few numpy calls over the epoch's sample numbers); nothing here runs
per sample. rerun-sdk 0.41's rules, which the 0.41 front end reproduces exactly:

* a strategy's ``epoch_order(sample_index, fetch_block_size=, seed=)`` returns every global
  sample number once, in fetch order, and ``block_bounds``: the cumulative ends of its
  blocks (contiguous, segment-local runs); the seed is the epoch;
* ``SampleShuffle``: ``numpy.random.default_rng(seed).permutation(total)``, every sample a
  block of its own; ``BlockShuffle``: blocks of ``fetch_block_size`` consecutive samples, cut
  at segment ends, in the order ``default_rng(seed).permutation(num_blocks)``, ascending
  inside; ``NoShuffle``: the same blocks in natural order;
* shards are contiguous, ranks first, then DataLoader workers: shard ``r`` of ``k`` is
  ``[r * (n // k), (r + 1) * (n // k))`` and the last one also takes the remainder; block
  bounds are cut where a shard cuts a block;
* fetch blocks pack whole strategy blocks greedily up to ``fetch_block_size`` samples and cut
  longer ones every ``fetch_block_size`` samples;
* ``BlockShuffle(buffer_size=...)`` emits through a ``ShuffleBuffer`` seeded with
  ``default_rng([epoch, rank, worker])`` (the engine runs it; see ``engine/emitter.h``).

The seed generation's order is :func:`seed_shard_order`: a permutation keyed by
``(seed, epoch)`` computed natively, balanced shards.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import Any, ClassVar, TypeVar

import numpy as np

from .. import _core

T = TypeVar("T")


class ShuffleStrategy(ABC):
    """Decides the order in which an epoch's samples are fetched (and, optionally, emitted).

    Subclass it to define an order of your own: ``epoch_order`` returns ``(indices,
    block_bounds)``: every global sample number exactly once, in fetch order, and the
    cumulative ends of blocks within it, each block a contiguous run of one segment's
    samples. ``emission_buffer`` may return a ``ShuffleBuffer`` that randomizes the order
    samples are handed out in, after they are decoded.
    """

    RECIPE_TAG: ClassVar[str]
    _rrl_generation: ClassVar[str] = "rerun-0.41"

    @abstractmethod
    def epoch_order(self, sample_index: Any, *, fetch_block_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, block_bounds)`` of one epoch (see the class)."""

    def emission_buffer(self) -> ShuffleBuffer | None:
        """The buffer samples are emitted through, or ``None`` to emit them in fetch order."""
        return None


@dataclasses.dataclass(frozen=True)
class SampleShuffle(ShuffleStrategy):
    """A uniform permutation of the epoch's samples (the default): most decorrelated, least local."""

    RECIPE_TAG: ClassVar[str] = "sample"

    def epoch_order(self, sample_index: Any, *, fetch_block_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        total = int(sample_index.segment_offsets[-1])
        indices = np.random.default_rng(seed=seed).permutation(total).astype(np.int64)
        return indices, np.arange(1, total + 1, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class BlockShuffle(ShuffleStrategy):
    """Shuffled blocks of ``fetch_block_size`` consecutive samples of one segment.

    Every fetch reads one contiguous span (video decodes each GOP once). ``buffer_size``:
    emit through a shuffle buffer of that many decoded samples (``min_fill`` of them before
    the first one comes out, default ``buffer_size // 2``), to decorrelate batches.
    """

    RECIPE_TAG: ClassVar[str] = "block"

    buffer_size: int | None = None
    min_fill: int | None = None

    def __post_init__(self) -> None:
        if self.buffer_size is None and self.min_fill is not None:
            raise ValueError("min_fill requires buffer_size to be set")
        self.emission_buffer()  # validates

    def epoch_order(self, sample_index: Any, *, fetch_block_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return block_order(sample_index, block_size=fetch_block_size, shuffle=True, seed=seed)

    def emission_buffer(self) -> ShuffleBuffer | None:
        if self.buffer_size is None:
            return None
        return ShuffleBuffer(self.buffer_size, min_fill=self.min_fill)


@dataclasses.dataclass(frozen=True)
class NoShuffle(ShuffleStrategy):
    """Natural order: segment by segment, along the timeline."""

    RECIPE_TAG: ClassVar[str] = "none"

    def epoch_order(self, sample_index: Any, *, fetch_block_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return block_order(sample_index, block_size=fetch_block_size, shuffle=False, seed=seed)


@dataclasses.dataclass(frozen=True)
class InterleavedShuffle(ShuffleStrategy):
    """Decode-once shuffle: ``open_runs`` runs of consecutive samples read at once, interleaved.

    A *run* is consecutive samples of one segment: by default the samples of one GOP of the
    first video field (its keyframes, found once when the dataset is built), or
    ``run_length`` samples (also the rule for datasets without video). Runs are opened in a
    random order; emission goes in rounds, each visiting every open run once in a fresh
    random order and taking its next sample, and a run that ends is replaced by the next
    unopened one. So every sample comes out once per epoch, each video frame is decoded once
    (a run's GOP session stays open in the engine between its samples), and a batch of up to
    ``open_runs`` consecutive samples comes from as many different runs, nearly as varied as a
    uniform shuffle's. The order (numpy's generator, seeded with ``[seed, epoch]`` for the runs
    and ``[seed, epoch, shard]`` for each shard's rounds, natively in ``sample/interleave.h``)
    is a pure function of (seed, epoch, ranks, workers): shards over ranks and DataLoader
    workers are cut from the permuted runs, so that no worker starts in the middle of open
    runs (see :meth:`shard_order`).

    Memory: the open decoder sessions (about ``open_runs`` per video field, a few MiB each at
    640x480). The strategy sets its video fields' session bounds: at least
    ``open_runs + fetch_block_size`` and ``2 * open_runs`` sessions (a decoder's smaller
    ``max_decoder_sessions`` is raised, since decoding each frame once needs them: a fetch
    block opens new runs while the runs it finishes still hold theirs), and
    ``max_session_bytes`` bytes per video field when given (it wins over the decoder's), else
    the larger of the decoder's and ``open_runs`` x 16 MiB (a cap: sessions only take what
    libavcodec allocates). Ready samples stay bounded by the dataset's ``max_ready_bytes``.
    """

    RECIPE_TAG: ClassVar[str] = "interleaved"

    open_runs: int = 64
    run_length: int | None = None
    seed: int = 0
    max_session_bytes: int | None = None
    # The runs the dataset found (per segment of its sample index: the positions where runs
    # start), when run_length is None.
    _runs: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if int(self.open_runs) < 1:
            raise ValueError(f"open_runs must be at least 1, got {self.open_runs}")
        if self.run_length is not None and int(self.run_length) < 1:
            raise ValueError(f"run_length must be at least 1, got {self.run_length}")
        if self.max_session_bytes is not None and int(self.max_session_bytes) < 0:
            raise ValueError(f"max_session_bytes must be >= 0, got {self.max_session_bytes}")

    def session_cache_bytes(self) -> int:
        """The decoder-session budget of each video field this strategy asks for."""
        return int(self.max_session_bytes if self.max_session_bytes is not None else self.open_runs * (16 << 20))

    def video_sessions(self, video: Any, fetch_block_size: int = 0) -> Any:
        """``video`` (a field's VideoOptions) with this strategy's session bounds (see above).

        The session count must hold every run a fetch block touches: the ``open_runs`` open
        when it starts and each run opened inside it (at most one per sample), or a session
        still needed is recycled (least recently used first) and its GOP decoded again from
        the keyframe; hence at least ``open_runs + fetch_block_size`` (and ``2 * open_runs``).
        Only the sessions in use allocate; the byte budget still bounds them.
        """
        budget = self.session_cache_bytes()
        if self.max_session_bytes is None:
            budget = max(budget, int(video.session_cache_bytes))
        needed = max(2 * int(self.open_runs), int(self.open_runs) + max(int(fetch_block_size), 0))
        count = video.max_sessions if video.max_sessions < 0 else max(int(video.max_sessions), needed)
        return dataclasses.replace(video, session_cache_bytes=budget, max_sessions=count)

    def runs(self, sample_index: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(run starts, run lengths)`` over the global sample numbers of ``sample_index``."""
        offsets = np.asarray(sample_index.segment_offsets, dtype=np.int64)
        starts = []
        for k, seg in enumerate(sample_index.segments):
            n = int(seg.num_samples)
            if self._runs is not None:
                local = np.asarray(self._runs[k], dtype=np.int64)
            else:
                local = np.arange(0, n, int(self.run_length or DEFAULT_RUN_LENGTH), dtype=np.int64)
            starts.append(offsets[k] + local)
        if not starts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        run_starts = np.concatenate(starts)
        return run_starts, np.diff(np.append(run_starts, offsets[-1]))

    def epoch_order(self, sample_index: Any, *, fetch_block_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        order = self.shard_order(sample_index, epoch=seed)
        return order, np.arange(1, len(order) + 1, dtype=np.int64)

    def shard_order(
        self,
        sample_index: Any,
        *,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        exclude: np.ndarray | None = None,
    ) -> np.ndarray:
        """One shard's samples in emission order.

        Shards are cut from the runs, not from the interleaved order: the runs, permuted by
        ``default_rng([seed, epoch])`` and laid end to end (less ``exclude``), are cut into
        0.41's contiguous shards (ranks first, then workers, the last one taking the
        remainder), and each shard interleaves its own pieces of runs with
        ``default_rng([seed, epoch, shard])``. A run is split only where a shard boundary
        falls inside it (at most one run per boundary, whose second part starts at a frame
        that is not a keyframe), so each worker decodes every frame once. Cutting the
        interleaved order instead would start every worker but the first in the middle of
        ``open_runs`` runs, each costing a GOP prefix decode: measured on three 640x480
        H.264 cameras with 4 workers, about 4,000 extra frames per worker per epoch.
        """
        starts, lengths = self.runs(sample_index)
        perm = np.random.default_rng([int(self.seed), int(epoch)]).permutation(len(starts))
        starts, lengths = starts[perm], lengths[perm]
        bounds = np.cumsum(lengths)
        total = int(bounds[-1]) if len(bounds) else 0
        run_of = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
        samples = np.repeat(starts - (bounds - lengths), lengths) + np.arange(total, dtype=np.int64)
        if exclude is not None and len(exclude):
            keep = ~np.isin(samples, exclude)
            samples, run_of = samples[keep], run_of[keep]
        shard = 0
        for part, parts in ((rank, world_size), (worker, num_workers)):
            parts = max(int(parts), 1)
            per = len(samples) // parts
            lo = int(part) * per
            hi = len(samples) if int(part) == parts - 1 else lo + per
            samples, run_of = samples[lo:hi], run_of[lo:hi]
            shard = shard * parts + int(part)
        if len(samples) == 0:
            return np.empty(0, dtype=np.int64)
        # The shard's pieces of runs: positions where the run changes.
        piece_starts = np.flatnonzero(np.diff(run_of, prepend=-1)).astype(np.int64)
        piece_lengths = np.diff(np.append(piece_starts, len(samples))).astype(np.int64)
        positions = _core.interleaved_order(
            piece_starts, piece_lengths, int(self.open_runs), [int(self.seed), int(epoch), shard]
        )
        return np.ascontiguousarray(samples[positions], dtype=np.int64)


# DEFAULT_RUN_LENGTH: InterleavedShuffle's run length without video fields (and run_length unset).
DEFAULT_RUN_LENGTH = 32


def bind_strategy(strategy: ShuffleStrategy, ds: Any) -> ShuffleStrategy:
    """``strategy`` as dataset ``ds`` runs it: an InterleavedShuffle without ``run_length`` gets the
    GOP runs of the dataset's first video field (asked from the engine once, in the process
    that builds the dataset; the runs travel with the dataset into DataLoader workers)."""
    if not isinstance(strategy, InterleavedShuffle) or strategy.run_length is not None or strategy._runs is not None:
        return strategy
    video = [i for i, f in enumerate(ds._engine_fields) if f.kind == "video"]
    if not video:
        return dataclasses.replace(strategy, run_length=DEFAULT_RUN_LENGTH)
    engine = ds._engine()
    si = ds.sample_index
    runs = []
    for k, seg in enumerate(si.segments):
        keyframes = np.unique(engine.video_keyframes(video[0], k))
        values = seg.index_start + np.arange(seg.num_samples, dtype=np.int64) * si.step
        gop = np.searchsorted(keyframes, values, side="right")  # a sample's GOP: its latest keyframe
        runs.append(np.flatnonzero(np.diff(gop, prepend=-1)).astype(np.int64))
    return dataclasses.replace(strategy, _runs=tuple(runs))


class ShuffleBuffer:
    """rerun 0.41's stream shuffle: items pass through a buffer of ``buffer_size``; each emitted
    item is a uniformly random member of it.

    Per input item: it is appended, and while the buffer is below capacity one more item is
    pulled at once (so the buffer fills at about two items per emission); once it holds
    ``min_fill`` items (default ``buffer_size // 2``), a random one (``rng.integers(len)``,
    swapped with the last, popped) is emitted. When the input ends the buffer drains in the
    same random way. The datasets run this natively (``engine/emitter.h``), with numpy's
    exact numbers; ``shuffle`` is the same algorithm in Python, for other iterables.
    """

    def __init__(self, buffer_size: int, *, min_fill: int | None = None) -> None:
        if buffer_size < 2:
            raise ValueError(f"buffer_size must be at least 2, got {buffer_size}")
        if min_fill is not None and not 1 <= min_fill <= buffer_size:
            raise ValueError(f"min_fill must be in [1, buffer_size], got {min_fill}")
        self.buffer_size = buffer_size
        self.min_fill = min_fill if min_fill is not None else buffer_size // 2

    def __repr__(self) -> str:
        return f"ShuffleBuffer({self.buffer_size}, min_fill={self.min_fill})"

    def shuffle(self, items: Generator[T, None, None], *, rng: np.random.Generator) -> Generator[T, None, None]:
        """The items of ``items`` through the buffer; closes ``items`` when done."""
        held: list[T] = []

        def take() -> T:
            k = int(rng.integers(len(held)))
            held[k], held[-1] = held[-1], held[k]
            return held.pop()

        try:
            for item in items:
                held.append(item)
                if len(held) < self.buffer_size:
                    extra = next(items, _END)
                    if extra is not _END:
                        held.append(extra)
                if len(held) >= self.min_fill:
                    yield take()
            while held:
                yield take()
        finally:
            items.close()

    def emit_order(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """``emit_order[k]`` = the input position emitted ``k``-th, for ``n`` items (int64)."""
        positions = (i for i in range(n))
        return np.fromiter(self.shuffle(positions, rng=rng), dtype=np.int64, count=n)


_END = object()


def block_order(sample_index: Any, *, block_size: int, shuffle: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of ``block_size`` consecutive samples, cut at segment ends; permuted by
    ``default_rng(seed).permutation(num_blocks)`` when ``shuffle``, ascending inside."""
    offsets = np.asarray(sample_index.segment_offsets, dtype=np.int64)
    total = int(offsets[-1])
    if total == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    starts = np.concatenate(
        [np.arange(a, b, block_size, dtype=np.int64) for a, b in zip(offsets[:-1], offsets[1:], strict=True) if b > a]
    )
    seg_end = np.repeat(offsets[1:], np.diff(np.searchsorted(starts, offsets)))
    lengths = np.minimum(starts + block_size, seg_end) - starts
    order = np.random.default_rng(seed=seed).permutation(len(starts)) if shuffle else np.arange(len(starts))
    starts, lengths = starts[order], lengths[order]
    bounds = np.cumsum(lengths)
    # Each block's samples: its start plus 0, 1, ... (a ramp restarting at every block).
    indices = np.repeat(starts - (bounds - lengths), lengths) + np.arange(total, dtype=np.int64)
    return indices.astype(np.int64), bounds.astype(np.int64)


def contiguous_shard(
    indices: np.ndarray, block_bounds: np.ndarray, *, rank: int, world_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shard ``rank`` of ``world_size`` (0.41's): equal contiguous parts, the last one with the remainder."""
    n = len(indices)
    per = n // world_size
    start = rank * per
    end = n if rank == world_size - 1 else start + per
    inner = block_bounds[(block_bounds > start) & (block_bounds < end)] - start
    return indices[start:end], np.append(inner, end - start).astype(np.int64)


def fetch_block_ends(block_bounds: np.ndarray, n: int, fetch_block_size: int) -> np.ndarray:
    """Cumulative ends of the fetch blocks (0.41's packing; see the module docstring)."""
    size = max(1, int(fetch_block_size))
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if len(block_bounds) == n:  # every sample a block of its own: plain strides
        return np.append(np.arange(size, n, size, dtype=np.int64), n)
    ends: list[int] = []
    start = packed = 0
    for b in block_bounds.tolist():
        if b - start <= size:
            packed = b
            continue
        if packed > start:
            ends.append(packed)
            start = packed
        while b - start > size:
            start += size
            ends.append(start)
        packed = b
    if start < n:
        ends.append(n)
    return np.asarray(ends, dtype=np.int64)


def shard_plan(
    strategy: ShuffleStrategy,
    sample_index: Any,
    *,
    fetch_block_size: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """This (rank, worker)'s samples in fetch order and its fetch blocks' ends (0.41's rules).

    ``exclude``: global sample numbers left out of the epoch before it is sharded (an elastic
    resume: the samples delivered already); the rest keep their order and block structure.
    """
    if isinstance(strategy, InterleavedShuffle):  # shards of whole runs (see shard_order)
        indices = strategy.shard_order(
            sample_index,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            worker=worker,
            num_workers=num_workers,
            exclude=exclude,
        )
        return indices, fetch_block_ends(np.arange(1, len(indices) + 1, dtype=np.int64), len(indices), fetch_block_size)
    indices, bounds = strategy.epoch_order(sample_index, fetch_block_size=fetch_block_size, seed=epoch)
    indices = np.asarray(indices, dtype=np.int64)
    bounds = np.asarray(bounds, dtype=np.int64)
    if exclude is not None and len(exclude):
        keep = ~np.isin(indices, exclude)
        block_of = np.searchsorted(bounds, np.arange(len(indices)), side="right")
        counts = np.bincount(block_of[keep], minlength=len(bounds))
        indices, bounds = indices[keep], np.cumsum(counts[counts > 0]).astype(np.int64)
    if world_size > 1:
        indices, bounds = contiguous_shard(indices, bounds, rank=rank, world_size=world_size)
    if num_workers > 1:
        indices, bounds = contiguous_shard(indices, bounds, rank=worker, world_size=num_workers)
    return np.ascontiguousarray(indices), fetch_block_ends(bounds, len(indices), fetch_block_size)


def seed_shard_order(
    total: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """The seed generation's order: a permutation keyed by (seed, epoch) when ``shuffle``, cut
    into balanced contiguous shards (sizes differ by at most one), ranks first, then workers
    (``exclude``: as ``shard_plan``'s)."""
    order = _core.epoch_order(total, seed, epoch, shuffle)
    if exclude is not None and len(exclude):
        order = order[~np.isin(order, exclude)]
    b, e = _core.shard_bounds(len(order), rank, world_size)
    order = order[b:e]
    b, e = _core.shard_bounds(len(order), worker, num_workers)
    return np.ascontiguousarray(order[b:e])
