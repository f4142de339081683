"""Sampling manifests (rerun-sdk 0.41's ``Manifest``): one epoch's order frozen into a parquet file.

Files are interchangeable with rerun-sdk 0.41's: the same columns, types and header, so a
manifest written by either replays in the other with the same samples in the same order.
"""

from __future__ import annotations

from ._manifest import Manifest, ManifestMeta

__all__ = ["Manifest", "ManifestMeta"]
