"""YUV 4:2:0 output: rrloader's ``Yuv420Frame`` / ``Yuv420Collator`` (python/rrloader/_yuv.py) against
rerun-sdk 0.41's, and the native planes of ``_core.decode_video_packets(..., output_format="yuv420p")``
against 0.41's ``VideoFrameDecoder(output_format="yuv420p")`` (PyAV 18's planes, reformatted to
yuv420p when the stream is not 4:2:0 8-bit) on streams encoded here with PyAV's encoders.

Tolerances (measured, not chosen): ``to_rgb`` equals 0.41's ``to_rgb`` exactly (``torch.equal``) for
every matrix, range, dtype and shape tried. Against PyAV's ``to_ndarray(format="rgb24")`` (libswscale,
integer arithmetic) ``to_rgb(normalize=False).round()`` is within 3 levels on even-sized frames of
every matrix and range (most pixels 0-2 off; 0.41's own float conversion differs the same way), and
within 16 on odd-sized ones, where libswscale interpolates chroma instead of repeating it (13 seen).
"""

from __future__ import annotations

import pickle
import warnings

import av
import numpy as np
import pyarrow as pa
import pytest
import torch
from pooled_samples import FrameSamples, expected_order, sample
from rerun041 import ToRgbInWorker, ref
from rrloader import _core
from rrloader._loader._yuv import Yuv420Collator, Yuv420Frame, frame_from_planes
from rrloader.errors import InvalidArgumentError
from torch.utils import _pytree as pytree
from torch.utils.data import DataLoader, default_collate
from videoutil import ENCODERS, PYAV_DECODERS, encode, to_avcc

