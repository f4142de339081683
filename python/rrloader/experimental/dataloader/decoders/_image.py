"""``ImageDecoder`` (rerun 0.41): encoded images (JPEG/PNG) to ``[C, H, W]`` uint8."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from .... import _core
from ....errors import RrloaderError
from ._base import ColumnDecoder, DecodeRequest, FieldBatch


def blob_bytes(rows: pa.Array, k: int) -> bytes:
    """The bytes of row ``k`` of a blob column (its instances concatenated)."""
    values = rows.slice(k, 1).flatten()
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        return b"".join(v for v in values.to_pylist() if v is not None)
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        values = values.flatten()
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes()


class ImageDecoder(ColumnDecoder[torch.Tensor]):
    """JPEG (libjpeg-turbo) and PNG (libspng) blobs to ``[C, H, W]`` uint8, pixel-identical to
    Pillow + ``pil_to_tensor`` (a palette PNG gives its indices, ``[1, H, W]``, as Pillow's
    mode "P"); a window gives ``[T, C, H, W]``. A null, empty or undecodable image, or a window
    of differently shaped images, is ``None``. ``Image:buffer`` columns (raw pixels with their
    ``Image:format``) decode too, in a dataset.

    In a dataset the engine decodes natively; ``decode(batch, requests)`` called directly
    gives the same values.
    """

    _native_kind: ClassVar[str] = "image"

    def decode(self, batch: FieldBatch, requests: Sequence[DecodeRequest]) -> list[torch.Tensor | None]:
        return [self._decode_one(batch, r) for r in requests]

    @staticmethod
    def _decode_one(batch: FieldBatch, request: DecodeRequest) -> torch.Tensor | None:
        rows = batch.take_output_rows(request)
        frames = []
        for k in range(len(rows)):
            if not rows[k].is_valid:
                return None
            try:
                frames.append(torch.from_numpy(_core.decode_encoded_image(blob_bytes(rows, k), palette_indices=True)))
            except RrloaderError:
                return None
        if not batch.is_windowed:
            return frames[0]
        if any(f.shape != frames[0].shape for f in frames[1:]):
            return None
        return torch.stack(frames)
