"""``RerunMapDataset`` (rerun 0.41's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ... import tracing
from ..._loader._datasets import EngineDataset
from ..._loader._sample_index import FixedRateSampling, SampleIndex
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

    @classmethod
    def from_manifest(
        cls,
        manifest: Any,
        source: DataSource,
        fields: Mapping[str, Field],
        *,
        decode_threads: int | None = None,
        thread_nice: int = 10,
    ) -> RerunMapDataset:
        """A map-style dataset over ``manifest``'s samples: index ``i`` is the manifest's row ``i``
        (``len`` = its ``num_rows``). The manifest's order is not followed (the sampler decides);
        missing fields are ``None``, as for any map dataset. ``sample_index`` is an empty index
        with the manifest's step and dtype (as rerun-sdk's).
        """
        from ._prepare import setup_replay

        self = cls.__new__(cls)
        torch.utils.data.Dataset.__init__(self)
        setup_replay(self, manifest, source, fields, decode_threads=decode_threads, thread_nice=thread_nice)
        self._row_ids: np.ndarray | None = None
        return self

    @property
    def sample_index(self) -> SampleIndex:
        if self._manifest is not None:
            meta = self._manifest.metadata
            return SampleIndex([], ns_per_sample=meta.ns_per_sample, ns_dtype=meta.ns_dtype)
        return self._sample_index

    def __len__(self) -> int:
        if self._manifest is not None:
            return self._manifest.num_rows
        return self._sample_index.total_samples

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_row_ids", None)  # recomputed where needed
        return state

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.__getitems__([idx])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        with tracing.tracing_scope("RerunMapDataset.__getitems__"):
            if self._manifest is None:
                return self._run(indices)
            rows = np.asarray(indices, dtype=np.int64).reshape(-1)
            ids = self._manifest_row_ids()
            bad = rows[(rows < 0) | (rows >= len(ids))]
            if bad.size:
                raise IndexError(f"Index {int(bad[0])} out of range [0, {len(ids)})")
            return self._assemble(self._engine().run(np.ascontiguousarray(ids[rows])))

    def _manifest_row_ids(self) -> np.ndarray:
        """The engine's sample number of every manifest row (8 bytes a row, once per process)."""
        if getattr(self, "_row_ids", None) is None:
            from .manifest._manifest_read import row_ids

            self._row_ids = row_ids(self._manifest, self._replay)
        return self._row_ids