SPACES = ("bt601", "bt709", "bt2020", "unspecified")
RANGES = ("limited", "full", "unspecified")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _planes(lead: tuple[int, ...], h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 256, (*lead, 1, h, w), dtype=torch.uint8, generator=g)
    uv = torch.randint(0, 256, (*lead, 2, (h + 1) // 2, (w + 1) // 2), dtype=torch.uint8, generator=g)
    return y, uv


# --------------------------------------------------------------------------- to_rgb
@pytest.mark.parametrize(
    ("lead", "h", "w"),
    [((), 48, 64), ((), 5, 7), ((), 1, 1), ((3,), 21, 33), ((2, 3), 2, 3), ((4,), 240, 320)],
)
def test_to_rgb_equals_rerun041_exactly(lead, h, w):
    y, uv = _planes(lead, h, w, seed=h * 1000 + w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for space in SPACES:
            for rng in RANGES:
                ours, theirs = Yuv420Frame(y, uv, space, rng), ref.Yuv420Frame(y, uv, space, rng)
                for dtype in DTYPES:
                    for normalize in (True, False):
                        a = ours.to_rgb(dtype=dtype, normalize=normalize)
                        b = theirs.to_rgb(dtype=dtype, normalize=normalize)
                        assert a.shape == (*lead, 3, h, w) and a.dtype == dtype and a.is_contiguous()
                        assert torch.equal(a, b), (space, rng, dtype, normalize)
                # Overrides win over the frame's metadata.
                for o_space in ("bt601", "bt709", "bt2020"):
                    for o_range in ("limited", "full"):
                        a = ours.to_rgb(color_space=o_space, color_range=o_range, normalize=False)
                        b = theirs.to_rgb(color_space=o_space, color_range=o_range, normalize=False)
                        assert torch.equal(a, b), (space, rng, o_space, o_range)
    # The output owns its memory: writing it leaves the planes alone.
    frame = Yuv420Frame(y, uv, "bt709", "full")
    out = frame.to_rgb()
    out.zero_()
    assert torch.equal(frame.y, y) and torch.equal(frame.uv, uv)


def test_to_rgb_warns_as_rerun041_on_unspecified_metadata():
    y, uv = _planes((), 4, 6, seed=1)
    for space, rng in [("unspecified", "full"), ("bt709", "unspecified"), ("unspecified", "unspecified")]:
        for cls in (Yuv420Frame, ref.Yuv420Frame):
            with pytest.warns(UserWarning, match="unspecified") as record:
                cls(y, uv, space, rng).to_rgb()
            assert record[0].filename == __file__  # attributed to the caller of to_rgb
    for cls in (Yuv420Frame, ref.Yuv420Frame):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cls(y, uv, "bt601", "limited").to_rgb()
            cls(y, uv, "unspecified", "unspecified").to_rgb(color_space="bt709", color_range="full")
    # Integer dtypes are refused by both.
    for cls in (Yuv420Frame, ref.Yuv420Frame):
        with pytest.raises(TypeError):
            cls(y, uv, "bt601", "full").to_rgb(dtype=torch.uint8)


def test_to_rgb_on_cuda_inside_a_worker_is_a_runtime_error():
    loader = DataLoader(ToRgbInWorker(), batch_size=None, num_workers=1, multiprocessing_context="spawn")
    (outcome,) = list(loader)
    assert outcome == ["RuntimeError", "RuntimeError"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_rgb_on_cuda_equals_rerun041():
    y, uv = _planes((2, 3), 21, 33, seed=7)
    for space, rng in [("bt601", "limited"), ("bt709", "full"), ("bt2020", "limited")]:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            a = Yuv420Frame(y, uv, space, rng).pin_memory().to_rgb("cuda", dtype=dtype, non_blocking=True)
            b = ref.Yuv420Frame(y, uv, space, rng).to_rgb("cuda", dtype=dtype)
            assert a.device.type == "cuda" and torch.equal(a, b), (space, rng, dtype)
    planes = Yuv420Frame(y.cuda(), uv.cuda(), "bt709", "limited")
    assert torch.equal(planes.to_rgb().cpu(), Yuv420Frame(y, uv, "bt709", "limited").to_rgb("cuda").cpu())


def _pyav_rgb_and_native_planes(codec, w, h, **color):
    packets, _ = encode(codec, w, h, 8, 8, **color)
    dec = av.CodecContext.create(PYAV_DECODERS[codec], "r")
    rgb = {}
    for i, p in enumerate([*packets, None]):
        pkt = None if p is None else av.Packet(p)
        if pkt is not None:
            pkt.pts = i
        for f in dec.decode(pkt):
            rgb[int(f.pts)] = f.to_ndarray(format="rgb24").transpose(2, 0, 1)
    native = _core.decode_video_packets(codec, packets, list(range(len(packets))), output_format="yuv420p")
    return rgb, native


@pytest.mark.parametrize(
    ("codec", "w", "h", "color", "bound"),
    [
        ("h264", 64, 48, {}, 3),
        ("h264", 320, 240, {"colorspace": 5}, 3),
        ("h264", 64, 48, {"colorspace": 1}, 3),
        ("h264", 64, 48, {"colorspace": 1, "color_range": 2}, 3),
        ("h264", 64, 48, {"colorspace": 9}, 3),
        ("h264", 64, 48, {"colorspace": 9, "color_range": 2}, 3),
        ("h264", 64, 48, {"color_range": 2}, 3),
        ("av1", 33, 21, {}, 16),
    ],
)
def test_to_rgb_is_close_to_libswscale(codec, w, h, color, bound):
    rgb, native = _pyav_rgb_and_native_planes(codec, w, h, **color)
    worst, total, count = 0, 0, 0
    for i, planes in enumerate(native):
        frame = frame_from_planes(*planes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untagged streams: BT.601 limited, as libswscale assumes
            ours = frame.to_rgb(normalize=False).round().to(torch.uint8).numpy()
            assert torch.equal(
                torch.from_numpy(ours),
                ref.Yuv420Frame(*frame_fields(frame)).to_rgb(normalize=False).round().to(torch.uint8),
            )
        diff = np.abs(ours.astype(int) - rgb[i].astype(int))
        worst, total, count = max(worst, int(diff.max())), total + int(diff.sum()), count + diff.size
    assert worst <= bound, worst
    assert total / count < 2.0, total / count


def frame_fields(frame: Yuv420Frame) -> tuple:
    return frame.y, frame.uv, frame.color_space, frame.color_range


# --------------------------------------------------------------------------- the dataclass
def _bad_constructions():
    y, uv = _planes((), 5, 7, seed=2)
    yield "float y", (y.float(), uv, "bt601", "full")
    yield "int16 uv", (y, uv.short(), "bt601", "full")
    yield "2-D y", (y[0], uv[0], "bt601", "full")
    yield "ranks differ", (y, uv[None], "bt601", "full")
    yield "3 Y channels", (y.expand(3, 5, 7), uv, "bt601", "full")
    yield "1 UV channel", (y, uv[:1], "bt601", "full")
    yield "leading dims differ", (y[None].expand(2, 1, 5, 7), uv[None].expand(3, 2, 3, 4), "bt601", "full")
    yield "floor chroma", (y, uv[:, :2, :3], "bt601", "full")
    yield "big chroma", (y, torch.zeros(2, 4, 4, dtype=torch.uint8), "bt601", "full")
    yield "space", (y, uv, "srgb", "full")
    yield "range", (y, uv, "bt601", "tv")
    yield "space None", (y, uv, None, "full")
    yield "not tensors", (np.zeros((1, 4, 4), np.uint8), uv, "bt601", "full")
    if torch.device("meta") is not None:
        yield "devices differ", (y.to("meta"), uv, "bt601", "full")


@pytest.mark.parametrize(("case", "args"), list(_bad_constructions()))
def test_validation_raises_what_rerun041_raises(case, args):
    with pytest.raises(Exception) as theirs:
        ref.Yuv420Frame(*args)
    with pytest.raises(type(theirs.value)):
        Yuv420Frame(*args)


def test_stack_clone_pin_memory_as_rerun041():
    frames = [(*_planes((3,), 5, 7, seed=s), "bt709", "full") for s in range(4)]
    ours = Yuv420Frame.stack([Yuv420Frame(*f) for f in frames])
    theirs = ref.Yuv420Frame.stack([ref.Yuv420Frame(*f) for f in frames])
    assert ours.y.shape == (4, 3, 1, 5, 7) and ours.uv.shape == (4, 3, 2, 3, 4)
    assert torch.equal(ours.y, theirs.y) and torch.equal(ours.uv, theirs.uv)
    assert (ours.color_space, ours.color_range) == (theirs.color_space, theirs.color_range)
    # Stacking copies: window views of a shared bank are not aliased.
    bank = Yuv420Frame(*frames[0])
    views = [Yuv420Frame(bank.y[i : i + 2], bank.uv[i : i + 2], "bt709", "full") for i in range(2)]
    stacked = Yuv420Frame.stack(views)
    stacked.y.zero_()
    assert torch.equal(bank.y, frames[0][0])

    clone = ours.clone()
    assert torch.equal(clone.y, ours.y) and clone.y.data_ptr() != ours.y.data_ptr()
    assert clone.uv.data_ptr() != ours.uv.data_ptr() and clone.color_space == "bt709"

    # Errors: what 0.41 raises, of the same type.
    mixed = [(*_planes((), 5, 7, seed=1), "bt709", "full"), (*_planes((), 5, 7, seed=1), "bt601", "full")]
    other_size = [
        (*_planes((), 5, 7, seed=1), "bt709", "full"),
        (*_planes((), 6, 7, seed=1), "bt709", "full"),
    ]
    for args in ([], mixed, other_size):
        with pytest.raises(Exception) as theirs_error:
            ref.Yuv420Frame.stack([ref.Yuv420Frame(*f) for f in args])
        with pytest.raises(type(theirs_error.value)):
            Yuv420Frame.stack([Yuv420Frame(*f) for f in args])

    # pin_memory: pinned planes where the build can pin; where it cannot, both fail alike.
    try:
        theirs_pinned = ref.Yuv420Frame(*frames[0]).pin_memory()
    except Exception as e:  # noqa: BLE001 - a CPU-only build refuses; the type is compared
        with pytest.raises(type(e)):
            Yuv420Frame(*frames[0]).pin_memory()
    else:
        pinned = Yuv420Frame(*frames[0]).pin_memory()
        assert pinned.y.is_pinned() and pinned.uv.is_pinned() and theirs_pinned.y.is_pinned()
        assert torch.equal(pinned.uv, frames[0][1])


def test_frames_are_frozen_pytree_nodes_and_pickle():
    frame = Yuv420Frame(*_planes((2,), 5, 7, seed=3), "bt2020", "limited")
    with pytest.raises(AttributeError):
        frame.y = frame.y  # frozen, as 0.41's
    leaves, spec = pytree.tree_flatten({"cam": frame, "n": 1})
    assert len(leaves) == 3 and leaves[0] is frame.y and leaves[1] is frame.uv
    back = pytree.tree_unflatten([leaves[0] + 1, leaves[1], 2], spec)
    assert isinstance(back["cam"], Yuv420Frame) and back["cam"].color_space == "bt2020"
    assert torch.equal(back["cam"].y, frame.y + 1)
    mapped = pytree.tree_map(lambda t: t[:1], frame)
    assert mapped.y.shape == (1, 1, 5, 7)
    copy = pickle.loads(pickle.dumps(frame))
    assert torch.equal(copy.y, frame.y) and copy == Yuv420Frame(copy.y, copy.uv, "bt2020", "limited")


# --------------------------------------------------------------------------- Yuv420Collator
def _samples(n: int, space: str = "bt709") -> list[dict]:
    out = []
    for i in range(n):
        y, uv = _planes((2,), 5, 7, seed=i)
        out.append(
            {"video": (y, uv, space, "full"), "state": torch.arange(3.0) + i, "idx": i, "name": f"s{i}"}
        )
    return out


def _as(cls, samples):
    return [{**s, "video": cls(*s["video"])} for s in samples]


def test_yuv420_collator_equals_rerun041_and_default_collate():
    samples = _samples(4)
    ours = Yuv420Collator()(_as(Yuv420Frame, samples))
    theirs = ref.Yuv420Collator()(_as(ref.Yuv420Frame, samples))
    assert list(ours) == list(theirs) == ["video", "state", "idx", "name"]
    assert torch.equal(ours["video"].y, theirs["video"].y) and torch.equal(
        ours["video"].uv, theirs["video"].uv
    )
    assert ours["video"].y.shape == (4, 2, 1, 5, 7)
    plain = default_collate([{k: v for k, v in s.items() if k != "video"} for s in samples])
    for key in ("state", "idx", "name"):
        assert type(ours[key]) is type(plain[key])
        assert ours[key] == plain[key] if key == "name" else torch.equal(ours[key], plain[key])
    assert Yuv420Collator()([]) == ref.Yuv420Collator()([]) == {}


@pytest.mark.parametrize("case", ["missing key", "extra key", "none", "mixed types", "mixed metadata"])
def test_yuv420_collator_errors_as_rerun041(case):
    def build(cls):
        s = _as(cls, _samples(3))
        if case == "missing key":
            del s[1]["state"]
        elif case == "extra key":
            s[2]["more"] = 1
        elif case == "none":
            s[1]["video"] = None
        elif case == "mixed types":
            s[1]["video"] = torch.zeros(3)
        else:
            s[1]["video"] = cls(*_samples(1, space="bt601")[0]["video"])
        return s

    with pytest.raises(Exception) as theirs:
        ref.Yuv420Collator()(build(ref.Yuv420Frame))
    with pytest.raises(type(theirs.value)):
        Yuv420Collator()(build(Yuv420Frame))


def test_yuv420_collator_in_spawned_workers():
    loader = DataLoader(
        FrameSamples(16),
        batch_size=4,
        num_workers=2,
        multiprocessing_context="spawn",
        collate_fn=Yuv420Collator(),
    )
    batches = list(loader)
    order = expected_order(16, 4, 2)
    assert len(batches) == len(order)
    for got, numbers in zip(batches, order, strict=True):
        want = Yuv420Collator()([sample(i) for i in numbers])
        assert torch.equal(got["video"].y, want["video"].y) and torch.equal(got["video"].uv, want["video"].uv)
        assert torch.equal(got["index"], torch.tensor(numbers))
        assert torch.equal(got["nested"]["pose"][1][1], want["nested"]["pose"][1][1])


# --------------------------------------------------------------------------- native planes
def _have(codec: str) -> bool:
    return ENCODERS[codec] in av.codecs_available and PYAV_DECODERS[codec] in av.codecs_available


def _rerun041_yuv(codec: str, packets: list[bytes], keys: list[bool]) -> list:
    """0.41's VideoFrameDecoder(output_format="yuv420p"): one request per packet, decoded from its GOP's
    keyframe, all in one batch (as its pipeline hands them)."""
    decoder = ref.VideoFrameDecoder(codec=codec, output_format="yuv420p")
    column = pa.array([[p] for p in packets], type=pa.list_(pa.binary()))
    requests, start = [], 0
    for i, key in enumerate(keys):
        start = i if key else start
        requests.append(
            ref.DecodeRequest(
                sample_position=i,
                segment_id="seg",
                index_value=i,
                decode_row_indices=tuple(range(start, i + 1)),
                output_row_indices=(i,),
                starts_at_keyframe=True,
            )
        )
    return list(decoder.decode(ref.FieldBatch(column=column), requests))


STREAMS = [
    # (codec, pix_fmt, width, height, colour tags, framing)
    ("h264", "yuv420p", 64, 48, {}, "annexb"),
    ("h264", "yuv420p", 64, 48, {}, "avcc"),
    ("h264", "yuv420p", 320, 240, {"colorspace": 1}, "annexb"),
    ("h264", "yuv420p", 64, 48, {"colorspace": 1, "color_range": 2}, "annexb"),  # yuvj420p
    ("h264", "yuv420p", 64, 48, {"colorspace": 5, "color_range": 2}, "avcc"),
    ("h264", "yuv444p", 33, 21, {}, "annexb"),  # odd size (4:4:4 crops to any size), reformatted
    ("h264", "yuv444p", 64, 48, {"color_range": 2}, "annexb"),  # yuvj444p, reformatted
    ("h264", "yuv422p", 34, 22, {"colorspace": 6}, "annexb"),
    ("h264", "yuv420p10le", 64, 48, {"colorspace": 9}, "annexb"),
    ("h264", "yuv444p10le", 33, 21, {}, "annexb"),  # filtered and dithered down to 8 bits
    ("h264", "yuv422p10le", 64, 48, {"colorspace": 1}, "annexb"),
    ("h265", "yuv420p", 66, 50, {}, "annexb"),
    ("h265", "yuv422p", 64, 48, {}, "annexb"),
    ("h265", "yuv444p10le", 65, 49, {}, "annexb"),
    ("h265", "yuv420p", 64, 48, {"colorspace": 9, "color_range": 2}, "annexb"),
    ("h265", "yuv444p", 65, 49, {}, "annexb"),  # odd size, reformatted
    ("h265", "yuv420p10le", 66, 50, {"colorspace": 1}, "annexb"),
    ("av1", "yuv420p", 33, 21, {}, "annexb"),  # odd size, copied
    ("av1", "yuv420p", 64, 48, {"colorspace": 9, "color_range": 2}, "annexb"),
    ("av1", "yuv420p10le", 35, 23, {}, "annexb"),  # odd size, 10-bit
]


@pytest.mark.parametrize(("codec", "pix_fmt", "w", "h", "color", "framing"), STREAMS)
def test_native_yuv_planes_equal_rerun041(codec, pix_fmt, w, h, color, framing):
    assert _have(codec), "PyAV (requirements-dev.txt) must have this encoder and decoder"
    packets, keys = encode(codec, w, h, 12, 6, pix_fmt=pix_fmt, **color)
    if framing == "avcc":
        packets = [to_avcc(p) for p in packets]
    theirs = _rerun041_yuv(codec, packets, keys)
    assert all(isinstance(f, ref.Yuv420Frame) for f in theirs)

    decoder = _core.VideoFrameDecoder()
    starts = [i for i, k in enumerate(keys) if k] + [len(packets)]
    ours = []
    for s, e in zip(starts, starts[1:], strict=False):
        ours += decoder.decode_gop(
            "seg/cam", codec, packets[s:e], list(range(s, e)), list(range(s, e)), output_format="yuv420p"
        )
    assert len(ours) == len(theirs) == len(packets)
    for i, (got, want) in enumerate(zip(ours, theirs, strict=True)):
        y, uv, space, rng = got
        assert y.shape == (1, h, w) and uv.shape == (2, (h + 1) // 2, (w + 1) // 2)
        assert y.dtype == np.uint8 and uv.dtype == np.uint8
        assert np.array_equal(y, want.y.numpy()), f"Y plane of frame {i} differs"
        assert np.array_equal(uv, want.uv.numpy()), f"UV planes of frame {i} differ"
        assert (space, rng) == (want.color_space, want.color_range), i
    stats = decoder.stats()
    direct = pix_fmt == "yuv420p"
    assert stats["frames_delivered"] == len(packets)
    assert stats["frames_reformatted"] == (0 if direct else len(packets))
    # The same frames through decode_video_packets, as a Yuv420Frame.
    first = _core.decode_video_packets(codec, packets[: starts[1]], [0, 1], output_format="yuv420p")
    frame = frame_from_planes(*first[1])
    assert isinstance(frame, Yuv420Frame) and torch.equal(frame.y, theirs[1].y)


def test_native_yuv_errors_and_missing_frames():
    packets, _ = encode("h264", 64, 48, 6, 6)
    with pytest.raises(InvalidArgumentError, match="yuv420p"):
        _core.decode_video_packets("h264", packets, [0], size=(24, 32), output_format="yuv420p")
    with pytest.raises(InvalidArgumentError, match="nv12"):
        _core.decode_video_packets("h264", packets, [0], output_format="nv12")
    # A position without a frame is None, as for RGB; two requests of one frame own their memory.
    got = _core.decode_video_packets("h264", packets, [1, 1, 9], output_format="yuv420p")
    assert got[2] is None
    got[0][0][:] = 0
    assert not np.array_equal(got[0][0], got[1][0])
    # RGB and YUV frames of one position agree through to_rgb within the libswscale tolerance.
    (rgb,) = _core.decode_video_packets("h264", packets, [3])
    (yuv,) = _core.decode_video_packets("h264", packets, [3], output_format="yuv420p")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = frame_from_planes(*yuv).to_rgb(normalize=False).round().to(torch.uint8)
    assert int((converted.int() - torch.from_numpy(rgb).int()).abs().max()) <= 3
