"""Building a manifest: the scan (which samples are valid, what each field reads) and the schedule.

The scan reads, per segment, what rerun-sdk 0.41's scan reads, through rrloader's own data
path (``LocalDataset`` / ``RemoteDataset.reader``, rerun's dataframe semantics):

* for each required non-video field, the index values at which its entity (the entity path
  and everything under it) has a row;
* for each video field, its stream's keyframes: the rows of the ``is_keyframe`` column whose
  first element is true, when the dataset has that column (rerun-sdk's rule, which requires
  it), otherwise the keyframes rrloader's engine finds in the bitstream
  (``Engine.video_keyframes``: the same verified keyframes a replay decodes from).

Then, per segment and vectorised over its whole sample grid (numpy ``searchsorted``), a sample
is kept when every required field has, at each point of its window, a value at or before it no
older than ``max_staleness`` (video: a keyframe), and a required video field has a keyframe at
or before its earliest point; each field's ``[lo, hi]`` is its window's extent, a video
field's ``lo`` the keyframe at or before its earliest point.

The schedule (``schedule``) puts the samples in canonical order (segment id, then anchor),
asks the strategy for an epoch order over them, cuts it into shards (ranks, then workers) and
fetch blocks, and bakes each shard's emission buffer into ``emit_rank`` (``[seed, rank,
worker]``): the same shared primitives the live datasets use, so a manifest and a live run
cannot differ. Everything here is per epoch, in numpy; nothing runs per sample in Python.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .... import _core
from ...._loader._config import RERUN_041, DataSourceBase, as_source, check_generation
from ...._loader._sample_index import SampleIndex, SegmentMetadata
from ...._loader._shuffle import (
    InterleavedShuffle,
    NoShuffle,
    ShuffleBuffer,
    ShuffleStrategy,
    contiguous_shard,
    fetch_block_ends,
)
from .._config import DataSource, Field
from ._manifest import (
    ANCHOR,
    EMIT_RANK,
    FETCH_GROUP,
    FORMAT_VERSION,
    HI,
    LO,
    RANK,
    SCHEDULE_COLUMNS,
    SEGMENT_ID,
    WORKER,
    ManifestMeta,
    _header,
)

_DEFAULT_SCAN_WORKERS = 8  # concurrent scan reads, as rerun-sdk's default


def build_table(
    source: Any,
    index: str,
    fields: Mapping[str, Field],
    *,
    timeline_sampling: Any,
    fetch_block_size: int,
    num_ranks: int,
    num_workers_per_rank: int,
    required_fields: list[str] | None,
    scan_max_workers: int | None,
) -> pa.Table:
    """The table of ``Manifest.generate`` (the header in its schema metadata)."""
    source = as_source(source, RERUN_041, DataSource)
    for key, f in fields.items():
        check_generation(f, RERUN_041, f"field {key!r}")
        if not isinstance(f, Field):
            raise TypeError(f"field {key!r} must be an rrloader.experimental.dataloader.Field, got {f!r}")
    required = set(required_fields) if required_fields is not None else set(fields)
    si = SampleIndex.build(source, index, fields, timeline_sampling=timeline_sampling)
    workers = scan_max_workers if scan_max_workers is not None else _DEFAULT_SCAN_WORKERS
    keyframes, observed = _scan(source, index, fields, si, required, max(1, int(workers)))
    sample = _resolve(fields, si, required, keyframes, observed)
    strategy = NoShuffle()
    table = schedule(
        sample,
        strategy=strategy,
        fetch_block_size=fetch_block_size,
        num_ranks=num_ranks,
        num_workers_per_rank=num_workers_per_rank,
        seed=0,
    )
    name, dataset_id = _dataset_identity(source.dataset)
    meta = ManifestMeta(
        format_version=FORMAT_VERSION,
        dataset_name=name,
        dataset_id=dataset_id,
        index_name=index,
        ns_per_sample=si.ns_per_sample,
        ns_dtype=si.ns_dtype,
        recipe={key: f.to_recipe() for key, f in fields.items()},
        required_fields=sorted(required),
        fetch_block_size=fetch_block_size,
        buffer_size=None,
        min_fill=None,
        num_ranks=num_ranks,
        num_workers_per_rank=num_workers_per_rank,
        seed=0,
        shuffle_strategy=strategy.RECIPE_TAG,
    )
    return table.replace_schema_metadata(_header(meta))


def _dataset_identity(dataset: Any) -> tuple[str, str]:
    """``(dataset_name, dataset_id)`` of the header: a catalog dataset's name and entry id (as
    rerun-sdk writes them); a ``LocalDataset``'s folder or file name and ``""``."""
    entry = getattr(dataset, "dataset", None)
    if entry is not None and hasattr(entry, "id") and not hasattr(dataset, "id"):
        dataset = entry  # a rerun-sdk DatasetSelection: its entry
    if hasattr(dataset, "id") and hasattr(dataset, "name"):
        return str(dataset.name), str(dataset.id)
    state = getattr(dataset, "_state", None)
    if state is not None:  # an rrloader RemoteDataset: its connection's entry
        entry = state.entry()
        return str(dataset.name), str(getattr(entry, "id", ""))
    paths = getattr(dataset, "_paths", None)
    if paths and len(paths) == 1:
        return os.path.basename(os.path.normpath(paths[0])), ""
    return "", ""


