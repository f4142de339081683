"""0.41 ``VideoFrameDecoder`` windows: ``window_storage="view"`` equals ``"copy"`` (issue 12).

A differential test. The same windowed video fields are read with ``window_storage="copy"`` and
``"view"``, ``output_format="rgb"`` and ``"yuv420p"``, through rrloader's
``rrloader.experimental.dataloader`` and through rerun-sdk 0.41's ``rerun.experimental.dataloader``
(the reference, in-process, via rerun041's torchvision stand-in), over one recording served by
rerun-sdk's ``rr.server.Server``. Checked, sample by sample:

* rrloader "view" == rrloader "copy" == rerun 0.41 with the same settings (both storages), for the
  map dataset (every index, one batched ``__getitems__``, then shuffled single reads) and the
  sequential iterable dataset (small fetch blocks, so windows continue GOPs across blocks);
* the RGB frames equal PyAV's sequential decode at the latest packet at or before each offset's
  index value (an oracle independent of both loaders); a window with an offset before the video's
  first packet (the segment starts 16 frames before the video) is ``None`` as a whole;
* ``max_decoder_sessions=0`` (no session reuse) and ``thread_count=0`` (libavcodec's choice) give
  the same values as the defaults, in both modules;
* ``decode(batch, requests)`` called directly, with windows reaching before the request's first
  decode row, across GOPs, repeated and out-of-order offsets: equal between storages and modules;
* "copy" windows are independent tensors: writing one sample's window in place changes no other
  sample's value (0.41's "view" windows may share storage, and 0.41 says not to write them);
* the same on a timestamp timeline (offsets in seconds, a 30 Hz grid over 10 fps video, so
  windows repeat frames), with a second segment whose video starts mid-GOP after the segment;
* a window across a frame size change is ``None`` (both formats, both storages, both modules;
  directly and through the dataset). Found here: rrloader's direct ``decode`` raised torch's
  RuntimeError for such a ``yuv420p`` window; it now checks the frames stack first, as 0.41.

Windows (integer "frame" timeline, offsets in frames): contiguous ``(-3, -2, -1, 0)`` (0.41's
view path slices one frame bank), across GOPs ``(-12, -6, 0)``, repeats / out of order / ahead
``(0, -1, -1, 2)``. Streams: H.264 (GOP 10, tagged BT.709 full range), H.265 and AV1
(libsvtav1; GOP 8), 64x48, no B-frames (videoutil), ``is_keyframe`` logged (0.41 requires it):
sparse for H.264, dense for the others. ``thread_count=2`` (frame threading) is compared too.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pyarrow as pa
import pytest
import rerun as rr
import rrloader.experimental.dataloader as ours
import torch
import videoutil as vu
from rerun041 import ref

pytestmark = pytest.mark.filterwarnings(
    "ignore:The default multiprocessing start method is 'fork'",
    "ignore::RuntimeWarning",  # the iterable's "incomplete samples dropped" warning, both modules
)

MODULES = {"rerun": ref, "rrloader": ours}
CAM = "/cam:VideoStream:sample"
WINDOWS = {"contiguous": (-3, -2, -1, 0), "across_gops": (-12, -6, 0), "repeats": (0, -1, -1, 2)}
GOPS = {"h264": 10, "h265": 8, "av1": 8}
# The H.264 stream is tagged BT.709 full range (the YUV frames carry it; the others are untagged).
COLOR = {"h264": {"colorspace": 1, "color_range": 2}}
N_PACKETS = 34
LEAD = 16  # the segment's index range starts LEAD frames before the video's first packet


@functools.cache
def stream(codec: str):
    packets, keys = vu.encode(codec, 64, 48, N_PACKETS, GOPS[codec], seed=5, **COLOR.get(codec, {}))
    assert sum(keys) >= 3 and keys[0]
    return tuple(packets), tuple(keys), tuple(vu.reference(codec, packets))


@pytest.fixture(scope="module", params=list(GOPS))
def served(request, tmp_path_factory):
    """(codec, server's DatasetEntry): one segment, /cam's packets at frames LEAD.. and an /idx
    scalar at every frame from 0, so the segment starts before the video."""
    codec = request.param
    packets, keys, _ = stream(codec)
    root = tmp_path_factory.mktemp(f"windows041_{codec}")
    times = list(range(LEAD, LEAD + N_PACKETS))
    vu.write_stream(root / "seg.rrd", "seg", packets, times, codec=codec, keyframes=keys,
                    keyframe_logging="sparse" if codec == "h264" else "dense", rows_per_chunk=7,
                    extra_times=range(0, LEAD + N_PACKETS + 3))  # fmt: skip
    with rr.server.Server(datasets={"video": root}) as server:
        yield codec, server.client().get_dataset("video")


def fields(dl, codec, **decoder_kw):
    out = {name: dl.Field(CAM, decode=dl.VideoFrameDecoder(codec=codec, **decoder_kw), window=w)
           for name, w in WINDOWS.items()}  # fmt: skip
    out["single"] = dl.Field(CAM, decode=dl.VideoFrameDecoder(codec=codec, **decoder_kw))
    return out


def as_plain(value):
    """A decoded value as comparable plain data: None, a tensor, or (y, uv, space, range)."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    return (value.y, value.uv, value.color_space, value.color_range)


def same(a, b) -> bool:
    a, b = as_plain(a), as_plain(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return (
        not isinstance(b, torch.Tensor)
        and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a[:2], b[:2], strict=True))
        and a[2:] == b[2:]
    )


