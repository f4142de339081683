"""``NumericDecoder`` (rerun 0.41): numbers and lists of numbers to tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from ._base import ColumnDecoder, DecodeRequest, FieldBatch


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _leaf_values(row: pa.Array) -> np.ndarray | None:
    """The flattened leaf values of one row (one outer list cell); None when a null sits in it."""
    values = row
    while _is_list(values.type):
        if values.null_count:
            return None
        values = values.flatten()
    if values.null_count:
        return None
    return np.array(values.to_numpy(zero_copy_only=False))  # a copy: Arrow's buffers are read-only


class NumericDecoder(ColumnDecoder[torch.Tensor]):
    """Numbers to tensors of the column's type: every list level flattened row-major.

    One value gives ``[D]``; a window ``[T, D]`` (``[T, 1]`` for scalars). An empty (or
    cleared) batch is an empty ``[0]`` tensor; a null (nothing at or before the index value)
    is ``None``; a window whose values differ in width is ``None``. Unwindowed samples may
    differ in width (batch them with a padding collate).

    In a dataset the engine decodes natively; ``decode(batch, requests)`` called directly
    gives the same values, in Python.
    """

    _native_kind: ClassVar[str] = "numeric"

    def decode(self, batch: FieldBatch, requests: Sequence[DecodeRequest]) -> list[torch.Tensor | None]:
        return [self._decode_one(batch, r) for r in requests]

    @staticmethod
    def _decode_one(batch: FieldBatch, request: DecodeRequest) -> torch.Tensor | None:
        rows = batch.take_output_rows(request)
        values = []
        for k in range(len(rows)):
            if not rows[k].is_valid:
                return None
            leaf = _leaf_values(rows.slice(k, 1))
            if leaf is None:
                return None
            values.append(leaf)
        if not batch.is_windowed:
            return torch.from_numpy(values[0])
        if any(v.shape != values[0].shape for v in values[1:]):
            return None
        return torch.from_numpy(np.stack(values))
