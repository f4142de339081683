"""Calling Python decoders of either generation on the engine's resolved rows (internal).

The built-in decoders run natively; a user's decoder (a ``ColumnDecoder`` subclass that
overrides ``decode``) gets the engine's resolved cells through one of two contracts:

* the seed's: ``decode(raw, index_value, segment_id)`` once per sample, ``raw`` a
  ``pyarrow.ChunkedArray`` with one cell per slot (null where nothing was logged at or
  before); a decoder overriding ``context_range(v)`` gets every row of its range instead;
* rerun 0.41's: ``decode(batch, requests)`` once per field per block, ``batch`` a
  ``FieldBatch`` over the block's rows (one per (segment, index value) the block reads,
  grouped by segment in id order, ascending inside) and one
  ``DecodeRequest`` per sample (segments in order of first appearance in the block, ascending
  index values inside one). The cells are handed over as Arrow slices
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
    col = (
        column
        if column is None or isinstance(column, pa.ChunkedArray)
        else pa.ChunkedArray._import_from_c_capsule(column)
    )
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


def merge_raw(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """One Python-decoded field's engine outputs of consecutive blocks as one block's: the
    cells' chunks side by side (no copy), the slot rows renumbered."""
    slots = int(outs[0]["raw_slots"])
    columns = [
        c if c is None or isinstance(c, pa.ChunkedArray) else pa.ChunkedArray._import_from_c_capsule(c)
        for c in (o["raw_column"] for o in outs)
    ]
    typed = [c for c in columns if c is not None]
    rows, offset = [], 0
    for o, c in zip(outs, columns, strict=True):
        r = np.asarray(o["raw_rows"], dtype=np.int64)
        rows.append(np.where(r < 0, r, r + offset))
        offset += 0 if c is None else len(c)
    column = pa.chunked_array([ch for c in typed for ch in c.chunks], type=typed[0].type) if typed else None
    return {"raw_column": column, "raw_slots": slots, "raw_rows": np.concatenate(rows)}


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
    """rerun 0.41's contract: one ``decode(batch, requests)`` call for the block.

    A decoder that reads the latest row at or before each index value (``fill_latest_at``,
    the default) and needs no keyframe gets the engine's resolved cells. One that overrides
    ``prior_keyframe_path`` (keyframe-anchored ranges, as 0.41's video decoder) or sets
    ``fill_latest_at = False`` (exact rows) gets 0.41's own query instead, through the
    dataset's ``reader()`` (see :func:`_reader_batch`).
    """
    n = len(seg_pos)
    result: list[Any] = [None] * n
    if n == 0:
        return result
    decoder = field.decoder
    keyframe_path = decoder.prior_keyframe_path(field.path)
    if keyframe_path is None and decoder.fill_latest_at:
        if col is None:
            return result
        batch, requests = _engine_batch(field, col, slots, rows, seg_pos, values, ds)
    else:
        batch, requests = _reader_batch(field, keyframe_path, bool(decoder.fill_latest_at), seg_pos, values, ds)
        if batch is None:
            return result
    try:
        decoded = decoder.decode(batch, requests)
    except Exception as e:
        if field.batch_select is not None:
            # rerun-sdk's exception as it is (type and message), plus which field and selector.
            from ..experimental.dataloader._config import selector_note

            e.add_note(selector_note(field.key, field.path, field.batch_select, batch._chunks.type, decoder))
        raise
    if len(decoded) != len(requests):
        raise RuntimeError(
            f"{type(decoder).__name__}.decode returned {len(decoded)} results "
            f"for {len(requests)} requests (field {field.key!r})"
        )
    for req, value in zip(requests, decoded, strict=True):
        result[req.sample_position] = value
    return result


