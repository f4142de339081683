"""Replaying a manifest on the engine: its rows as the engine's sample numbers.

The engine reads samples by number over a ``SampleIndex`` (segments, each a run of index
values ``start + k * step``). For a replay it is built from the manifest itself (``space``):
one segment per ``segment_id`` (sorted by id), from its smallest anchor to its largest, on a
step that divides every anchor's distance to the smallest (the manifest's ``ns_per_sample``,
or 1 on integer timelines, whenever it does). A row is then sample number ``offset(segment) +
(anchor - start) / step``. Built once per dataset in batches of the two columns it needs
(bounded memory for a parquet-backed manifest of any size), and small: a few numbers per
segment.

The fields' ``[lo, hi]`` ranges are not read: the engine works out the same ranges from the
fields' windows (a video field's from the keyframe at or before its earliest point, which the
engine finds itself), as a live run does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...._loader._sample_index import SampleIndex, SegmentMetadata
from ._manifest import ANCHOR, SEGMENT_ID, Manifest

_BATCH_ROWS = 1 << 20


@dataclasses.dataclass(frozen=True)
class ReplaySpace:
    """The engine's sample space of a manifest's rows, and the map from rows to sample numbers."""

    sample_index: SampleIndex
    number_of: dict[str, int]  # segment id -> its position in sample_index.segments

    def global_ids(self, rows: pa.Table) -> np.ndarray:
        """The sample number of every row of ``rows`` (a slice of the manifest), int64."""
        if rows.num_rows == 0:
            return np.empty(0, dtype=np.int64)
        seg_pos, anchors = _rows(rows[SEGMENT_ID], rows[ANCHOR], self.number_of)
        segs = self.sample_index.segments
        starts = np.array([s.index_start for s in segs], dtype=np.int64)
        offsets = self.sample_index.segment_offsets[:-1]
        return offsets[seg_pos] + (anchors - starts[seg_pos]) // self.sample_index.step


def _dictionary(column: pa.ChunkedArray | pa.Array) -> pa.DictionaryArray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    return column


def _rows(segment_ids: Any, anchors: Any, number_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(segment number, anchor) of each row, int64 arrays; ``KeyError`` naming an unknown segment."""
    column = _dictionary(segment_ids)
    values = column.dictionary.to_pylist()
    lookup = np.array([number_of.get(v, -1) for v in values], dtype=np.int64)
    codes = column.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    seg_pos = lookup[codes] if codes.size else codes
    if (seg_pos < 0).any():
        unknown = values[int(codes[np.flatnonzero(seg_pos < 0)[0]])]
        raise KeyError(f"segment {unknown!r} of the manifest is not in its replay space")
    anchor = anchors.to_numpy() if isinstance(anchors, pa.ChunkedArray) else anchors.to_numpy(zero_copy_only=False)
    return seg_pos, np.asarray(anchor, dtype=np.int64)


def _batches(manifest: Manifest):
    if manifest._table is not None:
        yield from manifest._table.select([SEGMENT_ID, ANCHOR]).to_batches(max_chunksize=_BATCH_ROWS)
        return
    with pq.ParquetFile(manifest._path) as f:
        yield from f.iter_batches(batch_size=_BATCH_ROWS, columns=[SEGMENT_ID, ANCHOR])


def space(manifest: Manifest) -> ReplaySpace:
    """The replay space of ``manifest`` (see the module docstring)."""
    number_of: dict[str, int] = {}
    ref: list[int] = []  # per segment (in first-seen order): its first anchor seen
    lo: list[int] = []
    hi: list[int] = []
    g = 0
    for batch in _batches(manifest):
        if batch.num_rows == 0:
            continue
        column = _dictionary(batch.column(0))
        for v in column.dictionary.to_pylist():
            number_of.setdefault(v, len(number_of))
        seg, anchors = _rows(column, batch.column(1), number_of)
        # Per segment of the batch: min and max (sorted by segment, reduced per run).
        order = np.argsort(seg, kind="stable")
        s_sorted, a_sorted = seg[order], anchors[order]
        starts = np.concatenate([[0], np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1])
        mins = np.minimum.reduceat(a_sorted, starts)
        maxs = np.maximum.reduceat(a_sorted, starts)
        for s, mn, mx in zip(s_sorted[starts].tolist(), mins.tolist(), maxs.tolist(), strict=True):
            while len(ref) <= s:
                ref.append(mn)
                lo.append(mn)
                hi.append(mx)
            lo[s], hi[s] = min(lo[s], mn), max(hi[s], mx)
        # The common step divides every distance to a fixed anchor of the same segment.
        g = math.gcd(g, int(np.gcd.reduce(np.abs(anchors - np.asarray(ref, dtype=np.int64)[seg]))))
    meta = manifest.metadata
    base = meta.ns_per_sample or 1
    step = base if g % base == 0 else g
    ids = sorted(number_of)
    segments = [
        SegmentMetadata(sid, lo[number_of[sid]], hi[number_of[sid]], (hi[number_of[sid]] - lo[number_of[sid]]) // step + 1)
        for sid in ids
    ]
    return ReplaySpace(
        sample_index=SampleIndex(segments, ns_per_sample=step, ns_dtype=meta.ns_dtype),
        number_of={sid: k for k, sid in enumerate(ids)},
    )


def row_ids(manifest: Manifest, replay: ReplaySpace) -> np.ndarray:
    """The sample number of every row of ``manifest``, in row order (int64; read in batches of
    the two columns it needs)."""
    parts = [replay.global_ids(pa.Table.from_batches([b])) for b in _batches(manifest) if b.num_rows]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
