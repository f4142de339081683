"""rrloader: fast, exact PyTorch data loading from Rerun recordings.

The public API re-exports from private modules; the native engine is ``rrloader._core``.
"""

from __future__ import annotations

import pyarrow  # noqa: F401  (loads libarrow before the native module)

from . import _core
from ._dataset import DatasetView, LocalDataset
from ._remote import RemoteDataset
from .errors import (
    InvalidArgumentError,
    NoRecordingsError,
    NotFoundError,
    RrdCorruptError,
    RrdFormatError,
    RrdTruncatedError,
    RrdUnsupportedError,
    RrloaderError,
    RrloaderIOError,
    _install_exception_table,
)

_install_exception_table(_core)

# The datasets need torch; like rerun's dataloader package, import them on first use so
# `import rrloader` (and the CLI) stay light.
_DATALOADER_NAMES = frozenset(
    {
        "ColumnDecoder",
        "DataSource",
        "Field",
        "FixedRateSampling",
        "ImageDecoder",
        "NumericDecoder",
        "RerunIterableDataset",
        "RerunMapDataset",
        "SampleIndex",
        "SegmentMetadata",
        "Selector",
        "VideoFrameDecoder",
        "collate_samples",
        "tracing_scope",
        "with_tracing",
    }
)


def __getattr__(name: str):
    if name in _DATALOADER_NAMES:
        from . import dataloader

        return getattr(dataloader, name)
    raise AttributeError(f"module 'rrloader' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _DATALOADER_NAMES)

__version__ = "0.1.0"

__all__ = [
    "ColumnDecoder",
    "DataSource",
    "DatasetView",
    "Field",
    "FixedRateSampling",
    "ImageDecoder",
    "NumericDecoder",
    "RerunIterableDataset",
    "RerunMapDataset",
    "SampleIndex",
    "SegmentMetadata",
    "Selector",
    "VideoFrameDecoder",
    "collate_samples",
    "tracing_scope",
    "with_tracing",
    "InvalidArgumentError",
    "LocalDataset",
    "NoRecordingsError",
    "RemoteDataset",
    "NotFoundError",
    "RrdCorruptError",
    "RrdFormatError",
    "RrdTruncatedError",
    "RrdUnsupportedError",
    "RrloaderError",
    "RrloaderIOError",
]