def assert_same_samples(got, want, where):
    assert len(got) == len(want), where
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert sorted(g) == sorted(w), (where, k)
        for name in w:
            assert same(g[name], w[name]), f"{where}: sample {k}, field {name!r} differs"


def read_map(dl, entry, codec, **decoder_kw):
    m = dl.RerunMapDataset(dl.DataSource(entry), "frame", fields(dl, codec, **decoder_kw))
    start = m.sample_index.segments[0].index_start
    return start, m.__getitems__(list(range(len(m)))), m


def read_iterable(dl, entry, codec, **decoder_kw):
    it = dl.RerunIterableDataset(dl.DataSource(entry), "frame", fields(dl, codec, **decoder_kw),
                                 fetch_block_size=5, shuffle_strategy=dl.NoShuffle())  # fmt: skip
    return list(it)


def oracle(codec, start, n):
    """The expected RGB samples: per window offset the frame of the latest packet at or before
    the offset's index value; None for a window with an offset before the first packet."""
    _, _, frames = stream(codec)

    def frame_at(v):
        k = v - LEAD
        return None if k < 0 else torch.from_numpy(frames[min(k, N_PACKETS - 1)])

    out = []
    for v in range(start, start + n):
        sample = {"single": frame_at(v)}
        for name, w in WINDOWS.items():
            slots = [frame_at(v + o) for o in w]
            sample[name] = None if any(s is None for s in slots) else torch.stack(slots)
        out.append(sample)
    return out


# ------------------------------------------------------------------------------ through datasets
@pytest.mark.parametrize("output_format", ["rgb", "yuv420p"])
def test_view_equals_copy_and_rerun041_map_dataset(served, output_format):
    codec, entry = served
    results = {}
    for prefix, dl in MODULES.items():
        for storage in ("copy", "view"):
            start, samples, _ = read_map(
                dl, entry, codec, window_storage=storage, output_format=output_format
            )
            results[prefix, storage] = (start, samples)
    start, base = results["rrloader", "copy"]
    assert start == 12  # the sample range is trimmed by the most negative offset (-12), as 0.41's
    for key, (s, samples) in results.items():
        assert s == start, key
        assert_same_samples(samples, base, f"{key} vs rrloader copy")
    expected = oracle(codec, start, len(base))
    assert len(base) == LEAD + N_PACKETS - start + 1
    for name in [*WINDOWS, "single"]:
        # Windows with an offset before the video's first packet are missing, the others complete.
        assert [s[name] is None for s in base] == [e[name] is None for e in expected], name
        assert any(e[name] is None for e in expected) and any(e[name] is not None for e in expected), name
    if output_format == "rgb":
        assert_same_samples(base, expected, "rgb vs PyAV")
    else:
        last = base[-1]["contiguous"]
        assert isinstance(last, ours.Yuv420Frame)
        assert tuple(last.y.shape) == (4, 1, 48, 64) and tuple(last.uv.shape) == (4, 2, 24, 32)


@pytest.mark.parametrize("output_format", ["rgb", "yuv420p"])
def test_view_equals_copy_in_shuffled_single_reads(served, output_format):
    codec, entry = served
    _, want, _ = read_map(ours, entry, codec, output_format=output_format)
    m = ours.RerunMapDataset(ours.DataSource(entry), "frame",
                             fields(ours, codec, window_storage="view", output_format=output_format))  # fmt: skip
    order = np.random.default_rng(4).permutation(len(m)).tolist()
    for k in order:  # one fetch per sample, GOPs entered anywhere
        assert_same_samples([m[k]], [want[k]], f"view, single read {k}")


