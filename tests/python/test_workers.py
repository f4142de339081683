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
