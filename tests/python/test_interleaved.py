"""InterleavedShuffle (issue 13): the decode-once shuffle, in both front ends.

Recordings are written here (videoutil: PyAV's libx264, no B-frames): segments with one or two
H.264 cameras whose GOPs are aligned or not, a numeric field, and a stream without
`is_keyframe` (keyframes from the bitstream). Checked: every sample exactly once per epoch for
several (open_runs, run_length, ranks, workers), with real spawned DataLoader workers too; the
order a pure function of (seed, epoch, topology); each sample equal to the map dataset's value
for the same index (frames pixel-exact); each frame decoded once on the aligned camera; runs
are the GOPs of the first video field; the session budget bounds the decoder sessions.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import rrloader
import rrloader.dataloader as seed_dl
import rrloader.experimental.dataloader as dl
import torch
import videoutil as vu

GOP = 8


@functools.cache
def stream(n: int, gop: int, seed: int):
    packets, keys = vu.encode("h264", 64, 48, n, gop, seed=seed)
    return tuple(packets), tuple(keys)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """seg_0..2: cam (GOP 8; is_keyframe logged sparse, or not at all for seg_1); seg_0_b..2_b: cam with GOP 5."""
    root = tmp_path_factory.mktemp("interleaved")
    for k, (n, marks) in enumerate([(37, "sparse"), (25, "none"), (19, "sparse")]):
        packets, keys = stream(n, GOP, k)
        vu.write_stream(root / f"seg_{k}.rrd", f"seg_{k}", packets, list(range(n)), keyframes=keys,
                        keyframe_logging=marks)
        other, other_keys = stream(n, 5, 10 + k)
        vu.write_stream(root / f"seg_{k}_b.rrd", f"seg_{k}_b", other, list(range(n)), keyframes=other_keys,
                        keyframe_logging="sparse")
    return root


def _fields(m, *, second: bool = False):
    f = {"cam": m.Field("/cam:VideoStream:sample", decode=m.VideoFrameDecoder())}
    if second:
        f["cam2"] = m.Field("/cam:VideoStream:sample", decode=m.VideoFrameDecoder(output_format="yuv420p"))
    return f


def _source(m, data_dir):
    return m.DataSource(rrloader.LocalDataset(sorted(str(p) for p in data_dir.glob("*.rrd"))))


@pytest.mark.parametrize("open_runs", [1, 3, 64])
@pytest.mark.parametrize("run_length", [None, 5])
@pytest.mark.parametrize("ranks,workers", [(1, 1), (2, 1), (1, 3), (2, 2)])
def test_every_sample_once_per_epoch(data_dir, open_runs, run_length, ranks, workers):
    strategy = dl.InterleavedShuffle(open_runs=open_runs, run_length=run_length, seed=3)
    ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl), shuffle_strategy=strategy,
                                 fetch_block_size=16)
    from rrloader._loader._shuffle import shard_plan

    for epoch in (0, 1):
        seen = []
        for rank in range(ranks):
            for worker in range(workers):
                order, ends = shard_plan(ds._shuffle_strategy, ds.sample_index, fetch_block_size=16, epoch=epoch,
                                         rank=rank, world_size=ranks, worker=worker, num_workers=workers)
                assert ends[-1] == len(order) if len(order) else True
                seen.extend(order.tolist())
        assert sorted(seen) == list(range(len(ds))), (epoch, ranks, workers)


def test_runs_are_the_gops_of_the_first_video_field(data_dir):
    ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl),
                                 shuffle_strategy=dl.InterleavedShuffle(open_runs=4))
    starts, lengths = ds._shuffle_strategy.runs(ds.sample_index)
    expected = []
    for k, seg in enumerate(ds.sample_index.segments):
        parts = seg.segment_id.split("_")  # seg_K or seg_K_b
        _, keys = stream(seg.num_samples, GOP if len(parts) == 2 else 5, int(parts[1]) + (0 if len(parts) == 2 else 10))
        base = int(ds.sample_index.segment_offsets[k])
        expected.extend(base + i for i, key in enumerate(keys) if key)
    assert starts.tolist() == expected
    assert lengths.sum() == len(ds)


def test_order_is_a_pure_function_of_seed_and_epoch(data_dir):
    def order(seed, epoch):
        ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl),
                                     shuffle_strategy=dl.InterleavedShuffle(open_runs=4, seed=seed))
        ds.set_epoch(epoch)
        return ds._plan().order.tolist()

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)


@pytest.mark.parametrize("front", ["0.41", "seed"])
def test_samples_equal_the_map_dataset_and_frames_decode_once(data_dir, front):
    m = dl if front == "0.41" else seed_dl
    strategy = dl.InterleavedShuffle(open_runs=4, seed=5)
    if front == "0.41":
        ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl, second=True),
                                     shuffle_strategy=strategy, fetch_block_size=16)
        order = ds._plan().order.tolist()
    else:
        ds = seed_dl.RerunIterableDataset(_source(seed_dl, data_dir), "frame", _fields(seed_dl), fetch_size=16,
                                          shuffle_strategy=strategy)
        order = ds.shard_order().tolist()
    got = list(ds)
    ref = m.RerunMapDataset(_source(m, data_dir), "frame", _fields(m, second=front == "0.41")).__getitems__(order)
    assert len(got) == len(ref) == len(order)
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a["cam"], b["cam"])
        if front == "0.41":
            assert torch.equal(a["cam2"].y, b["cam2"].y) and torch.equal(a["cam2"].uv, b["cam2"].uv)
    stats = ds.video_stats()["cam"]
    # Runs are cam's GOPs and every open GOP keeps its session: each frame decoded once.
    assert stats["frames_decoded"] == stats["frames_delivered"] == len(order)
    # Consecutive samples of a round come from different runs.
    runs = np.searchsorted(ds._shuffle_strategy.runs(ds.sample_index)[0] if front == "0.41"
                           else ds._strategy.runs(ds.sample_index)[0], order, side="right")
    assert len(set(runs[:4].tolist())) == 4


@pytest.mark.parametrize("seed", [0, 4, 5])
@pytest.mark.parametrize("open_runs,fetch", [(4, 4), (4, 16), (4, 64), (8, 64), (3, 1000)])
def test_each_frame_decoded_once_at_any_fetch_size(data_dir, seed, open_runs, fetch):
    """A fetch block opens up to one run per sample while its open runs keep their sessions: the
    strategy's session count covers them (open_runs + fetch_block_size), so no GOP is decoded twice."""
    ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl), fetch_block_size=fetch,
                                 shuffle_strategy=dl.InterleavedShuffle(open_runs=open_runs, seed=seed))
    n = sum(1 for _ in ds)
    stats = ds.video_stats()["cam"]
    assert stats["frames_decoded"] == stats["frames_delivered"] == n == len(ds)


