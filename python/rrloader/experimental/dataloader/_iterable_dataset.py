"""``RerunIterableDataset`` (rerun 0.41's)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..._loader._datasets import DEFAULT_MAX_READY_BYTES, EngineDataset, Iteration, worker_topology
from ..._loader._sample_index import FixedRateSampling
from ..._loader._shuffle import (
    InterleavedShuffle,
    SampleShuffle,
    ShuffleBuffer,
    ShuffleStrategy,
    bind_strategy,
    shard_plan,
)
from ._config import DataSource, Field

_DEFAULT_MAX_CONSECUTIVE_SKIPPED_SAMPLES = 1000


class RerunIterableDataset(EngineDataset, torch.utils.data.IterableDataset):
    """Iterable dataset: fetches ``fetch_block_size`` samples per block and yields them one by one.

    The epoch's order comes from ``shuffle_strategy`` (``SampleShuffle()`` by default; the
    seed is the epoch, see ``set_epoch``) and is cut into contiguous shards: DDP ranks first
    (in spawned DataLoader workers, the rank of the process that made them), then
    DataLoader workers, the last shard taking the remainder. The samples and their order
    are rerun-sdk 0.41's for the same data, strategy, epoch, ranks and workers.

    Samples with a missing field are dropped (a ``RuntimeWarning`` once per field per
    iterator); more than ``max_consecutive_skipped_samples`` in a row raise ``RuntimeError``
    (``None``: no limit). Shards of ranks then differ in length: wrap a DDP training loop in
    ``DistributedDataParallel.join()``.

    ``state_dict()`` / ``load_state_dict()`` save and resume the epoch mid-way, exactly, on
    the same or another number of ranks and workers (torchdata's ``StatefulDataLoader`` calls
    them in its workers; see ``docs/dataloader.md``).

    Everything per sample runs natively: fetch, decode, dropping, the emission buffer of
    ``BlockShuffle(buffer_size=...)``. ``decode_threads``: the engine's decode threads
    (default: the cores, 1 per DataLoader worker). rrloader's extra keywords:
    ``prefetch_blocks`` (fetched blocks waiting for decode, 2), ``max_ready_bytes`` (decoded
    bytes waiting for the consumer, 256 MiB) and ``thread_nice`` (10: the engine's threads
    yield the CPU to the training loop).
    """

    def __init__(
        self,
        source: DataSource,
        index: str,
        fields: Mapping[str, Field],
        *,
        timeline_sampling: FixedRateSampling | None = None,
        fetch_block_size: int = 128,
        shuffle_strategy: ShuffleStrategy | None = None,
        decode_threads: int | None = None,
        max_consecutive_skipped_samples: int | None = _DEFAULT_MAX_CONSECUTIVE_SKIPPED_SAMPLES,
        prefetch_blocks: int = 2,
        max_ready_bytes: int = DEFAULT_MAX_READY_BYTES,
        thread_nice: int = 10,
    ) -> None:
        super().__init__()
        if max_consecutive_skipped_samples is not None and max_consecutive_skipped_samples < 0:
            raise ValueError(
                f"max_consecutive_skipped_samples must be non-negative, got {max_consecutive_skipped_samples}"
            )
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
        if shuffle_strategy is not None and not isinstance(shuffle_strategy, ShuffleStrategy):
            raise TypeError(f"shuffle_strategy must be a ShuffleStrategy, got {shuffle_strategy!r}")
        from ._prepare import prepare

        source, si, engine_fields, keys = prepare(source, index, fields, timeline_sampling)
        strategy = shuffle_strategy if shuffle_strategy is not None else SampleShuffle()
        self._fields = dict(fields)
        self._setup(
            source.native_dataset(),
            index,
            engine_fields,
            si,
            decode_threads=decode_threads,
            thread_nice=thread_nice,
            key_order=keys,
            video_sessions=(
                functools.partial(strategy.video_sessions, fetch_block_size=int(fetch_block_size))
                if isinstance(strategy, InterleavedShuffle)
                else None
            ),
        )
        self._manifest: Any = None
        self._fetch_block_size = int(fetch_block_size)
        self._shuffle_strategy = bind_strategy(strategy, self)
        self._max_consecutive_skipped_samples = max_consecutive_skipped_samples
        self._prefetch_blocks = int(prefetch_blocks)
        self._max_ready_bytes = int(max_ready_bytes)
        # The epoch lives in shared memory so that set_epoch reaches persistent DataLoader
        # workers too (their dataset copies are made once, at the first iter(loader)).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._warned: set[str] = set()

    @classmethod
    def from_manifest(
        cls,
        manifest: Any,
        source: DataSource,
        fields: Mapping[str, Field],
        *,
        decode_threads: int | None = None,
        prefetch_blocks: int = 2,
        max_ready_bytes: int = DEFAULT_MAX_READY_BYTES,
        thread_nice: int = 10,
    ) -> RerunIterableDataset:
        """A dataset that replays ``manifest``: its samples, shards, fetch blocks and order.

        ``fields`` supplies the decoders (a manifest records only their description; a subset
        of its fields is fine). Each (rank, worker) reads its own shard (lazily from a
        parquet-backed manifest) and the run's topology must be the manifest's (``ValueError``
        otherwise). The engine fetches the shard's ``fetch_group`` s in order and hands samples
        out in ``emit_rank`` order, natively. Strict: a sample whose required field (of the
        manifest's ``required_fields``) has no value raises ``RuntimeError``; nothing is skipped.
        ``set_epoch`` has no effect; ``sample_index`` does not exist (``AttributeError``).
        """
        from ._prepare import setup_replay

        self = cls.__new__(cls)
        torch.utils.data.IterableDataset.__init__(self)
        setup_replay(self, manifest, source, fields, decode_threads=decode_threads, thread_nice=thread_nice)
        self._fetch_block_size = int(manifest.metadata.fetch_block_size) or 128
        self._shuffle_strategy = None
        self._max_consecutive_skipped_samples = None
        self._prefetch_blocks = int(prefetch_blocks)
        self._max_ready_bytes = int(max_ready_bytes)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._warned = set()
        return self

    @property
    def sample_index(self) -> Any:
        """The ``SampleIndex`` of the epoch (a dataset replaying a manifest has none)."""
        if self._manifest is not None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute '_sample_index'")
        return self._sample_index

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (the seed of the shuffle, like ``DistributedSampler.set_epoch``); reaches
        persistent workers."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        """The samples of the whole epoch (over all ranks and workers; skipped samples included);
        of a replay, the manifest's rows."""
        if self._manifest is not None:
            return self._manifest.num_rows
        return self._sample_index.total_samples

    def _plan(self) -> Iteration:
        epoch = int(self._epoch.item())
        rank, world = self._ddp_topology()
        worker, workers = worker_topology()

        def plan(r: int, w: int, k: int, n: int, exclude: np.ndarray | None = None):
            return shard_plan(
                self._shuffle_strategy,
                self._sample_index,
                fetch_block_size=self._fetch_block_size,
                epoch=epoch,
                rank=r,
                world_size=w,
                worker=k,
                num_workers=n,
                exclude=exclude,
            )

        order, ends, positions, restore, progress = self._resumable(epoch, rank, world, worker, workers, plan)
        it = Iteration(
            order=order,
            block_ends=ends,
            block_size=self._fetch_block_size,
            skip_incomplete=True,
            max_consecutive_skips=self._max_consecutive_skipped_samples,
            positions=positions,
            restore=restore,
            progress=progress,
        )
        buffer = self._shuffle_strategy.emission_buffer()
        if buffer is not None:
            it.buffer_size, it.min_fill, it.buffer_seed = buffer.buffer_size, buffer.min_fill, (epoch, rank, worker)
        return it

    def _state_header(self) -> dict[str, Any]:
        return {
            **super()._state_header(),
            "generation": "rerun-0.41",
            "epoch": int(self._epoch.item()),
            "strategy": repr(self._shuffle_strategy),
            "fetch_block_size": self._fetch_block_size,
        }
    def _replay_plan(self) -> Iteration:
        """This (rank, worker)'s shard of the manifest as the engine's iteration."""
        from .manifest._manifest import emit_order_of, fetch_group_ends

        rank, world = self._ddp_topology()
        worker, workers = worker_topology()
        manifest = self._manifest
        manifest.validate_topology(world, workers)
        rows = manifest.worker_assignments(rank, worker)
        emit = emit_order_of(rows)
        identity = bool(np.array_equal(emit, np.arange(len(emit))))
        required = tuple(k for k in manifest.metadata.required_fields if k in self._fields)
        return Iteration(
            order=self._replay.global_ids(rows),
            block_ends=fetch_group_ends(rows),
            block_size=self._fetch_block_size,
            emit_order=None if identity else emit,
            required=required,
        )

    def _iter_manifest(self) -> Iterator[dict[str, Any]]:
        # A generator, so the topology is checked at the first sample (as rerun-sdk does).
        it = self._replay_plan()
        yield from self._iterate(it, prefetch_blocks=self._prefetch_blocks, max_ready_bytes=self._max_ready_bytes)

    def _required_missing_error(self, keys: list[str], segment_id: str, index_value: Any) -> Exception:
        return RuntimeError(
            f"Required fields decoded to nothing: {', '.join(sorted(keys))}. The manifest was built "
            "against different data, so regenerate it.\n"
            f"Segment: {segment_id} at {index_value}"
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._warned = set()
        if self._manifest is not None:
            return self._iter_manifest()
        it = self._plan()
        buffer = self._shuffle_strategy.emission_buffer()
        if buffer is not None and type(buffer) is not ShuffleBuffer:
            # A buffer of the user's own kind: its algorithm runs here, in Python.
            it.buffer_size = 0
            samples = self._iterate(it, prefetch_blocks=self._prefetch_blocks, max_ready_bytes=self._max_ready_bytes)
            return buffer.shuffle(samples, rng=np.random.default_rng(list(it.buffer_seed)))
        return self._iterate(it, prefetch_blocks=self._prefetch_blocks, max_ready_bytes=self._max_ready_bytes)

    def _on_skipped_fields(self, keys: list[str]) -> None:
        for key in keys:
            if key in self._warned:
                continue
            self._warned.add(key)
            warnings.warn(
                f"Skipping samples where field {key!r} has no value. "
                "Batches stay at full size; the epoch yields fewer samples.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _skip_limit_error(self, limit: int | None, consecutive: int, total: int, by_field: dict[str, int]) -> Exception:
        counts = ", ".join(f"{k}={c}" for k, c in sorted(by_field.items()) if c)
        return RuntimeError(
            f"Exceeded max_consecutive_skipped_samples={limit} after encountering {consecutive} consecutive "
            f"incomplete samples ({total} total; missing fields: {counts})"
        )
