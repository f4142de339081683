"""``VideoFrameDecoder`` (rerun 0.41): frames of a Rerun ``VideoStream``, RGB or YUV 4:2:0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import torch

from .... import _core
from ...._loader._config import VideoOptions
from ...._loader._yuv import Yuv420Frame, frame_from_planes
from ....errors import RrloaderError
from ._base import ColumnDecoder, DecodedValue, DecodeRequest, FieldBatch
from ._image import blob_bytes

_FormatT = TypeVar("_FormatT", Literal["rgb"], Literal["yuv420p"])

# The engine bounds a field's decoder sessions by count (max_decoder_sessions, as 0.41) and,
# as every rrloader cache, in bytes: 1 GiB, far above what 8 sessions take (a 640x480 H.264
# session holds about 4 MiB, a 1080p one about 15 MiB, a 4K one about 60 MiB).
_SESSION_CACHE_BYTES = 1 << 30


class _StreamCodec(str):
    """``VideoFrameDecoder``'s default codec: "h264" to read and print (as rerun 0.41's default),
    but a stream that logs its ``VideoStream:codec`` component is decoded with that codec. An
    explicit ``codec=`` (a plain str) wins over the component."""

    __slots__ = ()

    def __reduce__(self):
        return (_StreamCodec, (str(self),))


_DEFAULT_CODEC = _StreamCodec("h264")


class VideoFrameDecoder(ColumnDecoder[DecodedValue], Generic[_FormatT]):
    """Frames of a ``VideoStream`` sample column (H.264 Annex B or AVCC, H.265, AV1).

    A sample's frame is the one of the latest packet at or before its index value, decoded
    from the latest keyframe at or before it; a window gives one frame per offset.
    ``output_format="rgb"``: ``[3, H, W]`` uint8 (``[T, 3, H, W]`` in a window), the pixels of
    libswscale's BT.601/709 conversion (PyAV's ``to_ndarray("rgb24")``);
    ``output_format="yuv420p"``: a :class:`Yuv420Frame` of libavcodec's own planes (no RGB
    pass, half the bytes), windows stacked. ``None`` when no keyframe precedes the sample or
    libavcodec rejects the GOP.

    rrloader differs from rerun 0.41 where it can do better: keyframes come from the stream's
    ``is_keyframe`` column when it is logged, and from the bitstream otherwise (0.41 raises
    ``ValueError`` without the column); a logged mark is always checked against the bitstream.
    With ``thread_count`` other than 1, sessions stay open across blocks (0.41 gives reuse up).

    - ``codec``: ``"h264"``, ``"h265"``/``"hevc"``, ``"av1"`` (``"avc"`` = h264). Given, it is
      the codec of every stream, as in 0.41; left out, a stream that logs its
      ``VideoStream:codec`` component is decoded with that codec, else as H.264 (``repr`` and
      ``.codec`` say ``'h264'`` either way, as 0.41's).
    - ``max_decoder_sessions``: open decoder sessions kept (per field, per process) to
      continue GOPs in later blocks, least recently used first out (0: none, every GOP is
      decoded from its keyframe). They are also bounded at 1 GiB together.
    - ``thread_count``: libavcodec threads per session (1; 0: libavcodec chooses the count).
      Other than 1, H.264 and H.265 sessions are frame-threaded, and the engine feeds a
      session the packets after the frames it wants (or flushes it at the end of a GOP) so
      that the frames held back come out: sessions stay reusable.
    - ``window_storage``: ``"copy"`` or ``"view"`` (windows as views of one frame bank); both
      give equal values (the engine's windows always view one block buffer).
    - ``output_format``: ``"rgb"`` or ``"yuv420p"``.
    """

    _native_kind: ClassVar[str] = "video"

    def __init__(
        self,
        *,
        codec: str = _DEFAULT_CODEC,
        max_decoder_sessions: int = 8,
        thread_count: int = 1,
        window_storage: Literal["copy", "view"] = "copy",
        output_format: Literal["rgb", "yuv420p"] = "rgb",
    ) -> None:
        if max_decoder_sessions < 0:
            raise ValueError(f"max_decoder_sessions must be non-negative, got {max_decoder_sessions}")
        if thread_count < 0:
            raise ValueError(f"thread_count must be non-negative, got {thread_count}")
        if window_storage not in ("copy", "view"):
            raise ValueError(f"window_storage must be 'copy' or 'view', got {window_storage!r}")
        if output_format not in ("rgb", "yuv420p"):
            raise ValueError(f"output_format must be 'rgb' or 'yuv420p', got {output_format!r}")
        self.codec = codec
        self.window_storage = window_storage
        self.output_format = output_format
        self.thread_count = thread_count
        self._max_decoder_sessions = max_decoder_sessions

    def __repr__(self) -> str:
        options = []
        if self.thread_count != 1:
            options.append(f"thread_count={self.thread_count}")
        if self.window_storage == "view":
            options.append("window_storage='view'")
        if self.output_format == "yuv420p":
            options.append("output_format='yuv420p'")
        suffix = "".join(f", {o}" for o in options)
        return f"VideoFrameDecoder(codec={self.codec!r}{suffix})"

    def prior_keyframe_path(self, field_path: str) -> str | None:
        prefix, sep, _ = field_path.rpartition(":")
        return f"{prefix}:is_keyframe" if sep else None

    def _video_options(self) -> VideoOptions:
        """The engine's settings of a field decoded by this decoder."""
        return VideoOptions(
            codec=str(self.codec),
            codec_overrides=not isinstance(self.codec, _StreamCodec),
            session_cache_bytes=_SESSION_CACHE_BYTES,
            max_sessions=self._max_decoder_sessions,
            threads=self.thread_count,
            output_format=self.output_format,
        )

    def decode(self, batch: FieldBatch, requests: Sequence[DecodeRequest]) -> list[DecodedValue | None]:
        """Each request's frame(s), decoded from its first decode row (which must be a keyframe)."""
        return [self._decode_one(batch, r) if r.starts_at_keyframe else None for r in requests]

    def _decode_one(self, batch: FieldBatch, request: DecodeRequest) -> DecodedValue | None:
        rows = batch.take_decode_rows(request)
        if len(rows) != len(request.decode_row_indices):
            raise ValueError(
                f"Selector returned {len(rows)} rows for {len(request.decode_row_indices)} video context rows; "
                "video decoding requires a selector that preserves row count"
            )
        packets, packet_rows = [], []
        for k, row in enumerate(request.decode_row_indices):
            if rows[k].is_valid:
                data = blob_bytes(rows, k)
                if data:
                    packets.append(data)
                    packet_rows.append(row)
        if not packets:
            return None
        where = (
            np.searchsorted(np.asarray(packet_rows), np.asarray(request.output_row_indices), side="right") - 1
        )
        if (where < 0).any():
            return None
        wanted = sorted(set(where.tolist()))
        try:
            frames = _core.decode_video_packets(
                _core.video_codec_name(self.codec),
                packets[: wanted[-1] + 1],
                wanted,
                threads=self.thread_count,
                reject_reordering=True,
                output_format=self.output_format,
            )
        except RrloaderError:
            return None
        by_position: dict[int, Any] = {}
        for position, frame in zip(wanted, frames, strict=True):
            if frame is None:
                return None
            by_position[position] = (
                frame_from_planes(*frame) if self.output_format == "yuv420p" else torch.from_numpy(frame)
            )
        out = [by_position[p] for p in where.tolist()]
        if not batch.is_windowed:
            return out[0]
        # A window of frames that differ in size (or, in YUV, in colour metadata) is missing, as in 0.41.
        if any(not _same_layout(f, out[0]) for f in out[1:]):
            return None
        return Yuv420Frame.stack(out) if self.output_format == "yuv420p" else torch.stack(out)


def _same_layout(frame: DecodedValue, first: DecodedValue) -> bool:
    """Whether two decoded frames stack: same plane shapes and, for YUV, the same colour metadata."""
    if isinstance(frame, Yuv420Frame):
        return (
            frame.y.shape == first.y.shape
            and frame.uv.shape == first.uv.shape
            and (frame.color_space, frame.color_range) == (first.color_space, first.color_range)
        )
    return frame.shape == first.shape
