"""Exact mid-epoch resume (issue 15): state_dict / load_state_dict on both iterable front ends.

A dataset is written here (rerun-sdk): segments of different lengths with a per-sample id
(`/id`, the value seg * 1000 + frame, so every sample names itself), a sparse field that
leaves some samples incomplete (rerun 0.41's iterable drops them) and an H.264 camera. For
every strategy, an epoch is stopped after k samples per shard (k at the start, inside a fetch
block, at a block's end, inside the emission buffer, near the end), the states of all shards
are saved as JSON, merged, and loaded into fresh datasets of the same or another topology
(ranks x DataLoader workers, simulated in-process; fresh processes and real spawned workers
through torchdata's StatefulDataLoader below). Checked: the samples after the resume are the
epoch's samples not delivered before (no duplicate, none lost), in the uninterrupted run's
order when the topology is unchanged, and the resumed engine fetches nothing before the
resume point.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rrloader
import rrloader.dataloader as seed_dl
import rrloader.experimental.dataloader as dl
import videoutil as vu

HERE = Path(__file__).resolve().parent
LENGTHS = [70, 41, 55, 9]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import rerun as rr

    root = tmp_path_factory.mktemp("resume")
    for k, n in enumerate(LENGTHS):
        seg = f"seg_{k}"
        packets, keys = vu.encode("h264", 32, 32, n, 10, seed=k)
        path = root / f"{seg}.rrd"
        with rr.RecordingStream(vu.APP_ID, recording_id=seg, send_properties=False) as rec:
            rec.save(path)
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            frames = np.arange(n)
            rec.send_columns("/id", indexes=[rr.TimeColumn("frame", sequence=frames)],
                             columns=rr.Scalars.columns(scalars=(k * 1000 + frames).astype(np.float64)))
            sparse = frames[(frames % 7) != 3]  # frames 3, 10, 17, ... have it from their predecessor
            sparse = sparse[sparse >= 2]  # frames 0 and 1: nothing at or before: incomplete
            rec.send_columns("/sparse", indexes=[rr.TimeColumn("frame", sequence=sparse)],
                             columns=rr.Scalars.columns(scalars=sparse.astype(np.float64)))
            rec.log("/cam", rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
            rec.send_columns("/cam", indexes=[rr.TimeColumn("frame", sequence=frames)],
                             columns=rr.VideoStream.columns(sample=list(packets)))
    return root


STRATEGIES = {
    "sample": lambda: dl.SampleShuffle(),
    "block": lambda: dl.BlockShuffle(),
    "buffer": lambda: dl.BlockShuffle(buffer_size=24),
    "buffer-min-fill": lambda: dl.BlockShuffle(buffer_size=10, min_fill=3),
    "none": lambda: dl.NoShuffle(),
    "interleaved": lambda: dl.InterleavedShuffle(open_runs=3),
}


def make_041(data_dir, strategy: str, video: bool = False):
    fields = {
        "id": dl.Field("/id:Scalars:scalars", decode=dl.NumericDecoder()),
        "sparse": dl.Field("/sparse:Scalars:scalars", decode=dl.NumericDecoder(), window=(-2, 0)),
    }
    if video:
        fields["cam"] = dl.Field("/cam:VideoStream:sample", decode=dl.VideoFrameDecoder(), window=(-1, 0))
    return dl.RerunIterableDataset(dl.DataSource(rrloader.LocalDataset(str(data_dir))), "frame", fields,
                                   fetch_block_size=8, shuffle_strategy=STRATEGIES[strategy]())


def make_seed(data_dir, strategy: str):
    fields = {"id": seed_dl.Field("/id:Scalars:scalars", decode=seed_dl.NumericDecoder())}
    kw = {"shuffle": True, "seed": 4} if strategy == "seed" else {"shuffle_strategy": STRATEGIES[strategy]()}
    return seed_dl.RerunIterableDataset(seed_dl.DataSource(rrloader.LocalDataset(str(data_dir))), "frame", fields,
                                        fetch_size=8, **kw)


@contextlib.contextmanager
def topology(ds, rank: int, world: int, worker: int, workers: int):
    """Run `ds` as (rank, worker) of (world, workers), as a spawned worker of a DDP rank sees it."""
    import rrloader.experimental.dataloader._iterable_dataset as it041

    ds._parent_ddp_topology = (rank, world) if world > 1 else None
    saved = (it041.worker_topology, seed_dl._worker)
    it041.worker_topology = lambda: (worker, workers)
    seed_dl._worker = lambda: (worker, workers)
    try:
        yield ds
    finally:
        it041.worker_topology, seed_dl._worker = saved


def ids(samples) -> list[int]:
    return [int(s["id"][0]) for s in samples]


def run(make, topo, *, stop=None, state=None, epoch=1):
    """Per shard of `topo`: the ids it yields (the first `stop`, or all) and its state after them."""
    world, workers = topo
    out, states, fetched = {}, [], {}
    for r in range(world):
        for w in range(workers):
            ds = make()
            ds.set_epoch(epoch)
            with topology(ds, r, world, w, workers):
                if state is not None:
                    ds.load_state_dict(json.loads(json.dumps(state)))
                before = ds.fetch_stats()["samples"]
                it = iter(ds)
                got = []
                for s in it:
                    got.append(s)
                    if stop is not None and len(got) == stop:
                        break
                out[(r, w)] = ids(got)
                states.append(json.loads(json.dumps(ds.state_dict())))
                fetched[(r, w)] = ds.fetch_stats()["samples"] - before
                del it
    return out, dl.merge_states(states), fetched


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("stop", [0, 5, 8, 13, 40])
@pytest.mark.parametrize("before,after", [((1, 1), (1, 1)), ((2, 2), (2, 2)), ((1, 1), (2, 2)), ((2, 2), (1, 1)),
                                          ((2, 1), (3, 1))])
def test_resume_delivers_the_rest_of_the_epoch_once(data_dir, strategy, stop, before, after):
    make = lambda: make_041(data_dir, strategy)  # noqa: E731
    full, _, _ = run(make, before)
    epoch = sorted(i for shard in full.values() for i in shard)
    assert len(epoch) == len(set(epoch))
    first, state, _ = run(make, before, stop=stop)
    rest, _, _ = run(make, after, state=state)
    got = [i for shard in first.values() for i in shard] + [i for shard in rest.values() for i in shard]
    assert sorted(got) == epoch, (strategy, stop, before, after)
    if before == after:  # the uninterrupted run's order, shard by shard
        for shard in full:
            assert first[shard] + rest[shard] == full[shard], shard


@pytest.mark.parametrize("strategy", ["seed", "sample", "buffer", "interleaved"])
def test_seed_front_end_resumes_too(data_dir, strategy):
    make = lambda: make_seed(data_dir, strategy)  # noqa: E731
    full, _, _ = run(make, (2, 1))
    first, state, _ = run(make, (2, 1), stop=11)
    rest, _, _ = run(make, (2, 1), state=state)
    for shard in full:
        assert first[shard] + rest[shard] == full[shard]
    rest3, _, _ = run(make, (3, 2), state=state)
    got = sorted([i for s in first.values() for i in s] + [i for s in rest3.values() for i in s])
    assert got == sorted(i for s in full.values() for i in s)


@pytest.mark.parametrize("strategy", ["sample", "block", "buffer", "interleaved"])
def test_windows_and_video_resume_exactly(data_dir, strategy):
    make = lambda: make_041(data_dir, strategy, video=True)  # noqa: E731
    ds = make()
    ds.set_epoch(2)
    full = [(int(s["id"][0]), int(s["cam"].sum())) for s in ds]
    ds = make()
    ds.set_epoch(2)
    it = iter(ds)
    head = [(int(s["id"][0]), int(s["cam"].sum())) for s in (next(it) for _ in range(19))]
    state = json.loads(json.dumps(ds.state_dict()))
    del it
    ds2 = make()
    ds2.load_state_dict(state)
    tail = [(int(s["id"][0]), int(s["cam"].sum())) for s in ds2]
    assert head + tail == full


@pytest.mark.parametrize("strategy", ["sample", "block", "buffer", "interleaved"])
def test_resuming_fetches_nothing_before_the_resume_point(data_dir, strategy):
    make = lambda: make_041(data_dir, strategy)  # noqa: E731
    first, state, _ = run(make, (1, 1), stop=30)
    rest, _, fetched = run(make, (1, 1), state=state)
    (shard,) = state["shards"]
    order = make()
    order.set_epoch(1)
    length = len(order._plan().order)
    assert fetched[(0, 0)] == length - shard["consumed"] + len(shard.get("held", []))
    assert fetched[(0, 0)] < length


def test_state_is_small_json_and_checked(data_dir):
    ds = make_041(data_dir, "buffer")
    it = iter(ds)
    for _ in range(9):
        next(it)
    state = ds.state_dict()
    assert json.loads(json.dumps(state)) == state and len(json.dumps(state)) < 2000
    other = make_041(data_dir, "block")
    with pytest.raises(ValueError, match="strategy"):
        other.load_state_dict(state)
    with pytest.raises(ValueError):
        ds.load_state_dict({"not": "a state"})
    missing = {**state, "shards": [{**state["shards"][0], "world_size": 2}]}
    fresh = make_041(data_dir, "buffer")
    fresh.load_state_dict(missing)
    with pytest.raises(ValueError, match="missing"):
        list(fresh)


def test_resume_in_a_fresh_process(data_dir, tmp_path):
    make = lambda: make_041(data_dir, "buffer")  # noqa: E731
    full, _, _ = run(make, (1, 1))
    first, state, _ = run(make, (1, 1), stop=17)
    (tmp_path / "state.json").write_text(json.dumps(state))
    out = subprocess.run(
        [sys.executable, str(HERE / "resume_worker.py"), str(data_dir), str(tmp_path / "state.json"), "2", "2"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rest = json.loads(out.strip().splitlines()[-1])
    got = first[(0, 0)] + [i for shard in rest for i in shard]
    assert sorted(got) == sorted(full[(0, 0)])


def collate_ids(batch):
    return [int(s["id"][0]) for s in batch]


def test_stateful_dataloader_with_spawned_workers(data_dir):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader():
        ds = make_041(data_dir, "buffer")
        ds.set_epoch(3)
        return StatefulDataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn",
                                  collate_fn=collate_ids)

    full = [i for batch in loader() for i in batch]
    first = loader()
    it = iter(first)
    head = [i for _ in range(5) for i in next(it)]
    state = first.state_dict()
    del it, first
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [i for batch in resumed for i in batch]
    assert head + tail == full


def test_elastic_resume_from_stateful_dataloader_states(data_dir):
    """2 spawned workers -> a dataset state merged from the loader's state -> 1 process, 0 workers."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    ds = make_041(data_dir, "block")
    ds.set_epoch(4)
    full = sorted(ids(make_041(data_dir, "block")))
    loader = StatefulDataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn",
                                collate_fn=collate_ids)
    it = iter(loader)
    head = [i for _ in range(6) for i in next(it)]
    state = json.loads(json.dumps(loader.state_dict()))
    del it, loader
    merged = dl.merge_states([state])
    assert len(merged["shards"]) == 2
    fresh = make_041(data_dir, "block")
    fresh.load_state_dict(merged)
    tail = ids(fresh)
    assert sorted(head + tail) == full
