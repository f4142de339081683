"""``PooledBatchCollator`` (see ``rrloader/_loader/_pooled_batches.py``)."""

from __future__ import annotations

from ..._loader._pooled_batches import PooledBatchCollator

__all__ = ["PooledBatchCollator"]
