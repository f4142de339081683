"""VideoFrameDecoder fields in the dataloader (issue 4), against PyAV, frame for frame.

Every stream is encoded here, at test time (tests/python/videoutil.py: PyAV's libx264, libx265
and libsvtav1, no B-frames, parameter sets in-band), written into `.rrd` recordings with
rerun-sdk's VideoStream archetype, and read back through rrloader's datasets. The expected
frame of a sample is PyAV's sequential decode of the same packets (``to_ndarray("rgb24")``)
at the latest packet at or before the sample's index value; every delivered frame must be
pixel-identical to it, under sequential order, shuffle, windows and the map dataset.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import rrloader
import torch
import videoutil as vu
from rrloader import (
    DataSource,
    Field,
    FixedRateSampling,
    RerunIterableDataset,
    RerunMapDataset,
    VideoFrameDecoder,
)
from rrloader.errors import InvalidArgumentError, RrdCorruptError, RrdUnsupportedError

CAM = "/cam:VideoStream:sample"


@functools.cache
def encoded(codec: str, w: int, h: int, n: int, gop: int, seed: int = 0):
    """Packets, keyframe flags and PyAV's frames of one stream (cached per test session)."""
    packets, keys = vu.encode(codec, w, h, n, gop, seed=seed)
    return tuple(packets), tuple(keys), tuple(vu.reference(codec, packets))


def dataset(paths, **kw) -> DataSource:
    return DataSource(rrloader.LocalDataset([str(p) for p in paths], **kw))


def fields(**decoder_kw) -> dict[str, Field]:
    return {"cam": Field(CAM, decode=VideoFrameDecoder(**decoder_kw))}


def frame_count(gop: int) -> int:
    return 125 if gop >= 120 else max(2 * gop + 7, 30)


def check_frames(samples, expected, where: str) -> None:
    """`samples[i]["cam"]` equals `expected[i]` (an array, or None)."""
    for i, (s, e) in enumerate(zip(samples, expected, strict=True)):
        got = s["cam"]
        if e is None:
            assert got is None, f"{where}: sample {i} should be missing"
            continue
        assert got is not None, f"{where}: sample {i} missing"
        assert got.dtype == torch.uint8 and tuple(got.shape) == e.shape, (where, i, got.shape)
        assert np.array_equal(got.numpy(), e), f"{where}: sample {i} differs from PyAV"


def ratio(stats: dict) -> float:
    return stats["frames_decoded"] / stats["frames_delivered"]


# --------------------------------------------------------------------------------------------------
# The matrix: codecs x GOP lengths x resolutions (x sample framing), each read four ways.
MATRIX = [
    ("h264", "annexb", 64, 48, 1, "none"),
    ("h264", "annexb", 64, 48, 12, "sparse"),
    ("h264", "annexb", 64, 48, 30, "dense"),
    ("h264", "annexb", 64, 48, 120, "sparse"),
    ("h264", "annexb", 128, 96, 30, "none"),
    ("h264", "avcc", 64, 48, 12, "none"),
    ("h264", "avcc", 128, 96, 30, "sparse"),
    ("h265", "annexb", 64, 48, 1, "sparse"),
    ("h265", "annexb", 64, 48, 12, "none"),
    ("h265", "annexb", 128, 96, 30, "dense"),
    ("h265", "annexb", 64, 48, 120, "none"),
    ("av1", "obu", 64, 48, 1, "none"),
    ("av1", "obu", 64, 48, 12, "dense"),
    ("av1", "obu", 128, 96, 30, "sparse"),
    ("av1", "obu", 64, 48, 120, "none"),
]


