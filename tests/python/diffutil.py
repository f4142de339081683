"""Table comparison with readable diffs for the differential tests.

``assert_tables_equal(ours, ref, context)`` checks, in this order:
  1. column names (the same set; the order only with ``ordered=True``, see table_diff),
  2. Arrow types per column (field metadata and nullability flags ignored, nested ones included),
  3. row count (and, on mismatch, which (segment, index) keys are only on one side),
  4. every cell (``to_pylist`` per column; NaN == NaN; timestamps/durations compared as int64 ns).

Rows are compared after a *stable* sort of both tables by ``rerun_segment_id``: the reference's order
of segments is not deterministic (rows within a segment keep their order, which is compared).
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SEGMENT_COLUMN = "rerun_segment_id"
MAX_CELL_REPORTS = 12
MAX_VALUE_CHARS = 300


# ----------------------------------------------------------------------------------------------------------
# types


def _norm_field(f: pa.Field) -> pa.Field:
    return pa.field(f.name, normalize_type(f.type), nullable=True)


def normalize_type(t: pa.DataType) -> pa.DataType:
    """``t`` with every nested field made nullable and stripped of metadata (names are kept)."""
    if pa.types.is_large_list(t):
        return pa.large_list(_norm_field(t.value_field))
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        ctor = pa.list_view if pa.types.is_list_view(t) else pa.large_list_view
        return ctor(_norm_field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_norm_field(t.value_field), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(_norm_field(t.value_field))
    if pa.types.is_struct(t):
        return pa.struct([_norm_field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(normalize_type(t.key_type), _norm_field(t.item_field), keys_sorted=t.keys_sorted)
    if pa.types.is_dictionary(t):
        return pa.dictionary(t.index_type, normalize_type(t.value_type), t.ordered)
    return t


# ----------------------------------------------------------------------------------------------------------
# values


def _to_py(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_date64(t) or pa.types.is_time64(t):
        col = col.cast(pa.int64())
    elif pa.types.is_date32(t) or pa.types.is_time32(t):
        col = col.cast(pa.int32())
    return col.to_pylist()


def values_equal(a: Any, b: Any) -> bool:
    """Deep equality of ``to_pylist`` values; NaN equals NaN; int vs float never equal by type drift."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (
        isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray))
    ):
        return False
    return a == b


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= MAX_VALUE_CHARS else s[: MAX_VALUE_CHARS - 20] + f"... ({len(s)} chars)"


def _sort_by_segment(t: pa.Table) -> pa.Table:
    if SEGMENT_COLUMN not in t.column_names or t.num_rows < 2:
        return t
    # sort_indices is stable: rows keep their order within a segment.
    idx = pc.sort_indices(t, sort_keys=[(SEGMENT_COLUMN, "ascending")])
    return t.take(idx)


def _index_columns(t: pa.Table, index: str | None) -> list[str]:
    if index is not None:
        return [index] if index in t.column_names else []
    # Index columns are the ones without ':' (component columns are "/entity:Arch:field", "property:...").
    return [n for n in t.column_names if n != SEGMENT_COLUMN and ":" not in n]


def _row_keys(t: pa.Table, index: str | None) -> list[tuple]:
    seg = t.column(SEGMENT_COLUMN).to_pylist() if SEGMENT_COLUMN in t.column_names else [None] * t.num_rows
    if index is not None and index in t.column_names:
        idx = _to_py(t.column(index))
    else:
        idx = [None] * t.num_rows
    return list(zip(seg, idx, strict=True))


def _describe_row(t: pa.Table, row: int, index: str | None) -> str:
    parts = []
    if SEGMENT_COLUMN in t.column_names:
        parts.append(f"{SEGMENT_COLUMN}={t.column(SEGMENT_COLUMN)[row].as_py()!r}")
    for name in _index_columns(t, index):
        parts.append(f"{name}={_to_py(t.column(name).slice(row, 1))[0]!r}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------------------
# main entry


def table_diff(
    ours: pa.Table,
    ref: pa.Table,
    *,
    index: str | None = None,
    sort_segments: bool = True,
    ordered: bool = False,
) -> list[str]:
    """List of human-readable differences (empty when equal)."""
    problems: list[str] = []

    # Column order: rerun-sdk orders the columns of a multi-segment dataset as the union of
    # per-segment schemas in registration order; rrloader uses one deterministic order
    # (segment id, index columns, components by entity path) for every dataset. The set of
    # columns must match exactly; the order is compared only when `ordered=True`.
    if not ordered and sorted(ours.column_names) == sorted(ref.column_names):
        ref = ref.select(ours.column_names)
    if ours.column_names != ref.column_names:
        only_o = [n for n in ours.column_names if n not in ref.column_names]
        only_r = [n for n in ref.column_names if n not in ours.column_names]
        msg = ["column names differ:"]
        if only_o:
            msg.append(f"  only in ours: {only_o}")
        if only_r:
            msg.append(f"  only in ref:  {only_r}")
        if not only_o and not only_r:
            msg.append("  same set, different order")
        msg.append(f"  ours: {ours.column_names}")
        msg.append(f"  ref:  {ref.column_names}")
        problems.append("\n".join(msg))

    common = [n for n in ref.column_names if n in ours.column_names]
    bad_type = set()
    for name in common:
        to, tr = ours.schema.field(name).type, ref.schema.field(name).type
        if to != tr and normalize_type(to) != normalize_type(tr):
            bad_type.add(name)
            problems.append(f"type of column {name!r} differs:\n  ours: {to}\n  ref:  {tr}")

    if sort_segments:
        ours = _sort_by_segment(ours)
        ref = _sort_by_segment(ref)

    if ours.num_rows != ref.num_rows:
        ko, kr = _row_keys(ours, index), _row_keys(ref, index)
        so, sr = set(ko), set(kr)
        msg = [f"row count differs: ours {ours.num_rows}, ref {ref.num_rows}"]
        only_o = [k for k in ko if k not in sr]
        only_r = [k for k in kr if k not in so]
        if only_o:
            msg.append(f"  (segment, {index}) only in ours ({len(only_o)}): {_short(only_o[:20])}")
        if only_r:
            msg.append(f"  (segment, {index}) only in ref ({len(only_r)}): {_short(only_r[:20])}")
        if not only_o and not only_r:
            msg.append("  same (segment, index) keys, different multiplicities")
        problems.append("\n".join(msg))
        return problems

    reports = 0
    bad_cols: dict[str, int] = {}
    for name in common:
        if name in bad_type:
            continue
        vo, vr = _to_py(ours.column(name)), _to_py(ref.column(name))
        for row, (a, b) in enumerate(zip(vo, vr, strict=True)):
            if values_equal(a, b):
                continue
            bad_cols[name] = bad_cols.get(name, 0) + 1
            if reports < MAX_CELL_REPORTS:
                reports += 1
                problems.append(
                    f"cell differs: column {name!r}, row {row} ({_describe_row(ref, row, index)})\n"
                    f"  ours: {_short(a)}\n  ref:  {_short(b)}"
                )
    if bad_cols:
        problems.append(f"mismatching cells per column: {bad_cols}")
    return problems


def assert_tables_equal(
    ours: pa.Table,
    ref: pa.Table,
    context: str,
    *,
    index: str | None = None,
    sort_segments: bool = True,
) -> None:
    """Raise AssertionError with a readable diff (and ``context``) unless ``ours`` equals ``ref``."""
    problems = table_diff(ours, ref, index=index, sort_segments=sort_segments)
    if problems:
        raise AssertionError(
            f"tables differ ({len(problems)} problem(s))\ncontext: {context}\n" + "\n".join(problems)
        )