@pytest.mark.parametrize("ranks,workers", [(1, 2), (1, 3), (2, 2), (1, 4)])
def test_shards_are_cut_from_whole_runs(data_dir, ranks, workers):
    """Each shard interleaves its own runs: at most one of them (the one a shard boundary cuts)
    starts past its first sample, so a worker never starts in the middle of open runs."""
    from rrloader._loader._shuffle import shard_plan

    ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl),
                                 shuffle_strategy=dl.InterleavedShuffle(open_runs=4, seed=2))
    starts, _ = ds._shuffle_strategy.runs(ds.sample_index)
    sizes = []
    for rank in range(ranks):
        for worker in range(workers):
            order, _ = shard_plan(ds._shuffle_strategy, ds.sample_index, fetch_block_size=16, epoch=1, rank=rank,
                                  world_size=ranks, worker=worker, num_workers=workers)
            run = np.searchsorted(starts, order, side="right") - 1
            first = {}
            for r, i in zip(run.tolist(), order.tolist(), strict=True):
                assert i > first.get(r, -1), "a run's samples come in their natural order"
                first.setdefault(r, i)
            entered_late = [r for r, i in first.items() if i != starts[r]]
            assert len(entered_late) <= 1, (rank, worker, entered_late)
            sizes.append(len(order))
    per = len(ds) // ranks // workers
    assert all(size >= per for size in sizes) and sum(sizes) == len(ds)


def test_spawned_workers_cover_the_epoch(data_dir):
    ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", _fields(dl),
                                 shuffle_strategy=dl.InterleavedShuffle(open_runs=4, seed=1), fetch_block_size=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    frames = [s["cam"] for s in loader]
    ref = dl.RerunMapDataset(_source(dl, data_dir), "frame", _fields(dl)).__getitems__(list(range(len(ds))))
    assert len(frames) == len(ref)
    remaining = [r["cam"] for r in ref]
    for f in frames:  # every sample once: each yielded frame matches one not yet seen
        k = next(i for i, r in enumerate(remaining) if torch.equal(r, f))
        remaining.pop(k)
    assert not remaining


def test_session_budget_bounds_the_sessions(data_dir):
    no_reuse = {"cam": dl.Field("/cam:VideoStream:sample", decode=dl.VideoFrameDecoder(max_decoder_sessions=0))}
    for budget in (1, 64 << 20):
        ds = dl.RerunIterableDataset(_source(dl, data_dir), "frame", no_reuse, fetch_block_size=8,
                                     shuffle_strategy=dl.InterleavedShuffle(open_runs=4, max_session_bytes=budget))
        peak = 0
        for _ in ds:
            peak = max(peak, ds.video_stats()["cam"]["bytes_cached"])
        stats = ds.video_stats()["cam"]
        assert peak <= budget
        if budget > 1:  # room for the open runs' sessions: every frame decoded once
            assert stats["frames_decoded"] == stats["frames_delivered"]
        else:
            assert stats["frames_decoded"] > stats["frames_delivered"]
    assert dl.InterleavedShuffle(open_runs=4).session_cache_bytes() == 4 * (16 << 20)
    with pytest.raises(ValueError):
        dl.InterleavedShuffle(open_runs=0)
    with pytest.raises(ValueError):
        dl.InterleavedShuffle(run_length=0)