# ------------------------------------------------------------------------------------ scan
def _entity(path: str) -> str:
    return path.split(":")[0]


def _scan(
    source: DataSourceBase,
    index: str,
    fields: Mapping[str, Field],
    si: SampleIndex,
    required: set[str],
    max_workers: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """``(keyframes, observed)``: per video field and segment its keyframes, per required
    non-video entity and segment the index values it has rows at (sorted int64 arrays)."""
    dataset = source.native_dataset()
    segments = [s.segment_id for s in si.segments if s.num_samples > 0]
    video = [k for k, f in fields.items() if f.prior_keyframe_path is not None]
    entities = sorted({_entity(f.path) for k, f in fields.items() if k in required and k not in video})
    columns = set(dataset.schema().names)
    marked = [k for k in video if fields[k].prior_keyframe_path in columns]
    unmarked = [k for k in video if k not in marked]

    tasks: list[tuple[str, str, str, Callable[[], np.ndarray]]] = []
    for entity in entities:
        for sid in segments:
            tasks.append(("entity", entity, sid, _entity_values_task(dataset, index, entity, sid)))
    for key in marked:
        for sid in segments:
            tasks.append(("video", key, sid, _marked_keyframes_task(dataset, index, fields[key], sid)))
    if unmarked:
        finder = _BitstreamKeyframes(dataset, index, fields, unmarked, si, segments)
        for key in unmarked:
            for sid in segments:
                tasks.append(("video", key, sid, finder.task(key, sid)))

    keyframes: dict[str, dict[str, np.ndarray]] = {k: {} for k in video}
    observed: dict[str, dict[str, np.ndarray]] = {e: {} for e in entities}
    if not tasks:
        return keyframes, observed
    # The reads release the GIL (native local reads, or gRPC for a remote dataset).
    with ThreadPoolExecutor(max_workers=min(max_workers, len(tasks)), thread_name_prefix="rrl-scan") as pool:
        results = list(pool.map(lambda t: t[3](), tasks))
    for (what, name, sid, _), values in zip(tasks, results, strict=True):
        (keyframes if what == "video" else observed)[name][sid] = values
    return keyframes, observed


def _int64_index(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(column.type) or pa.types.is_duration(column.type):
        column = column.cast(pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def _entity_values_task(dataset: Any, index: str, entity: str, sid: str) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        # The rows the dataframe query gives for the entity's subtree (rerun-sdk's scan reads
        # the same: `filter_contents([f"{entity}/**"]).reader(index=...)`).
        table = dataset.reader(index, segments=[sid], contents=[f"{entity}/**"])
        if index not in table.column_names or table.num_rows == 0:
            return np.empty(0, dtype=np.int64)
        return np.unique(_int64_index(table[index]))

    return run


def _marked_keyframes_task(dataset: Any, index: str, field: Field, sid: str) -> Callable[[], np.ndarray]:
    marker = field.prior_keyframe_path

    def run() -> np.ndarray:
        entity = marker.rsplit(":", 2)[0]
        table = dataset.reader(index, segments=[sid], contents=[f"{entity}/**"])
        if marker not in table.column_names or table.num_rows == 0:
            return np.empty(0, dtype=np.int64)
        marks = table[marker]
        # A row marks a keyframe when its list's first element is true (rerun-sdk's rule).
        nonempty = pc.fill_null(pc.greater(pc.list_value_length(marks), 0), False)
        table = table.filter(nonempty)
        first = pc.fill_null(pc.list_element(table[marker], 0), False)
        return np.sort(_int64_index(table.filter(first)[index]))

    return run


class _BitstreamKeyframes:
    """Keyframes of streams without an ``is_keyframe`` column, from rrloader's engine (a video
    index per stream, read cluster by cluster: ``Engine.video_keyframes``)."""

    def __init__(
        self,
        dataset: Any,
        index: str,
        fields: Mapping[str, Field],
        keys: list[str],
        si: SampleIndex,
        segments: list[str],
    ) -> None:
        from ...._loader._config import native_kind

        for key in keys:
            if native_kind(fields[key].decode) != "video":
                raise ValueError(
                    "Video fields require an is_keyframe column; missing "
                    f"{key!r}: {fields[key].prior_keyframe_path!r} (rrloader finds keyframes in the "
                    "bitstream only for VideoFrameDecoder fields)"
                )
        specs = [fields[k]._engine_field(k, si.kind, si.ns_per_sample) for k in keys]
        self._field_number = {k: i for i, k in enumerate(keys)}
        self._segment_number = {sid: i for i, sid in enumerate(segments)}
        n = len(segments)
        self._engine = _core.Engine(
            dataset._core,
            list(segments),
            np.arange(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.ones(n, dtype=np.int64),
            1,
            [s.spec() for s in specs],
            index,
            1,
            10,
        )

    def task(self, key: str, sid: str) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            kf = self._engine.video_keyframes(self._field_number[key], self._segment_number[sid])
            return np.asarray(kf, dtype=np.int64)

        return run


# --------------------------------------------------------------------------------- resolve
def _window_deltas(field: Field, kind: str) -> np.ndarray:
    offsets = field._native_window(kind)
    return np.zeros(1, dtype=np.int64) if offsets is None else np.asarray(offsets, dtype=np.int64)


def _staleness_limit(field: Field, kind: str) -> int | None:
    limit = field.max_staleness
    if limit is None:
        return None
    if kind != "sequence":
        return round(float(limit) * 1e9)
    if int(limit) != limit:
        raise ValueError(f"Integer timelines require integral max_staleness, got {limit!r}")
    return int(limit)


def _at_or_before(values: np.ndarray | None, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per target: the largest of the sorted ``values`` at or before it, and whether one exists
    (where none does, the first array's entry is meaningless)."""
    if values is None or values.size == 0:
        return np.zeros_like(targets), np.zeros(targets.shape, dtype=bool)
    pos = np.searchsorted(values, targets, side="right") - 1
    return values[np.maximum(pos, 0)], pos >= 0


def _backed_everywhere(
    values: np.ndarray | None, anchors: np.ndarray, deltas: np.ndarray, staleness: int | None
) -> np.ndarray:
    """Per anchor: whether every window point has a value at or before it, within ``staleness``."""
    ok = np.ones(anchors.shape, dtype=bool)
    for delta in deltas.tolist():
        targets = anchors + delta
        prior, exists = _at_or_before(values, targets)
        if staleness is not None:
            exists &= targets - prior <= staleness
        ok &= exists
    return ok


def _resolve(
    fields: Mapping[str, Field],
    si: SampleIndex,
    required: set[str],
    keyframes: dict[str, dict[str, np.ndarray]],
    observed: dict[str, dict[str, np.ndarray]],
) -> pa.Table:
    """The per-sample table (``segment_id``, ``anchor``, per field ``struct<lo, hi>``) of the valid
    samples, segment by segment in the sample index's order, anchors ascending."""
    kind = si.kind
    deltas = {k: _window_deltas(f, kind) for k, f in fields.items()}
    checked = [k for k in fields if k in required]
    staleness = {k: _staleness_limit(fields[k], kind) for k in checked}
    step = si.step
    run_ids: list[str] = []
    run_lengths: list[int] = []
    anchors_out: list[np.ndarray] = []
    lo_out: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    hi_out: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    for seg in si.segments:
        sid = seg.segment_id
        anchors = int(seg.index_start) + np.arange(seg.num_samples, dtype=np.int64) * step
        keep = np.ones(anchors.shape, dtype=bool)
        los: dict[str, np.ndarray] = {}
        his: dict[str, np.ndarray] = {}
        for key, f in fields.items():
            d = deltas[key]
            lo, hi = anchors + int(d.min()), anchors + int(d.max())
            is_video = key in keyframes
            if key in staleness:
                # Video: keyframes stand in for the stream's rows (a conservative age).
                values = keyframes[key].get(sid) if is_video else observed.get(_entity(f.path), {}).get(sid)
                keep &= _backed_everywhere(values, anchors, d, staleness[key])
            if is_video:
                kf, has_kf = _at_or_before(keyframes[key].get(sid), lo)
                lo = np.where(has_kf, kf, lo)
                if key in required:
                    keep &= has_kf
            los[key], his[key] = lo, hi
        if keep.any():
            run_ids.append(sid)
            run_lengths.append(int(keep.sum()))
            anchors_out.append(anchors[keep])
            for key in fields:
                lo_out[key].append(los[key][keep])
                hi_out[key].append(his[key][keep])

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    columns: dict[str, pa.Array] = {
        SEGMENT_ID: _segment_id_column(run_ids, run_lengths),
        ANCHOR: pa.array(cat(anchors_out), type=pa.int64()),
    }
    for key in fields:
        columns[key] = pa.StructArray.from_arrays(
            [pa.array(cat(lo_out[key]), type=pa.int64()), pa.array(cat(hi_out[key]), type=pa.int64())],
            names=[LO, HI],
        )
    return pa.table(columns)


def _segment_id_column(run_ids: list[str], run_lengths: list[int]) -> pa.DictionaryArray:
    """``segment_id`` as ``dictionary<int32, string>`` with the dictionary sorted by value (so the
    encoding depends only on the rows), from one ``(id, length)`` run per segment."""
    dictionary = sorted(run_ids)
    code = {sid: i for i, sid in enumerate(dictionary)}
    codes = np.repeat(np.array([code[s] for s in run_ids], dtype=np.int32), np.array(run_lengths, dtype=np.int64))
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(dictionary, type=pa.string()))


# -------------------------------------------------------------------------------- schedule
def _segment_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """A dictionary ``segment_id`` column as (per-row int32 rank of its value among the distinct
    values, the distinct values sorted): whatever order the dictionary itself is in (a parquet
    round trip rebuilds it in order of appearance)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.dictionary(pa.int32(), pa.string()))
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    values = column.dictionary.to_pylist()
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = np.empty(len(values), dtype=np.int32)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(values), dtype=np.int32)
    codes = column.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return rank[codes] if codes.size else codes.astype(np.int32), [values[i] for i in order]


def canonical_order(sample: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(positions, segment rank per row, segment ids)``: the row positions that put ``sample``
    in canonical order (segment id ascending, then anchor ascending)."""
    rank, ids = _segment_codes(sample[SEGMENT_ID])
    anchor = sample[ANCHOR].to_numpy()
    return np.lexsort((anchor, rank)).astype(np.int64), rank, ids


def schedule(
    sample: pa.Table,
    *,
    strategy: ShuffleStrategy,
    fetch_block_size: int,
    num_ranks: int,
    num_workers_per_rank: int,
    seed: int,
) -> pa.Table:
    """The manifest table of the samples of ``sample`` (its schedule columns, if any, replaced):
    ``rank``, ``worker``, ``fetch_group``, ``emit_rank``, then the per-sample columns, in fetch
    order (shard after shard)."""
    sample = sample.select([c for c in sample.column_names if c not in SCHEDULE_COLUMNS])
    canonical, rank_of_row, ids = canonical_order(sample)
    compact = SampleIndex([SegmentMetadata(ids[r], 0, 0, n) for r, n in _runs(rank_of_row[canonical])])
    indices, bounds = strategy.epoch_order(compact, fetch_block_size=fetch_block_size, seed=seed)
    indices = np.asarray(indices, dtype=np.int64)
    bounds = np.asarray(bounds, dtype=np.int64)
    buffer = strategy.emission_buffer()
    parts: dict[str, list[np.ndarray]] = {RANK: [], WORKER: [], FETCH_GROUP: [], EMIT_RANK: [], "positions": []}
    for rank in range(num_ranks):
        r_idx, r_bounds = contiguous_shard(indices, bounds, rank=rank, world_size=num_ranks)
        for worker in range(num_workers_per_rank):
            if isinstance(strategy, InterleavedShuffle):  # shards of whole runs, as the datasets cut them
                w_idx = strategy.shard_order(
                    compact,
                    epoch=seed,
                    rank=rank,
                    world_size=num_ranks,
                    worker=worker,
                    num_workers=num_workers_per_rank,
                )
                w_bounds = np.arange(1, len(w_idx) + 1, dtype=np.int64)
            else:
                w_idx, w_bounds = contiguous_shard(r_idx, r_bounds, rank=worker, world_size=num_workers_per_rank)
            ends = fetch_block_ends(w_bounds, len(w_idx), fetch_block_size)
            if ends.size == 0:
                continue
            n = len(w_idx)
            parts[RANK].append(np.full(n, rank, dtype=np.int32))
            parts[WORKER].append(np.full(n, worker, dtype=np.int32))
            parts[FETCH_GROUP].append(np.repeat(np.arange(len(ends), dtype=np.int64), np.diff(ends, prepend=0)))
            parts[EMIT_RANK].append(_emit_rank(n, buffer, seed=seed, rank=rank, worker=worker))
            parts["positions"].append(w_idx)

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.empty(0, dtype=dtype)

    rows = canonical[cat("positions", np.int64)]
    ordered = sample.take(pa.array(rows, type=pa.int64()))
    columns = {
        RANK: pa.array(cat(RANK, np.int32), type=pa.int32()),
        WORKER: pa.array(cat(WORKER, np.int32), type=pa.int32()),
        FETCH_GROUP: pa.array(cat(FETCH_GROUP, np.int64), type=pa.int64()),
        EMIT_RANK: pa.array(cat(EMIT_RANK, np.int64), type=pa.int64()),
    }
    for name in ordered.column_names:
        columns[name] = ordered[name]
    return pa.table(columns)


def _runs(sorted_codes: np.ndarray) -> list[tuple[int, int]]:
    """``(code, length)`` of each run of equal values of ``sorted_codes``."""
    if sorted_codes.size == 0:
        return []
    starts = np.concatenate([[0], np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1])
    lengths = np.diff(np.append(starts, sorted_codes.size))
    return list(zip(sorted_codes[starts].tolist(), lengths.tolist(), strict=True))


def _emit_rank(n: int, buffer: ShuffleBuffer | None, *, seed: int, rank: int, worker: int) -> np.ndarray:
    """``emit_rank[k]``: the emission slot of the ``k``-th fetched sample of a shard; the identity
    without a buffer, else the inverse of the buffer's emission order under
    ``default_rng([seed, rank, worker])`` (what a live buffered run draws)."""
    if buffer is None:
        return np.arange(n, dtype=np.int64)
    entropy = [int(seed), int(rank), int(worker)]
    if type(buffer) is ShuffleBuffer:
        order = np.asarray(_core._emit_order(n, buffer.buffer_size, buffer.min_fill, entropy), dtype=np.int64)
    else:  # a buffer of the user's own kind: its own algorithm
        order = np.asarray(buffer.emit_order(n, rng=np.random.default_rng(entropy)), dtype=np.int64)
    emit_rank = np.empty(n, dtype=np.int64)
    emit_rank[order] = np.arange(n, dtype=np.int64)
    return emit_rank
