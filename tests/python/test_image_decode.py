"""Image decoding (cpp/rrloader/decode/image.cc) against Pillow, pixel for pixel.

The reference is what a PyTorch user gets today: ``PIL.Image.open`` and torchvision's
``pil_to_tensor`` (``np.asarray(img)`` as [H, W, C] transposed to [C, H, W], times 255 for
mode "1"). ``_pillow_reference`` writes that out with numpy so the suite does not need
torchvision. Palette PNGs are our documented exception: we expand them, and compare with
Pillow's ``.convert("RGB")`` (or ``"RGBA"`` when the image has transparency).

Every image is encoded here at test time, from seeded random pixels: JPEGs and most PNGs by
Pillow, interlaced and 2/4-bit PNGs by ``_write_png`` below (Pillow cannot write those).
"""

from __future__ import annotations

import io
import random
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from rrloader import _core
from rrloader.errors import (
    RrdCorruptError,
    RrdFormatError,
    RrdTruncatedError,
    RrdUnsupportedError,
)

# Rerun's enum values (rerun-sdk 0.41: rr.ColorModel, rr.ChannelDatatype, rr.PixelFormat).
L, RGB, RGBA, BGR, BGRA = 1, 2, 3, 4, 5
U8, U16, F32 = 6, 8, 34
NV12 = 26


def _seed(*parts) -> int:
    """A stable seed from test parameters (str hashes are randomized per process)."""
    return zlib.crc32(repr(parts).encode())


