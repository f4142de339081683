"""rerun 0.41's column decoders (public names re-exported by ``rrloader.experimental.dataloader``)."""

from __future__ import annotations

from ...._loader._sample_index import IndexValue
from ._base import ColumnDecoder, DecodeRequest, FieldBatch
from ._image import ImageDecoder
from ._numeric import NumericDecoder
from ._video import VideoFrameDecoder

__all__ = [
    "ColumnDecoder",
    "DecodeRequest",
    "FieldBatch",
    "ImageDecoder",
    "IndexValue",
    "NumericDecoder",
    "VideoFrameDecoder",
]
