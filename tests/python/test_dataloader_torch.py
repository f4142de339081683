"""Iteration through PyTorch (issue 3): shards, epochs, DataLoader workers, DDP, early exit, errors.

The recordings are tiny and built here with rerun-sdk: segment ``seg{k}`` logs, on the sequence
timeline ``frame``, ``/id`` Scalars ``[k, frame]`` and ``/img`` a 4x6 RGB PNG whose pixels all equal
``(40 * k + frame) % 256``. So every sample names itself (segment, index value), and its image must
agree with its id. The segments start at different frames and have lengths that no shard count
here divides, so shard remainders are exercised.

What is checked (seed API generation: ``RerunIterableDataset(..., fetch_size, shuffle, *, seed)``):

* the epoch order is a permutation of every sample, a function of ``(seed, epoch)`` only; the shard
  of ``(rank, world)`` then ``(worker, num_workers)`` is contiguous and balanced; the union of all
  shards is every sample exactly once — simulated (monkeypatched rank/worker), through real
  DataLoader workers, and under ``torchrun --nproc_per_node=2`` with gloo (``ddp_worker.py``);
* DataLoader at ``num_workers`` 0 and > 0, fork and spawn, persistent workers, ``pin_memory``,
  default collate and ``collate_samples``: every sample exactly once per epoch;
* ``set_epoch`` with persistent workers (the seed's pitfall: the worker copies never see it);
* early exit frees the pipeline's threads; a corrupt image fails at its block, not with a hang;
* the same index gives identical tensors through the iterable dataset (0 or 2 workers) and the
  map dataset.
"""

from __future__ import annotations

import gc
import io
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rrloader
import rrloader.dataloader as dl
import torch
from torch.utils.data import DataLoader, DistributedSampler

# 3 workers on a 2-core machine: torch's advisory warning, not under test
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

HERE = Path(__file__).resolve().parent
PYTHON_DIR = Path(rrloader.__file__).resolve().parents[1]  # where the rrloader under test lives (repo or site-packages)

# segment k: (first frame, number of frames); 31 samples in all
SEGMENTS = ((0, 11), (3, 6), (10, 14))
TOTAL = sum(n for _, n in SEGMENTS)
IMG_H, IMG_W = 4, 6
BAD_SEGMENT, BAD_FRAME = 1, 5  # in the corrupt dataset: /img at seg1, frame 5 is not an image


