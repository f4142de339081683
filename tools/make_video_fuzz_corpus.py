"""Writes the seed corpus of fuzz/fuzz_video_bitstream.cc (run: python tools/make_video_fuzz_corpus.py DIR).

Each seed is: one flags byte (bits 0-1 codec: 0 H.264, 1 H.265, 2 AV1; bit 2 run the packet
path; bit 3 verify the keyframe; bit 4 resize; bit 5 the dataloader's session path; bit 6
the GOP planner; bit 7 YUV 4:2:0 planes instead of RGB), then packets as [u16 LE length][bytes]
(the whole remainder is also what the bitstream functions see as one sample). Streams are
encoded here with PyAV 18.1 (libx264, libx265, libsvtav1; each skipped when missing) at
32x32 / 64x48, 3-4 frames, so seeds stay small (the fuzzer's -max_len is 64 KiB):
- H.264 Annex B GOPs (keyframe first), the same in 4-byte length-prefixed form, a GOP with
  B-frames, a keyframe without its SPS/PPS, a lone P-frame;
- H.265 GOPs (closed GOP, IDR first) and a lone IRAP sample;
- AV1 temporal units (sequence header + key frame, then inter frames);
- single samples for the keyframe detector alone (bit 2 clear);
- the same GOPs through the session path (two requests on one decoder, kept frames, B-frames
  refused), and a few planner inputs (bit 6: packet times/keyframes and block values).
"""

from __future__ import annotations

import fractions
import struct
import sys
from pathlib import Path

import numpy as np

# The Annex B -> length-prefixed conversion the video tests use (one copy of it).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
from videoutil import to_avcc  # noqa: E402

ENCODERS = {0: "libx264", 1: "libx265", 2: "libsvtav1"}


def _encode(av, codec: int, w: int, h: int, n: int, gop: int, bframes: int = 0) -> list[bytes]:
    cc = av.CodecContext.create(ENCODERS[codec], "w")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base = fractions.Fraction(1, 30)
    cc.framerate = 30
    cc.gop_size = gop
    cc.max_b_frames = bframes
    if codec == 0:
        cc.options = {"preset": "veryfast", "x264-params": f"scenecut=0:bframes={bframes}:log=-1"}
    elif codec == 1:
        cc.options = {
            "preset": "ultrafast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes={bframes}"
            ":log-level=none:frame-threads=1:pools=none",
        }
    else:
        cc.options = {"preset": "12", "svtav1-params": f"keyint={gop}:scd=0"}
    rng = np.random.default_rng(codec)
    packets: list[bytes] = []
    for i in range(n):
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 6 + i * 9) % 256, (y * 5) % 256, (x + y + i * 20) % 256], -1)
        img = np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in cc.encode(frame)]
    packets += [bytes(p) for p in cc.encode(None)]
    return packets


def _seed(flags: int, packets: list[bytes]) -> bytes:
    return bytes([flags]) + b"".join(struct.pack("<H", len(p)) + p for p in packets)


def main(out_dir: str) -> None:
    import av

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, bytes] = {}
    for codec, encoder in ENCODERS.items():
        if encoder not in av.codecs_available:
            print(f"skipping {encoder} (not in this PyAV build)", file=sys.stderr)
            continue
        for w, h in ((32, 32), (64, 48)):
            gop = _encode(av, codec, w, h, 4, 12)
            seeds[f"{encoder}_{w}x{h}_gop"] = _seed(codec | 4 | 8, gop)
            seeds[f"{encoder}_{w}x{h}_gop_resize"] = _seed(codec | 4 | 16, gop[:2])
            seeds[f"{encoder}_{w}x{h}_key_only"] = bytes([codec]) + gop[0]
            seeds[f"{encoder}_{w}x{h}_inter_only"] = bytes([codec]) + gop[1]
            seeds[f"{encoder}_{w}x{h}_sessions"] = _seed(codec | 32, gop)
            seeds[f"{encoder}_{w}x{h}_gop_yuv"] = _seed(codec | 4 | 8 | 128, gop)
        if codec == 0:
            gop = _encode(av, 0, 32, 32, 4, 12)
            seeds["h264_length_prefixed_gop"] = _seed(4 | 8, [to_avcc(p) for p in gop])
            seeds["h264_length_prefixed_key"] = bytes([0]) + to_avcc(gop[0])
            idr = gop[0].find(b"\x00\x00\x01\x65")
            seeds["h264_idr_without_sps"] = _seed(4, [gop[0][idr:], *gop[1:]])
            seeds["h264_p_frame_first"] = _seed(4, gop[1:])
            seeds["h264_bframes"] = _seed(4 | 8, _encode(av, 0, 32, 32, 5, 12, bframes=2))
            seeds["h264_bframes_sessions"] = _seed(32, _encode(av, 0, 32, 32, 5, 12, bframes=2))
        if codec == 1:
            seeds["h265_bframes"] = _seed(1 | 4 | 8, _encode(av, 1, 32, 32, 5, 12, bframes=2))
    # Planner inputs (bit 6 only): packet count, per packet (time step | keyframe bit 4),
    # slots per sample, lookahead, then (value, slot spacing) pairs.
    rng = np.random.default_rng(7)
    for k in range(4):
        count = 10 + 7 * k
        steps = [(int(rng.integers(0, 4)) | (4 if i % (3 + k) == 0 else 0)) for i in range(count)]
        pairs = [int(v) for v in rng.integers(0, 256, 12)]
        seeds[f"plan_{k}"] = bytes([64, count, *steps, k, k % 3, *pairs])
    for name, data in seeds.items():
        (out / name).write_bytes(data)
    print(f"wrote {len(seeds)} seeds to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/fuzz-corpus-video")
