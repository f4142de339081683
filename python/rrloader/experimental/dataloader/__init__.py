"""PyTorch datasets over Rerun recordings: rerun-sdk 0.41's ``rerun.experimental.dataloader``, name for name.

Code written for rerun-sdk 0.41 runs on rrloader with one change, the import prefix::

    from rrloader.experimental.dataloader import DataSource, Field, NumericDecoder, RerunIterableDataset

Same names, arguments, defaults and meaning (windows as explicit offsets, in seconds on time
timelines; incomplete samples dropped by the iterable; ``decode(batch, requests)`` decoders;
shuffle strategies with 0.41's exact orders; manifests), over rrloader's native engine and
either a ``LocalDataset`` or a catalog server. The seed API generation is
``rrloader.dataloader``; objects of one generation are refused by the other's datasets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..._loader._resume import merge_states
from ...tracing import tracing_scope, with_tracing
from ._config import DataSource, Field
from ._sample_index import FixedRateSampling, IndexValue, SampleIndex, SegmentMetadata
from ._shuffle import BlockShuffle, InterleavedShuffle, NoShuffle, SampleShuffle, ShuffleStrategy

if TYPE_CHECKING:
    from ._iterable_dataset import RerunIterableDataset
    from ._map_dataset import RerunMapDataset
    from ._pooled_batches import PooledBatchCollator
    from ._yuv import Yuv420Collator, Yuv420Frame
    from .decoders import (
        ColumnDecoder,
        DecodeRequest,
        FieldBatch,
        ImageDecoder,
        NumericDecoder,
        VideoFrameDecoder,
    )
    from .manifest import Manifest

__all__ = [
    "BlockShuffle",
    "ColumnDecoder",
    "DataSource",
    "DecodeRequest",
    "Field",
    "FieldBatch",
    "FixedRateSampling",
    "ImageDecoder",
    "IndexValue",
    "InterleavedShuffle",
    "Manifest",
    "NoShuffle",
    "NumericDecoder",
    "PooledBatchCollator",
    "RerunIterableDataset",
    "RerunMapDataset",
    "SampleIndex",
    "SampleShuffle",
    "SegmentMetadata",
    "ShuffleStrategy",
    "VideoFrameDecoder",
    "Yuv420Collator",
    "merge_states",
    "Yuv420Frame",
    "tracing_scope",
    "with_tracing",
]

# Names that need torch are imported on first use (PEP 562), as rerun-sdk does.
_LAZY = {
    "ColumnDecoder": ".decoders",
    "DecodeRequest": ".decoders",
    "FieldBatch": ".decoders",
    "ImageDecoder": ".decoders",
    "NumericDecoder": ".decoders",
    "VideoFrameDecoder": ".decoders",
    "PooledBatchCollator": "._pooled_batches",
    "Yuv420Collator": "._yuv",
    "Yuv420Frame": "._yuv",
    "RerunIterableDataset": "._iterable_dataset",
    "RerunMapDataset": "._map_dataset",
    "Manifest": ".manifest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
