"""Writes the seed corpus of fuzz/fuzz_image_decoder.cc (run: python tools/make_image_fuzz_corpus.py DIR).

Seeds, all small (the fuzzer's -max_len is 64 KiB) and made from seeded pixels:
- JPEGs by Pillow: gray, RGB at 4:4:4 / 4:2:2 / 4:2:0, progressive, optimized Huffman
  tables, restart markers, RGB stored without YCbCr (Adobe transform 0), CMYK, 1x1;
- PNGs by Pillow: 1-bit, L, LA, RGB, RGBA, palette (8/4/2/1-bit), palette + tRNS, gray and
  RGB with a tRNS key, 16-bit gray (a rejection path);
- PNGs by the small writer below (Pillow cannot write them): Adam7-interlaced RGBA, gray
  2-bit and palette + tRNS;
- raw images: the target reads an 8-byte header (width u16 LE, height u16 LE, color model,
  channel datatype, pixel format, flags; see the target) followed by the pixel buffer; one
  seed per color model, plus a U16 and an NV12 header.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile


def _pixels(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 5 + y * 3 + 80 * k) % 256 for k in range(c)], axis=-1)
    return np.clip(base + rng.integers(-20, 21, (h, w, c)), 0, 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _interlaced_png(samples: np.ndarray, color_type: int, depth: int, plte: bytes = b"", trns: bytes = b"") -> bytes:
    """Adam7 PNG, filter type 0 on every row; depth < 8 only for one-sample pixels."""
    h, w, _ = samples.shape
    raw = bytearray()
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = samples[y0::dy, x0::dx]
        for row in sub if sub.shape[1] else []:
            bits = np.unpackbits(row.reshape(-1, 1), axis=1)[:, 8 - depth :].reshape(-1)
            raw += b"\x00" + np.packbits(bits).tobytes()
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1))
    if plte:
        out += _chunk(b"PLTE", plte)
    if trns:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b"")


def main(out: str) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261121)
    ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 22)
    seeds: dict[str, bytes] = {}

    rgb = Image.fromarray(_pixels(rng, 24, 40, 3))
    seeds["gray.jpg"] = _save(Image.fromarray(_pixels(rng, 24, 40, 1)[:, :, 0]), "JPEG", quality=80)
    for sub in (0, 1, 2):
        seeds[f"rgb_sub{sub}.jpg"] = _save(rgb, "JPEG", quality=75, subsampling=sub)
    seeds["progressive.jpg"] = _save(rgb, "JPEG", quality=90, progressive=True, subsampling=2)
    seeds["optimized.jpg"] = _save(rgb, "JPEG", quality=50, optimize=True)
    seeds["restart.jpg"] = _save(rgb, "JPEG", quality=70, restart_marker_blocks=2)
    seeds["keep_rgb.jpg"] = _save(rgb, "JPEG", quality=70, keep_rgb=True)
    seeds["cmyk.jpg"] = _save(Image.fromarray(_pixels(rng, 16, 16, 4), "CMYK"), "JPEG", quality=85)
    seeds["one_pixel.jpg"] = _save(Image.fromarray(_pixels(rng, 1, 1, 3)), "JPEG")

    seeds["bilevel.png"] = _save(Image.fromarray(rng.integers(0, 2, (9, 17)).astype(bool)), "PNG")
    seeds["gray.png"] = _save(Image.fromarray(_pixels(rng, 17, 9, 1)[:, :, 0]), "PNG")
    seeds["gray_alpha.png"] = _save(Image.fromarray(_pixels(rng, 17, 9, 2), "LA"), "PNG")
    seeds["rgb.png"] = _save(rgb, "PNG", optimize=True)
    seeds["rgba.png"] = _save(Image.fromarray(_pixels(rng, 17, 9, 4)), "PNG")
    seeds["gray_key.png"] = _save(Image.fromarray(_pixels(rng, 8, 8, 1)[:, :, 0]), "PNG", transparency=7)
    seeds["rgb_key.png"] = _save(Image.fromarray(_pixels(rng, 8, 8, 3)), "PNG", transparency=(1, 2, 3))
    seeds["gray16.png"] = _save(Image.fromarray(np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000), "PNG")
    for bits in (8, 4, 2, 1):
        pal = Image.fromarray(rng.integers(0, 2**bits, (11, 13)).astype(np.uint8), "P")
        pal.putpalette(rng.integers(0, 256, 3 * 2**bits).astype(np.uint8).tobytes())
        seeds[f"palette{bits}.png"] = _save(pal, "PNG", bits=bits)
    pal = Image.fromarray(rng.integers(0, 32, (11, 13)).astype(np.uint8), "P")
    pal.putpalette(rng.integers(0, 256, 96).astype(np.uint8).tobytes())
    seeds["palette_trns.png"] = _save(pal, "PNG", transparency=bytes(range(0, 256, 16)))

    seeds["interlaced_rgba.png"] = _interlaced_png(rng.integers(0, 256, (13, 11, 4)).astype(np.uint8), 6, 8)
    seeds["interlaced_gray2.png"] = _interlaced_png(rng.integers(0, 4, (9, 10, 1)).astype(np.uint8), 0, 2)
    seeds["interlaced_palette_trns.png"] = _interlaced_png(
        rng.integers(0, 16, (7, 9, 1)).astype(np.uint8), 3, 4, plte=bytes(range(48)), trns=bytes([0, 128, 255])
    )

    for model, channels in ((1, 1), (2, 3), (3, 4), (4, 3), (5, 4)):
        header = struct.pack("<HHBBBB", 6, 5, model, 6, 0, 0)
        seeds[f"raw_model{model}.bin"] = header + rng.integers(0, 256, 6 * 5 * channels).astype(np.uint8).tobytes()
    seeds["raw_u16.bin"] = struct.pack("<HHBBBB", 4, 4, 2, 8, 0, 4) + bytes(4 * 4 * 6)
    seeds["raw_nv12.bin"] = struct.pack("<HHBBBB", 4, 4, 0, 0, 26, 1) + bytes(4 * 4 * 3 // 2)

    for name, data in seeds.items():
        (d / name).write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/fuzz-corpus-image")