def pixel(seg: int, frame: int) -> int:
    return (40 * seg + frame) % 256


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((IMG_H, IMG_W, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_segment(path: Path, seg: int, start: int, n: int, bad_frame: int | None = None) -> Path:
    import rerun as rr

    frames = np.arange(start, start + n, dtype=np.int64)
    ids = np.stack([np.full(n, seg, np.float64), frames.astype(np.float64)], axis=1)
    blobs = [b"\xff\xd8\xffnot a jpeg" if f == bad_frame else _png(pixel(seg, int(f))) for f in frames]
    with rr.RecordingStream("rrloader_torch_test", recording_id=f"seg{seg}", send_properties=False) as rec:
        rec.save(path)
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        index = [rr.TimeColumn("frame", sequence=frames)]
        rec.send_columns("/id", indexes=index, columns=rr.Scalars.columns(scalars=ids))
        rec.send_columns(
            "/img", indexes=index, columns=rr.EncodedImage.columns(blob=blobs, media_type=["image/png"] * n)
        )
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch_data")
    for k, (start, n) in enumerate(SEGMENTS):
        write_segment(out / f"seg{k}.rrd", k, start, n)
    return out


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch_bad")
    for k, (start, n) in enumerate(SEGMENTS):
        write_segment(out / f"seg{k}.rrd", k, start, n, bad_frame=BAD_FRAME if k == BAD_SEGMENT else None)
    return out


def fields() -> dict[str, rrloader.Field]:
    return {
        "id": rrloader.Field("/id:Scalars:scalars", decode=rrloader.NumericDecoder()),
        "img": rrloader.Field("/img:EncodedImage:blob", decode=rrloader.ImageDecoder()),
    }


def source(directory: Path) -> rrloader.DataSource:
    return rrloader.DataSource(rrloader.LocalDataset(sorted(str(p) for p in directory.glob("*.rrd"))))


def iterable(directory: Path, **kw) -> rrloader.RerunIterableDataset:
    kw.setdefault("fetch_size", 4)
    return rrloader.RerunIterableDataset(source(directory), "frame", fields(), **kw)


def mapped(directory: Path, **kw) -> rrloader.RerunMapDataset:
    return rrloader.RerunMapDataset(source(directory), "frame", fields(), **kw)


def all_ids() -> list[tuple[int, int]]:
    return [(k, f) for k, (start, n) in enumerate(SEGMENTS) for f in range(start, start + n)]


def global_to_id(ds) -> dict[int, tuple[int, int]]:
    """Global sample number -> (segment number, frame), from the dataset's sample index."""
    out = {}
    for g in range(len(ds)):
        seg, value = ds.sample_index.global_to_local(g)
        out[g] = (int(seg.segment_id.removeprefix("seg")), int(value))
    return out


def sample_id(sample: dict) -> tuple[int, int]:
    """A sample's (segment, frame), after checking its image agrees with it."""
    seg, frame = (int(v) for v in sample["id"].tolist())
    img = sample["img"]
    assert tuple(img.shape) == (3, IMG_H, IMG_W) and img.dtype == torch.uint8
    assert bool((img == pixel(seg, frame)).all()), f"image of ({seg}, {frame}) belongs to another sample"
    return seg, frame


def batch_ids(batch) -> list[tuple[int, int]]:
    """(segment, frame) of every sample of a DataLoader item: one sample, a default-collated batch
    (dict of [B, ...]) or a collate_samples batch ((batch, missing))."""
    if isinstance(batch, tuple):
        values, missing = batch
        assert set(missing) == {"id", "img"}
        assert not any(bool(m.any()) for m in missing.values())
        batch = values
    ids = batch["id"]
    if ids.dim() == 1:
        return [sample_id(batch)]
    assert ids.dtype == torch.float64 and ids.shape[1] == 2
    assert tuple(batch["img"].shape) == (ids.shape[0], 3, IMG_H, IMG_W)
    return [sample_id({"id": i, "img": m}) for i, m in zip(ids, batch["img"], strict=True)]


def loader_ids(loader) -> list[tuple[int, int]]:
    return [i for b in loader for i in batch_ids(b)]


def assert_exactly_once(ids: list[tuple[int, int]]) -> None:
    assert len(ids) == TOTAL, f"{len(ids)} samples, expected {TOTAL}"
    assert sorted(ids) == sorted(all_ids()), "not every sample exactly once"


def simulated_shard(ds, monkeypatch, rank: int, world: int, worker: int, workers: int) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(dl, "_distributed", lambda: (rank, world))
        m.setattr(dl, "_worker", lambda: (worker, workers))
        return ds.shard_order()


def interleave(shards: list[list]) -> list:
    """The order DataLoader yields an IterableDataset's items from its workers: round robin,
    skipping exhausted workers."""
    out, pos = [], [0] * len(shards)
    while any(p < len(s) for p, s in zip(pos, shards, strict=True)):
        for w, s in enumerate(shards):
            if pos[w] < len(s):
                out.append(s[pos[w]])
                pos[w] += 1
    return out


def run_with_deadline(fn, seconds: float):
    """Run fn in a thread; fail (rather than hang the suite) when it does not finish in time."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"did not finish within {seconds} s (hang)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PYTHON_DIR), env.get("PYTHONPATH", "")) if p)
    env["MASTER_ADDR"] = "127.0.0.1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# --------------------------------------------------------------------------- 0. torch types
def test_datasets_are_torch_datasets(data_dir):
    """DataLoader tells iterable from map-style by isinstance(IterableDataset): the seed's datasets
    are torch datasets, and a plain DataLoader must iterate (not index) the iterable one."""
    it = iterable(data_dir, shuffle=False)
    assert isinstance(it, torch.utils.data.IterableDataset)
    assert isinstance(mapped(data_dir), torch.utils.data.Dataset)
    first = next(iter(DataLoader(it, batch_size=None)))
    assert sample_id(first) == (0, SEGMENTS[0][0])


# --------------------------------------------------------------------------- 1. coverage & order
@pytest.mark.parametrize("world,workers", [(1, 1), (1, 3), (2, 2), (3, 2), (4, 1), (2, 20)])
def test_simulated_shards_cover_the_epoch_exactly_once(data_dir, monkeypatch, world, workers):
    ds = iterable(data_dir, seed=7)
    ds.set_epoch(2)
    full = np.asarray(ds.shard_order())
    assert simulated_shard(ds, monkeypatch, world - 1, world, 0, workers).size < TOTAL or world * workers == 1
    assert (
        len(ds) == TOTAL
    )  # len is the whole epoch, whatever the rank  # world 1, no worker: the whole epoch order
    assert sorted(full.tolist()) == list(range(TOTAL))
    assert full.tolist() != list(range(TOTAL)), "shuffle=True left the natural order"

    shards, rank_sizes = [], []
    for rank in range(world):
        rank_shards = [simulated_shard(ds, monkeypatch, rank, world, w, workers) for w in range(workers)]
        rank_sizes.append(sum(len(s) for s in rank_shards))
        sizes = [len(s) for s in rank_shards]
        assert max(sizes) - min(sizes) <= 1, f"unbalanced worker shards {sizes}"
        shards.extend(rank_shards)
    assert max(rank_sizes) - min(rank_sizes) <= 1, f"unbalanced rank shards {rank_sizes}"
    # contiguous: rank-major, worker-minor concatenation is the epoch order itself
    assert np.concatenate(shards).tolist() == full.tolist()

    # and iterating each (rank, worker) yields exactly its shard's samples, in shard order
    g2id = global_to_id(ds)
    seen = []
    for rank in range(world):
        for w in range(workers):
            with monkeypatch.context() as m:
                m.setattr(dl, "_distributed", lambda rank=rank: (rank, world))
                m.setattr(dl, "_worker", lambda w=w: (w, workers))
                got = [sample_id(s) for s in ds]
            assert got == [g2id[int(g)] for g in shards[rank * workers + w]]
            seen.extend(got)
    assert_exactly_once(seen)


def test_order_is_a_function_of_seed_and_epoch(data_dir):
    a = iterable(data_dir, seed=11, fetch_size=3)
    b = iterable(data_dir, seed=11, fetch_size=8, decode_threads=1)
    order = [sample_id(s) for s in a]
    assert_exactly_once(order)
    assert [sample_id(s) for s in b] == order, "two instances with the same seed disagree"
    assert a.shard_order().tolist() == b.shard_order().tolist()
    assert [sample_id(s) for s in a] == order, "iterating again changed the order"

    other_seed = [sample_id(s) for s in iterable(data_dir, seed=12)]
    assert sorted(other_seed) == sorted(order) and other_seed != order

    a.set_epoch(1)
    epoch1 = [sample_id(s) for s in a]
    assert sorted(epoch1) == sorted(order) and epoch1 != order
    b.set_epoch(1)
    assert [sample_id(s) for s in b] == epoch1
    a.set_epoch(0)
    assert [sample_id(s) for s in a] == order, "returning to epoch 0 did not give epoch 0's order"

    natural = [sample_id(s) for s in iterable(data_dir, shuffle=False, seed=99)]
    assert natural == all_ids()


@pytest.mark.parametrize("world,workers", [(2, 2), (3, 2), (1, 3)])
def test_real_dataloader_workers_cover_each_simulated_rank(data_dir, monkeypatch, world, workers):
    """Real forked DataLoader workers (the rank is simulated; fork carries the patch)."""
    ds = iterable(data_dir, seed=3)
    ds.set_epoch(1)
    g2id = global_to_id(ds)
    seen = []
    for rank in range(world):
        expected = [
            [g2id[int(g)] for g in simulated_shard(ds, monkeypatch, rank, world, w, workers)]
            for w in range(workers)
        ]
        with monkeypatch.context() as m:
            m.setattr(dl, "_distributed", lambda rank=rank: (rank, world))
            loader = DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context="fork")
            got = loader_ids(loader)
        assert got == interleave(expected)
        seen.extend(got)
    assert_exactly_once(seen)


# --------------------------------------------------------------------------- 2. DataLoader configs
CONFIGS = {
    # name: (num_workers, context, persistent_workers, pin_memory, batch_size, collate_fn)
    "main-unbatched": (0, None, False, False, None, None),
    "main-b4-pin-collate_samples": (0, None, False, True, 4, rrloader.collate_samples),
    "fork1-b3": (1, "fork", False, False, 3, None),
    "spawn1-pin-b4": (1, "spawn", False, True, 4, None),
    "fork2-persistent-pin-b4": (2, "fork", True, True, 4, None),
    "fork3-b5-collate_samples": (3, "fork", False, False, 5, rrloader.collate_samples),
    "spawn2-persistent-pin-b4-collate_samples": (2, "spawn", True, True, 4, rrloader.collate_samples),
    "fork4-persistent-b2-collate_samples": (4, "fork", True, False, 2, rrloader.collate_samples),
    "spawn4-b3": (4, "spawn", False, False, 3, None),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_dataloader_configurations_yield_every_sample_once_per_epoch(data_dir, monkeypatch, capfd, name):
    """Two epochs per configuration, set_epoch before each. Beyond "every sample once", the exact
    order is checked: each worker batches its own shard of the epoch, and DataLoader takes the
    workers' batches round robin — so set_epoch must have reached (persistent) workers too."""
    workers, ctx, persistent, pin, batch_size, collate = CONFIGS[name]
    ds = iterable(data_dir, seed=5)
    g2id = global_to_id(ds)
    kw = {"batch_size": batch_size, "num_workers": workers, "pin_memory": pin}
    if collate is not None:
        kw["collate_fn"] = collate
    if workers:
        kw.update(multiprocessing_context=ctx, persistent_workers=persistent)
    loader = DataLoader(ds, **kw)
    accelerator = torch.accelerator.is_available()
    chunk = batch_size or 1
    for epoch in range(2):
        ds.set_epoch(epoch)
        shards = [
            [g2id[int(g)] for g in simulated_shard(ds, monkeypatch, 0, 1, w, max(workers, 1))]
            for w in range(max(workers, 1))
        ]
        expected = interleave([[s[i : i + chunk] for i in range(0, len(s), chunk)] for s in shards])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(loader)
        assert [batch_ids(b) for b in batches] == expected, f"epoch {epoch}: unexpected batches"
        assert_exactly_once([i for b in batches for i in batch_ids(b)])
        tensors = [t for b in batches for t in _tensors(b)]
        if pin and accelerator:
            assert all(t.is_pinned() for t in tensors)
        else:
            assert not any(t.is_pinned() for t in tensors)
        no_accel = [w for w in caught if "no accelerator" in str(w.message)]
        # torch 2.13 on a CPU-only machine: pin_memory=True only warns (once per iterator) and
        # hands the batches over unpinned
        if pin and not accelerator and (epoch == 0 or not persistent):
            assert no_accel, "expected torch's 'no accelerator' pin_memory warning"
        else:
            assert not no_accel
    # the workers end (persistent ones when the loader goes) without noise on stderr: a spawned
    # worker runs the interpreter's teardown, where nanobind reports objects still alive
    del loader, batches
    gc.collect()
    err = capfd.readouterr().err
    assert "nanobind: leaked" not in err, err[-2000:]


def _tensors(item) -> list:
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, dict):
        return [t for v in item.values() for t in _tensors(v)]
    if isinstance(item, tuple | list):
        return [t for v in item for t in _tensors(v)]
    return []


def test_set_epoch_reaches_persistent_workers(data_dir, monkeypatch):
    """The seed's pitfall: persistent workers hold copies of the dataset made at the first
    iter(loader). Calling set_epoch(e) before each epoch must still give epoch e's order
    (rrloader keeps the epoch in shared memory). Forked workers here, three epochs; spawned
    persistent workers are covered by the "spawn2-persistent-..." DataLoader configuration."""
    ctx = "fork"
    workers = 2
    ds = iterable(data_dir, seed=21)
    g2id = global_to_id(ds)
    loader = DataLoader(
        ds, batch_size=None, num_workers=workers, multiprocessing_context=ctx, persistent_workers=True
    )
    orders = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        expected = interleave(
            [
                [g2id[int(g)] for g in simulated_shard(ds, monkeypatch, 0, 1, w, workers)]
                for w in range(workers)
            ]
        )
        got = loader_ids(loader)
        assert_exactly_once(got)
        orders.append(got)
        assert got == expected, f"epoch {epoch}: persistent workers did not use set_epoch({epoch})"
    assert orders[0] != orders[1] != orders[2]


# --------------------------------------------------------------------------- 3. torchrun / DDP
DDP_SEED, DDP_EPOCH = 13, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_iterable_and_map(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "ranks"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(_free_port()),
        str(HERE / "ddp_worker.py"),
        str(data_dir),
        str(out),
        "--seed",
        str(DDP_SEED),
        "--epoch",
        str(DDP_EPOCH),
    ]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ds = iterable(data_dir, seed=DDP_SEED)
    ds.set_epoch(DDP_EPOCH)
    g2id = global_to_id(ds)
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for r, rep in enumerate(reports):
        assert rep["rank"] == r and rep["world"] == 2
        assert rep["steps"]["iterable"] >= 2 and rep["steps"]["map"] >= 2
        assert all(np.isfinite(rep["losses"]["iterable"])) and all(np.isfinite(rep["losses"]["map"]))

    # iterable: each rank's samples are its (rank, world=2) shard; disjoint; union = the epoch
    it_sets = [{tuple(i) for i in rep["iterable"]} for rep in reports]
    for r, rep in enumerate(reports):
        assert len(rep["iterable"]) == len(it_sets[r]), "a rank saw a sample twice"
        shard = [g2id[int(g)] for g in simulated_shard(ds, monkeypatch, r, 2, 0, 1)]
        assert sorted(map(tuple, rep["iterable"])) == sorted(shard)
    assert not it_sets[0] & it_sets[1]
    assert_exactly_once([tuple(i) for rep in reports for i in rep["iterable"]])

    # map + DistributedSampler(drop_last=True): disjoint, the sampler's indices, TOTAL // 2 each
    m = mapped(data_dir)
    map_sets = []
    for r, rep in enumerate(reports):
        sampler = DistributedSampler(m, num_replicas=2, rank=r, shuffle=True, seed=0, drop_last=True)
        sampler.set_epoch(DDP_EPOCH)
        assert [tuple(i) for i in rep["map"]] == [g2id[g] for g in sampler]
        assert len(rep["map"]) == TOTAL // 2
        map_sets.append({tuple(i) for i in rep["map"]})
    assert not map_sets[0] & map_sets[1]

    # DDP kept the replicas in sync
    assert reports[0]["params"] == pytest.approx(reports[1]["params"])


# --------------------------------------------------------------------------- 4. early exit, errors
def _task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _wait_for_tasks(n: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while _task_count() > n and time.monotonic() < deadline:
        time.sleep(0.01)
    return _task_count()


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    """One segment of 2000 frames: long enough that the pipeline is still running after sample 1."""
    import rerun as rr

    out = tmp_path_factory.mktemp("torch_long")
    n = 2000
    frames = np.arange(n, dtype=np.int64)
    with rr.RecordingStream("rrloader_torch_test", recording_id="long", send_properties=False) as rec:
        rec.save(out / "long.rrd")
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        ids = np.stack([np.zeros(n), frames.astype(np.float64)], axis=1)
        rec.send_columns(
            "/id", indexes=[rr.TimeColumn("frame", sequence=frames)], columns=rr.Scalars.columns(scalars=ids)
        )
    return out


def test_early_exit_frees_the_pipeline(long_dir):
    ds = rrloader.RerunIterableDataset(
        source(long_dir),
        "frame",
        {"id": rrloader.Field("/id:Scalars:scalars", decode=rrloader.NumericDecoder())},
        fetch_size=8,
        shuffle=False,
        decode_threads=2,
        prefetch_blocks=1,
        max_ready_bytes=1,  # the pipeline stalls one block ahead of the consumer
    )

    def scenario():
        baseline = _task_count()  # in this thread: run_with_deadline's thread counts too
        it = iter(ds)
        assert next(it)["id"].tolist() == [0.0, 0.0]
        running = _task_count()
        del it  # the generator closes: pipe.close() joins the fetch and decode threads
        after_del = _wait_for_tasks(baseline)

        for s in ds:  # break out of a for loop
            assert s["id"][1] == 0
            break
        after_break = _wait_for_tasks(baseline)

        its = [iter(ds) for _ in range(4)]  # several live pipelines at once
        for i in its:
            next(i)
        many = _task_count()
        for i in its:
            i.close()
        del its
        after_many = _wait_for_tasks(baseline)

        n = sum(1 for _ in ds)  # and a full pass still works afterwards
        return baseline, running, after_del, after_break, many, after_many, n

    baseline, running, after_del, after_break, many, after_many, n = run_with_deadline(scenario, 60)
    assert running > baseline, "no pipeline threads while iterating?"
    assert after_del == baseline, f"threads left after deleting the iterator: {after_del} > {baseline}"
    assert after_break == baseline
    assert many >= baseline + 4
    assert after_many == baseline
    assert n == 2000


def test_early_exit_from_dataloader_workers(long_dir):
    ds = rrloader.RerunIterableDataset(
        source(long_dir),
        "frame",
        {"id": rrloader.Field("/id:Scalars:scalars", decode=rrloader.NumericDecoder())},
        fetch_size=8,
        max_ready_bytes=1,
    )

    def scenario():
        loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
        for _ in range(2):  # iterate twice, leaving early each time
            it = iter(loader)
            first = next(it)
            assert tuple(first["id"].shape) == (4, 2)
            del it
        return len(list(loader))

    assert run_with_deadline(scenario, 60) == 2 * (1000 // 4)
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children(), "DataLoader workers left running"


def test_iterating_twice_gives_the_same_epoch(data_dir):
    ds = iterable(data_dir, seed=4, fetch_size=5)
    first = [sample_id(s) for s in ds]
    second = [sample_id(s) for s in ds]
    assert_exactly_once(first)
    assert first == second
    # two iterators of one dataset, interleaved, are independent
    a, b = iter(ds), iter(ds)
    pairs = [(sample_id(x), sample_id(y)) for x, y in zip(a, b, strict=True)]
    assert [p[0] for p in pairs] == first and [p[1] for p in pairs] == first


def _bad_global(ds) -> int:
    return {v: g for g, v in global_to_id(ds).items()}[(BAD_SEGMENT, BAD_FRAME)]


def test_corrupt_image_fails_at_its_block(bad_dir):
    fetch = 4
    ds = iterable(bad_dir, shuffle=False, fetch_size=fetch)
    bad = _bad_global(ds)
    block_start = bad // fetch * fetch

    def scenario():
        baseline = _task_count()
        results = []
        for _ in range(2):  # the error is repeatable; the dataset stays usable
            got = []
            with pytest.raises(rrloader.RrloaderError) as info:
                for s in ds:
                    got.append(sample_id(s))
            results.append((got, str(info.value)))
        return results, baseline, _wait_for_tasks(baseline)

    results, baseline, after = run_with_deadline(scenario, 60)
    assert after == baseline, "pipeline threads left after the error"
    for got, message in results:
        assert got == all_ids()[:block_start], "the samples before the bad block must come out first"
        assert f"seg{BAD_SEGMENT}" in message and f"frame={BAD_FRAME}" in message

    m = mapped(bad_dir)
    assert sample_id(m[bad - 1]) == all_ids()[bad - 1]
    with pytest.raises(rrloader.RrloaderError):
        m.__getitems__([0, bad])


def test_corrupt_image_through_dataloader_workers(bad_dir):
    ds = iterable(bad_dir, shuffle=False, fetch_size=4)

    def scenario():
        loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
        seen = []
        with pytest.raises(Exception) as info:  # noqa: B017 - torch re-raises worker errors by type
            for b in loader:
                seen.extend(batch_ids(b))
        return seen, info

    seen, info = run_with_deadline(scenario, 60)
    assert "frame=5" in str(info.value) and "seg1" in str(info.value)
    assert (BAD_SEGMENT, BAD_FRAME) not in seen


# --------------------------------------------------------------------------- 5. equal samples
def test_same_index_same_tensors_everywhere(data_dir):
    ds = iterable(data_dir, seed=8, fetch_size=3)
    direct = {sample_id(s): s for s in ds}
    workers = {}
    for s in DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork"):
        workers[sample_id(s)] = s
    m = mapped(data_dir)
    g2id = global_to_id(m)
    by_items = dict(zip([g2id[g] for g in range(TOTAL)], m.__getitems__(list(range(TOTAL))), strict=True))
    by_item = {g2id[g]: m[g] for g in (0, 7, TOTAL - 1)}
    by_loader = {}
    for batch in DataLoader(m, batch_size=5, shuffle=True, num_workers=0):
        for i, (ident, img) in enumerate(zip(batch["id"], batch["img"], strict=True)):
            by_loader[sample_id({"id": ident, "img": img})] = {"id": batch["id"][i], "img": batch["img"][i]}

    assert set(direct) == set(workers) == set(by_items) == set(by_loader) == set(all_ids())
    for key, ref in direct.items():
        for other in (workers[key], by_items[key], by_loader[key], by_item.get(key, ref)):
            for name in ("id", "img"):
                assert other[name].dtype == ref[name].dtype
                assert torch.equal(other[name], ref[name]), (key, name)


# --------------------------------------------------------------------------- odds and ends
def test_empty_selection_through_workers(data_dir):
    ds = rrloader.RerunIterableDataset(source(data_dir).filter_segments([]), "frame", fields())
    assert len(ds) == 0 and list(ds) == []

    def scenario():
        return list(DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork"))

    assert run_with_deadline(scenario, 60) == []


def test_fork_while_the_parent_pipeline_is_running(long_dir, data_dir):
    """DataLoader forks its workers while the parent holds a live pipeline (threads mid-fetch,
    locks possibly held): the workers reopen the files and must neither hang nor crash."""
    big = rrloader.RerunIterableDataset(
        source(long_dir),
        "frame",
        {"id": rrloader.Field("/id:Scalars:scalars", decode=rrloader.NumericDecoder())},
        fetch_size=8,
        max_ready_bytes=1,
        prefetch_blocks=1,
    )
    m = mapped(data_dir)
    assert sample_id(m[0]) == all_ids()[0]  # the parent's map engine has run

    def scenario():
        live = iter(big)
        next(live)
        n = sum(
            len(b["id"])
            for b in DataLoader(big, batch_size=64, num_workers=2, multiprocessing_context="fork")
        )
        got = loader_ids(DataLoader(m, batch_size=4, num_workers=2, multiprocessing_context="fork"))
        rest = sum(1 for _ in live)  # the parent's pipeline carries on afterwards
        return n, got, rest

    n, got, rest = run_with_deadline(scenario, 90)
    assert n == 2000
    assert got == all_ids()  # map-style: the sampler's order, every sample once
    assert rest == 1999


def test_map_getitems_keeps_order_and_duplicates(data_dir):
    m = mapped(data_dir)
    g2id = global_to_id(m)
    req = [5, 5, 0, TOTAL - 1, 12, 5]
    out = m.__getitems__(req)
    assert [sample_id(s) for s in out] == [g2id[g] for g in req]
    assert torch.equal(out[0]["img"], out[1]["img"]) and torch.equal(out[0]["id"], out[5]["id"])
    for bad in (-1, TOTAL):
        with pytest.raises(IndexError):
            m[bad]
