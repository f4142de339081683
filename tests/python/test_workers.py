"""An engine inside DataLoader workers: its CPU budget (issue 14).

N workers on C usable cores: each worker's engine gets a budget of ``max(1, C // N)`` busy threads
(``decode_threads`` caps it), counting its pipeline's fetch and decode stages, its pool's tasks and
a video session's libavcodec threads. Checked here from the engine's own statistics
(``thread_stats()``), taken inside each real spawned worker by ``worker_probe.StatsProbe``: the
most threads busy at once never exceeded the budget, the pool was sized to it, and the samples are
the ones the same dataset gives at ``num_workers=0``. Memory bounds (``max_ready_bytes``) hold in a
worker as they do in the main process.
"""

from __future__ import annotations

import os

import dlutil
import numpy as np
import pytest
import rrloader
import rrloader.experimental.dataloader as dl
import torch
import videoutil as vu
from torch.utils.data import DataLoader
from worker_probe import StatsProbe

FRAMES = 48
SEGMENTS = ("w0", "w1")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import rerun as rr

    out = tmp_path_factory.mktemp("workers")
    for k, seg in enumerate(SEGMENTS):
        with rr.RecordingStream(dlutil.APP_ID, recording_id=seg, send_properties=False) as rec:
            rec.save(out / f"{seg}.rrd")
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            for f in range(FRAMES):
                rec.set_time("frame", sequence=f)
                blob = dlutil.encode(dlutil.pattern_rgb(48, 64, f + 7 * k), "JPEG", quality=90)
                rec.log("/cam", rr.EncodedImage(contents=blob, media_type="image/jpeg"))
                rec.log("/state", rr.Scalars(np.array([float(f), float(k)])))
    return out


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("workers_video")
    packets, keys = vu.encode("h264", 64, 48, 40, 10, seed=3)
    vu.write_stream(out / "v.rrd", "v", packets, list(range(len(packets))), keyframes=keys)
    return out


def source(folder):
    return dl.DataSource(rrloader.LocalDataset(sorted(str(p) for p in folder.glob("*.rrd"))))


def jpeg_dataset(folder, **kw):
    fields = {
        "cam": dl.Field("/cam:EncodedImage:blob", decode=dl.ImageDecoder()),
        "state": dl.Field("/state:Scalars:scalars", decode=dl.NumericDecoder()),
    }
    kw.setdefault("shuffle_strategy", dl.SampleShuffle())
    kw.setdefault("fetch_block_size", 8)
    return dl.RerunIterableDataset(source(folder), "frame", fields, **kw)


def run(dataset, workers: int, hold_s: float = 0.0):
    """The samples (in DataLoader order) and each worker's report."""
    kw = {"multiprocessing_context": "spawn"} if workers else {}
    samples, reports = [], []
    for kind, item in DataLoader(StatsProbe(dataset, hold_s), batch_size=None, num_workers=workers, **kw):
        (samples if kind == "sample" else reports).append(item)
    return samples, reports