@pytest.mark.parametrize("output_format", ["rgb", "yuv420p"])
def test_view_equals_copy_and_rerun041_iterable(served, output_format):
    codec, entry = served
    runs = {
        (prefix, storage): read_iterable(
            dl, entry, codec, window_storage=storage, output_format=output_format
        )
        for prefix, dl in MODULES.items()
        for storage in ("copy", "view")
    }
    base = runs["rrloader", "copy"]
    # Incomplete samples (windows before the first packet) are dropped by the iterable.
    _, mapped, _ = read_map(ours, entry, codec, output_format=output_format)
    complete = [s for s in mapped if all(v is not None for v in s.values())]
    assert len(base) == len(complete) > 0
    assert_same_samples(base, complete, "iterable vs map")
    for key, samples in runs.items():
        assert_same_samples(samples, base, f"iterable {key} vs rrloader copy")


@pytest.mark.parametrize("prefix", list(MODULES))
@pytest.mark.parametrize(
    "options",
    [
        {"max_decoder_sessions": 0},
        {"thread_count": 0},
        {"max_decoder_sessions": 0, "thread_count": 0},
        {"thread_count": 2},
    ],
)
def test_no_session_reuse_and_automatic_threads_give_the_default_frames(served, prefix, options):
    codec, entry = served
    dl = MODULES[prefix]
    for storage in ("copy", "view"):
        _, want, _ = read_map(dl, entry, codec, window_storage=storage)
        _, got, _ = read_map(dl, entry, codec, window_storage=storage, **options)
        assert_same_samples(got, want, f"{prefix} {storage} {options} map")
        it_want = read_iterable(dl, entry, codec, window_storage=storage)
        it_got = read_iterable(dl, entry, codec, window_storage=storage, **options)
        assert len(it_want) > 0
        assert_same_samples(it_got, it_want, f"{prefix} {storage} {options} iterable")


def test_copy_windows_are_independent_tensors(served):
    codec, entry = served
    _, samples, _ = read_map(ours, entry, codec, window_storage="copy")
    live = [(k, name) for k, s in enumerate(samples) for name in [*WINDOWS, "single"] if s[name] is not None]
    assert len(live) > len(samples)
    before = {key: samples[key[0]][key[1]].clone() for key in live}
    for i, (k, name) in enumerate(live):
        samples[k][name].fill_(7)
        for kk, nn in live[i + 1 :]:
            assert torch.equal(samples[kk][nn], before[kk, nn]), f"writing {k}/{name} changed {kk}/{nn}"


# ------------------------------------------------------------- a timestamp timeline, 30 Hz grid
TIME_WINDOWS = {
    "recent": (-0.2, -0.1, 0.0),
    "across_gops": (-0.8, -0.4, 0.0),
    "repeats": (0.0, -0.04, -0.04, 0.05),
}
STEP_NS = 100_000_000  # 10 fps video served on a 30 Hz grid: each frame fills three slots


@pytest.fixture(scope="module")
def served_time(tmp_path_factory):
    """Two H.264 segments on a timestamp timeline: "t0" the whole stream from T0; "t1" the stream
    from packet 5 (mid-GOP: packets 5..9 have no keyframe before them) with /idx from T0, so
    the segment starts before its video. Yields (entry, {segment: (packet times, frames)})."""
    packets, keys, frames = stream("h264")
    root = tmp_path_factory.mktemp("windows041_time")
    times = [vu.T0_NS + k * STEP_NS for k in range(N_PACKETS)]
    vu.write_stream(root / "t0.rrd", "t0", packets, times, kind="timestamp", timeline="time", keyframes=keys,
                    keyframe_logging="sparse")  # fmt: skip
    vu.write_stream(root / "t1.rrd", "t1", packets[5:], times[5:], kind="timestamp", timeline="time",
                    keyframes=keys[5:], keyframe_logging="sparse", extra_times=times)  # fmt: skip
    first_key = 5 + keys[5:].index(True)
    late = vu.reference("h264", packets[first_key:])
    t1_frames = [None] * (first_key - 5) + list(late)
    with rr.server.Server(datasets={"video": root}) as server:
        yield (
            server.client().get_dataset("video"),
            {"t0": (times, list(frames)), "t1": (times[5:], t1_frames)},
        )