def _pillow_reference(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    a = np.asarray(im)
    if im.mode == "1":
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _assert_same_as_pillow(data: bytes) -> np.ndarray:
    ours = _core.decode_encoded_image(data)
    ref = _pillow_reference(data)
    assert ours.dtype == np.uint8
    assert ours.shape == ref.shape
    if not np.array_equal(ours, ref):
        diff = np.abs(ours.astype(int) - ref.astype(int))
        raise AssertionError(f"{int((diff > 0).sum())} values differ, max {int(diff.max())}")
    return ours


def _pixels(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """Gradients plus noise: compressible like a photo, different in every channel."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 3 + y * 5 + 70 * k) % 256 for k in range(c)], axis=-1)
    noise = rng.integers(-25, 26, size=(h, w, c))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _pil_image(arr: np.ndarray, mode: str) -> Image.Image:
    if mode == "L":
        return Image.fromarray(arr[:, :, 0], "L")
    if mode == "LA":
        return Image.fromarray(arr[:, :, :2], "LA")
    return Image.fromarray(arr, mode)


def _save(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _large_pillow_write_block(monkeypatch):
    """Pillow's JPEG writer needs one output block large enough for a whole progressive or
    optimized noisy image (otherwise "Suspension not allowed here" at quality 100)."""
    monkeypatch.setattr(ImageFile, "MAXBLOCK", max(ImageFile.MAXBLOCK, 1 << 24))


# --- JPEG --------------------------------------------------------------------------------

_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}


def _jpeg_cases() -> list[tuple]:
    rnd = random.Random(20261121)
    sizes = [(1, 1), (9, 17), (17, 9), (8, 8), (31, 33), (480, 640)]
    cases = set()
    # Every size x mode x subsampling once, then a seeded sample of the rest.
    for (h, w) in sizes:
        for mode in ("L", "RGB", "CMYK"):
            for sub in (0, 1, 2):
                cases.add((h, w, mode, rnd.choice([10, 50, 75, 90, 95, 100]), sub, rnd.random() < 0.5, False))
    while len(cases) < 140:
        h, w = rnd.choice(sizes)
        cases.add(
            (h, w, rnd.choice(["L", "RGB", "CMYK"]), rnd.choice([1, 10, 50, 75, 90, 95, 100]),
             rnd.choice([0, 1, 2]), rnd.random() < 0.5, rnd.random() < 0.3)
        )
    return sorted(cases)


@pytest.mark.parametrize("h,w,mode,quality,subsampling,progressive,optimize", _jpeg_cases())
def test_jpeg_matches_pillow(h, w, mode, quality, subsampling, progressive, optimize):
    rng = np.random.default_rng(h * 7919 + w * 31 + quality)
    im = _pil_image(_pixels(rng, h, w, _CHANNELS[mode]), mode)
    data = _save(im, "JPEG", quality=quality, subsampling=subsampling, progressive=progressive, optimize=optimize)
    out = _assert_same_as_pillow(data)
    assert out.shape == (_CHANNELS[mode], h, w)


@pytest.mark.parametrize(
    "params",
    [
        {"restart_marker_rows": 1},
        {"restart_marker_blocks": 3, "progressive": True},
        {"keep_rgb": True},  # 3 components stored as RGB (Adobe transform 0), not YCbCr
        {"keep_rgb": True, "subsampling": 0, "progressive": True},
        {"qtables": "web_high", "subsampling": 2},
        {"exif": b"Exif\x00\x00" + b"\x00" * 32, "comment": b"made by the test"},
    ],
    ids=lambda p: ",".join(p),
)
def test_jpeg_variants_match_pillow(params):
    rng = np.random.default_rng(5)
    data = _save(Image.fromarray(_pixels(rng, 45, 61, 3)), "JPEG", quality=85, **params)
    assert _assert_same_as_pillow(data).shape == (3, 45, 61)


# --- PNG ----------------------------------------------------------------------------------


def _png_cases() -> list[tuple]:
    modes = ["1", "L", "LA", "RGB", "RGBA", "P", "P+tRNS", "P+key", "P4", "P2", "P1", "L+key", "RGB+key"]
    sizes = [(1, 1), (17, 9), (9, 17), (64, 48)]
    return [(m, h, w, opt) for m in modes for (h, w) in sizes for opt in (False, True)]


def _pillow_png(mode: str, h: int, w: int, optimize: bool) -> bytes:
    rng = np.random.default_rng(_seed(mode, h, w, optimize))
    params = {"optimize": optimize}
    if mode == "1":
        im = Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool))
    elif mode in ("L", "LA", "RGB", "RGBA"):
        im = _pil_image(_pixels(rng, h, w, _CHANNELS[mode]), mode)
    elif mode == "L+key":
        im = _pil_image(_pixels(rng, h, w, 1), "L")
        params["transparency"] = 17
    elif mode == "RGB+key":
        im = Image.fromarray(_pixels(rng, h, w, 3))
        params["transparency"] = (1, 2, 3)
    else:
        colors = {"P": 256, "P+tRNS": 200, "P+key": 100, "P4": 16, "P2": 4, "P1": 2}[mode]
        im = Image.fromarray(rng.integers(0, colors, (h, w)).astype(np.uint8), "P")
        im.putpalette(rng.integers(0, 256, colors * 3).astype(np.uint8).tobytes())
        if mode == "P+tRNS":
            params["transparency"] = rng.integers(0, 256, 150).astype(np.uint8).tobytes()
        elif mode == "P+key":
            params["transparency"] = 3
        elif mode in ("P4", "P2", "P1"):
            params["bits"] = {"P4": 4, "P2": 2, "P1": 1}[mode]
    return _save(im, "PNG", **params)


@pytest.mark.parametrize("mode,h,w,optimize", _png_cases())
def test_png_matches_pillow(mode, h, w, optimize):
    data = _pillow_png(mode, h, w, optimize)
    out = _assert_same_as_pillow(data)
    expected_c = {"1": 1, "L": 1, "L+key": 1, "LA": 2, "RGB": 3, "RGB+key": 3, "RGBA": 4,
                  "P+tRNS": 4, "P+key": 4}.get(mode, 3)
    assert out.shape == (expected_c, h, w)


# A small PNG writer for what Pillow cannot write: Adam7 interlacing, 2/4-bit gray, and
# every filter type on purpose.
_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _pack_row(values: np.ndarray, depth: int) -> np.ndarray:
    """One row of samples ([W, C] uint8) as PNG scanline bytes (MSB-first for depth < 8)."""
    if depth == 16:
        return np.frombuffer(values.reshape(-1).astype(">u2").tobytes(), np.uint8)
    if depth == 8:
        return values.reshape(-1).astype(np.uint8)
    bits = np.unpackbits(values.reshape(-1, 1).astype(np.uint8), axis=1)[:, 8 - depth:]
    return np.packbits(bits.reshape(-1))


def _filter_row(raw: np.ndarray, prev: np.ndarray, bpp: int, ftype: int) -> np.ndarray:
    r = raw.astype(np.int16)
    p = prev.astype(np.int16)
    a = np.concatenate([np.zeros(bpp, np.int16), r[:-bpp]])[: len(r)]
    c = np.concatenate([np.zeros(bpp, np.int16), p[:-bpp]])[: len(r)]
    if ftype == 0:
        pred = np.zeros_like(r)
    elif ftype == 1:
        pred = a
    elif ftype == 2:
        pred = p
    elif ftype == 3:
        pred = (a + p) // 2
    else:
        pa, pb, pc = np.abs(p - c), np.abs(a - c), np.abs(a + p - 2 * c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, p, c))
    return ((r - pred) % 256).astype(np.uint8)


def _write_png(samples: np.ndarray, color_type: int, depth: int, interlaced: bool, seed: int,
               palette: bytes | None = None, trns: bytes | None = None) -> bytes:
    h, w, c = samples.shape
    rnd = random.Random(seed)
    bpp = max(1, c * depth // 8)
    passes = _ADAM7 if interlaced else [(0, 0, 1, 1)]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        prev = np.zeros(len(_pack_row(sub[0], depth)), np.uint8)
        for row in sub:
            packed = _pack_row(row, depth)
            ftype = rnd.randrange(5)
            raw.append(ftype)
            raw += _filter_row(packed, prev, bpp, ftype).tobytes()
            prev = packed
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0,
                                                             int(interlaced)))
    if palette is not None:
        out += _chunk(b"PLTE", palette)
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    # gAMA and iCCP-free sRGB: present but never applied (Pillow does not apply them either).
    out += _chunk(b"gAMA", struct.pack(">I", 100000))
    return out + _chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + _chunk(b"IEND", b"")


def _written_png_cases() -> list[tuple]:
    kinds = [("gray", 1), ("gray", 2), ("gray", 4), ("gray", 8), ("gray+alpha", 8), ("rgb", 8), ("rgba", 8),
             ("palette", 1), ("palette", 2), ("palette", 4), ("palette", 8), ("palette+trns", 8),
             ("palette+trns", 4)]
    sizes = [(1, 1), (3, 2), (17, 9), (9, 17), (37, 41)]
    return [(k, d, h, w, il) for (k, d) in kinds for (h, w) in sizes for il in (True, False)]


@pytest.mark.parametrize("kind,depth,h,w,interlaced", _written_png_cases())
def test_written_png_matches_pillow(kind, depth, h, w, interlaced):
    seed = _seed(kind, depth, h, w, interlaced)
    rng = np.random.default_rng(seed)
    color_type, c = {"gray": (0, 1), "gray+alpha": (4, 2), "rgb": (2, 3), "rgba": (6, 4),
                     "palette": (3, 1), "palette+trns": (3, 1)}[kind]
    samples = rng.integers(0, 2**depth, (h, w, c)).astype(np.uint8)
    palette = trns = None
    if kind.startswith("palette"):
        palette = rng.integers(0, 256, 3 * 2**depth).astype(np.uint8).tobytes()
        if kind == "palette+trns":
            trns = rng.integers(0, 256, max(1, 2**depth // 2)).astype(np.uint8).tobytes()
    data = _write_png(samples, color_type, depth, interlaced, seed, palette, trns)
    out = _assert_same_as_pillow(data)
    expected_c = 4 if kind == "palette+trns" else 3 if kind == "palette" else c
    assert out.shape == (expected_c, h, w)


def test_interlaced_equals_non_interlaced():
    rng = np.random.default_rng(3)
    samples = rng.integers(0, 256, (29, 23, 4)).astype(np.uint8)
    a = _core.decode_encoded_image(_write_png(samples, 6, 8, True, 1))
    b = _core.decode_encoded_image(_write_png(samples, 6, 8, False, 2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, samples.transpose(2, 0, 1))


# --- raw Rerun images ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "color_model,channels,order",
    [(L, 1, [0]), (RGB, 3, [0, 1, 2]), (RGBA, 4, [0, 1, 2, 3]), (BGR, 3, [2, 1, 0]), (BGRA, 4, [2, 1, 0, 3])],
)
@pytest.mark.parametrize("h,w", [(1, 1), (17, 9), (480, 640)])
def test_raw_matches_numpy(color_model, channels, order, h, w):
    rng = np.random.default_rng(h + w + color_model)
    hwc = rng.integers(0, 256, (h, w, channels)).astype(np.uint8)
    out = _core.decode_raw_image(hwc.tobytes(), w, h, color_model, U8)
    np.testing.assert_array_equal(out, hwc[:, :, order].transpose(2, 0, 1))


def test_raw_rejects_wrong_sizes_and_formats():
    buf = bytes(7 * 5 * 3)
    for size in (0, len(buf) - 1, len(buf) + 1):
        with pytest.raises(RrdCorruptError, match=r"7x5 RGB U8 needs 105 bytes, the buffer has"):
            _core.decode_raw_image(bytes(size), 7, 5, RGB, U8)
    with pytest.raises(RrdUnsupportedError, match="channel datatype U16"):
        _core.decode_raw_image(bytes(7 * 5 * 6), 7, 5, RGB, U16)
    with pytest.raises(RrdUnsupportedError, match="channel datatype F32"):
        _core.decode_raw_image(bytes(7 * 5 * 12), 7, 5, RGB, F32)
    with pytest.raises(RrdUnsupportedError, match="pixel_format NV12"):
        _core.decode_raw_image(bytes(6 * 4 * 3 // 2), 6, 4, 0, 0, NV12)
    with pytest.raises(RrdUnsupportedError, match=r"color model unknown \(9\)"):
        _core.decode_raw_image(buf, 7, 5, 9, U8)
    with pytest.raises(RrdUnsupportedError, match="max_pixels"):
        _core.decode_raw_image(bytes(100000), 100000, 100000, L, U8)


def test_raw_round_trip_through_rerun_enums():
    """The numbers we use are rerun-sdk's own."""
    import rerun as rr
    assert (rr.ColorModel.L.value, rr.ColorModel.RGB.value, rr.ColorModel.RGBA.value) == (L, RGB, RGBA)
    assert (rr.ColorModel.BGR.value, rr.ColorModel.BGRA.value) == (BGR, BGRA)
    assert (rr.ChannelDatatype.U8.value, rr.ChannelDatatype.U16.value) == (U8, U16)
    assert rr.PixelFormat.NV12.value == NV12


# --- Python surface ----------------------------------------------------------------------


def test_accepts_any_bytes_like_and_owns_its_result():
    rng = np.random.default_rng(9)
    data = _save(Image.fromarray(_pixels(rng, 12, 10, 3)), "PNG")
    ref = _core.decode_encoded_image(data)
    for view in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(_core.decode_encoded_image(view), ref)
    out = _core.decode_encoded_image(bytearray(data))
    assert out.flags.c_contiguous and out.flags.writeable
    out[0, 0, 0] ^= 1  # our memory, not the input's
    del data
    assert out.sum() >= 0


def test_decodes_concurrently_from_threads():
    """The GIL is released while decoding; results must not mix between threads."""
    rng = np.random.default_rng(1)
    inputs = [_save(Image.fromarray(_pixels(rng, 120, 160, 3)), "JPEG", quality=q) for q in (30, 60, 90, 95)]
    expected = [_core.decode_encoded_image(d) for d in inputs]
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(25):
            if not np.array_equal(_core.decode_encoded_image(inputs[i]), expected[i]):
                errors.append(f"thread {i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- bad input ---------------------------------------------------------------------------


def _good_jpeg() -> bytes:
    rng = np.random.default_rng(2)
    return _save(Image.fromarray(_pixels(rng, 40, 56, 3)), "JPEG", quality=80)


def _good_png() -> bytes:
    rng = np.random.default_rng(2)
    return _save(Image.fromarray(_pixels(rng, 40, 56, 3)), "PNG")


@pytest.mark.parametrize("keep", [3, 4, 20, 100, 300, -200, -3, -2, -1])
def test_truncated_jpeg(keep):
    data = _good_jpeg()
    with pytest.raises(RrdTruncatedError, match="truncated"):
        _core.decode_encoded_image(data[:keep])


@pytest.mark.parametrize("keep", [8, 12, 20, 33, 40, 100, -100, -12, -8, -4, -1])
def test_truncated_png(keep):
    data = _good_png()
    with pytest.raises(RrdTruncatedError, match="truncated"):
        _core.decode_encoded_image(data[:keep])


def test_signature_prefix_is_truncated():
    with pytest.raises(RrdTruncatedError):
        _core.decode_encoded_image(b"\x89PNG\r")
    with pytest.raises(RrdTruncatedError):
        _core.decode_encoded_image(b"\xff\xd8")


def test_corrupt_jpeg_data():
    data = bytearray(_good_jpeg())
    sos = data.index(b"\xff\xda")
    body = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    rnd = random.Random(4)
    for i in range(body, len(data) - 2):
        data[i] = rnd.randrange(255)  # never 0xFF: no accidental markers
    with pytest.raises(RrdCorruptError, match=r"JPEG 56x40 \(3 components\)"):
        _core.decode_encoded_image(bytes(data))


def test_corrupt_jpeg_header():
    data = bytearray(_good_jpeg())
    dqt = data.index(b"\xff\xdb")
    data[dqt + 2 : dqt + 4] = b"\x00\x01"  # marker length below 2
    with pytest.raises(RrdCorruptError, match="invalid length"):
        _core.decode_encoded_image(bytes(data))


def test_corrupt_png_data():
    data = bytearray(_good_png())
    idat = data.index(b"IDAT")
    data[idat + 20] ^= 0x5A
    with pytest.raises(RrdCorruptError, match=r"PNG 56x40 RGB 8-bit"):
        _core.decode_encoded_image(bytes(data))


def test_random_bytes_and_empty_input():
    rng = np.random.default_rng(0)
    for _ in range(20):
        blob = rng.integers(0, 256, int(rng.integers(1, 4096))).astype(np.uint8).tobytes()
        if blob[:2] in (b"\xff\xd8", b"\x89P"):
            continue
        with pytest.raises(RrdUnsupportedError, match="neither JPEG nor PNG"):
            _core.decode_encoded_image(blob)
    with pytest.raises(RrdCorruptError, match="empty"):
        _core.decode_encoded_image(b"")


def test_random_bytes_after_a_valid_signature_never_crash():
    rng = np.random.default_rng(1)
    for magic in (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"):
        for _ in range(50):
            blob = magic + rng.integers(0, 256, int(rng.integers(0, 2048))).astype(np.uint8).tobytes()
            with pytest.raises(RrdFormatError):
                _core.decode_encoded_image(blob)


def test_sixteen_bit_png_is_unsupported():
    im = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    assert im.mode.startswith("I;16")
    with pytest.raises(RrdUnsupportedError, match="16-bit PNG is not supported"):
        _core.decode_encoded_image(_save(im, "PNG"))
    for color_type, c in ((2, 3), (6, 4), (4, 2)):
        samples = np.arange(5 * 3 * c, dtype=np.uint16).reshape(5, 3, c) * 999
        with pytest.raises(RrdUnsupportedError, match=r"16-bit PNG is not supported.*PNG 3x5"):
            _core.decode_encoded_image(_write_png(samples, color_type, 16, False, 0))


def test_absurd_dimensions_are_rejected_before_decoding():
    data = bytearray(_good_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"
    with pytest.raises(RrdUnsupportedError, match=r"65535x65535 has 4294836225 pixels"):
        _core.decode_encoded_image(bytes(data))

    png = bytearray(_good_png())
    png[16:24] = struct.pack(">II", 1_000_000, 1_000_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    with pytest.raises(RrdUnsupportedError, match="1000000x1000000"):
        _core.decode_encoded_image(bytes(png))


def test_max_pixels_keyword():
    data = _good_png()
    assert _core.decode_encoded_image(data, max_pixels=56 * 40).shape == (3, 40, 56)
    with pytest.raises(RrdUnsupportedError, match="above the limit of 2239"):
        _core.decode_encoded_image(data, max_pixels=56 * 40 - 1)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        _core.decode_encoded_image(b"not an image")
