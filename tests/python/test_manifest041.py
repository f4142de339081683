"""``Manifest`` and ``from_manifest`` of ``rrloader.experimental.dataloader`` against rerun-sdk 0.41's.

The reference is rerun-sdk 0.41 itself, run in this process over ``rr.server.Server`` serving the
same ``.rrd`` files rrloader reads (as a ``LocalDataset``, and through the served catalog). Every
comparison is exact: manifest tables (columns, types, values, row order) and headers, and replayed
samples (keys in order, dtypes, shapes, bytes) in the order they come out.

Files go both ways: a manifest written by rerun-sdk replays in rrloader, one written by rrloader
replays in rerun-sdk, and each yields the other's samples in the other's order. Shards of a
ranks x workers topology are simulated by giving a dataset the (rank, world) a spawned worker
would have captured and the DataLoader worker info; one test runs real spawned workers.

rerun-sdk 0.41 cannot scan a segment in which a required field's entity has no rows (its scan
query fails on an empty result), so the fields compared with a scan of every segment leave out
``extra`` (logged in two of the three segments); a test of its own compares that case on the
segments rerun-sdk can scan. It also requires an ``is_keyframe`` column for video, which rrloader
does not: the unmarked dataset (no marks) is compared with the marked one.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import rrloader.experimental.dataloader as rrl
import torch
from manifest041 import (
    as_worker,
    blob_size_decoder,
    dump,
    fields,
    interleave,
    ref,
    replay,
    sampling,
    write_dataset,
)
from rrloader import LocalDataset

R = ref  # rerun-sdk 0.41's rerun.experimental.dataloader


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fork warning of remote datasets, rerun's scan print
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest041")
    return {
        "marked": write_dataset(root / "marked", keyframes=True),
        "unmarked": write_dataset(root / "unmarked", keyframes=False),
        # The marked data without /cam in ep_b: manifests of "marked" are out of date for it.
        "noimg": write_dataset(root / "noimg", keyframes=True, images_in=("ep_a", "ep_c")),
    }


@pytest.fixture(scope="module")
def server(data):
    import rerun as rr

    srv = rr.server.Server(host="127.0.0.1", datasets={name: str(path) for name, path in data.items()})
    yield srv
    srv.shutdown()


@pytest.fixture(scope="module")
def entries(server):
    client = server.client()
    return {name: client.get_dataset(name) for name in ("marked", "unmarked", "noimg")}


def common_fields(m, index):
    """The fields every comparison uses (see the module docstring for ``extra``)."""
    f = fields(m, index)
    del f["extra"]
    return f


def header(table) -> dict[bytes, bytes]:
    return dict(table.schema.metadata)


def without_identity(meta: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in meta.items() if k not in (b"dataset_name", b"dataset_id")}


def generate_pair(entries, data, index, *, required, ranks=2, workers=2, block=4):
    """(rerun-sdk's manifest over the served marked data, rrloader's over the local marked data)."""
    kw = dict(fetch_block_size=block, num_ranks=ranks, num_workers_per_rank=workers, required_fields=required)
    theirs = R.Manifest.generate(
        R.DataSource(entries["marked"]),
        index,
        common_fields(R, index),
        timeline_sampling=sampling(R, index),
        **kw,
    )
    ours = rrl.Manifest.generate(
        rrl.DataSource(LocalDataset(data["marked"])),
        index,
        common_fields(rrl, index),
        timeline_sampling=sampling(rrl, index),
        **kw,
    )
    return theirs, ours


STRATEGIES = {
    "default": lambda m: None,
    "none": lambda m: m.NoShuffle(),
    "sample": lambda m: m.SampleShuffle(),
    "block": lambda m: m.BlockShuffle(),
    "block_buffer": lambda m: m.BlockShuffle(buffer_size=5),
    "block_buffer_min_fill": lambda m: m.BlockShuffle(buffer_size=4, min_fill=1),
}


# ------------------------------------------------------------------------------------- generate
@pytest.mark.parametrize("index", ["frame", "time"])
@pytest.mark.parametrize(
    "required", [None, ["state", "video"], ["sparse", "image"], ["action"], []], ids=lambda r: str(r)
)
def test_generate_equals_rerun(entries, data, index, required):
    theirs, ours = generate_pair(entries, data, index, required=required)
    t, o = theirs.to_arrow(), ours.to_arrow()
    assert 0 < t.num_rows
    assert o.schema == t.schema and o.equals(t)
    assert without_identity(header(o)) == without_identity(header(t))
    assert ours.metadata.dataset_name == "marked" and ours.metadata.dataset_id == ""
    # Over the served dataset, the header is rerun-sdk's to the byte (the entry's name and id).
    served = rrl.Manifest.generate(
        rrl.DataSource(entries["marked"]),
        index,
        common_fields(rrl, index),
        timeline_sampling=sampling(rrl, index),
        fetch_block_size=4,
        num_ranks=2,
        num_workers_per_rank=2,
        required_fields=required,
    )
    assert served.to_arrow().equals(t, check_metadata=True)
    assert dataclasses.asdict(served.metadata) == dataclasses.asdict(theirs.metadata)


def test_generate_drops_what_required_fields_and_staleness_rule_out(entries, data):
    """The scan's rules bite on this data (so the equalities above are not vacuous)."""
    counts = {}
    for req in (["state"], ["state", "video"], ["sparse"]):
        theirs, ours = generate_pair(entries, data, "frame", required=req, ranks=1, workers=1)
        assert ours.to_arrow().equals(theirs.to_arrow())
        counts[tuple(req)] = ours.num_rows
    # ep_c's video starts at frame 4; /sparse is logged every 5 frames, with max_staleness 2.
    assert counts[("state", "video")] < counts[("state",)]
    assert counts[("sparse",)] < counts[("state",)]