@pytest.mark.parametrize(("codec", "framing", "w", "h", "gop", "keyframes"), MATRIX)
def test_frames_equal_pyav_in_every_order(tmp_path, codec, framing, w, h, gop, keyframes):
    packets, keys, ref = encoded(codec, w, h, frame_count(gop), gop)
    assert sum(keys) == -(-len(packets) // gop)  # the encoder made the GOPs asked for
    samples = [vu.to_avcc(p) for p in packets] if framing == "avcc" else list(packets)
    path = vu.write_stream(
        tmp_path / "s.rrd", "seg", samples, range(len(samples)), codec=codec, keyframes=keys,
        keyframe_logging=keyframes, rows_per_chunk=10,
    )  # fmt: skip
    n = len(packets)
    src = dataset([path])

    # Sequential, in blocks smaller than a GOP: each frame decoded exactly once.
    seq = RerunIterableDataset(src, "frame", fields(), fetch_size=16, shuffle=False)
    assert len(seq) == n
    check_frames(list(seq), ref, "sequential")
    stats = seq.video_stats()["cam"]
    assert stats["frames_delivered"] == n and stats["slots_filled"] == n
    assert ratio(stats) <= 1.05, stats
    assert stats["gops_started"] == sum(keys)
    assert stats["missing_no_keyframe"] == stats["missing_not_decoded"] == 0
    assert stats["keyframes_rejected"] == 0

    # Shuffled (two epochs).
    shuf = RerunIterableDataset(src, "frame", fields(), fetch_size=8, shuffle=True, seed=3)
    for epoch in range(2):
        shuf.set_epoch(epoch)
        order = shuf.shard_order()
        got = list(shuf)
        check_frames(got, [ref[i] for i in order], f"shuffle epoch {epoch}")

    # Map dataset: a random batch with repeats, and single items.
    m = RerunMapDataset(src, "frame", fields())
    rng = np.random.default_rng(gop)
    idx = rng.integers(0, n, size=min(n, 24)).tolist() + [n - 1, 0, 0]
    check_frames(m.__getitems__(idx), [ref[i] for i in idx], "map")
    check_frames([m[n // 2]], [ref[n // 2]], "map item")


def test_keyframe_column_absent_sparse_dense_and_mislabeled_give_the_same_frames(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 50, 12)
    wrong = list(keys)
    wrong[5] = wrong[17] = True  # two P-frames marked as keyframes
    wrong[24] = False  # a real keyframe left unmarked
    layouts = {"absent": ("none", keys), "sparse": ("sparse", keys), "dense": ("dense", keys),
               "mislabeled": ("sparse", wrong)}  # fmt: skip
    results = {}
    for name, (logging, marks) in layouts.items():
        path = vu.write_stream(
            tmp_path / f"{name}.rrd", name, packets, range(len(packets)), keyframes=marks, keyframe_logging=logging
        )
        ds = RerunMapDataset(dataset([path]), "frame", fields())
        got = ds.__getitems__(list(range(len(packets))))
        check_frames(got, ref, name)
        results[name] = ds.video_stats()["cam"]
        results[name]["frames"] = [g["cam"] for g in got]
    assert results["mislabeled"]["keyframes_rejected"] == 2
    assert all(results[k]["keyframes_rejected"] == 0 for k in ("absent", "sparse", "dense"))
    for name in ("sparse", "dense", "mislabeled"):
        assert all(torch.equal(a, b) for a, b in zip(results["absent"]["frames"], results[name]["frames"], strict=True))
    # Without the mark on packet 24, its GOP decodes from keyframe 12 (decoding through 24).
    assert results["mislabeled"]["gops_started"] == results["sparse"]["gops_started"] - 1
    # One dataset over all four segments: each segment uses its own keyframe source.
    ds = RerunMapDataset(dataset(sorted(tmp_path.glob("*.rrd"))), "frame", fields())
    assert len(ds) == 4 * len(packets)
    got = ds.__getitems__(list(range(len(ds)))[::-1])
    check_frames(got, [ref[i % len(packets)] for i in range(len(ds))][::-1], "four segments")


def test_windows_overlap_and_cross_gops(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 40, 10)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(len(packets)), keyframes=keys,
                           keyframe_logging="sparse")  # fmt: skip
    src = dataset([path])
    f = {"cam": Field(CAM, decode=VideoFrameDecoder(), window=(-3, 0)), "ahead": Field(CAM, decode=VideoFrameDecoder(), window=(-1, 2))}
    m = RerunMapDataset(src, "frame", f)
    assert len(m) == len(packets) - 3 - 2  # trimmed by the most negative and most positive offsets
    first = m.sample_index.segments[0].index_start
    assert first == 3
    for sample_pos, s in zip(range(len(m)), m.__getitems__(list(range(len(m)))), strict=True):
        v = first + sample_pos
        assert tuple(s["cam"].shape) == (4, 3, 48, 64)
        assert tuple(s["ahead"].shape) == (4, 3, 48, 64)
        for t, off in enumerate(range(-3, 1)):
            assert np.array_equal(s["cam"][t].numpy(), ref[v + off]), (v, off)
        for t, off in enumerate(range(-1, 3)):
            assert np.array_equal(s["ahead"][t].numpy(), ref[v + off]), (v, off)
    # Sequential windows decode every frame once, though each frame is in four windows.
    seq = RerunIterableDataset(src, "frame", {"cam": f["cam"]}, fetch_size=7, shuffle=False)
    got = list(seq)
    for k, s in enumerate(got):
        assert torch.equal(s["cam"], torch.from_numpy(np.stack([ref[first + k + o] for o in range(-3, 1)])))
    st = seq.video_stats()["cam"]
    assert st["slots_filled"] == 4 * len(got)
    assert st["frames_decoded"] == len(packets)  # samples 3 .. 39, windows from frame 0
    assert ratio(st) <= 1.05
    # The same windows shuffled.
    shuf = RerunIterableDataset(src, "frame", {"cam": f["cam"]}, fetch_size=5, shuffle=True, seed=1)
    order = shuf.shard_order()
    for g, s in zip(order, shuf, strict=True):
        v = first + int(g)
        assert torch.equal(s["cam"], torch.from_numpy(np.stack([ref[v + o] for o in range(-3, 1)])))


def test_a_timestamp_grid_denser_than_the_video_repeats_the_latest_frame(tmp_path):
    # 10 fps video on a 30 Hz grid: every frame serves three samples.
    packets, keys, ref = encoded("h264", 64, 48, 36, 12)
    times = [vu.T0_NS + k * 100_000_000 for k in range(len(packets))]
    path = vu.write_stream(tmp_path / "t.rrd", "seg", packets, times, kind="timestamp", timeline="time",
                           keyframes=keys, keyframe_logging="sparse")  # fmt: skip
    src = dataset([path])
    sampling = FixedRateSampling(30)
    step = sampling.ns_per_sample
    m = RerunMapDataset(src, "time", fields(), timeline_sampling=sampling)
    n = len(m)
    assert n == (times[-1] - times[0]) // step + 1
    values = [times[0] + k * step for k in range(n)]
    expected = [ref[vu.latest_at_or_before(times, v)] for v in values]
    check_frames(m.__getitems__(list(range(n))), expected, "timestamp map")
    seq = RerunIterableDataset(src, "time", fields(), timeline_sampling=sampling, fetch_size=20, shuffle=False)
    check_frames(list(seq), expected, "timestamp sequential")
    st = seq.video_stats()["cam"]
    # Each frame decoded once; a frame wanted by two blocks is delivered (converted) twice.
    assert st["frames_decoded"] == len({vu.latest_at_or_before(times, v) for v in values})
    assert st["frames_delivered"] >= st["frames_decoded"] and ratio(st) <= 1.05
    assert st["slots_filled"] == n
    # A window of the last three grid slots: [3, 3, H, W], each slot latest-at its own value.
    w = {"cam": Field(CAM, decode=VideoFrameDecoder(), window=(-2 * step, 0))}
    mw = RerunMapDataset(src, "time", w, timeline_sampling=sampling)
    first = mw.sample_index.segments[0].index_start
    for k, s in enumerate(mw.__getitems__(list(range(len(mw))))):
        v = first + k * step
        want = np.stack([ref[vu.latest_at_or_before(times, v + o * step)] for o in (-2, -1, 0)])
        assert torch.equal(s["cam"], torch.from_numpy(want)), k


def test_off_grid_capture_at_27_fps_on_a_30_hz_grid(tmp_path):
    packets, keys, ref = encoded("h265", 64, 48, 54, 18)
    rng = np.random.default_rng(0)
    times = [vu.T0_NS + round(k * 1e9 / 27) + int(rng.integers(-2_000_000, 2_000_000)) for k in range(len(packets))]
    times[0] = vu.T0_NS
    path = vu.write_stream(tmp_path / "t.rrd", "seg", packets, times, codec="h265", kind="timestamp",
                           timeline="time", keyframes=keys, keyframe_logging="dense")  # fmt: skip
    sampling = FixedRateSampling(30)
    m = RerunMapDataset(dataset([path]), "time", fields(), timeline_sampling=sampling)
    assert len(m) == (times[-1] - times[0]) // sampling.ns_per_sample + 1
    values = [times[0] + k * sampling.ns_per_sample for k in range(len(m))]
    expected = [ref[vu.latest_at_or_before(times, v)] for v in values]
    assert len({vu.latest_at_or_before(times, v) for v in values}) < len(values)  # some frames repeat
    check_frames(m.__getitems__(list(range(len(m)))), expected, "27 fps")


def test_duration_timeline_with_an_empty_grid_slot(tmp_path):
    packets, keys, ref = encoded("av1", 64, 48, 24, 8)
    step = 33_333_333
    times = [k * step for k in range(len(packets))]
    times = times[:5] + [t + step for t in times[5:]]  # no packet in the 6th slot
    path = vu.write_stream(tmp_path / "d.rrd", "seg", packets, times, codec="av1", kind="duration", timeline="dur")
    m = RerunMapDataset(dataset([path]), "dur", fields(), timeline_sampling=FixedRateSampling(30))
    values = [k * m.sample_index.ns_per_sample for k in range(len(m))]
    expected = [ref[vu.latest_at_or_before(times, v)] for v in values]
    assert expected[5] is expected[4]
    check_frames(m.__getitems__(list(range(len(m)))), expected, "duration")


def test_targets_before_the_first_frame_or_before_a_keyframe_are_missing(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 36, 12)
    # seg_late: other data from frame 0, video from frame 10 on.
    late = vu.write_stream(tmp_path / "late.rrd", "seg_late", packets, range(10, 10 + len(packets)),
                           extra_times=range(0, 10 + len(packets)))  # fmt: skip
    # seg_mid: the stream starts mid-GOP (packets 5.. of the encoding), no is_keyframe.
    mid = vu.write_stream(tmp_path / "mid.rrd", "seg_mid", packets[5:], range(5, len(packets)))
    src = dataset([late, mid])
    m = RerunMapDataset(src, "frame", {**fields(), "idx": Field("/idx:Scalars:scalars", decode=rrloader.NumericDecoder())})
    segs = {s.segment_id: s for s in m.sample_index.segments}
    assert segs["seg_late"].index_start == 0 and segs["seg_mid"].index_start == 5
    got = m.__getitems__(list(range(len(m))))
    late_n = segs["seg_late"].num_samples
    expected_late = [None] * 10 + list(ref)
    check_frames(got[:late_n], expected_late, "late start")
    assert all(s["idx"] is not None for s in got[:late_n])  # the other field is there
    # Mid-GOP: frames 5..11 have no keyframe before them; 12.. decode from keyframe 12 on.
    mid_ref = vu.reference("h264", packets[12:])
    check_frames(got[late_n:], [None] * 7 + mid_ref, "mid-GOP start")
    st = m.video_stats()["cam"]
    assert st["missing_before_first_packet"] == 10
    assert st["missing_no_keyframe"] == 10 + 7
    assert st["missing_not_decoded"] == 0
    # A window reaching before the first frame is missing as a whole.
    w = RerunMapDataset(src, "frame", {"cam": Field(CAM, decode=VideoFrameDecoder(), window=(-2, 0))})
    first = w.sample_index.segments[0].index_start  # seg_late, trimmed to 2
    got = w.__getitems__(list(range(12)))
    for k, s in enumerate(got):
        v = first + k
        assert (s["cam"] is None) == (v - 2 < 10), v
    # Iterating never yields a corrupt frame either; collate_samples masks the missing ones.
    loader = torch.utils.data.DataLoader(
        RerunIterableDataset(src, "frame", fields(), fetch_size=16, shuffle=True),
        batch_size=8, collate_fn=rrloader.collate_samples,
    )  # fmt: skip
    n_missing = sum(int(missing["cam"].sum()) for _, missing in loader)
    assert n_missing == 17


def test_multi_segment_dataset_with_mixed_codecs_and_sizes(tmp_path):
    specs = {"a": ("h264", 64, 48, 12), "b": ("h265", 128, 96, 10), "c": ("av1", 64, 48, 6), "d": ("h264", 128, 96, 30)}
    paths, refs = [], {}
    for seg, (codec, w, h, gop) in specs.items():
        packets, keys, ref = encoded(codec, w, h, 31, gop, seed=ord(seg))
        paths.append(vu.write_stream(tmp_path / f"{seg}.rrd", seg, packets, range(len(packets)), codec=codec,
                                     keyframes=keys, keyframe_logging="sparse" if seg in "ac" else "none"))  # fmt: skip
        refs[seg] = ref
    # A segment without the stream: all its samples are missing.
    paths.append(vu.write_stream(tmp_path / "e.rrd", "e", [], [], codec=None, extra_times=range(5)))
    src = dataset(paths)
    m = RerunMapDataset(src, "frame", fields())
    si = m.sample_index
    expected = []
    for seg in si.segments:
        expected += [refs[seg.segment_id][v] for v in range(seg.index_start, seg.index_end + 1)] if seg.segment_id in refs else [None] * seg.num_samples
    rng = np.random.default_rng(0)
    order = rng.permutation(len(m)).tolist()
    check_frames(m.__getitems__(order), [expected[i] for i in order], "mixed")
    it = RerunIterableDataset(src, "frame", fields(), fetch_size=13, shuffle=True, seed=5)
    check_frames(list(it), [expected[i] for i in it.shard_order()], "mixed iterable")
    assert it.video_stats()["cam"]["missing_before_first_packet"] == 5
    assert it.video_stats()["cam"]["streams_indexed"] == 5


def test_codec_from_the_component_else_the_argument(tmp_path):
    packets, keys, ref = encoded("h265", 64, 48, 20, 10)
    static = vu.write_stream(tmp_path / "static.rrd", "static", packets, range(20), codec="h265")
    temporal = vu.write_stream(tmp_path / "temporal.rrd", "temporal", packets, range(20), codec="h265",
                               codec_logging="temporal")  # fmt: skip
    bare = vu.write_stream(tmp_path / "bare.rrd", "bare", packets, range(20), codec=None)
    # The component wins over the argument.
    for path in (static, temporal):
        m = RerunMapDataset(dataset([path]), "frame", fields(codec="av1"))
        check_frames(m.__getitems__(list(range(20))), ref, path.name)
    # No component: the argument says it (any case, aliases).
    for name in ("HEVC", "h265", "H265"):
        m = RerunMapDataset(dataset([bare]), "frame", fields(codec=name))
        check_frames(m.__getitems__([0, 7, 19]), [ref[0], ref[7], ref[19]], name)
    # Neither: a clear error when the dataset is built, naming the field.
    with pytest.raises(InvalidArgumentError, match=r"field 'cam'.*codec"):
        RerunMapDataset(dataset([bare]), "frame", fields())
    # The dataset has a codec column, but this segment does not log it: an error naming it.
    m = RerunMapDataset(dataset([static, bare]), "frame", fields())
    assert [s.segment_id for s in m.sample_index.segments] == ["bare", "static"]
    check_frames(m.__getitems__([len(m) - 1]), [ref[19]], "static segment")
    with pytest.raises(InvalidArgumentError, match=r"segment 'bare'.*codec"):
        m.__getitems__([0])
    with pytest.raises(RrdUnsupportedError, match="vp9"):
        VideoFrameDecoder(codec="vp9")
    with pytest.raises(RrdUnsupportedError, match="mjpeg"):
        VideoFrameDecoder(codec="mjpeg")


def test_resize_at_decode_time(tmp_path):
    packets, keys, ref = encoded("h264", 128, 96, 24, 12)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(24))
    m = RerunMapDataset(dataset([path]), "frame", fields(size=(30, 40)))
    got = m.__getitems__(list(range(24)))
    assert all(tuple(s["cam"].shape) == (3, 30, 40) for s in got)
    # The same as rrloader's decode-layer resize of the same packets, and close to PyAV's.
    direct = rrloader._core.decode_video_packets("h264", list(packets[:12]), list(range(12)), size=(30, 40))
    assert all(np.array_equal(got[i]["cam"].numpy(), direct[i]) for i in range(12))
    dec = vu.av.CodecContext.create("h264", "r")
    frames = [f for p in packets[:12] for f in dec.decode(vu.av.Packet(p))] + list(dec.decode(None))
    pyav = frames[7].to_ndarray(format="rgb24", width=40, height=30).transpose(2, 0, 1)
    assert np.abs(got[7]["cam"].numpy().astype(int) - pyav).mean() < 6.0
    assert m.video_stats()["cam"]["frames_delivered"] == 24
    with pytest.raises(InvalidArgumentError):
        VideoFrameDecoder(size=(0, 40))


def test_sessions_continue_across_blocks(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 60, 30)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(60), keyframes=keys, keyframe_logging="sparse")
    seq = RerunIterableDataset(dataset([path]), "frame", fields(), fetch_size=4, shuffle=False)
    check_frames(list(seq), ref, "small blocks")
    st = seq.video_stats()["cam"]
    assert st["frames_decoded"] == 60 and st["gops_started"] == 2
    assert st["gop_requests"] == 16 and st["session_hits"] == 14  # every block after a GOP's first continues it
    assert st["sessions_cached"] >= 1 and st["bytes_cached"] > 0
    # Without a session cache, every block decodes its GOP from the keyframe again.
    cold = RerunIterableDataset(dataset([path]), "frame", fields(session_cache_bytes=0), fetch_size=4, shuffle=False)
    check_frames(list(cold), ref, "no sessions")
    st = cold.video_stats()["cam"]
    assert st["session_hits"] == 0 and st["bytes_cached"] == 0
    # Each block decodes, per GOP it touches, from the keyframe through its last frame there.
    expected = 0
    for b in range(0, 60, 4):
        for kf in (0, 30):
            inside = [v for v in range(b, b + 4) if kf <= v < kf + 30]
            expected += max(inside) - kf + 1 if inside else 0
    assert st["frames_decoded"] == expected
    assert ratio(st) == expected / 60


def test_a_second_epoch_reuses_the_index(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 30, 10)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(30))
    it = RerunIterableDataset(dataset([path]), "frame", fields(), fetch_size=9, shuffle=True)
    for epoch in range(3):
        it.set_epoch(epoch)
        check_frames(list(it), [ref[i] for i in it.shard_order()], f"epoch {epoch}")
    assert it.video_stats()["cam"]["streams_indexed"] == 1