def key(sample) -> tuple:
    return tuple(sample["state"].tolist())


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_each_worker_keeps_to_its_share_of_the_cores(data_dir, workers):
    want, main = run(jpeg_dataset(data_dir), 0)
    got, reports = run(jpeg_dataset(data_dir), workers)
    # The same samples (each worker reads its shard of the same epoch order) with the same pixels.
    assert sorted(map(key, got)) == sorted(map(key, want))
    by_key = {key(s): s for s in want}
    for s in got:
        assert torch.equal(s["cam"], by_key[key(s)]["cam"])
    # In the main process: no budget, a pool of every core.
    assert main[0]["threads"]["budget"] == 0
    assert main[0]["threads"]["pool_threads"] == usable_cores()
    assert sorted(r["worker"] for r in reports) == list(range(workers))
    for r in reports:
        t = r["threads"]
        budget = max(1, r["cores"] // workers)
        assert t["budget"] == budget, r
        assert 1 <= t["pool_threads"] <= budget, r
        assert t["task_weight"] == 1, r  # JPEG tasks are one thread each
        assert 1 <= t["max_busy"] <= budget, (
            f"worker {r['worker']} ran more busy threads than its budget: {t}"
        )
        assert t["busy_now"] == 0, r
        # The pipeline's two stage threads ended with the iteration; the pool's own threads remain.
        assert t["threads_alive"] == t["pool_threads"] - 1, r
        assert t["threads_started"] == t["pool_threads"] - 1 + 2, r


def test_decode_threads_caps_the_budget(data_dir):
    _, reports = run(jpeg_dataset(data_dir, decode_threads=1), 1)
    assert reports[0]["threads"]["budget"] == 1
    assert reports[0]["threads"]["pool_threads"] == 1
    assert reports[0]["threads"]["max_busy"] == 1


def test_a_video_session_weighs_its_libavcodec_threads(video_dir):
    fields = {"cam": dl.Field("/cam:VideoStream:sample", decode=dl.VideoFrameDecoder())}
    ds = dl.RerunIterableDataset(source(video_dir), "frame", fields, shuffle_strategy=dl.NoShuffle())
    want, _ = run(ds, 0)
    got, reports = run(ds, 1)
    assert len(got) == len(want) == 40
    assert all(torch.equal(a["cam"], b["cam"]) for a, b in zip(got, want, strict=True))
    t = reports[0]["threads"]
    budget = reports[0]["cores"]  # one worker: every core
    assert t["budget"] == budget
    # libavcodec gets at most the budget's threads; a pool task holds as many slots, so the pool
    # has only as many threads as fit.
    assert 1 <= t["task_weight"] <= budget
    assert t["pool_threads"] * t["task_weight"] <= max(budget, t["task_weight"])
    assert t["max_busy"] <= budget


def test_memory_bounds_hold_in_a_worker(data_dir):
    """max_ready_bytes=1 and one block ahead: while the worker holds its first sample, its engine
    has fetched at most the block being consumed, the one decoded and the one being fetched."""
    block = 8
    ds = jpeg_dataset(data_dir, fetch_block_size=block, prefetch_blocks=1, max_ready_bytes=1)
    got, reports = run(ds, 1, hold_s=1.0)
    assert len(got) == FRAMES * len(SEGMENTS)
    ahead = reports[0]["fetched_ahead"]
    assert 0 < ahead <= 3 * block, reports[0]
    # and without the bound the same wait lets it read far more (the check above can fail)
    _, free = run(jpeg_dataset(data_dir, fetch_block_size=block), 1, hold_s=1.0)
    assert free[0]["fetched_ahead"] > ahead


def test_an_iteration_inherited_through_fork_is_dropped_without_a_hang(data_dir):
    """A forked child (a DataLoader worker, say) that frees an iterator its parent had started
    must neither join the parent's threads nor destroy condition variables they were waiting on
    (glibc's pthread_cond_destroy waits for those waiters forever): the native objects are leaked
    there. The pipeline is left stalled (max_ready_bytes=1) so that its threads are waiting when
    the process forks; the child drops the iterator, the dataset and its engine, then exits."""
    import gc
    import time

    ds = jpeg_dataset(data_dir, prefetch_blocks=1, max_ready_bytes=1)
    it = iter(ds)
    first = next(it)
    time.sleep(0.3)  # the fetch and decode threads are now waiting for room
    pid = os.fork()
    if pid == 0:  # the child: drop everything the parent had, then exit without cleanup
        code = 1
        try:
            del it
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung freeing an iterator started by its parent")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # the parent's iteration goes on unharmed
    rest = list(it)
    assert len(rest) + 1 == FRAMES * len(SEGMENTS)
    assert first["cam"].shape == rest[0]["cam"].shape


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory):
    """One segment of 96 320x240 JPEG frames (230 KB decoded each)."""
    import rerun as rr

    out = tmp_path_factory.mktemp("workers_big")
    with rr.RecordingStream(dlutil.APP_ID, recording_id="big", send_properties=False) as rec:
        rec.save(out / "big.rrd")
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        for f in range(96):
            rec.set_time("frame", sequence=f)
            blob = dlutil.encode(dlutil.pattern_rgb(240, 320, f), "JPEG", quality=90)
            rec.log("/cam", rr.EncodedImage(contents=blob, media_type="image/jpeg"))
            rec.log("/state", rr.Scalars(np.array([float(f), 0.0])))
    return out


@pytest.mark.parametrize("strategy", ["none", "sample", "block"])
def test_pieces_bound_decoded_memory_without_changing_samples(big_dir, strategy):
    """max_ready_bytes=16 MiB: the engine decodes 4 MiB pieces (18 samples of 230 KB) of the
    64-sample fetch blocks; the samples and their order are those of an uncut run."""
    make = {"none": dl.NoShuffle, "sample": dl.SampleShuffle, "block": dl.BlockShuffle}[strategy]

    def read(**kw):
        ds = jpeg_dataset(big_dir, shuffle_strategy=make(), fetch_block_size=64, **kw)
        ds.set_epoch(3)
        return [(key(s), s["cam"]) for s in ds], ds.fetch_stats()

    whole, whole_stats = read()
    cut, cut_stats = read(max_ready_bytes=16 << 20)
    assert [k for k, _ in cut] == [k for k, _ in whole]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(cut, whole, strict=True))
    assert whole_stats["samples"] == cut_stats["samples"] == 96
    # uncut: the ramp's blocks (16, 16, 32) then 64-sample ones; cut: once the first piece is
    # decoded (its bytes per sample known), pieces of at most 18 samples
    assert cut_stats["blocks"] > whole_stats["blocks"], (cut_stats, whole_stats)


def test_an_iteration_ends_with_no_idle_decode_buffers(big_dir):
    """Pieces of 18 samples (max_ready_bytes=16 MiB over 64-sample blocks) go back to the pool as
    the consumer drops them; once the consumer has taken the last sample, the buffers left idle
    are freed, not kept through the pause between epochs (the number left would depend on when
    the consumer dropped what; whether the pool reused any during the epoch depends on timing,
    so it is not asserted)."""
    ds = jpeg_dataset(
        big_dir, shuffle_strategy=dl.SampleShuffle(), fetch_block_size=64, max_ready_bytes=16 << 20
    )
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        seen = 0
        for sample in ds:  # each sample dropped as the next comes, as a training loop does
            seen += 1
            assert sample["cam"].shape == (3, 240, 320)
        stats = ds.fetch_stats()
        assert seen == 96
        assert stats["buffer_pool_idle_bytes"] == 0, stats
        del sample
        # the last piece's buffer, released by the consumer afterwards, waits for the next epoch
        assert ds.fetch_stats()["buffer_pool_idle_bytes"] > 0
