"""Video frame decoding (cpp/rrloader/decode/video.h) against PyAV, pixel for pixel.

Every stream is encoded here, at test time, with PyAV 18.1's encoders (libx264 for H.264,
libx265 for H.265, libsvtav1 for AV1), as raw packets in decode order, at GOP 1, 12, 30 and
120, at 64x48 and 320x240, plus streams with B-frames. The reference is PyAV decoding the
same packets sequentially (packet pts = position) with ``frame.to_ndarray(format="rgb24")``;
rrloader decodes them GOP by GOP, in blocks that continue cached decoder sessions, and every
delivered frame must equal the reference exactly.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from rrloader import _core
from rrloader.errors import InvalidArgumentError, RrdCorruptError, RrdUnsupportedError
from videoutil import ENCODERS, PYAV_DECODERS, encode, to_avcc


def _have(codec: str) -> bool:
    return ENCODERS[codec] in av.codecs_available and PYAV_DECODERS[codec] in av.codecs_available


def reference(codec: str, packets: list[bytes]) -> dict[int, np.ndarray]:
    """PyAV's sequential decode: position -> [3, H, W] RGB (to_ndarray's default conversion),
    in the decoder's output (presentation) order."""
    dec = av.CodecContext.create(PYAV_DECODERS[codec], "r")
    out: dict[int, np.ndarray] = {}

    def take(frames):
        for f in frames:
            out[int(f.pts)] = np.ascontiguousarray(f.to_ndarray(format="rgb24").transpose(2, 0, 1))

    for i, p in enumerate(packets):
        pkt = av.Packet(p)
        pkt.pts = i
        take(dec.decode(pkt))
    take(dec.decode(None))
    return out


def gops(keys: list[bool]) -> list[tuple[int, int]]:
    starts = [i for i, k in enumerate(keys) if k]
    assert starts and starts[0] == 0
    return [(s, e) for s, e in zip(starts, starts[1:] + [len(keys)], strict=True)]


def decode_in_blocks(codec: str, packets: list[bytes], keys: list[bool], block: int, size=None):
    """rrloader: each GOP in blocks of `block` consecutive positions, one decoder with a
    session cache (each block continues the previous one's session)."""
    decoder = _core.VideoFrameDecoder()
    out: dict[int, np.ndarray] = {}
    for start, end in gops(keys):
        for lo in range(start, end, block):
            wanted = list(range(lo, min(end, lo + block)))
            frames = decoder.decode_gop(
                "seg0/cam", codec, packets[start:end], list(range(start, end)), wanted, size=size
            )
            for pos, f in zip(wanted, frames, strict=True):
                assert f is not None, f"position {pos} not delivered"
                out[pos] = f
    return out, decoder.stats()


MATRIX = [
    (codec, w, h, gop)
    for codec in ("h264", "h265", "av1")
    for (w, h), gop_list in (((64, 48), (1, 12, 30, 120)), ((320, 240), (1, 12, 30)))
    for gop in gop_list
]


def _frame_count(gop: int) -> int:
    return 125 if gop >= 120 else max(2 * gop + 7, 24)