def ns(value) -> int:
    """An index value (datetime64, or int ns) as int ns."""
    return int(np.datetime64(value, "ns").astype(np.int64))


def time_fields(dl, **decoder_kw):
    out = {name: dl.Field(CAM, decode=dl.VideoFrameDecoder(codec="h264", **decoder_kw), window=w)
           for name, w in TIME_WINDOWS.items()}  # fmt: skip
    out["single"] = dl.Field(CAM, decode=dl.VideoFrameDecoder(codec="h264", **decoder_kw))
    return out


@pytest.mark.parametrize("output_format", ["rgb", "yuv420p"])
def test_view_equals_copy_and_rerun041_on_a_timestamp_grid(served_time, output_format):
    entry, segments = served_time
    results = {}
    for prefix, dl in MODULES.items():
        for storage in ("copy", "view"):
            m = dl.RerunMapDataset(dl.DataSource(entry), "time",
                                   time_fields(dl, window_storage=storage, output_format=output_format),
                                   timeline_sampling=dl.FixedRateSampling(rate_hz=30.0))  # fmt: skip
            index = [(seg.segment_id, seg.index_start, seg.num_samples) for seg in m.sample_index.segments]
            results[prefix, storage] = (index, m.__getitems__(list(range(len(m)))))
    index, base = results["rrloader", "copy"]
    assert sorted(seg for seg, _, _ in index) == ["t0", "t1"]
    for key, (idx, samples) in results.items():
        assert [(s, ns(v), n) for s, v, n in idx] == [(s, ns(v), n) for s, v, n in index], key
        assert_same_samples(samples, base, f"{key} vs rrloader copy")
    # The oracle: per offset, the frame of the latest packet at or before it (None before the
    # segment's first packet, or before its first keyframe); a window with a None is None.
    grid_ns = round(1e9 / 30.0)
    expected = []
    for seg, start, n in index:
        times, frames = segments[seg]
        start_ns = ns(start)
        for k in range(n):
            v = start_ns + k * grid_ns

            def frame_at(t, times=times, frames=frames):
                p = vu.latest_at_or_before(times, t)
                return None if p < 0 or frames[p] is None else torch.from_numpy(frames[p])

            sample = {"single": frame_at(v)}
            for name, w in TIME_WINDOWS.items():
                slots = [frame_at(v + round(o * 1e9)) for o in w]
                sample[name] = None if any(x is None for x in slots) else torch.stack(slots)
            expected.append(sample)
    assert len(expected) == len(base)
    for name in [*TIME_WINDOWS, "single"]:
        assert [s[name] is None for s in base] == [e[name] is None for e in expected], name
        assert any(e[name] is None for e in expected) and any(e[name] is not None for e in expected), name
    if output_format == "rgb":
        assert_same_samples(base, expected, "rgb vs PyAV")


# ------------------------------------------------------------------------- decode() called directly
def direct_requests(dl, keys):
    """Requests over one batch of the whole stream: (decode rows, output rows) per request."""
    k1, k2 = [i for i, k in enumerate(keys) if k][1:3]
    specs = [
        (range(0, 5), (1, 2, 3, 4)),  # contiguous, first GOP
        (range(k1, k1 + 4), (k1 - 1, k1, k1 + 3)),  # reaches before its first decode row: None
        (range(0, k1 + 3), (2, k1 - 1, k1 + 2)),  # across GOPs, from the first keyframe
        (range(k1, k2 + 2), (k2 + 1, k1, k1, k2 - 1)),  # out of order, repeats, across GOPs
        (range(k2, k2 + 3), (k2 + 2, k2 + 2)),  # one frame twice
        (range(1, 4), (2, 3)),  # does not start at a keyframe (starts_at_keyframe=False)
    ]
    return [
        dl.DecodeRequest(sample_position=i, segment_id="seg", index_value=max(out), decode_row_indices=tuple(rows),
                         output_row_indices=tuple(out), starts_at_keyframe=i != len(specs) - 1)
        for i, (rows, out) in enumerate(specs)
    ]  # fmt: skip