@pytest.mark.parametrize("index", ["frame", "time"])
def test_keyframes_from_the_bitstream_equal_the_marks(entries, data, index):
    """Without ``is_keyframe`` (which rerun-sdk requires), rrloader reads the keyframes from the
    bitstream: the manifest is the one rerun-sdk makes from the marks."""
    theirs, _ = generate_pair(entries, data, index, required=None)
    with pytest.raises(ValueError, match="Video fields require an is_keyframe column"):
        R.Manifest.generate(
            R.DataSource(entries["unmarked"]),
            index,
            common_fields(R, index),
            timeline_sampling=sampling(R, index),
        )
    kw = dict(fetch_block_size=4, num_ranks=2, num_workers_per_rank=2, timeline_sampling=sampling(rrl, index))
    for source in (LocalDataset(data["unmarked"]), entries["unmarked"]):
        ours = rrl.Manifest.generate(rrl.DataSource(source), index, common_fields(rrl, index), **kw)
        assert ours.to_arrow().equals(theirs.to_arrow())


def test_an_entity_missing_from_a_segment_drops_that_segments_samples(entries, data):
    f_r, f_l = fields(R, "frame"), fields(rrl, "frame")
    # rerun-sdk's scan fails when a required entity has no rows in a segment (ep_b has no /extra) ...
    with pytest.raises(Exception, match="concat requires input of at least one array"):
        R.Manifest.generate(R.DataSource(entries["marked"]), "frame", f_r, required_fields=["extra"])
    # ... rrloader keeps no sample of that segment, and the others as rerun-sdk does without it.
    theirs = R.Manifest.generate(
        R.DataSource(entries["marked"], segments=["ep_a", "ep_c"]), "frame", f_r, required_fields=["extra"]
    )
    ours = rrl.Manifest.generate(
        rrl.DataSource(LocalDataset(data["marked"])), "frame", f_l, required_fields=["extra"]
    )
    assert "ep_b" not in set(ours.to_arrow()["segment_id"].to_pylist())
    assert ours.to_arrow().equals(theirs.to_arrow())


