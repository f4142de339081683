"""Calling Python decoders of either generation on the engine's resolved rows (internal).

The built-in decoders run natively; a user's decoder (a ``ColumnDecoder`` subclass that
overrides ``decode``) gets the engine's resolved cells through one of two contracts:

* the seed's: ``decode(raw, index_value, segment_id)`` once per sample, ``raw`` a
  ``pyarrow.ChunkedArray`` with one cell per slot (null where nothing was logged at or
  before); a decoder overriding ``context_range(v)`` gets every row of its range instead;
* rerun 0.41's: ``decode(batch, requests)`` once per field per block, ``batch`` a
  ``FieldBatch`` over the block's rows (one per (segment, index value) the block reads,
  grouped by segment in order of first appearance, ascending inside) and one
  ``DecodeRequest`` per sample, in that row order. The cells are handed over as Arrow slices
  of the chunks (blob columns are not copied).

Both are called with the GIL, from the iterating thread, once per field per block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ._config import RERUN_041, EngineField


def decode_python(field: EngineField, out: dict[str, Any], seg_pos: np.ndarray, values: np.ndarray, ds: Any) -> list:
    """The decoded value of every sample of a block for a Python-decoded field (None where missing)."""
    column = out["raw_column"]
    col = pa.ChunkedArray._import_from_c_capsule(column) if column is not None else None
    slots = int(out["raw_slots"])
    rows = out["raw_rows"]
    if field.semantics == RERUN_041:
        return _batch_decode(field, col, slots, rows, seg_pos, values, ds)
    if field.window is None and field.context_range:
        return _context_decode(field, seg_pos, values, ds)
    segs = ds._sample_index.segments
    result = []
    for i in range(len(seg_pos)):
        r = rows[i * slots : (i + 1) * slots]
        seg_id = segs[int(seg_pos[i])].segment_id
        value = ds._sample_index.typed(int(values[i]))
        raw = pa.chunked_array([], type=pa.null()) if col is None else col.take(pa.array(r, mask=r < 0, type=pa.int64()))
        result.append(field.decoder.decode(raw, value, seg_id))
    return result


def _context_decode(field: EngineField, seg_pos: np.ndarray, values: np.ndarray, ds: Any) -> list:
    """A seed decoder with a ``context_range``: it gets every row of its inclusive range.

    As in the seed API, the block's query asks for the union of the ranges' index values
    (``indices_in_range``) with latest-at fill, and each sample's decoder receives the rows of
    its own segment whose index lies in its range.
    """
    si = ds._sample_index
    segs = si.segments
    ranges: list[tuple[int, int]] = []
    wanted: dict[str, set[int]] = {}
    for i in range(len(seg_pos)):
        v = int(values[i])
        r = field.decoder.context_range(si.typed(v))
        lo, hi = (v, v) if r is None else (_as_ns_int(r[0]), _as_ns_int(r[1]))
        ranges.append((lo, hi))
        bucket = wanted.setdefault(segs[int(seg_pos[i])].segment_id, set())
        bucket.update(si.indices_in_range(lo, hi))
        bucket.add(v)
    entity = field.path.split(":", 1)[0]
    table = ds._dataset.reader(
        ds._index,
        using_index_values={sid: np.array(sorted(vs), dtype=np.int64) for sid, vs in wanted.items()},
        fill_latest_at=True,
        contents=["/**" if entity == "/" else f"{entity}/**"],
    )
    column = table[field.path] if field.path in table.column_names else None
    index_col = table[ds._index]
    if pa.types.is_timestamp(index_col.type) or pa.types.is_duration(index_col.type):
        index_col = index_col.cast(pa.int64())
    index_np = index_col.to_numpy(zero_copy_only=False)
    seg_np = np.asarray(table["rerun_segment_id"].to_pylist(), dtype=object)
    result = []
    for i, (lo, hi) in enumerate(ranges):
        sid = segs[int(seg_pos[i])].segment_id
        rows = np.flatnonzero((seg_np == sid) & (index_np >= lo) & (index_np <= hi))
        raw = column.take(pa.array(rows, type=pa.int64())) if column is not None else pa.chunked_array([], pa.null())
        result.append(field.decoder.decode(raw, si.typed(int(values[i])), sid))
    return result


def _as_ns_int(value: Any) -> int:
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return int(value.astype(f"{value.dtype.kind}8[ns]").view(np.int64))
    return int(value)


def _batch_decode(
    field: EngineField, col: pa.ChunkedArray | None, slots: int, rows: np.ndarray, seg_pos, values, ds
) -> list:
    """rerun 0.41's contract: one ``decode(batch, requests)`` call for the block."""
    from ..experimental.dataloader.decoders._base import DecodeRequest, FieldBatch

    n = len(seg_pos)
    result: list[Any] = [None] * n
    if n == 0 or col is None:
        return result
    si = ds._sample_index
    segs = si.segments
    # Segments ranked by first appearance in the block; samples in row order (segment, value).
    seg_pos = np.asarray(seg_pos, dtype=np.int64)
    _, first = np.unique(seg_pos, return_index=True)
    rank_of = {int(seg_pos[j]): r for r, j in enumerate(sorted(first.tolist()))}
    seg_rank = np.array([rank_of[int(s)] for s in seg_pos], dtype=np.int64)
    offsets = np.asarray(field.window if field.window is not None else (0,), dtype=np.int64)
    slot_values = (np.asarray(values, dtype=np.int64)[:, None] + offsets[None, :]).reshape(-1)
    slot_rank = np.repeat(seg_rank, slots)
    # One batch row per (segment, index value) the block reads, in (segment rank, value) order.
    keys = np.stack([slot_rank, slot_values], axis=1)
    _, first_slot, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    source_rows = rows[first_slot]
    take = pa.array(source_rows, mask=source_rows < 0, type=pa.int64())
    column = col.take(take)
    batch = FieldBatch(column=column, select=field.batch_select, is_windowed=field.window is not None)
    sample_order = np.lexsort((np.asarray(values, dtype=np.int64), seg_rank))
    requests = []
    for i in sample_order.tolist():
        out_rows = tuple(int(r) for r in inverse[i * slots : (i + 1) * slots])
        requests.append(
            DecodeRequest(
                sample_position=i,
                segment_id=segs[int(seg_pos[i])].segment_id,
                index_value=si.typed(int(values[i])),
                decode_row_indices=out_rows,
                output_row_indices=out_rows,
                starts_at_keyframe=False,
            )
        )
    decoded = field.decoder.decode(batch, requests)
    if len(decoded) != len(requests):
        raise RuntimeError(
            f"{type(field.decoder).__name__}.decode returned {len(decoded)} results "
            f"for {len(requests)} requests (field {field.key!r})"
        )
    for req, value in zip(requests, decoded, strict=True):
        result[req.sample_position] = value
    return result
