"""``Manifest`` and ``ManifestMeta``: the file format, the header, and reading a shard.

A manifest is one epoch's sampling frozen into a table, one row per sample, stored in fetch
order (rerun-sdk 0.41's format, version "1"):

* ``rank`` int32, ``worker`` int32: the shard the sample belongs to;
* ``fetch_group`` int64: the fetch block (consecutive rows of one shard with the same value);
* ``emit_rank`` int64: the sample's position in its shard's emission order;
* ``segment_id`` ``dictionary<int32, string>`` (the dictionary sorted by value), ``anchor``
  int64 (the sample's index value; ns on time timelines);
* one ``struct<lo int64, hi int64>`` per field: the inclusive range of index values the field
  reads (its window's extent, or from the prior keyframe for video).

The header rides in the schema metadata, every value a string (see ``_header``). Replaying is
pure data: a shard's rows in fetch order, cut at ``fetch_group`` changes, handed out in
``emit_rank`` order; no random numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from ...._loader._sample_index import FixedRateSampling
    from ...._loader._shuffle import ShuffleStrategy
    from .._config import DataSource, Field

FORMAT_VERSION = "1"

RANK = "rank"
WORKER = "worker"
FETCH_GROUP = "fetch_group"
EMIT_RANK = "emit_rank"
SEGMENT_ID = "segment_id"
ANCHOR = "anchor"
LO = "lo"
HI = "hi"
SCHEDULE_COLUMNS = (RANK, WORKER, FETCH_GROUP, EMIT_RANK)

_FACTORY_ONLY = object()  # Manifest.__init__ is reachable only through the factories


@dataclasses.dataclass(frozen=True)
class ManifestMeta:
    """A manifest's header, decoded (rerun 0.41's fields, in its order)."""

    format_version: str
    dataset_name: str
    dataset_id: str
    index_name: str
    ns_per_sample: int | None
    ns_dtype: str | None
    recipe: dict[str, Any]
    required_fields: list[str]
    fetch_block_size: int
    buffer_size: int | None
    min_fill: int | None
    num_ranks: int
    num_workers_per_rank: int
    seed: int
    shuffle_strategy: str


def _decode_header(schema: pa.Schema) -> ManifestMeta:
    raw = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}

    def optional_int(key: str) -> int | None:
        value = raw.get(key, "")
        return None if value in ("", "None") else int(value)

    ns_dtype = raw.get("ns_dtype", "None")
    return ManifestMeta(
        format_version=raw.get("manifest_format_version", ""),
        dataset_name=raw.get("dataset_name", ""),
        dataset_id=raw.get("dataset_id", ""),
        index_name=raw.get("index_name", ""),
        ns_per_sample=optional_int("ns_per_sample"),
        ns_dtype=None if ns_dtype == "None" else ns_dtype,
        recipe=json.loads(raw.get("recipe", "{}")),
        required_fields=json.loads(raw.get("required_fields", "[]")),
        fetch_block_size=int(raw.get("fetch_block_size", "0")),
        buffer_size=optional_int("buffer_size"),
        min_fill=optional_int("min_fill"),
        num_ranks=int(raw.get("num_ranks", "1")),
        num_workers_per_rank=int(raw.get("num_workers_per_rank", "1")),
        seed=int(raw.get("seed", "0")),
        shuffle_strategy=raw.get("shuffle_strategy", ""),
    )


def _header(meta: ManifestMeta) -> dict[str, str]:
    """The schema metadata of ``meta``: every value ``str()``-ed (``None`` as ``"None"``), JSON for
    the recipe and the required fields (the inverse of ``_decode_header``)."""
    values: dict[str, Any] = {
        "manifest_format_version": meta.format_version,
        "dataset_name": meta.dataset_name,
        "dataset_id": meta.dataset_id,
        "index_name": meta.index_name,
        "ns_per_sample": meta.ns_per_sample,
        "ns_dtype": meta.ns_dtype,
        "recipe": json.dumps(meta.recipe),
        "required_fields": json.dumps(meta.required_fields),
        "fetch_block_size": meta.fetch_block_size,
        "buffer_size": meta.buffer_size,
        "min_fill": meta.min_fill,
        "num_ranks": meta.num_ranks,
        "num_workers_per_rank": meta.num_workers_per_rank,
        "seed": meta.seed,
        "shuffle_strategy": meta.shuffle_strategy,
    }
    return {key: str(value) for key, value in values.items()}


class Manifest:
    """One epoch's exact sampling order, for reproducible and resumable training (rerun 0.41's).

    Make one with :meth:`generate` (a scan of the source) or :meth:`from_parquet`; re-order it
    with :meth:`shuffle`; save it with :meth:`write_parquet`; replay it with
    ``RerunIterableDataset.from_manifest`` (its order) or ``RerunMapDataset.from_manifest`` (its
    sample set). A parquet-backed manifest is read lazily: a DataLoader worker reads only its
    own shard. Files are interchangeable with rerun-sdk 0.41's.
    """

    def __init__(
        self,
        table: pa.Table | None,
        metadata: ManifestMeta,
        *,
        path: str | os.PathLike[str] | None = None,
        _key: object = None,
    ) -> None:
        if _key is not _FACTORY_ONLY:
            raise TypeError("Create a Manifest via Manifest.generate() or Manifest.from_parquet().")
        self._table = table  # None: not read yet from `path`
        self._meta = metadata
        self._path = path

    @classmethod
    def _of_table(cls, table: pa.Table) -> Manifest:
        return cls(table, _decode_header(table.schema), _key=_FACTORY_ONLY)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str]) -> Manifest:
        """A manifest backed by a parquet file: only the header is read now; each shard is read
        when it is asked for (``worker_assignments``), the whole table only by ``to_arrow``."""
        return cls(None, _decode_header(pq.read_schema(path)), path=path, _key=_FACTORY_ONLY)

    def _whole(self) -> pa.Table:
        if self._table is None:
            self._table = pq.read_table(self._path)
        return self._table

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers of a parquet-backed manifest get the path, not the rows.
        state = dict(self.__dict__)
        if self._path is not None:
            state["_table"] = None
        return state

    def __repr__(self) -> str:
        m = self._meta
        return (
            f"Manifest(index={m.index_name!r}, rows={self.num_rows}, strategy={m.shuffle_strategy!r}, "
            f"seed={m.seed}, topology={m.num_ranks}x{m.num_workers_per_rank})"
        )

    def write_parquet(self, path: str | os.PathLike[str], *, row_group_size: int = 1 << 16) -> None:
        """Write the manifest as zstd-compressed parquet; the header is the schema metadata."""
        pq.write_table(self._whole(), path, compression="zstd", row_group_size=row_group_size)

    @property
    def metadata(self) -> ManifestMeta:
        """The decoded header."""
        return self._meta

    @property
    def num_rows(self) -> int:
        """The number of samples (of a parquet-backed manifest: from the file's footer)."""
        if self._table is None:
            return int(pq.read_metadata(self._path).num_rows)
        return int(self._table.num_rows)

    @classmethod
    def generate(
        cls,
        source: DataSource,
        index: str,
        fields: dict[str, Field],
        *,
        timeline_sampling: FixedRateSampling | None = None,
        fetch_block_size: int = 128,
        num_ranks: int = 1,
        num_workers_per_rank: int = 1,
        required_fields: list[str] | None = None,
        scan_max_workers: int | None = None,
    ) -> Manifest:
        """Scan ``source`` and freeze one **unshuffled** epoch (``NoShuffle``'s order).

        ``source``, ``index``, ``fields``, ``timeline_sampling``: as for ``RerunIterableDataset``.
        ``fetch_block_size``: samples per fetch block; ``num_ranks`` x ``num_workers_per_rank``:
        the topology the shards are cut for. ``required_fields`` (default: every field): a
        sample is kept only when each of these has, at every point of its window, a row of its
        entity at or before it, no older than the field's ``max_staleness``; a video field also
        needs a keyframe at or before its earliest point (its age is measured from keyframes).
        ``scan_max_workers``: concurrent scan reads (default 8).

        Keyframes come from the stream's ``is_keyframe`` column when the dataset has one (as
        rerun-sdk reads them), otherwise from the bitstream through rrloader's engine (rerun-sdk
        requires the column). Call :meth:`shuffle` for an order.
        """
        from ._manifest_build import build_table

        return cls._of_table(
            build_table(
                source,
                index,
                fields,
                timeline_sampling=timeline_sampling,
                fetch_block_size=fetch_block_size,
                num_ranks=num_ranks,
                num_workers_per_rank=num_workers_per_rank,
                required_fields=required_fields,
                scan_max_workers=scan_max_workers,
            )
        )

    def shuffle(self, strategy: ShuffleStrategy | None = None, *, seed: int = 0) -> Manifest:
        """A new manifest: the same samples and ranges in the order ``strategy`` gives with ``seed``.

        ``strategy`` defaults to ``BlockShuffle()``; it decides the fetch order and the emission
        buffer (``seed`` seeds both, the buffer with ``[seed, rank, worker]``), so passing the
        strategy given to a live ``RerunIterableDataset`` with ``seed`` = its epoch reproduces
        that run. The fetch block size and topology are this manifest's. No rescan.
        """
        from ...._loader._shuffle import BlockShuffle
        from ._manifest_build import schedule

        strategy = strategy if strategy is not None else BlockShuffle()
        m = self._meta
        table = schedule(
            self._whole(),
            strategy=strategy,
            fetch_block_size=m.fetch_block_size,
            num_ranks=m.num_ranks,
            num_workers_per_rank=m.num_workers_per_rank,
            seed=seed,
        )
        buffer = strategy.emission_buffer()
        meta = dataclasses.replace(
            m,
            shuffle_strategy=strategy.RECIPE_TAG,
            buffer_size=None if buffer is None else buffer.buffer_size,
            min_fill=None if buffer is None else buffer.min_fill,
            seed=seed,
        )
        return type(self)._of_table(table.replace_schema_metadata(_header(meta)))

    def to_arrow(self) -> pa.Table:
        """The whole manifest as an Arrow table (read from its file when parquet-backed)."""
        return self._whole()

    def validate_topology(self, num_ranks: int, num_workers_per_rank: int) -> None:
        """``ValueError`` unless the run's topology is the one the manifest was cut for."""
        want = (self._meta.num_ranks, self._meta.num_workers_per_rank)
        if (num_ranks, num_workers_per_rank) != want:
            raise ValueError(
                f"Manifest was built for {want[0]}x{want[1]} (ranks x workers_per_rank), "
                f"but the run has {num_ranks}x{num_workers_per_rank}."
            )

    def worker_assignments(self, rank: int, worker: int) -> pa.Table:
        """The rows of shard ``(rank, worker)`` in fetch order (from a file: only those rows are
        read, by predicate pushdown)."""
        if self._table is None:
            return pq.read_table(self._path, filters=[(RANK, "=", rank), (WORKER, "=", worker)])
        t = self._table
        return t.filter(pc.and_(pc.equal(t[RANK], rank), pc.equal(t[WORKER], worker)))

    def worker_plan(self, rank: int, worker: int) -> tuple[list[pa.Table], np.ndarray]:
        """Shard ``(rank, worker)``'s fetch groups (tables, in fetch order) and its emission order
        (``emit_order[k]`` = the fetch position emitted ``k``-th), from one read of the shard."""
        rows = self.worker_assignments(rank, worker)
        if rows.num_rows == 0:
            return [], np.empty(0, dtype=np.int64)
        ends = fetch_group_ends(rows)
        starts = np.concatenate([[0], ends[:-1]])
        blocks = [rows.slice(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]
        return blocks, emit_order_of(rows)


def fetch_group_ends(rows: pa.Table) -> np.ndarray:
    """Cumulative ends of a shard's fetch groups (runs of equal ``fetch_group``), int64."""
    group = rows.column(FETCH_GROUP).to_numpy()
    if group.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.append(np.flatnonzero(np.diff(group)) + 1, group.size).astype(np.int64)


def emit_order_of(rows: pa.Table) -> np.ndarray:
    """A shard's emission order: the fetch positions sorted by ``emit_rank`` (int64)."""
    return np.argsort(rows.column(EMIT_RANK).to_numpy(), kind="stable").astype(np.int64)