# -------------------------------------------------------------------------------------- shuffle
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("seed", [0, 3])
def test_shuffle_equals_rerun(entries, data, tmp_path, strategy, seed):
    theirs, _ = generate_pair(entries, data, "frame", required=["state", "video"])
    path = tmp_path / "theirs.parquet"
    theirs.write_parquet(path)
    ours = rrl.Manifest.from_parquet(path)  # rerun-sdk's file, shuffled by rrloader
    t = theirs.shuffle(STRATEGIES[strategy](R), seed=seed)
    o = ours.shuffle(STRATEGIES[strategy](rrl), seed=seed)
    assert o.to_arrow().equals(t.to_arrow(), check_metadata=True)
    assert dataclasses.asdict(o.metadata) == dataclasses.asdict(t.metadata)
    assert ours.metadata.shuffle_strategy == "none"  # the original is unchanged


# ------------------------------------------------------------------------------------- replay
def write_manifest(
    writer, entries, data, index, strategy, topology, path, *, required=("state", "video", "image")
):
    ranks, workers = topology
    m = {"rerun": R, "rrloader": rrl}[writer]
    source = (
        R.DataSource(entries["marked"]) if writer == "rerun" else rrl.DataSource(LocalDataset(data["marked"]))
    )
    manifest = m.Manifest.generate(
        source,
        index,
        common_fields(m, index),
        timeline_sampling=sampling(m, index),
        fetch_block_size=4,
        num_ranks=ranks,
        num_workers_per_rank=workers,
        required_fields=list(required),
    ).shuffle(STRATEGIES[strategy](m), seed=7)
    manifest.write_parquet(path)
    return manifest


def replays(path, entries, data, index, *, name="marked", rrl_source="local", field_fn=common_fields):
    theirs = R.RerunIterableDataset.from_manifest(
        R.Manifest.from_parquet(path), R.DataSource(entries[name]), field_fn(R, index)
    )
    source = LocalDataset(data[name]) if rrl_source == "local" else entries[name]
    ours = rrl.RerunIterableDataset.from_manifest(
        rrl.Manifest.from_parquet(path), rrl.DataSource(source), field_fn(rrl, index)
    )
    return theirs, ours


@pytest.mark.parametrize("index", ["frame", "time"])
@pytest.mark.parametrize("strategy", ["none", "sample", "block_buffer"])
@pytest.mark.parametrize("writer", ["rerun", "rrloader"])
@pytest.mark.parametrize("topology", [(1, 1), (2, 2)], ids=["1x1", "2x2"])
def test_replay_interchange(entries, data, tmp_path, index, strategy, writer, topology):
    path = tmp_path / "m.parquet"
    manifest = write_manifest(writer, entries, data, index, strategy, topology, path)
    sources = ["local", "remote"] if topology == (2, 2) else ["local"]
    ranks, workers = topology
    for rrl_source in sources:
        theirs, ours = replays(path, entries, data, index, rrl_source=rrl_source)
        assert len(ours) == len(theirs) == manifest.num_rows
        total = 0
        present = set()
        for rank in range(ranks):
            for worker in range(workers):
                t = replay(theirs, rank, ranks, worker, workers)
                o = replay(ours, rank, ranks, worker, workers)
                assert o == t, (rrl_source, rank, worker)
                total += len(o)
                present |= {k for s in o for k, v in s if v is not None}
        assert total == manifest.num_rows
        assert present == set(common_fields(rrl, index))