def _decode_order(seg_pos: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The samples in 0.41's request order: segments in order of first appearance in the block,
    ascending index value inside one, ties in block order."""
    seg_pos = np.asarray(seg_pos, dtype=np.int64)
    _, first = np.unique(seg_pos, return_index=True)
    rank_of = {int(seg_pos[j]): r for r, j in enumerate(sorted(first.tolist()))}
    seg_rank = np.array([rank_of[int(s)] for s in seg_pos], dtype=np.int64)
    return np.lexsort((np.asarray(values, dtype=np.int64), seg_rank))


def _engine_batch(field: EngineField, col: pa.ChunkedArray, slots: int, rows: np.ndarray, seg_pos, values, ds):
    """The batch and requests of a latest-at field from the engine's resolved cells: one batch
    row per (segment, index value) the block reads, no copy of the cells' blobs."""
    from ..experimental.dataloader.decoders._base import DecodeRequest, FieldBatch

    si = ds._sample_index
    segs = si.segments
    sample_order = _decode_order(seg_pos, values)
    offsets = np.asarray(field.window if field.window is not None else (0,), dtype=np.int64)
    slot_values = (np.asarray(values, dtype=np.int64)[:, None] + offsets[None, :]).reshape(-1)
    # One batch row per (segment, index value) the block reads, grouped by segment (by id, as
    # 0.41's query returns them; the sample index numbers segments in id order), ascending.
    slot_segment = np.repeat(np.asarray(seg_pos, dtype=np.int64), slots)
    keys = np.stack([slot_segment, slot_values], axis=1)
    _, first_slot, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    batch = FieldBatch(
        column=_cell_views(col, rows[first_slot]),
        select=field.batch_select,
        is_windowed=field.window is not None,
    )
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
    return batch, requests


def _cell_views(col: pa.ChunkedArray, source_rows: np.ndarray) -> pa.ChunkedArray:
    """Rows ``source_rows`` of ``col`` (-1: null) as a chunked array of zero-copy slices of its
    chunks: one slice per run of consecutive rows of one chunk, one null chunk per run of nulls.

    A ``take`` would copy every cell's values (a block's images); these views keep the
    engine's chunks, and ``FieldBatch`` copies at most the rows a decoder takes.
    """
    starts = np.cumsum([0, *(len(c) for c in col.chunks)], dtype=np.int64)
    rows = np.asarray(source_rows, dtype=np.int64)
    if rows.size == 0:
        return pa.chunked_array([], type=col.type)
    chunk = np.where(rows < 0, -1, np.searchsorted(starts, rows, side="right") - 1)
    local = rows - starts[np.maximum(chunk, 0)]
    # A run goes on while the rows stay consecutive in one chunk, or stay null.
    same = chunk[1:] == chunk[:-1]
    goes_on = same & ((chunk[1:] < 0) | (local[1:] == local[:-1] + 1))
    run_starts = np.flatnonzero(np.concatenate([[True], ~goes_on]))
    run_stops = np.append(run_starts[1:], len(rows))
    pieces: list[pa.Array] = []
    for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
        k = int(chunk[a])
        pieces.append(pa.nulls(b - a, type=col.type) if k < 0 else col.chunk(k).slice(int(local[a]), b - a))
    return pa.chunked_array(pieces, type=col.type)


def _entity_contents(path: str) -> str:
    entity = path.rsplit(":", 2)[0]
    return "/**" if entity in ("", "/") else f"{entity}/**"


def _int_index(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(column.type) or pa.types.is_duration(column.type):
        column = column.cast(pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def _keyframes(
    ds, field: EngineField, keyframe_path: str, segment_ids: list[str], *, required: bool = True
) -> dict[str, np.ndarray]:
    """0.41's keyframe lookup: per segment, the sorted index values where the keyframe column's
    first value is true; ``ValueError`` (0.41's) when the dataset has no such column and it is
    ``required`` (else none). Read once per (column, segment) and process (0.41 asks the server
    for them every block)."""
    dataset = ds._dataset
    if keyframe_path not in dataset.schema().names:
        if not required:
            return {}
        raise ValueError(f"Video fields require an is_keyframe column; missing {field.key!r}: {keyframe_path!r}")
    cache = ds.__dict__.setdefault("_rrl_keyframes", {})
    todo = [sid for sid in segment_ids if (keyframe_path, sid) not in cache]
    if todo:
        table = dataset.reader(ds._index, segments=todo, contents=[_entity_contents(keyframe_path)])
        found: dict[str, list[int]] = {sid: [] for sid in todo}
        if keyframe_path in table.column_names and table.num_rows:
            idx = _int_index(table[ds._index])
            for sid, v, cell in zip(table["rerun_segment_id"].to_pylist(), idx, table[keyframe_path].to_pylist(), strict=True):
                if cell and cell[0]:
                    found[sid].append(int(v))
        for sid, marks in found.items():
            cache[(keyframe_path, sid)] = np.sort(np.asarray(marks, dtype=np.int64))
    return {sid: cache[(keyframe_path, sid)] for sid in segment_ids}


def _reader_batch(field: EngineField, keyframe_path: str | None, fill: bool, seg_pos, values, ds):
    """rerun 0.41's query for a Python decoder with a keyframe column or exact rows.

    As 0.41 does (``_build_target`` / ``_build_query_plans`` / ``_resolve_decode_requests``):
    a sample whose earliest output has a prior keyframe decodes from it (``starts_at_keyframe``,
    decode rows = every row of ``[keyframe, latest output]``); when any sample of the block has
    one, the field reads every row of the merged decode ranges of its segments (no latest-at
    fill), else the rows at exactly its output values (latest-at filled when ``fill``). Output
    rows are the latest rows at or before each output value within the sample's decode range
    (a request without one is left out: None). Rows come from the dataset's ``reader()`` over
    the entities of every field 0.41 would query with this one, segment by segment in id order.
    """
    from ..experimental.dataloader.decoders._base import DecodeRequest, FieldBatch

    si = ds._sample_index
    segs = si.segments
    dataset = ds._dataset
    index = ds._index
    sample_order = _decode_order(seg_pos, values)
    n = len(seg_pos)
    offsets = np.asarray(field.window if field.window is not None else (0,), dtype=np.int64)
    out_values = np.asarray(values, dtype=np.int64)[:, None] + offsets[None, :]
    seg_ids = [segs[int(p)].segment_id for p in seg_pos]
    segment_order = sorted(set(seg_ids))  # the batch's rows: by segment id, as 0.41's query returns them
    earliest = out_values.min(axis=1)

    def priors(f: EngineField, required: bool) -> list[int | None]:
        path = f.decoder.prior_keyframe_path(f.path)
        if path is None:
            return [None] * n
        marks = _keyframes(ds, f, path, segment_order, required=required)
        out: list[int | None] = []
        for i in range(n):
            kfs = marks.get(seg_ids[i])
            k = -1 if kfs is None else int(np.searchsorted(kfs, int(earliest[i]), side="right")) - 1
            out.append(int(kfs[k]) if k >= 0 else None)
        return out

    prior = priors(field, True)
    contiguous = any(p is not None for p in prior)

    # 0.41 queries the fields of one (latest-at fill, keyframe range, window) group together,
    # scoped to all their entities: rows where any of them has data come in too.
    def group_key(f: EngineField, f_contiguous: bool) -> tuple[bool, bool]:
        return (bool(f.decoder.fill_latest_at) and not f_contiguous, f_contiguous)

    key = group_key(field, contiguous)
    entities = {_entity_contents(field.path)}
    for other in ds._engine_fields:
        if other is field or other.window != field.window:
            continue
        other_contiguous = any(p is not None for p in priors(other, False))
        if group_key(other, other_contiguous) == key:
            entities.add(_entity_contents(other.path))
    contents = sorted(entities)
    decode_range = []
    for i in range(n):
        lo, hi = int(out_values[i].min()), int(out_values[i].max())
        if prior[i] is not None:
            decode_range.append((prior[i], hi))
        elif field.window is not None:
            decode_range.append((lo, hi))
        else:
            decode_range.append((int(values[i]), int(values[i])))
    pieces: list[pa.Table] = []
    for sid in segment_order:
        members = [i for i in range(n) if seg_ids[i] == sid]
        if contiguous:
            merged: list[list[int]] = []
            for lo, hi in sorted(decode_range[i] for i in members):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            for lo, hi in merged:
                pieces.append(dataset.reader(index, segments=[sid], contents=contents, index_range=(lo, hi)))
        else:
            wanted = np.unique(out_values[members].reshape(-1))
            pieces.append(
                dataset.reader(index, segments=[sid], contents=contents, using_index_values={sid: wanted}, fill_latest_at=fill)
            )
    column_type = dataset.schema().field(field.path).type
    columns, idx_parts, seg_parts = [], [], []
    for t in pieces:
        if t.num_rows == 0:
            continue
        idx_parts.append(_int_index(t[index]))
        seg_parts.append(np.asarray(t["rerun_segment_id"].to_pylist(), dtype=object))
        if field.path in t.column_names:
            columns.extend(c.cast(column_type) if c.type != column_type else c for c in t[field.path].chunks)
        else:
            columns.append(pa.nulls(t.num_rows, column_type))
    if not columns:
        return None, None
    batch = FieldBatch(
        column=pa.chunked_array(columns, type=column_type), select=field.batch_select, is_windowed=field.window is not None
    )
    row_index = np.concatenate(idx_parts)
    row_segment = np.concatenate(seg_parts)
    spans: dict[str, tuple[int, int]] = {}
    for sid in segment_order:
        where = np.flatnonzero(row_segment == sid)
        if where.size:
            spans[sid] = (int(where[0]), int(where[-1]) + 1)
    requests = []
    for i in sample_order.tolist():
        span = spans.get(seg_ids[i])
        if span is None:
            continue
        start, stop = span
        seg_rows = row_index[start:stop]
        out_rows = start + np.searchsorted(seg_rows, out_values[i], side="right") - 1
        if prior[i] is not None:
            lo, hi = decode_range[i]
            first = start + int(np.searchsorted(seg_rows, lo, side="left"))
            last = start + int(np.searchsorted(seg_rows, hi, side="right"))
            minimum = first
        else:
            minimum = start
        if out_rows.size == 0 or np.any(out_rows < minimum):
            continue
        output_rows = tuple(int(r) for r in out_rows)
        requests.append(
            DecodeRequest(
                sample_position=i,
                segment_id=seg_ids[i],
                index_value=si.typed(int(values[i])),
                decode_row_indices=tuple(range(first, last)) if prior[i] is not None else output_rows,
                output_row_indices=output_rows,
                starts_at_keyframe=prior[i] is not None,
            )
        )
    return batch, requests