@pytest.mark.parametrize("keyframes", ["sparse", "none", "dense"])
def test_a_first_touch_reads_only_the_gops_a_block_decodes(tmp_path, keyframes):
    """The index is lazy: a block reads the chunks of the GOPs it decodes, not the stream.
    GOP 10 in chunks of 5 packets: a frame in the second half of a GOP needs its chunk and the
    one before (its keyframe's), found from the is_keyframe marks or by stepping back."""
    packets, keys, ref = encoded("h264", 64, 48, 60, 10, seed=4)
    path = vu.write_stream(
        tmp_path / "s.rrd", "seg", packets, range(60), keyframes=keys, keyframe_logging=keyframes, rows_per_chunk=5
    )
    ds = RerunMapDataset(dataset([path]), "frame", fields())
    check_frames(ds.__getitems__([38, 37]), [ref[38], ref[37]], "frames 38, 37")
    stats = ds.video_stats()["cam"]
    assert stats["streams_indexed"] == 1 and stats["clusters_loaded"] == 2, stats  # of 12
    check_frames(ds.__getitems__([31]), [ref[31]], "frame 31")  # in a chunk already read
    assert ds.video_stats()["cam"]["clusters_loaded"] == 2
    check_frames(ds.__getitems__([4, 59]), [ref[4], ref[59]], "frames 4, 59")  # two more GOPs
    assert ds.video_stats()["cam"]["clusters_loaded"] == 5
    # Sequential reading over the lazily indexed stream still decodes every frame once.
    it = RerunIterableDataset(dataset([path]), "frame", fields(), fetch_size=8, shuffle=False)
    check_frames(list(it), list(ref), "sequential")
    assert ratio(it.video_stats()["cam"]) == 1.0


