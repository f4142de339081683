"""``Yuv420Frame`` and ``Yuv420Collator`` (see ``rrloader/_loader/_yuv.py``)."""

from __future__ import annotations

from ..._loader._yuv import ColorRange, ColorSpace, Yuv420Collator, Yuv420Frame

__all__ = ["ColorRange", "ColorSpace", "Yuv420Collator", "Yuv420Frame"]
