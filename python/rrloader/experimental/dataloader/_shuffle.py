"""Shuffle strategies and the emission buffer (rerun 0.41's, and rrloader's ``InterleavedShuffle``;
see ``rrloader/_loader/_shuffle.py``)."""

from __future__ import annotations

from ..._loader._shuffle import (
    BlockShuffle,
    InterleavedShuffle,
    NoShuffle,
    SampleShuffle,
    ShuffleBuffer,
    ShuffleStrategy,
)

__all__ = ["BlockShuffle", "InterleavedShuffle", "NoShuffle", "SampleShuffle", "ShuffleBuffer", "ShuffleStrategy"]