@pytest.mark.parametrize("codec", list(GOPS))
@pytest.mark.parametrize("output_format", ["rgb", "yuv420p"])
def test_direct_decode_view_equals_copy_and_rerun041(codec, output_format):
    packets, keys, frames = stream(codec)
    column = pa.array([[p] for p in packets], type=pa.list_(pa.binary()))
    got = {}
    for prefix, dl in MODULES.items():
        for storage in ("copy", "view"):
            decoder = dl.VideoFrameDecoder(codec=codec, window_storage=storage, output_format=output_format)
            batch = dl.FieldBatch(column=column, is_windowed=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got[prefix, storage] = list(decoder.decode(batch, direct_requests(dl, keys)))
    base = got["rrloader", "copy"]
    for key, values in got.items():
        assert len(values) == len(base), key
        for i, (a, b) in enumerate(zip(values, base, strict=True)):
            assert same(a, b), f"{key} request {i}"
    assert [v is None for v in base] == [False, True, False, False, False, True]
    if output_format == "rgb":
        for request, value in zip(direct_requests(ours, keys), base, strict=True):
            if value is not None:
                want = np.stack([frames[r] for r in request.output_row_indices])
                assert np.array_equal(value.numpy(), want)


# ------------------------------------------------------------------ a frame size change in a window
@functools.cache
def resized_stream():
    """10 packets at 64x48 then 12 at 32x24 (a new keyframe with its own parameter sets)."""
    a, ka = vu.encode("h264", 64, 48, 10, 10, seed=1)
    b, kb = vu.encode("h264", 32, 24, 12, 6, seed=2)
    return [*a, *b], [*ka, *kb], [*vu.reference("h264", a), *vu.reference("h264", b)]


@pytest.mark.parametrize("output_format", ["rgb", "yuv420p"])
def test_direct_decode_of_a_window_of_two_frame_sizes_is_none(output_format):
    """0.41 gives None for such a window (rgb and yuv420p, copy and view); rrloader's yuv420p
    window raised torch's RuntimeError from Yuv420Frame.stack instead."""
    packets, _, frames = resized_stream()
    column = pa.array([[p] for p in packets], type=pa.list_(pa.binary()))
    specs = [(range(0, 12), (9, 10)), (range(10, 14), (11, 13)), (range(0, 10), (8, 9))]
    got = {}
    for prefix, dl in MODULES.items():
        requests = [
            dl.DecodeRequest(sample_position=i, segment_id="seg", index_value=out[-1], decode_row_indices=tuple(rows),
                             output_row_indices=out, starts_at_keyframe=True)
            for i, (rows, out) in enumerate(specs)
        ]  # fmt: skip
        for storage in ("copy", "view"):
            decoder = dl.VideoFrameDecoder(window_storage=storage, output_format=output_format)
            got[prefix, storage] = list(
                decoder.decode(dl.FieldBatch(column=column, is_windowed=True), requests)
            )
    base = got["rerun", "copy"]
    assert [v is None for v in base] == [True, False, False]
    for key, values in got.items():
        assert all(same(a, b) for a, b in zip(values, base, strict=True)), key
    if output_format == "rgb":
        assert np.array_equal(got["rrloader", "view"][1].numpy(), np.stack([frames[11], frames[13]]))


def test_dataset_window_across_a_frame_size_change_is_none(tmp_path):
    packets, keys, frames = resized_stream()
    vu.write_stream(tmp_path / "s.rrd", "s", packets, list(range(len(packets))), keyframes=keys,
                    keyframe_logging="sparse")  # fmt: skip
    with rr.server.Server(datasets={"video": tmp_path}) as server:
        entry = server.client().get_dataset("video")
        for output_format in ("rgb", "yuv420p"):
            got = {}
            for prefix, dl in MODULES.items():
                for storage in ("copy", "view"):
                    decoder = dl.VideoFrameDecoder(window_storage=storage, output_format=output_format)
                    f = {"w": dl.Field(CAM, decode=decoder, window=(-2, 0))}
                    m = dl.RerunMapDataset(dl.DataSource(entry), "frame", f)
                    got[prefix, storage] = m.__getitems__(list(range(len(m))))
            base = got["rerun", "copy"]
            # Samples 10 and 11 (positions 8, 9) reach back into the 64x48 frames.
            assert [s["w"] is None for s in base] == [False] * 8 + [True, True] + [False] * 10
            for key, samples in got.items():
                assert_same_samples(samples, base, f"{output_format} {key}")
            if output_format == "rgb":
                rgb = got["rrloader", "view"]
                assert np.array_equal(rgb[-1]["w"].numpy(), np.stack([frames[-3], frames[-1]]))