def test_replay_orders_natively_with_bounded_memory(entries, data, tmp_path):
    """The emission order runs in the engine's emit stage: what waits for its turn stays within the
    manifest's buffer plus one fetch block, and a manifest in fetch order copies nothing."""
    path = tmp_path / "m.parquet"
    write_manifest("rrloader", entries, data, "frame", "block_buffer", (1, 1), path)
    _, ours = replays(path, entries, data, "frame")
    it = ours._replay_plan()
    assert it.emit_order is not None and it.required == ("image", "state", "video")
    held = [stats["buffered"] for _, stats, _ in ours._blocks(it)]
    assert max(held) > 0 and max(held) <= 5 + 4 and held[-1] == 0
    write_manifest("rrloader", entries, data, "frame", "none", (1, 1), path)
    _, ours = replays(path, entries, data, "frame")
    it = ours._replay_plan()
    assert it.emit_order is None
    assert all(stats["buffered"] == 0 for _, stats, _ in ours._blocks(it))


def test_replay_with_a_python_decoder(entries, data, tmp_path):
    """A user's decoder runs in Python after the engine: the order and the strictness are applied
    there, with the same results."""

    def with_blob_size(m, index):
        f = common_fields(m, index)
        f["image"] = m.Field("/cam:EncodedImage:blob", decode=blob_size_decoder(m))
        return f

    path = tmp_path / "m.parquet"
    write_manifest("rerun", entries, data, "frame", "block_buffer", (2, 2), path)
    theirs, ours = replays(path, entries, data, "frame", field_fn=with_blob_size)
    for rank in range(2):
        for worker in range(2):
            assert replay(ours, rank, 2, worker, 2) == replay(theirs, rank, 2, worker, 2)
    theirs, ours = replays(path, entries, data, "frame", name="noimg", field_fn=with_blob_size)
    raised = 0
    for rank in range(2):
        for worker in range(2):
            outcomes = [shard_outcome(ds, rank, 2, worker, 2) for ds in (theirs, ours)]
            assert outcomes[1] == outcomes[0]
            raised += outcomes[0][1] is not None
    assert raised > 0  # some shard holds samples of ep_b


def shard_outcome(ds, rank, world, worker, workers):
    """(the samples a shard yields, the RuntimeError's message or None)."""
    got = []
    with as_worker(ds, rank, world, worker, workers):
        try:
            for s in ds:
                got.append(s)
        except RuntimeError as e:
            return dump(got), str(e)
    return dump(got), None


@pytest.mark.parametrize("index", ["frame", "time"])
@pytest.mark.parametrize("strategy", ["none", "block_buffer"])
def test_strict_replay_raises_like_rerun(entries, data, tmp_path, index, strategy):
    """A manifest of the marked data replayed on data without images in ep_b: the same samples,
    then rerun-sdk's RuntimeError naming the field, segment and index value."""
    path = tmp_path / "m.parquet"
    write_manifest("rerun", entries, data, index, strategy, (1, 1), path, required=("state", "image"))
    theirs, ours = replays(path, entries, data, index, name="noimg")
    outcomes = []
    for ds in (theirs, ours):
        got = []
        with pytest.raises(RuntimeError) as e:
            for s in ds:
                got.append(s)
        outcomes.append((dump(got), str(e.value)))
    assert outcomes[1] == outcomes[0]
    assert (
        "Required fields decoded to nothing: image" in outcomes[0][1]
        and "Segment: ep_b at " in outcomes[0][1]
    )
    assert len(outcomes[0][0]) > 0


def test_topology_mismatch_raises_like_rerun(entries, data, tmp_path):
    path = tmp_path / "m.parquet"
    write_manifest("rrloader", entries, data, "frame", "none", (2, 2), path)
    theirs, ours = replays(path, entries, data, "frame")
    for rank, world, worker, workers in [(0, 1, 0, 1), (0, 2, 0, 1), (1, 2, 2, 3)]:
        errors = []
        for ds in (theirs, ours):
            with as_worker(ds, rank, world, worker, workers):
                it = iter(ds)  # checked at the first sample, not before
                with pytest.raises(ValueError) as e:
                    next(it)
            errors.append(str(e.value))
        assert errors[1] == errors[0]
        assert errors[0].startswith("Manifest was built for 2x2 (ranks x workers_per_rank)")


