"""``RerunMapDataset`` (rerun 0.41's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ... import tracing
from ..._loader._datasets import EngineDataset
from ..._loader._sample_index import FixedRateSampling
from ._config import DataSource, Field


class RerunMapDataset(EngineDataset, torch.utils.data.Dataset):
    """Map-style dataset: random access by global index, for the DataLoader's samplers.

    ``__getitems__`` (which DataLoader calls with a whole batch) is one engine request. A
    missing field is ``None`` in the sample (nothing is dropped). ``decode_threads``,
    ``thread_nice``: as ``RerunIterableDataset``.
    """

    def __init__(
        self,
        source: DataSource,
        index: str,
        fields: Mapping[str, Field],
        *,
        timeline_sampling: FixedRateSampling | None = None,
        decode_threads: int | None = None,
        thread_nice: int = 10,
    ) -> None:
        super().__init__()
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
        from ._prepare import prepare

        source, si, engine_fields, keys = prepare(source, index, fields, timeline_sampling)
        self._fields = dict(fields)
        self._manifest: Any = None
        self._setup(
            source.native_dataset(),
            index,
            engine_fields,
            si,
            decode_threads=decode_threads,
            thread_nice=thread_nice,
            key_order=keys,
        )

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.__getitems__([idx])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        with tracing.tracing_scope("RerunMapDataset.__getitems__"):
            return self._run(indices)
