"""rerun 0.41's decoder contract: ``ColumnDecoder[T]``, ``FieldBatch``, ``DecodeRequest``.

A decoder is called once per field per fetch block with every sample of the block:
``decode(batch, requests)`` returns one value (or ``None``) per request, in order. The
built-in decoders run natively inside the engine and are never called from a dataset;
calling them directly works too (see each class). A user's subclass is called by the
dataset with the GIL, from the iterating thread (see ``rrloader/_loader/_decoders.py`` for
how its batch and requests are built).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

import numpy as np
import pyarrow as pa
import torch

from ...._loader._config import RERUN_041
from ...._loader._sample_index import IndexValue
from ...._loader._yuv import Yuv420Frame

DecodedValue: TypeAlias = torch.Tensor | Yuv420Frame
DecodedResult: TypeAlias = DecodedValue | None
DecodedSample: TypeAlias = dict[str, DecodedResult]

_T = TypeVar("_T", covariant=True)


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    """One sample of a field's batch: which rows decode it and which rows are its output.

    ``sample_position``: where the result belongs in the block; ``segment_id`` and
    ``index_value``: the sample; ``decode_row_indices``: the batch rows needed to decode it
    (for video, from the prior keyframe); ``output_row_indices``: the rows whose values are its
    output, one per window offset (never empty); ``starts_at_keyframe``: the first decode row
    is a keyframe a decoder may start from.
    """

    sample_position: int
    segment_id: str
    index_value: IndexValue
    decode_row_indices: tuple[int, ...]
    output_row_indices: tuple[int, ...]
    starts_at_keyframe: bool


class FieldBatch:
    """One field's rows for a whole fetch block, across every segment it touches.

    Rows are grouped by segment and ascending by index value inside a segment; requests
    name rows, so a decoder never searches. The rows stay in the chunks they were read in:
    ``rows`` and the ``take_*`` methods copy at most the rows they return, ``column`` joins
    the chunks (a copy when there are several).
    """

    __slots__ = ("_chunks", "_starts", "_column", "select", "is_windowed")

    def __init__(
        self, *, column: pa.Array | pa.ChunkedArray, select: Any = None, is_windowed: bool = False
    ) -> None:
        if not pa.types.is_list(column.type):
            raise TypeError(
                f"FieldBatch.column must be a Rerun component column with an outer Arrow List type, got {column.type}"
            )
        self._chunks = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
        sizes = [len(c) for c in self._chunks.chunks]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._column: pa.Array | None = column if isinstance(column, pa.Array) else None
        self.select = select
        self.is_windowed = is_windowed

    @property
    def column(self) -> pa.Array:
        """Every row as one array (the chunks concatenated on first use when there are several)."""
        if self._column is None:
            chunks = self._chunks
            self._column = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
        return self._column

    def rows(self, start: int, stop: int) -> pa.Array:
        """Rows ``[start, stop)``: a zero-copy slice within one chunk, else a copy of just these rows."""
        if self._column is not None:
            return self._column.slice(start, stop - start)
        k = int(np.searchsorted(self._starts, start, side="right")) - 1
        if 0 <= k < self._chunks.num_chunks and stop <= self._starts[k + 1]:
            return self._chunks.chunk(k).slice(start - int(self._starts[k]), stop - start)
        return self._chunks.slice(start, stop - start).combine_chunks()

    def take_decode_rows(self, request: DecodeRequest) -> pa.Array:
        """The request's decode rows, with ``select`` applied."""
        return self._apply_select(self._take(request.decode_row_indices))

    def take_output_rows(self, request: DecodeRequest) -> pa.Array:
        """The request's output rows (repeats kept), with ``select`` applied; ``ValueError`` when
        the selector changes the number of rows."""
        out = self._apply_select(self._take(request.output_row_indices))
        if len(out) != len(request.output_row_indices):
            raise ValueError(
                f"Selector returned {len(out)} rows for {len(request.output_row_indices)} requested outputs; "
                "a windowed field requires a selector that preserves row count"
            )
        return out

    def _take(self, rows: Sequence[int]) -> pa.Array:
        if self._column is not None:
            return self._column.take(pa.array(rows, type=pa.int64()))
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size == 0:
            return pa.array([], type=self._chunks.type)
        chunk_of = np.searchsorted(self._starts, idx, side="right") - 1
        if chunk_of.min() < 0 or chunk_of.max() >= self._chunks.num_chunks:
            raise IndexError(f"Row index out of bounds for a column of {len(self._chunks)} rows")
        # One take per run of rows in the same chunk (a ChunkedArray.take would join every chunk).
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        pieces = [
            self._chunks.chunk(int(ks[0])).take(pa.array(run - self._starts[ks[0]], type=pa.int64()))
            for run, ks in zip(np.split(idx, cuts), np.split(chunk_of, cuts), strict=True)
        ]
        return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)

    def _apply_select(self, rows: pa.Array) -> pa.Array:
        if self.select is None:
            return rows
        out = self.select.execute(rows)
        return pa.array([], type=rows.type) if out is None else out


class ColumnDecoder(ABC, Generic[_T]):
    """Base class of rerun 0.41's column decoders.

    ``decode(batch, requests)`` is called once per field per fetch block and returns one
    entry per request, in order (``None``: missing). ``prior_keyframe_path`` names a sibling
    keyframe column for decoders that must start at a keyframe (video); ``fill_latest_at``
    says whether each index value reads the latest row at or before it (True) or only a row
    logged exactly there.
    """

    _rrl_generation: ClassVar[str] = RERUN_041

    @abstractmethod
    def decode(self, batch: FieldBatch, requests: Sequence[DecodeRequest]) -> Sequence[_T | None]:
        """One decoded value (or ``None``) per request."""

    def prior_keyframe_path(self, field_path: str) -> str | None:
        """The sibling column whose rows mark keyframes, or ``None`` (the default)."""
        del field_path
        return None

    @property
    def fill_latest_at(self) -> bool:
        """Whether a grid slot reads the latest row at or before it (True by default)."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