def test_dataloader_workers_decode_the_same_frames(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 40, 10)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(40))
    ds = RerunIterableDataset(dataset([path]), "frame", fields(), fetch_size=6, shuffle=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    frames = torch.cat([b["cam"] for b in loader])
    assert frames.shape == (40, 3, 48, 64)
    # Worker w gets the w-th contiguous shard; batches alternate between workers.
    got = sorted((int(f.float().sum()), i) for i, f in enumerate(frames))
    want = sorted((int(r.astype(np.float64).sum()), i) for i, r in enumerate(ref))
    assert [g[0] for g in got] == [w[0] for w in want]
    assert all(any(np.array_equal(f.numpy(), r) for r in ref) for f in frames)


# --------------------------------------------------------------------------------------------------
# Bad input: a clear error naming segment, column and index value, or a documented missing value.


def _nal_offsets(sample: bytes) -> list[int]:
    out, i = [], 0
    while (j := sample.find(b"\x00\x00\x01", i)) >= 0:
        out.append(j + 3)
        i = j + 3
    return out


def test_corrupt_packet_names_segment_column_and_index(tmp_path):
    packets, keys, ref = encoded("h264", 128, 96, 24, 12)
    broken = list(packets)
    slice_at = _nal_offsets(packets[7])[-1]
    broken[7] = packets[7][: slice_at + 1] + b"\xff\xff\xff\xff" + packets[7][slice_at + 5 :]
    path = vu.write_stream(tmp_path / "s.rrd", "ep_bad", broken, range(100, 124))
    m = RerunMapDataset(dataset([path]), "frame", fields())
    # Frames before the damage decode; a sample that needs the damaged packet raises.
    check_frames(m.__getitems__([0, 6, 12, 20]), [ref[0], ref[6], ref[12], ref[20]], "undamaged")
    with pytest.raises(RrdCorruptError, match=r"segment 'ep_bad'.*/cam:VideoStream:sample.*frame=107"):
        m.__getitems__([9])
    it = RerunIterableDataset(dataset([path]), "frame", fields(), fetch_size=5, shuffle=False)
    with pytest.raises(RrdCorruptError, match="frame=107"):
        list(it)


def test_missing_parameter_sets(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 24, 12)
    offsets = _nal_offsets(packets[12])
    types = [packets[12][o] & 0x1F for o in offsets]
    assert types[:3] == [7, 8, 6] or types[:2] == [7, 8]
    sps_start, pps_start, next_start = offsets[0] - 4, offsets[1] - 4, offsets[2] - 4
    no_sps = packets[12][pps_start:]  # PPS + IDR: not a keyframe (a decoder cannot start there)
    no_pps = packets[12][:pps_start] + packets[12][next_start:]  # SPS + IDR: a keyframe without its PPS
    a = vu.write_stream(tmp_path / "a.rrd", "no_sps", list(packets[:12]) + [no_sps] + list(packets[13:]), range(24))
    m = RerunMapDataset(dataset([a]), "frame", fields())
    # GOP 2 has no keyframe of its own: it decodes from keyframe 0 through the PPS-only IDR,
    # which reuses GOP 1's parameter sets, so the frames still equal PyAV's.
    check_frames(m.__getitems__(list(range(24))), ref, "no SPS")
    assert m.video_stats()["cam"]["gops_started"] == 1
    b = vu.write_stream(tmp_path / "b.rrd", "no_pps", [no_pps] + list(packets[1:12]), range(12))
    m = RerunMapDataset(dataset([b]), "frame", fields())
    with pytest.raises(RrdCorruptError, match=r"segment 'no_pps'.*frame=0.*(parameter set|corrupt)"):
        m.__getitems__([3])
    del sps_start


def test_truncated_samples(tmp_path):
    packets, keys, ref = encoded("h264", 128, 96, 12, 12)
    annexb = list(packets)
    annexb[4] = packets[4][: len(packets[4]) // 3]
    avcc = [vu.to_avcc(p) for p in packets]
    avcc[6] = avcc[6][: len(avcc[6]) - 5]  # the last NAL's length runs past the end
    for seg, samples, value in (("trunc_annexb", annexb, 4), ("trunc_avcc", avcc, 6)):
        path = vu.write_stream(tmp_path / f"{seg}.rrd", seg, samples, range(12))
        m = RerunMapDataset(dataset([path]), "frame", fields())
        check_frames(m.__getitems__([value - 1]), [ref[value - 1]], seg)
        with pytest.raises(RrdCorruptError, match=rf"segment '{seg}'.*frame={value}"):
            m.__getitems__([value + 1])


def test_a_codec_this_build_does_not_decode(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 12, 12)
    path = tmp_path / "vp9.rrd"
    with vu.rr.RecordingStream(vu.APP_ID, recording_id="vp9", send_properties=False) as rec:
        rec.save(path)
        rec.log("/cam", vu.rr.VideoStream(codec=vu.rr.VideoCodec.VP9), static=True)
        rec.send_columns("/cam", indexes=[vu.time_column("frame", "sequence", range(12))],
                         columns=vu.rr.VideoStream.columns(sample=list(packets)))  # fmt: skip
    m = RerunMapDataset(dataset([path]), "frame", fields())
    with pytest.raises(RrdUnsupportedError, match=r"segment 'vp9'.*vp9"):
        m.__getitems__([0])


@pytest.mark.parametrize("order", ["decode", "presentation"])
def test_b_frames_are_refused_never_wrong(tmp_path, order):
    packets, pts = [], []
    cc_packets, _ = vu.encode("h264", 64, 48, 30, 12, bframes=2)
    # The encoder's presentation order of each packet, read back with PyAV.
    dec = vu.av.CodecContext.create("h264", "r")
    for i, p in enumerate(cc_packets):
        pkt = vu.av.Packet(p)
        pkt.pts = i
        dec.decode(pkt)
    packets = cc_packets
    path = vu.write_stream(tmp_path / "b.rrd", "bframes", packets, range(len(packets)))
    if order == "presentation":
        # Logged with their presentation times: sorted by time they are out of decode order.
        out = {}
        dec = vu.av.CodecContext.create("h264", "r")
        for i, p in enumerate(packets):
            pkt = vu.av.Packet(p)
            pkt.pts = i
            for f in dec.decode(pkt):
                out[int(f.pts)] = len(out)
        for f in dec.decode(None):
            out[int(f.pts)] = len(out)
        pts = [out[i] for i in range(len(packets))]
        assert pts != sorted(pts)
        path = vu.write_stream(tmp_path / "b.rrd", "bframes", packets, pts)
    m = RerunMapDataset(dataset([path]), "frame", fields())
    for i in (0, 3, 14):
        with pytest.raises(RrdUnsupportedError, match=r"segment 'bframes'.*B-frames"):
            m.__getitems__([i])


def test_video_fields_refuse_selectors_and_non_blob_columns(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 12, 12)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(12), extra_times=range(12))
    with pytest.raises(InvalidArgumentError, match="selector"):
        RerunMapDataset(dataset([path]), "frame", {"cam": Field(CAM, decode=VideoFrameDecoder(), select=".[0]")})
    with pytest.raises(InvalidArgumentError, match="VideoStream sample column"):
        RerunMapDataset(dataset([path]), "frame", {"x": Field("/idx:Scalars:scalars", decode=VideoFrameDecoder(codec="h264"))})


# --------------------------------------------------------------------------------------------------
# The seed API: context_range, decode called directly, Python subclasses.


def test_context_range_follows_the_seed():
    d = VideoFrameDecoder(keyframe_interval=10, fps_estimate=20.0)
    assert d.context_range(100) == (90, 100)
    assert d.context_range(4) == (0, 4)
    t = np.datetime64(10_000_000_000, "ns")
    lo, hi = d.context_range(t)
    assert hi == t and lo == t - np.timedelta64(500_000_000, "ns") and lo.dtype == np.dtype("datetime64[ns]")
    lo, hi = VideoFrameDecoder().context_range(np.timedelta64(2, "s"))
    assert (int(lo.astype(np.int64)), int(hi.astype(np.int64))) == (1_000_000_000, 2_000_000_000)
    assert lo.dtype == np.dtype("timedelta64[ns]")
    with pytest.raises(InvalidArgumentError):
        VideoFrameDecoder(keyframe_interval=0)
    with pytest.raises(InvalidArgumentError):
        VideoFrameDecoder(fps_estimate=-1)
    assert "VideoFrameDecoder" in repr(VideoFrameDecoder(codec="HEVC")) and "h265" in repr(VideoFrameDecoder(codec="HEVC"))


def test_decode_called_directly(tmp_path):
    import pyarrow as pa

    packets, keys, ref = encoded("h264", 64, 48, 20, 12)
    typ = pa.list_(pa.list_(pa.uint8()))

    def column(rows):
        return pa.chunked_array([pa.array([None if r is None else [list(r)] for r in rows], type=typ)])

    d = VideoFrameDecoder()
    # Rows from the keyframe to the target, with nulls and latest-at repeats in between.
    rows = [packets[12], None, packets[13], packets[13], packets[14]]
    assert np.array_equal(d.decode(column(rows), 14, "seg").numpy(), ref[14])
    # Leading P-frames are skipped up to the first keyframe.
    assert np.array_equal(d.decode(column(list(packets[8:16])), 15, "seg").numpy(), ref[15])
    # No keyframe: None.
    assert d.decode(column(list(packets[1:5])), 4, "seg") is None
    assert d.decode(column([]), 4, "seg") is None
    # H.265 by the codec argument; size.
    p265, k265, r265 = encoded("h265", 64, 48, 8, 8)
    out = VideoFrameDecoder(codec="hevc", size=(24, 32)).decode(column(list(p265[:5])), 4, "seg")
    assert tuple(out.shape) == (3, 24, 32)
    assert np.array_equal(VideoFrameDecoder(codec="h265").decode(column(list(p265[:5])), 4, "s").numpy(), r265[4])


def test_a_python_subclass_that_overrides_decode_gets_the_seed_context(tmp_path):
    packets, keys, ref = encoded("h264", 64, 48, 30, 10)
    path = vu.write_stream(tmp_path / "s.rrd", "seg", packets, range(30))
    calls = []

    class Counting(VideoFrameDecoder):
        def decode(self, raw, index_value, segment_id):
            calls.append((index_value, len(raw)))
            return super().decode(raw, index_value, segment_id)

    m = RerunMapDataset(dataset([path]), "frame", {"cam": Field(CAM, decode=Counting(keyframe_interval=12))})
    got = m.__getitems__([3, 15, 29])
    assert calls == [(3, 4), (15, 13), (29, 13)]  # rows (max(0, v - 12) .. v)
    check_frames(got, [ref[3], ref[15], ref[29]], "subclass")
    assert m.video_stats() == {}  # not a native video field
    # A keyframe interval shorter than the GOP finds no keyframe: None, as in the seed.
    short = RerunMapDataset(dataset([path]), "frame", {"cam": Field(CAM, decode=Counting(keyframe_interval=2))})
    assert short.__getitems__([15])[0]["cam"] is None


def test_recycled_sessions_decode_the_same_frames(tmp_path):
    # Three codecs, two sizes, and a session cache too small for more than a few sessions:
    # most GOPs decode on a reset session of their codec, and the frames do not change.
    specs = {"a": ("h264", 64, 48, 6), "b": ("h265", 64, 48, 5), "c": ("h264", 128, 96, 7), "d": ("av1", 64, 48, 6)}
    paths, refs = [], {}
    for seg, (codec, w, h, gop) in specs.items():
        packets, keys, ref = encoded(codec, w, h, 35, gop, seed=ord(seg) + 1)
        paths.append(vu.write_stream(tmp_path / f"{seg}.rrd", seg, packets, range(35), codec=codec))
        refs[seg] = ref
    src = dataset(paths)
    small = fields(session_cache_bytes=1 << 18)
    it = RerunIterableDataset(src, "frame", small, fetch_size=9, shuffle=True, seed=2)
    expected = [refs[s.segment_id][v] for s in it.sample_index.segments for v in range(s.index_start, s.index_end + 1)]
    check_frames(list(it), [expected[i] for i in it.shard_order()], "recycled sessions")
    st = it.video_stats()["cam"]
    assert st["sessions_recycled"] > 0 and st["sessions_recycled"] <= st["gops_started"]
    assert st["bytes_cached"] <= 1 << 18