@pytest.mark.parametrize(("codec", "w", "h", "gop"), MATRIX)
def test_frames_equal_pyav(codec, w, h, gop):
    assert _have(codec), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode(codec, w, h, _frame_count(gop), gop)
    # Keyframe detection agrees with the encoder on every packet.
    assert [_core.video_is_keyframe(codec, p) for p in packets] == keys
    ref = reference(codec, packets)
    assert sorted(ref) == list(range(len(packets)))
    got, stats = decode_in_blocks(codec, packets, keys, block=5)
    mismatched = [p for p in ref if not np.array_equal(got[p], ref[p])]
    assert not mismatched, f"{len(mismatched)} frames differ, first at {mismatched[0]}"
    assert got[0].shape == (3, h, w) and got[0].dtype == np.uint8
    n_gops = sum(keys)
    assert stats["gops_started"] == n_gops
    assert stats["frames_decoded"] == len(packets)  # each packet decoded once
    assert stats["frames_delivered"] == len(packets)
    assert stats["session_misses"] == n_gops
    assert stats["session_hits"] == sum(-(-(e - s) // 5) - 1 for s, e in gops(keys))


@pytest.mark.parametrize(("w", "h", "gop"), [(64, 48, 12), (320, 240, 30), (64, 48, 120)])
def test_length_prefixed_h264_equals_pyav(w, h, gop):
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode("h264", w, h, _frame_count(gop), gop)
    ref = reference("h264", packets)
    avcc = [to_avcc(p) for p in packets]
    assert not any(_core.video_is_annex_b(p) for p in avcc)
    assert all(to_avcc(_core.video_to_annex_b(p)) == p for p in avcc)
    assert [_core.video_is_keyframe("avc", p) for p in avcc] == keys
    got, _ = decode_in_blocks("h264", avcc, keys, block=7)
    assert all(np.array_equal(got[p], ref[p]) for p in ref)


@pytest.mark.parametrize(
    ("codec", "w", "h", "bframes"), [("h264", 64, 48, 2), ("h264", 320, 240, 3), ("h265", 64, 48, 3)]
)
def test_b_frames_equal_pyav(codec, w, h, bframes):
    assert _have(codec), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode(codec, w, h, 40, 20, bframes=bframes)
    ref = reference(codec, packets)
    # The reference must actually reorder (B-frames present).
    assert list(ref) != sorted(ref)  # output (presentation) order differs from packet order
    got, _ = decode_in_blocks(codec, packets, keys, block=4)
    assert all(np.array_equal(got[p], ref[p]) for p in ref)
    # Whole stream in one call, every position.
    one = _core.decode_video_packets(codec, packets, list(range(len(packets))))
    assert all(np.array_equal(one[p], ref[p]) for p in ref)
    # A single B-frame in the middle, packets ending right there (needs a flush).
    for pos in (3, 5):
        start = max(s for s, _ in gops(keys) if s <= pos)
        (frame,) = _core.decode_video_packets(codec, packets[start : pos + 1], [pos - start])
        assert np.array_equal(frame, ref[pos])


def test_tagged_colorspace_and_full_range_equal_pyav():
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    for color in ({"colorspace": 1}, {"color_range": 2}, {"colorspace": 1, "color_range": 2}):
        packets, keys = encode("h264", 64, 48, 12, 12, **color)
        ref = reference("h264", packets)
        got = _core.decode_video_packets("h264", packets, list(range(len(packets))))
        assert all(np.array_equal(got[p], ref[p]) for p in ref), color


def test_resize_at_decode_time_is_close_to_pyav():
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode("h264", 320, 240, 12, 12)
    got = _core.decode_video_packets("h264", packets, [0, 5], size=(120, 160))
    assert [g.shape for g in got] == [(3, 120, 160)] * 2
    dec = av.CodecContext.create("h264", "r")
    frames = []
    for p in packets[:6]:
        frames += dec.decode(av.Packet(p))
    frames += dec.decode(None)
    for g, f in zip(got, (frames[0], frames[5]), strict=True):
        ref = f.to_ndarray(format="rgb24", width=160, height=120).transpose(2, 0, 1)
        # PyAV 18 bundles FFmpeg 8, whose scaler rounds and filters differently from
        # Debian's FFmpeg 5.1: close, not identical.
        diff = np.abs(g.astype(int) - ref)
        assert diff.mean() < 6.0, diff.mean()


def test_keyframe_rules():
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode("h264", 64, 48, 14, 12)
    assert _core.video_is_keyframe("h264", packets[0]) and keys[0]
    assert not _core.video_is_keyframe("h264", packets[1])
    assert _core.video_is_keyframe("H264", packets[12])
    # IDR without SPS is not a keyframe.
    idr = packets[0].find(b"\x00\x00\x01\x65")
    assert idr > 0
    assert not _core.video_is_keyframe("h264", packets[0][idr:])
    # Rerun VideoCodec values are accepted.
    assert _core.video_codec_name(0x61766331) == "h264"
    assert _core.video_codec_name(0x68657631) == "h265"
    assert _core.video_codec_name(0x61763031) == "av1"
    assert _core.video_codec_name("hevc") == "h265"
    with pytest.raises(RrdUnsupportedError, match="mjpeg"):
        _core.video_is_keyframe("mjpeg", packets[0])
    with pytest.raises(RrdUnsupportedError, match="vp9"):
        _core.video_codec_name(0x76703039)


def test_sessions_continue_and_step_back():
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode("h264", 64, 48, 24, 12)
    ref = reference("h264", packets)
    d = _core.VideoFrameDecoder()
    pos = list(range(12))
    (a,) = d.decode_gop("s", "h264", packets[:12], pos, [4])
    (b,) = d.decode_gop("s", "h264", packets[:12], pos, [4])  # same frame again: kept frame
    c, e = d.decode_gop("s", "h264", packets[:12], pos, [6, 9])
    s = d.stats()
    assert (s["session_hits"], s["session_misses"], s["frames_decoded"]) == (2, 1, 10)
    (f,) = d.decode_gop("s", "h264", packets[:12], pos, [2])  # backwards: new session
    s = d.stats()
    assert (s["session_misses"], s["gops_started"], s["frames_decoded"]) == (2, 2, 13)
    for got, p in ((a, 4), (b, 4), (c, 6), (e, 9), (f, 2)):
        assert np.array_equal(got, ref[p])
    a[:] = 0  # results own their memory
    assert not np.array_equal(a, b)
    # Two segments with identical packets: separate sessions.
    d.decode_gop("other", "h264", packets[:12], pos, [3])
    assert d.stats()["sessions_cached"] == 2 and d.stats()["bytes_cached"] > 0
    d.clear_sessions()
    assert d.stats()["sessions_cached"] == 0
    # A cache of 0 bytes keeps nothing.
    z = _core.VideoFrameDecoder(session_cache_bytes=0)
    z.decode_gop("s", "h264", packets[:12], pos, [4])
    z.decode_gop("s", "h264", packets[:12], pos, [6])
    assert z.stats()["session_hits"] == 0 and z.stats()["frames_decoded"] == 12


def test_missing_values():
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, _ = encode("h264", 64, 48, 12, 12)
    # No keyframe at the start: every wanted frame is missing (None), nothing is decoded.
    assert _core.decode_video_packets("h264", packets[3:], [0, 2]) == [None, None]
    # A wanted position that is not a packet.
    out = _core.decode_video_packets("h264", packets[:4], [1, 7])
    assert out[0] is not None and out[1] is None


def test_bad_input_raises_clear_errors():
    assert _have("h264"), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, _ = encode("h264", 128, 96, 12, 12)
    with pytest.raises(RrdUnsupportedError, match="mjpeg"):
        _core.decode_video_packets("mjpeg", packets, [0])
    # Missing SPS/PPS (keyframe check off so the decoder sees it).
    idr = packets[0].find(b"\x00\x00\x01\x65")
    no_sps = [packets[0][idr:], *packets[1:]]
    assert _core.decode_video_packets("h264", no_sps, [0, 1]) == [None, None]
    with pytest.raises(RrdCorruptError, match="position 0"):
        _core.decode_video_packets("h264", no_sps, [0, 1], verify_keyframe=False)
    # Truncated length-prefixed sample: the framing error names the byte offset.
    # (The keyframe starts with a short SPS, so its length prefix cannot pass for a start code.)
    truncated = list(packets)
    truncated[0] = to_avcc(packets[0])[: len(packets[0]) // 2]
    with pytest.raises(RrdCorruptError, match="byte offset"):
        _core.decode_video_packets("h264", truncated, [0], verify_keyframe=False)
    with pytest.raises(RrdCorruptError, match="byte offset"):
        _core.video_is_keyframe("h264", truncated[0])
    with pytest.raises(RrdCorruptError, match="byte offset 0"):
        _core.video_to_annex_b(b"\x00\x00\x00\x09abc")
    # Truncated Annex B sample and garbage in a slice: an error or a frame, never a crash.
    for i, mangle in ((2, lambda p: p[: len(p) // 2]), (3, lambda p: p[:40] + bytes(range(256)) * 4)):
        broken = list(packets)
        broken[i] = mangle(packets[i])
        try:
            _core.decode_video_packets("h264", broken, [i, i + 1])
        except RrdCorruptError as e:
            assert f"position {i}" in str(e) or "position" in str(e)
    # Caller errors.
    with pytest.raises(InvalidArgumentError):
        _core.VideoFrameDecoder().decode_gop("s", "h264", packets[:3], [0, 2, 1], [0])
    with pytest.raises(InvalidArgumentError):
        _core.decode_video_packets("h264", packets, [0], size=(0, 10))
    # Random bytes, with and without start codes.
    rng = np.random.default_rng(5)
    for _ in range(20):
        junk = [b"\x00\x00\x00\x01" + rng.integers(0, 256, 100, dtype=np.uint8).tobytes() for _ in range(3)]
        for codec in ("h264", "h265", "av1"):
            try:
                out = _core.decode_video_packets(codec, junk, [0, 1, 2], verify_keyframe=False)
            except (RrdCorruptError, RrdUnsupportedError):
                continue
            assert all(o is None or o.shape[0] == 3 for o in out)
