"""Video streams encoded at test time and `.rrd` recordings of them, for the video tests.

Encoders are PyAV 18's (libx264 for H.264, libx265 for H.265, libsvtav1 for AV1), writing raw
packets in decode order with no B-frames (Rerun's VideoStream model) unless asked; H.264 and
H.265 come out in Annex B with the parameter sets in-band on every keyframe (no global header).
The reference for every decoded frame is PyAV decoding the same packets sequentially, packet
pts = position, converted with ``frame.to_ndarray(format="rgb24")``.

Recordings are written with rerun-sdk's ``VideoStream`` archetype (``send_columns``), one
segment per file (recording id = segment id), on one index timeline.
"""

from __future__ import annotations

import fractions
import struct
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import rerun as rr

ENCODERS = {"h264": "libx264", "h265": "libx265", "av1": "libsvtav1"}
PYAV_DECODERS = {"h264": "h264", "h265": "hevc", "av1": "libdav1d"}
RERUN_CODECS = {"h264": rr.VideoCodec.H264, "h265": rr.VideoCodec.H265, "av1": rr.VideoCodec.AV1}
APP_ID = "rrloader_videotest"
T0_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


def _pictures(w: int, h: int, n: int, seed: int) -> list[np.ndarray]:
    """Moving gradients plus noise: every frame differs from the others."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = np.stack([(x * 4 + i * 3) % 256, (y * 5 + i * 7) % 256, ((x + y) * 2 + i * 5) % 256], -1)
        out.append(np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8))
    return out


def encode(
    codec: str,
    w: int,
    h: int,
    n: int,
    gop: int,
    *,
    bframes: int = 0,
    seed: int = 0,
    pix_fmt: str = "yuv420p",
    **color,
) -> tuple[list[bytes], list[bool]]:
    """`n` frames as raw packets in decode order, and the encoder's keyframe flag of each.

    `pix_fmt`: the encoder's input format (e.g. "yuv444p", "yuv420p10le"; 4:2:0 H.264/H.265 need even
    sizes, x265 4:4:4 at least 64x64-ish). `color`: codec context attributes to tag the stream with
    (e.g. `colorspace`, `color_range`).
    """
    cc = av.CodecContext.create(ENCODERS[codec], "w")
    cc.width, cc.height, cc.pix_fmt = w, h, pix_fmt
    cc.time_base = fractions.Fraction(1, 30)
    cc.framerate = 30
    cc.gop_size = gop
    cc.max_b_frames = bframes
    for k, v in color.items():
        setattr(cc, k, v)
    if codec == "h264":
        cc.options = {"preset": "veryfast", "x264-params": f"scenecut=0:bframes={bframes}:log=-1"}
    elif codec == "h265":
        cc.options = {
            "preset": "ultrafast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes={bframes}"
            ":log-level=none:frame-threads=1:pools=none",
        }
    else:
        cc.options = {"preset": "12", "svtav1-params": f"keyint={gop}:scd=0"}
    packets: list[bytes] = []
    keys: list[bool] = []

    def take(pkts) -> None:
        for p in pkts:
            packets.append(bytes(p))
            keys.append(bool(p.is_keyframe))

    for i, img in enumerate(_pictures(w, h, n, seed)):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
        frame.pts = i
        take(cc.encode(frame))
    take(cc.encode(None))
    return packets, keys


def reference(codec: str, packets: Sequence[bytes]) -> list[np.ndarray]:
    """PyAV's sequential decode of `packets`: one [3, H, W] uint8 RGB frame per packet."""
    dec = av.CodecContext.create(PYAV_DECODERS[codec], "r")
    out: dict[int, np.ndarray] = {}

    def take(frames) -> None:
        for f in frames:
            out[int(f.pts)] = np.ascontiguousarray(f.to_ndarray(format="rgb24").transpose(2, 0, 1))

    for i, p in enumerate(packets):
        pkt = av.Packet(p)
        pkt.pts = i
        take(dec.decode(pkt))
    take(dec.decode(None))
    assert sorted(out) == list(range(len(packets))), "the reference lost frames"
    return [out[i] for i in range(len(packets))]