def test_spawned_workers_replay_the_captured_rank(entries, data, tmp_path):
    """Real spawned DataLoader workers: each replays its shard of the rank the dataset was pickled
    on (captured, as a DDP rank is), checked against the manifest (``worker_assignments``) and
    against rerun-sdk's replay of the same shards."""
    path = tmp_path / "m.parquet"
    manifest = write_manifest("rerun", entries, data, "frame", "block_buffer", (2, 2), path)
    theirs, ours = replays(path, entries, data, "frame")
    ctx = multiprocessing.get_context("spawn")
    for rank in range(2):
        ours._parent_ddp_topology = (rank, 2)
        loader = torch.utils.data.DataLoader(
            ours, batch_size=None, num_workers=2, multiprocessing_context=ctx
        )
        got = dump(loader)
        expected = interleave([replay(theirs, rank, 2, w, 2) for w in range(2)])
        assert got == expected
        shard_rows = sum(manifest.worker_assignments(rank, w).num_rows for w in range(2))
        assert len(got) == shard_rows > 0
    ours._parent_ddp_topology = None


# ---------------------------------------------------------------------------------------- map
@pytest.mark.parametrize("rrl_source", ["local", "remote"])
def test_map_from_manifest_equals_rerun(entries, data, tmp_path, rrl_source):
    path = tmp_path / "m.parquet"
    manifest = write_manifest("rerun", entries, data, "time", "block_buffer", (2, 2), path)
    for name in ("marked", "noimg"):  # noimg: missing images are None, nothing raises
        theirs = R.RerunMapDataset.from_manifest(
            R.Manifest.from_parquet(path), R.DataSource(entries[name]), common_fields(R, "time")
        )
        source = LocalDataset(data[name]) if rrl_source == "local" else entries[name]
        ours = rrl.RerunMapDataset.from_manifest(
            rrl.Manifest.from_parquet(path), rrl.DataSource(source), common_fields(rrl, "time")
        )
        assert len(ours) == len(theirs) == manifest.num_rows
        n = len(ours)
        ids = np.random.default_rng(5).permutation(n).tolist() + [0, 0, n - 1]
        assert dump(ours.__getitems__(ids)) == dump(theirs.__getitems__(ids))
        assert dump([ours[3]]) == dump([theirs[3]])
        for ds in (theirs, ours):
            si = ds.sample_index
            assert (si.total_samples, si.ns_per_sample, si.ns_dtype) == (0, 20_000_000, "datetime64[ns]")
            for bad in (n, -1):
                with pytest.raises(IndexError):
                    ds.__getitems__([bad])
    # A replaying iterable has no sample index (rerun-sdk's never sets one).
    iterables = [
        R.RerunIterableDataset.from_manifest(
            R.Manifest.from_parquet(path), R.DataSource(entries["marked"]), common_fields(R, "time")
        ),
        rrl.RerunIterableDataset.from_manifest(
            rrl.Manifest.from_parquet(path),
            rrl.DataSource(LocalDataset(data["marked"])),
            common_fields(rrl, "time"),
        ),
    ]
    messages = []
    for ds in iterables:
        with pytest.raises(AttributeError) as e:
            getattr(ds, "sample_index")  # noqa: B009 - the access is the test
        messages.append(str(e.value))
    assert messages[1] == messages[0]


