"""``SampleIndex``, ``FixedRateSampling``, ``SegmentMetadata``, ``IndexValue`` (shared by both generations)."""

from __future__ import annotations

from ..._loader._sample_index import FixedRateSampling, IndexValue, SampleIndex, SegmentMetadata

__all__ = ["FixedRateSampling", "IndexValue", "SampleIndex", "SegmentMetadata"]