def to_avcc(sample: bytes) -> bytes:
    """Annex B -> 4-byte big-endian length prefixes (the MP4 sample layout)."""
    nals, i, start = [], 0, None
    while i + 3 <= len(sample):
        if sample[i : i + 3] == b"\x00\x00\x01":
            if start is not None:
                nals.append(sample[start:i].rstrip(b"\x00"))
            i += 3
            start = i
        else:
            i += 1
    nals.append(sample[start:])
    return b"".join(struct.pack(">I", len(n)) + n for n in nals)


def time_column(timeline: str, kind: str, values: Sequence[int]) -> rr.TimeColumn:
    values = np.asarray(values, dtype=np.int64)
    if kind == "sequence":
        return rr.TimeColumn(timeline, sequence=values)
    if kind == "timestamp":
        return rr.TimeColumn(timeline, timestamp=values.astype("datetime64[ns]"))
    return rr.TimeColumn(timeline, duration=values.astype("timedelta64[ns]"))


def write_stream(
    path: str | Path,
    segment: str,
    packets: Sequence[bytes],
    times: Sequence[int],
    *,
    entity: str = "/cam",
    codec: str | None = "h264",
    codec_logging: str = "static",
    keyframes: Sequence[bool] | None = None,
    keyframe_logging: str = "none",
    timeline: str = "frame",
    kind: str = "sequence",
    rows_per_chunk: int = 16,
    extra_times: Sequence[int] | None = None,
) -> Path:
    """One segment holding one VideoStream at `entity`.

    * `times`: the index value of each packet (ns on timestamp/duration timelines).
    * `codec_logging`: "static" (the component once, static), "temporal" (on the first
      packet's row), or "none" (not logged: the decoder's `codec=` must say it).
    * `keyframe_logging`: "none", "sparse" (`is_keyframe=True` rows at keyframes only, in a
      chunk of their own) or "dense" (True/False on every packet row, in the sample chunks).
    * `rows_per_chunk`: packets per `send_columns` call (one chunk each).
    * `extra_times`: also log a `/idx` Scalars (the time itself) at these values, so the
      segment's index range can start before or run past the video.
    """
    path = Path(path)
    with rr.RecordingStream(APP_ID, recording_id=segment, send_properties=False) as rec:
        rec.save(path)
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        if codec is not None and codec_logging == "static":
            rec.log(entity, rr.VideoStream(codec=RERUN_CODECS[codec]), static=True)
        if codec is not None and codec_logging == "temporal":
            rec.send_columns(
                entity,
                indexes=[time_column(timeline, kind, [times[0]])],
                columns=rr.VideoStream.columns(codec=[RERUN_CODECS[codec]]),
            )
        for lo in range(0, len(packets), rows_per_chunk):
            hi = min(len(packets), lo + rows_per_chunk)
            kwargs = {"sample": list(packets[lo:hi])}
            if keyframe_logging == "dense":
                kwargs["is_keyframe"] = [bool(k) for k in keyframes[lo:hi]]
            rec.send_columns(
                entity, indexes=[time_column(timeline, kind, times[lo:hi])], columns=rr.VideoStream.columns(**kwargs)
            )
        if keyframe_logging == "sparse":
            marks = [t for t, k in zip(times, keyframes, strict=True) if k]
            rec.send_columns(
                entity,
                indexes=[time_column(timeline, kind, marks)],
                columns=rr.VideoStream.columns(is_keyframe=[True] * len(marks)),
            )
        if extra_times is not None:
            rec.send_columns(
                "/idx",
                indexes=[time_column(timeline, kind, extra_times)],
                columns=rr.Scalars.columns(scalars=np.asarray(extra_times, dtype=np.float64)),
            )
    return path


def latest_at_or_before(times: Sequence[int], value: int) -> int:
    """The position of the last packet whose time is <= value, or -1."""
    return int(np.searchsorted(np.asarray(times), value, side="right")) - 1