# -------------------------------------------------------------------------- the manifest object
def test_construction_and_validation_errors_as_rerun(entries, data):
    for m in (R, rrl):
        with pytest.raises(
            TypeError, match=r"^Create a Manifest via Manifest.generate\(\) or Manifest.from_parquet\(\)\.$"
        ):
            m.Manifest(None, None)
    theirs, ours = generate_pair(entries, data, "frame", required=None)
    for args in [(1, 1), (2, 1), (2, 3)]:
        errors = []
        for manifest in (theirs, ours):
            with pytest.raises(ValueError) as e:
                manifest.validate_topology(*args)
            errors.append(str(e.value))
        assert errors[1] == errors[0]
    theirs.validate_topology(2, 2)
    ours.validate_topology(2, 2)
    with pytest.raises(TypeError, match="must be an rrloader.experimental.dataloader.Manifest"):
        rrl.RerunIterableDataset.from_manifest(theirs, rrl.DataSource(LocalDataset(data["marked"])), {})
    assert isinstance(ours.metadata, rrl.manifest.ManifestMeta)
    assert [f.name for f in dataclasses.fields(ours.metadata)] == [
        f.name for f in dataclasses.fields(theirs.metadata)
    ]


def test_parquet_round_trip_and_lazy_reading(entries, data, tmp_path):
    theirs, ours = generate_pair(entries, data, "frame", required=["state", "video"])
    theirs = theirs.shuffle(R.BlockShuffle(buffer_size=5), seed=1)
    ours = ours.shuffle(rrl.BlockShuffle(buffer_size=5), seed=1)
    t_path, o_path = tmp_path / "theirs.parquet", tmp_path / "ours.parquet"
    theirs.write_parquet(t_path, row_group_size=7)
    ours.write_parquet(o_path, row_group_size=7)
    # The files: the same table and header, row groups and compression.
    assert pq.read_table(o_path).equals(ours.to_arrow(), check_metadata=True)
    t_meta, o_meta = pq.read_metadata(t_path), pq.read_metadata(o_path)
    assert o_meta.num_row_groups == t_meta.num_row_groups == -(-ours.num_rows // 7)
    assert o_meta.row_group(0).column(0).compression == t_meta.row_group(0).column(0).compression == "ZSTD"
    assert without_identity(pq.read_schema(o_path).metadata) == without_identity(
        pq.read_schema(t_path).metadata
    )
    # Each reads the other's file to the same manifest.
    for path in (t_path, o_path):
        a, b = R.Manifest.from_parquet(path), rrl.Manifest.from_parquet(path)
        assert dataclasses.asdict(b.metadata) == dataclasses.asdict(a.metadata)
        assert b.num_rows == a.num_rows
        for rank in range(2):
            for worker in range(2):
                assert b.worker_assignments(rank, worker).equals(a.worker_assignments(rank, worker))
                blocks_a, emit_a = a.worker_plan(rank, worker)
                blocks_b, emit_b = b.worker_plan(rank, worker)
                assert len(blocks_b) == len(blocks_a) and all(
                    x.equals(y) for x, y in zip(blocks_b, blocks_a, strict=True)
                )
                assert np.array_equal(emit_b, emit_a)
        assert b.to_arrow().equals(a.to_arrow(), check_metadata=True)
    # Lazy: the header, the row count, a shard, a pickle and a replay never load the whole table.
    lazy = rrl.Manifest.from_parquet(o_path)
    assert lazy.metadata == ours.metadata and lazy.num_rows == ours.num_rows
    assert lazy.worker_assignments(1, 0).num_rows > 0
    lazy.worker_plan(0, 1)
    assert len(pickle.dumps(lazy)) < 4096
    ds = rrl.RerunIterableDataset.from_manifest(
        lazy, rrl.DataSource(LocalDataset(data["marked"])), common_fields(rrl, "frame")
    )
    replay(ds, 0, 2, 0, 2)
    assert len(pickle.dumps(ds._manifest)) < 4096
    assert lazy._table is None
    lazy.to_arrow()
    assert lazy._table is not None
    # A parquet-backed manifest shuffles like an in-memory one.
    assert (
        rrl.Manifest.from_parquet(o_path).shuffle(seed=4).to_arrow().equals(ours.shuffle(seed=4).to_arrow())
    )
