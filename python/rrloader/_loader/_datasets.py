"""The datasets' shared machinery: the native engine's lifecycle, topology, iteration, assembly (internal).

Both front ends' ``RerunIterableDataset`` / ``RerunMapDataset`` subclass :class:`EngineDataset`
and only describe their generation's choices (field normalisation, the order, what happens
to incomplete samples, error messages). Here, once:

* the engine (``_core.Engine``) is built lazily in the process that iterates; a forked
  DataLoader worker reopens the files and builds its own (the parent's native objects are
  neither used nor destroyed there), a spawned one unpickles the dataset without them;
* the DDP topology: the live process group, else the one captured when the dataset was
  pickled into a spawned worker (which has no process group of its own), so ranks x workers
  shards are disjoint under every start method;
* iteration: ``engine.iterate`` runs fetch, decode and the emit stage (dropping incomplete
  samples, the emission buffer) natively; Python turns each handed-out block into sample
  dicts (tensors view the engine's buffers) and calls Python decoders.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .. import _core, tracing
from ..errors import InvalidArgumentError, RrloaderError
from . import _decoders
from ._config import EngineField
from ._resume import STATE_VERSION, Progress, check_state, resume_plan
from ._sample_index import SampleIndex
from ._yuv import frame_from_planes

# Decoded blocks waiting for the consumer are bounded in bytes (the engine's ready queue).
DEFAULT_MAX_READY_BYTES = 256 << 20
# The smallest decode piece memory_budget asks for (a piece is still at least 8 samples).
MIN_PIECE_BYTES = 4 << 20

_KEEP_ALIVE_AFTER_FORK: list[Any] = []  # native objects inherited through fork: never destroyed


def live_ddp_topology() -> tuple[int, int] | None:
    """``(rank, world_size)`` of this process's default process group, or None outside DDP."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def worker_topology() -> tuple[int, int]:
    """``(worker id, number of workers)`` of this DataLoader worker; ``(0, 1)`` outside one."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def engine_threads(decode_threads: int | None) -> tuple[int, int]:
    """``(pool threads, CPU budget)`` of an engine made in this process.

    Outside a DataLoader worker: ``decode_threads`` (else every usable core) and no budget.
    In one of N workers: a budget of the worker's share of the usable cores (at least one),
    capped by ``decode_threads`` when given, counting every busy engine thread (the fetch and
    decode stages, the pool, libavcodec's frame threads), so that N workers together never
    keep more engine threads busy than there are cores (when N <= cores).
    """
    from torch.utils.data import get_worker_info

    cores = usable_cores()
    info = get_worker_info()
    if info is None:
        return (decode_threads or cores), 0
    share = max(1, cores // max(1, info.num_workers))
    budget = min(decode_threads, share) if decode_threads else share
    return budget, budget


def share_chunk_cache(dataset: Any) -> None:
    """In one of N DataLoader workers, bound a local dataset's chunk cache to its share:
    ``chunk_cache_bytes // N`` (the bound the user gave holds for the whole DataLoader, not for
    each process). A remote dataset's ``cache_bytes`` stays per process (documented there: a
    miss there is a network round trip)."""
    workers = worker_topology()[1]
    origin = getattr(dataset, "_origin", None)
    if workers > 1 and origin is not None and hasattr(dataset._core, "set_cache_capacity"):
        dataset._core.set_cache_capacity(int(origin[1]) // workers)


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """What an engine in this process may hold of decoded samples (all bounded in bytes).

    ``max_ready_bytes`` is what the whole DataLoader may hold: each of N workers gets
    ``ready_bytes = max_ready_bytes // N`` for its queue of decoded pieces waiting for the
    consumer; the engine decodes pieces of ``piece_bytes = max(4 MiB, ready_bytes // 4)`` (fetch
    blocks cut further, pipeline.h's max_piece_bytes: a 128-sample block of two 640x480 cameras is
    236 MB, a piece of it 64 MiB at the defaults), and keeps at most ``pool_bytes = ready_bytes // 2``
    of released piece buffers for reuse (engine/buffer_pool.h). So decoded samples take about
    ``ready + 2 pieces + pool`` = 2 x ready_bytes per process (the consumer's piece and the one in
    decoding besides the queue), whatever the fetch block size.
    """

    ready_bytes: int
    piece_bytes: int
    pool_bytes: int

    @staticmethod
    def of(max_ready_bytes: int) -> MemoryBudget:
        workers = max(1, worker_topology()[1])
        ready = max(1, int(max_ready_bytes) // workers)
        return MemoryBudget(ready, max(MIN_PIECE_BYTES, ready // 4), ready // 2)


@dataclasses.dataclass
class Iteration:
    """What one iterator reads: its samples in fetch order, cut into fetch blocks, and the emit stage."""

    order: np.ndarray
    block_ends: np.ndarray | None = None  # cumulative; None: blocks of block_size
    block_size: int = 128
    skip_incomplete: bool = False
    max_consecutive_skips: int | None = None
    buffer_size: int = 0
    min_fill: int | None = None
    buffer_seed: tuple[int, ...] = ()
    # positions: each order entry's position in the shard's fetch order (a resumed iteration's
    # start later than 0); restore: the saved shard whose emission buffer is restored.
    positions: np.ndarray | None = None
    restore: dict[str, Any] | None = None
    progress: Progress | None = None
    # A manifest replay: emit_order[k] is the fetch position handed out k-th (None: fetch
    # order); a sample lacking a field named in `required` ends the iteration with the front
    # end's _required_missing_error.
    emit_order: np.ndarray | None = None
    required: tuple[str, ...] = ()


class EngineDataset:
    """Sample index, native engine and sample assembly of one dataset (see the module docstring).

    Subclasses call :meth:`_setup` from their constructor. Not thread-safe: iterate a dataset
    from one thread at a time per process (as DataLoader does).
    """

    def _setup(
        self,
        dataset: Any,
        index: str,
        fields: Sequence[EngineField],
        sample_index: SampleIndex,
        *,
        decode_threads: int | None,
        thread_nice: int = 10,
        key_order: Sequence[str] | None = None,
        video_sessions: Callable[[Any], Any] | None = None,
    ) -> None:
        if not fields:
            raise InvalidArgumentError("a dataset needs at least one field")
        if decode_threads is not None and decode_threads < 1:
            raise InvalidArgumentError(f"decode_threads must be >= 1, got {decode_threads}")
        if not 0 <= int(thread_nice) <= 19:
            raise InvalidArgumentError(f"thread_nice must be in 0..19, got {thread_nice}")
        if video_sessions is not None:  # a strategy that keeps many GOPs open (InterleavedShuffle)
            fields = [dataclasses.replace(f, video=video_sessions(f.video)) if f.kind == "video" else f for f in fields]
        self._dataset = dataset
        self._index = index
        self._engine_fields = list(fields)
        self._sample_index = sample_index
        self._decode_threads = decode_threads
        self._thread_nice = int(thread_nice)
        # The order of the keys of a sample dict (positions into the fields).
        keys = [f.key for f in self._engine_fields]
        self._key_positions = [keys.index(k) for k in (key_order if key_order is not None else keys)]
        self._engine_obj: Any = None
        self._engine_pid: int | None = None
        self._parent_ddp_topology: tuple[int, int] | None = None
        self._carrier = tracing.current_carrier()
        self._engine()  # validates fields against the schema now, not at the first sample

    # Pickling (spawned DataLoader workers): the engine is rebuilt in the new process, and the
    # parent's DDP rank travels along (a spawned worker has no process group of its own).
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_engine_obj"] = None
        state["_engine_pid"] = None
        state["_parent_ddp_topology"] = live_ddp_topology() or self._parent_ddp_topology
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        tracing.attach_carrier(self._carrier)

    def _ddp_topology(self) -> tuple[int, int]:
        """``(rank, world_size)`` to shard by: this process's group, else the one captured when pickled."""
        return live_ddp_topology() or self._parent_ddp_topology or (0, 1)

    @property
    def sample_index(self) -> SampleIndex:
        return self._sample_index

    def __len__(self) -> int:
        return self._sample_index.total_samples

    def _engine(self) -> Any:
        pid = os.getpid()
        if self._engine_obj is not None and self._engine_pid == pid:
            return self._engine_obj
        if self._engine_obj is not None:
            # Inherited through fork: the parent's threads do not exist here and its locks may
            # be held, so the native objects are neither used nor destroyed; reopen the files.
            _KEEP_ALIVE_AFTER_FORK.append((self._engine_obj, self._dataset))
            self._dataset = self._dataset._reopened()
        share_chunk_cache(self._dataset)
        segs = self._sample_index.segments
        threads, budget = engine_threads(self._decode_threads)
        self._engine_obj = _core.Engine(
            self._dataset._core,
            [s.segment_id for s in segs],
            np.arange(len(segs), dtype=np.int64),
            np.array([s.index_start for s in segs], dtype=np.int64),
            np.array([s.num_samples for s in segs], dtype=np.int64),
            int(self._sample_index.step),
            [f.spec() for f in self._engine_fields],
            self._index,
            int(threads),
            self._thread_nice,
            int(budget),
            MemoryBudget.of(getattr(self, "_max_ready_bytes", DEFAULT_MAX_READY_BYTES)).pool_bytes,
        )
        self._engine_pid = pid
        return self._engine_obj

    def fetch_stats(self) -> dict[str, int]:
        """Samples and blocks the engine of this process fetched so far (a resumed epoch fetches
        only what follows its resume point, and what its emission buffer held), and
        ``chunks_ahead``: chunks of a remote dataset its pipelines fetched ahead of the block
        being fetched (docs/dataloader.md, "How it fetches"); ``buffer_pool_idle_bytes`` and
        ``buffer_pool_reused``: released decode buffers kept for reuse now, and allocations
        they served (docs/dataloader.md, "Memory")."""
        return dict(self._engine().fetch_stats())

    def thread_stats(self) -> dict[str, int]:
        """The engine's threads in this process: ``budget`` (the most busy at once; 0: none),
        ``pool_threads``, ``task_weight`` (threads one pool task keeps busy: a video session's
        libavcodec threads), ``threads_started`` / ``threads_alive`` (the pool's and the
        pipelines' own threads), ``busy_now`` and ``max_busy`` (threads computing, at most so
        far), ``waits`` (times a thread waited for its turn)."""
        return dict(self._engine().thread_stats())

    def video_stats(self) -> dict[str, dict[str, int]]:
        """Per native video field: what its decoding cost so far in this process.

        ``frames_decoded`` (frames out of libavcodec), ``frames_delivered`` (distinct frames
        converted for blocks), ``slots_filled`` (frames handed to samples, repeats included),
        ``gops_started`` (of which ``sessions_recycled`` reused an idle decoder's memory),
        ``gop_requests``, ``session_hits`` / ``session_misses``, ``missing_no_keyframe``
        (``missing_before_first_packet`` of them before the stream's first packet),
        ``missing_not_decoded``, ``streams_indexed``, ``clusters_loaded``,
        ``keyframes_rejected`` (``is_keyframe`` marks the bitstream refuted), ``bytes_cached`` /
        ``sessions_cached`` (open decoder sessions now). ``frames_decoded / frames_delivered``
        is the decoding overhead: 1.0 when nothing is decoded that is not delivered.
        """
        engine = self._engine()
        return {
            f.key: dict(engine.video_stats(i)) for i, f in enumerate(self._engine_fields) if f.kind == "video"
        }

    # ------------------------------------------------------------------ state and resume
    def _resumable(
        self, epoch: int, rank: int, world: int, worker: int, workers: int, plan: Any
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, Any] | None, Progress]:
        """``(order, block ends, positions, restored shard, progress)`` of this process's shard of
        ``epoch``, continuing a state given to ``load_state_dict`` for that epoch, if any.

        ``plan(rank, world, worker, workers, exclude=None)``: a shard's fetch order and block ends.
        """
        resume = getattr(self, "_resume", None)
        self._resume = None
        if resume is not None and resume["epoch"] == epoch and resume["shards"]:
            rp = resume_plan(resume, rank=rank, world_size=world, worker=worker, num_workers=workers, plan=plan)
            restore = rp["restore"]
            progress = Progress(rank, world, worker, workers, length=rp["length"])
            progress.resumed_from = rp["resumed_from"]
            if restore is not None:
                progress.consumed, progress.emitted = int(restore["consumed"]), int(restore["emitted"])
                if "held" in restore:
                    progress.held, progress.awaiting_extra = list(restore["held"]), bool(restore["awaiting_extra"])
                    progress.rng = None if restore["rng"] is None else tuple(restore["rng"])
                    progress.finished = bool(restore["finished"])
            order, ends, positions = rp["order"], rp["block_ends"], rp["positions"]
        else:
            order, ends = plan(rank, world, worker, workers)
            restore, positions = None, None
            progress = Progress(rank, world, worker, workers, length=len(order))
        progress.epoch = epoch
        self._progress = progress
        return order, ends, positions, restore, progress

    def _state_header(self) -> dict[str, Any]:
        """What a state names besides its shards (front ends add the generation and strategy)."""
        return {"rrloader_state": STATE_VERSION, "total": self._sample_index.total_samples}

    def state_dict(self) -> dict[str, Any]:
        """This process's progress in the current epoch: JSON-serialisable (see ``load_state_dict``).

        In a DataLoader worker (through torchdata's ``StatefulDataLoader``) it is the worker's
        shard; with ``num_workers=0`` this process's. A state saved before any sample of the
        epoch was read says so (no shard).
        """
        if getattr(self, "_manifest", None) is not None:
            raise InvalidArgumentError(
                "a dataset replaying a manifest has no resumable state; a manifest fixes the whole epoch, "
                "so resume by skipping the samples already trained on"
            )
        header = self._state_header()
        pending = getattr(self, "_resume", None)
        if pending is not None and pending["epoch"] == header["epoch"]:
            return pending
        progress = getattr(self, "_progress", None)
        if progress is None or progress.epoch != header["epoch"]:
            return {**header, "resumed_from": None, "shards": []}
        if progress.python_stage:
            raise InvalidArgumentError(
                "a dataset whose Python decoders feed dropping or an emission buffer has no exact state; "
                "resume it at an epoch boundary"
            )
        return {**header, "resumed_from": progress.resumed_from, "shards": [progress.shard()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch ``state`` was saved in, from where it stopped, at the next iteration.

        Same topology (this rank and DataLoader worker have a shard in ``state``): exactly the
        samples of the uninterrupted run that had not been delivered, in its order. Another
        topology: ``state`` must hold every shard of the topology it was saved with (see
        ``merge_states``); the samples not delivered are cut into shards for this one, each
        delivered once. The epoch is set to the state's. Nothing before the resume point is
        fetched or decoded.
        """
        check_state(state)
        header = self._state_header()
        for key in ("generation", "strategy", "total"):
            if key in header and state.get(key) != header[key]:
                raise InvalidArgumentError(
                    f"this state was saved by another dataset configuration: {key} {state.get(key)!r}, "
                    f"here {header[key]!r}"
                )
        self.set_epoch(int(state["epoch"]))
        self._resume = state

    # ------------------------------------------------------------------ reading
    def _run(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """The samples of global indices ``ids`` (one engine request), missing fields as None."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        total = self._sample_index.total_samples
        bad = ids[(ids < 0) | (ids >= total)]
        if bad.size:
            raise IndexError(f"Index {int(bad[0])} out of range [0, {total})")
        return self._assemble(self._engine().run(np.ascontiguousarray(ids)))

    def _blocks(self, it: Iteration, *, prefetch_blocks: int = 2, max_ready_bytes: int = DEFAULT_MAX_READY_BYTES):
        """The engine's handed-out blocks of one iteration: ``(samples, stats)`` per block.

        Nothing here keeps a block alive while the next one is asked for: the engine decodes
        the block after next as soon as this takes one, and a block still referenced then is
        one more block in memory (354 MB of three 640x480 cameras at 128 samples).
        """
        engine = self._engine()
        memory = MemoryBudget.of(max_ready_bytes)
        ends = np.empty(0, dtype=np.int64) if it.block_ends is None else np.ascontiguousarray(it.block_ends, np.int64)
        limit = -1 if it.max_consecutive_skips is None else int(it.max_consecutive_skips)
        positions = np.empty(0, np.int64) if it.positions is None else np.ascontiguousarray(it.positions, np.int64)
        # A shard saved before its buffer saw a sample restores nothing (the buffer starts seeded).
        restore = it.restore if it.restore is not None and it.buffer_size and it.restore.get("rng") else None
        emit_order = np.empty(0, dtype=np.int64) if it.emit_order is None else it.emit_order
        required = set(it.required)
        flags = [int(f.key in required) for f in self._engine_fields] if required else []
        pipe = engine.iterate(
            np.ascontiguousarray(it.order, dtype=np.int64),
            int(it.block_size),
            ends,
            int(prefetch_blocks),
            memory.ready_bytes,
            bool(it.skip_incomplete),
            limit,
            int(it.buffer_size),
            -1 if it.min_fill is None else int(it.min_fill),
            [int(x) for x in it.buffer_seed],
            positions,
            None if restore is None else _rng_tuple(restore["rng"]),
            [] if restore is None else [int(x) for x in restore["held"]],
            False if restore is None else bool(restore["awaiting_extra"]),
            np.ascontiguousarray(emit_order, dtype=np.int64),
            flags,
            memory.piece_bytes,
        )
        # The engine cuts the first fetch blocks into a ramp of smaller ones (pipeline.h's
        # RampCuts, never across a fetch block's end); a Python decoder is called once per
        # fetch block (0.41's contract), so the pieces of a block are decoded together. (With
        # a Python decoder the native emit stage is off, see _iterate.)
        if any(f.kind == "raw" for f in self._engine_fields):
            total = len(it.order)
            size = int(it.block_size)
            merge_ends = [int(e) for e in ends] if ends.size else list(range(size, total, size))
            merge_ends = [e for e in merge_ends if e < total] + [total]
        else:
            merge_ends = []
        k = 0  # the fetch block being gathered: merge_ends[k]
        pending: list[tuple] = []
        got = 0
        try:
            while True:
                block = pipe.next()
                if block is not None and k < len(merge_ends):
                    pending.append(block)
                    got += len(block[0])
                    del block
                    if got < merge_ends[k]:
                        continue
                    while k < len(merge_ends) and merge_ends[k] <= got:
                        k += 1
                    block = ()
                if pending:
                    blocks, pending = pending, []
                    stats, emit = _merged_stats(blocks)
                    samples = self._assemble_blocks(blocks)
                    del blocks
                    yield samples, stats, emit
                if not block:
                    if block is None:
                        break
                    continue
                stats, emit = block[4], block[5]
                samples = self._assemble(block)
                del block
                yield samples, stats, emit
        finally:
            pipe.close()

    def _iterate(
        self, it: Iteration, *, prefetch_blocks: int = 2, max_ready_bytes: int = DEFAULT_MAX_READY_BYTES
    ) -> Iterator[dict[str, Any]]:
        """The samples of one iteration, after the emit stage (see :class:`Iteration`).

        Incomplete samples are dropped and the emission buffer runs natively, unless a field
        has a Python decoder (its values are only known after the engine's block is handed
        out): then both happen here, after decoding, with the same rules. Front ends say how
        a drop is reported through ``_on_skipped_fields`` and ``_skip_limit_error``.
        """
        python_stage = any(f.kind == "raw" for f in self._engine_fields)
        if it.progress is not None:
            it.progress.python_stage = python_stage and (it.skip_incomplete or bool(it.buffer_size))
            it.progress.buffer_size, it.progress.min_fill = (0, None) if python_stage else (it.buffer_size, it.min_fill)
        native = (
            dataclasses.replace(it, skip_incomplete=False, buffer_size=0, emit_order=None, required=())
            if python_stage
            else it
        )
        samples = self._native_samples(native, prefetch_blocks, max_ready_bytes)
        if python_stage and (it.required or it.emit_order is not None):
            samples = self._python_replay(samples, it)
        if python_stage and it.skip_incomplete:
            samples = self._python_skip(samples, it.max_consecutive_skips)
        if python_stage and it.buffer_size:
            from ._shuffle import ShuffleBuffer

            buffer = ShuffleBuffer(it.buffer_size, min_fill=it.min_fill)
            samples = buffer.shuffle(samples, rng=np.random.default_rng(list(it.buffer_seed)))
        return samples

    def _native_samples(self, it: Iteration, prefetch_blocks: int, max_ready_bytes: int) -> Iterator[dict[str, Any]]:
        keys = [f.key for f in self._engine_fields]
        progress = it.progress
        for samples, stats, emit in self._blocks(it, prefetch_blocks=prefetch_blocks, max_ready_bytes=max_ready_bytes):
            dropped = [k for k, c in zip(keys, stats["skipped_by_field"], strict=True) if c]
            if dropped:
                # In the order the fields were first found missing (ties by key), as 0.41 warns.
                first = dict(zip(keys, stats["first_skipped"], strict=True))
                self._on_skipped_fields(sorted(dropped, key=lambda k: (first[k], k)))
            if progress is not None:
                progress.start_block(stats, emit)
            samples.reverse()
            while samples:
                sample = samples.pop()
                if progress is not None:
                    progress.emitted += 1
                    progress.block_delivered += 1
                yield sample
            if progress is not None:
                progress.end_block()
            if stats["skip_limit_exceeded"]:
                by_field = dict(zip(keys, stats["total_skipped_by_field"], strict=True))
                raise self._skip_limit_error(
                    it.max_consecutive_skips, stats["consecutive_skipped"], stats["total_skipped"], by_field
                )
            if stats["required_missing"]:
                segment = self._sample_index.segments[stats["missing_segment"]].segment_id
                lacking = [keys[k] for k in stats["missing_fields"]]
                raise self._required_missing_error(
                    lacking, segment, self._sample_index.typed(stats["missing_value"])
                )

    def _python_replay(self, samples: Iterator[dict[str, Any]], it: Iteration) -> Iterator[dict[str, Any]]:
        """``it.required`` and ``it.emit_order`` applied in Python (when a field has a Python
        decoder, its values exist only here): samples are checked in fetch order and handed out
        in the emission order, each held until its turn."""
        required = list(it.required)
        held: dict[int, dict[str, Any]] = {}
        order = None if it.emit_order is None else it.emit_order.tolist()
        position = 0  # fetch position of the next sample to arrive
        turn = 0  # the next entry of `order` to hand out
        try:
            for sample in samples:
                lacking = [k for k in required if sample.get(k) is None]
                if lacking:
                    g = int(it.order[position])
                    seg, value = self._sample_index.global_to_local(g)
                    raise self._required_missing_error(lacking, seg.segment_id, value)
                if order is None:
                    position += 1
                    yield sample
                    continue
                held[position] = sample
                position += 1
                while turn < len(order) and order[turn] in held:
                    yield held.pop(order[turn])
                    turn += 1
        finally:
            samples.close()

    def _python_skip(self, samples: Iterator[dict[str, Any]], limit: int | None) -> Iterator[dict[str, Any]]:
        consecutive = total = 0
        by_field: dict[str, int] = {}
        try:
            for sample in samples:
                missing = [k for k, v in sample.items() if v is None]
                if not missing:
                    consecutive = 0
                    yield sample
                    continue
                consecutive += 1
                total += 1
                for k in missing:
                    by_field[k] = by_field.get(k, 0) + 1
                self._on_skipped_fields(sorted(missing))
                if limit is not None and consecutive > limit:
                    raise self._skip_limit_error(limit, consecutive, total, by_field)
        finally:
            samples.close()

    def _on_skipped_fields(self, keys: list[str]) -> None:
        """Called when samples missing ``keys`` were dropped (front ends may warn): the keys in the
        order they were first found missing in this iteration, keys first missing in the same
        sample sorted by name."""

    def _required_missing_error(self, keys: list[str], segment_id: str, index_value: Any) -> Exception:
        """The error of a sample at ``(segment_id, index_value)`` lacking the required ``keys``."""
        return RrloaderError(
            f"required fields {', '.join(sorted(keys))} are missing at segment {segment_id!r}, index {index_value}"
        )

    def _skip_limit_error(self, limit: int | None, consecutive: int, total: int, by_field: dict[str, int]) -> Exception:
        counts = ", ".join(f"{k}={c}" for k, c in sorted(by_field.items()) if c)
        return RrloaderError(
            f"more than {limit} consecutive samples were incomplete ({consecutive} in a row, {total} in all; "
            f"missing fields: {counts})"
        )

    def _assemble(self, block: tuple) -> list[dict[str, Any]]:
        """Per-sample dicts of the samples a block hands out (tensors view the engine's buffers)."""
        return self._assemble_blocks([block])

    def _assemble_blocks(self, blocks: list[tuple]) -> list[dict[str, Any]]:
        """Per-sample dicts of consecutive handed-out blocks, in order; a Python decoder is
        called once for all of them."""
        per_field: list[list[Any]] = [[] for _ in self._engine_fields]
        raw: dict[int, list[dict[str, Any]]] = {}
        positions: list[int] = []
        start = 0
        for block in blocks:
            global_ids, _, _, outputs, stats, emit = block
            _record_spans(stats)
            positions.extend(start + i for i in (range(len(global_ids)) if emit is None else emit.tolist()))
            start += len(global_ids)
            for p, out in enumerate(outputs):
                if "raw_slots" in out:
                    raw.setdefault(p, []).append(out)
                    continue
                per_field[p].extend(self._native_values(out))
        if raw:
            seg_pos = np.concatenate([b[1] for b in blocks]) if len(blocks) > 1 else blocks[0][1]
            values = np.concatenate([b[2] for b in blocks]) if len(blocks) > 1 else blocks[0][2]
            for p, outs in raw.items():
                out = outs[0] if len(outs) == 1 else _decoders.merge_raw(outs)
                per_field[p] = _decoders.decode_python(self._engine_fields[p], out, seg_pos, values, self)
        keys = [(self._engine_fields[p].key, per_field[p]) for p in self._key_positions]
        return [{key: values_[i] for key, values_ in keys} for i in positions]

    @staticmethod
    def _native_values(out: dict[str, Any]) -> list[Any]:
        """One natively decoded field's value of every sample of a block (None: missing)."""
        if "yuv" in out:
            return [None if planes is None else frame_from_planes(*planes) for planes in out["yuv"]]
        valid = out["valid"].tolist()
        if "batch" in out:
            # unbind: all per-sample views of the [B, ...] buffer in one native call.
            items = torch.from_numpy(out["batch"]).unbind(0)
            return [item if ok else None for item, ok in zip(items, valid, strict=True)]
        return [
            torch.from_numpy(item) if ok and item is not None else None
            for item, ok in zip(out["items"], valid, strict=True)
        ]


def _merged_stats(blocks: list[tuple]) -> tuple[dict[str, Any], np.ndarray | None]:
    """The stats and emission order of consecutive handed-out blocks taken as one: the last
    block's (running totals), with every block's sample positions and skip counts."""
    stats = dict(blocks[-1][4])
    stats["positions"] = np.concatenate([np.asarray(b[4]["positions"]) for b in blocks])
    stats["skipped_by_field"] = [
        sum(c) for c in zip(*(b[4]["skipped_by_field"] for b in blocks), strict=True)
    ]
    if all(b[5] is None for b in blocks):
        return stats, None
    emit, start = [], 0
    for b in blocks:
        n = len(b[0])
        emit.append(start + (np.arange(n) if b[5] is None else np.asarray(b[5], dtype=np.int64)))
        start += n
    return stats, np.concatenate(emit)


def _rng_tuple(rng: Sequence[Any]) -> tuple[int, int, int, int, bool, int]:
    sh, sl, ih, il, has32, u32 = rng
    return (int(sh), int(sl), int(ih), int(il), bool(has32), int(u32))


def _record_spans(stats: dict[str, Any]) -> None:
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
            "rrloader.fetch.chunks_preloaded": stats["chunks_preloaded"],
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
