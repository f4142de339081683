"""Many small segments (issue 16): a shuffled block touches about one segment per sample.

160 single-episode recordings (written with rerun-sdk at test time) of 6-13 rows at 15 Hz on a
timestamp timeline, each entity in one to three chunks (some logged out of order), some with
a Clear of the windowed entity at a row's time. Read through ``RerunIterableDataset`` with
``FixedRateSampling(15)``, embedded and through ``rr.server.Server`` on 127.0.0.1, with chunk
(and manifest) caches far smaller than a block's chunks, so that chunks and their time indexes
are evicted and read again all along: every shuffled sample must equal the sample a
sequential read gives for the same index, the map-style read of it, and the value computed
from what was written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rrloader import LocalDataset, RemoteDataset
from rrloader.dataloader import (
    DataSource,
    Field,
    FixedRateSampling,
    NumericDecoder,
    RerunIterableDataset,
    RerunMapDataset,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))

SEGMENTS = 160
RATE_HZ = 15
STEP_NS = round(1e9 / RATE_HZ)
T0_NS = 1_704_067_200_000_000_000
WINDOW = (STEP_NS, 3 * STEP_NS)  # the next three grid values (the seed API's inclusive range, ns)
SMALL_CACHE = 24 << 10  # a few dozen chunks: a block of 32 samples needs about a hundred


def seg_id(s: int) -> str:
    return f"ep_{s:04d}"


def rows_of(s: int) -> int:
    return 6 + s % 8


def times_of(s: int) -> np.ndarray:
    k = np.arange(rows_of(s), dtype=np.int64)
    return T0_NS + s * 10**12 + (k * 10**9 * 2 + RATE_HZ) // (2 * RATE_HZ)  # round(k * 1e9 / 15)


def state_of(s: int) -> np.ndarray:
    return (s * 1000 + np.arange(rows_of(s))[:, None] * 10 + np.arange(7)[None, :]).astype(np.float64)


def clear_time(s: int) -> int | None:
    """When a Clear of /action is logged: on the sampling grid (the 4th step after the first
    row), between two rows, so a window slot there is a tombstone."""
    return T0_NS + s * 10**12 + 4 * STEP_NS if s % 10 == 3 else None


def _parts(s: int, n: int) -> list[tuple[int, int]]:
    """The chunks an entity is logged in: one, two or three row ranges, some written last first."""
    cuts = {0: [0, n], 1: [0, n // 2, n], 2: [0, 2, n - 2, n]}[s % 3]
    parts = list(zip(cuts[:-1], cuts[1:], strict=True))
    return parts[::-1] if s % 4 == 1 else parts


def write_segments(out: Path) -> Path:
    import rerun as rr

    out.mkdir(parents=True, exist_ok=True)
    for s in range(SEGMENTS):
        times = times_of(s).astype("datetime64[ns]")
        state = state_of(s)
        with rr.RecordingStream("rrloader_many", recording_id=seg_id(s), send_properties=False) as rec:
            rec.save(str(out / f"{seg_id(s)}.rrd"))
            for entity, values in (("/state", state), ("/action", -state)):
                for lo, hi in _parts(s + (entity == "/action"), len(times)):
                    rec.send_columns(
                        entity,
                        indexes=[rr.TimeColumn("time", timestamp=times[lo:hi])],
                        columns=rr.Scalars.columns(scalars=values[lo:hi]),
                    )
            if clear_time(s) is not None:
                rec.set_time("time", timestamp=np.datetime64(clear_time(s), "ns"))
                rec.log("/action", rr.Clear(recursive=False))
    return out


def expected_sample(s: int, v: int) -> dict:
    """What was written: the latest row at or before each value (clears do not count there);
    a slot exactly at the Clear's time is cleared (the whole window is then missing)."""
    times = times_of(s)
    state = state_of(s)

    def latest(t: int) -> int:
        return int(np.searchsorted(times, t, side="right")) - 1

    out = {"state": torch.from_numpy(state[latest(v)])}
    slots = [v + WINDOW[1] - k * STEP_NS for k in (2, 1, 0)]
    if clear_time(s) in slots:
        out["action"] = None
    else:
        out["action"] = torch.from_numpy(np.stack([-state[latest(t)] for t in slots]))
    return out


FIELDS = {
    "state": Field("/state:Scalars:scalars", decode=NumericDecoder()),
    "action": Field("/action:Scalars:scalars", decode=NumericDecoder(), window=WINDOW),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_segments(tmp_path_factory.mktemp("many") / "ds")


@pytest.fixture(scope="module")
def server(data_dir):
    import rerun as rr

    srv = rr.server.Server(host="127.0.0.1", datasets={"many": str(data_dir)})
    yield srv
    srv.shutdown()


def _same(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        x, y = a[key], b[key]
        assert (x is None) == (y is None), f"{where}: {key} missing on one side only"
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: {key} {x.shape} vs {y.shape}"
            assert torch.equal(x, y), f"{where}: {key} differs"


def _check(dataset_factory) -> dict:
    """Shuffled vs sequential vs map-style vs written, for one source; the cache's counters."""
    source = dataset_factory()
    shuffled = RerunIterableDataset(
        source, "time", FIELDS, timeline_sampling=FixedRateSampling(RATE_HZ), fetch_size=32, shuffle=True, seed=3
    )
    order = shuffled.shard_order()
    got = list(shuffled)
    assert len(got) == len(order) == len(shuffled)
    # The data is what the test is about: 32 shuffled samples are in about as many segments.
    si = shuffled.sample_index
    per_32 = [len({si.global_to_local(int(i))[0].segment_id for i in order[b : b + 32]}) for b in range(0, 320, 32)]
    assert np.mean(per_32) >= 26, per_32

    sequential = RerunIterableDataset(
        dataset_factory(), "time", FIELDS, timeline_sampling=FixedRateSampling(RATE_HZ), fetch_size=32, shuffle=False
    )
    natural = list(sequential)
    assert len(natural) == len(got)
    mapped = RerunMapDataset(dataset_factory(), "time", FIELDS, timeline_sampling=FixedRateSampling(RATE_HZ))
    picks = [int(i) for i in order[:200]]
    by_map = mapped.__getitems__(picks)
    ids = {seg_id(s): s for s in range(SEGMENTS)}
    missing = 0
    for k, (i, sample) in enumerate(zip(order, got, strict=True)):
        where = f"shuffled sample {k} (global {i})"
        _same(sample, natural[int(i)], where + " vs sequential")
        if k < len(picks):
            _same(sample, by_map[k], where + " vs map-style")
        seg, value = si.global_to_local(int(i))
        v = int(np.asarray(value, dtype="datetime64[ns]").astype(np.int64))
        _same(sample, expected_sample(ids[seg.segment_id], v), where + f" vs written ({seg.segment_id})")
        missing += sample["action"] is None
    assert missing > 0  # the clears were read
    return dict(source.dataset.cache_stats())


def test_shuffled_equals_sequential_embedded_with_evictions(data_dir):
    stats = _check(lambda: DataSource(LocalDataset(str(data_dir), chunk_cache_bytes=SMALL_CACHE)))
    # Chunks were dropped and read again (far more misses than the dataset has chunks), and
    # the cache, time indexes included, stayed within its budget.
    assert stats["misses"] > 3 * 2 * SEGMENTS, stats
    assert 0 < stats["size_bytes"] <= SMALL_CACHE, stats


def test_shuffled_equals_sequential_remote_with_evictions(server):
    entry = server.client().get_dataset("many")
    stats = _check(
        lambda: DataSource(RemoteDataset.from_entry(entry, cache_bytes=SMALL_CACHE, manifest_cache_bytes=32 << 10))
    )
    # Chunks fetched again after eviction, and manifests too (a few fit in 32 KiB).
    assert stats["chunks_fetched"] > 3 * 2 * SEGMENTS, stats
    assert stats["manifest_fetches"] > SEGMENTS, stats
    assert stats["on_demand_chunks"] == 0, stats  # every block's chunks came in its prefetch
    assert 0 < stats["size_bytes"] <= SMALL_CACHE, stats
    assert stats["manifest_cache_bytes"] <= 32 << 10, stats


def test_remote_first_block_fetches_its_manifests_in_one_round(server):
    """A block's segments' manifests come in one batched round, not one call per thread."""
    from rrloader import _remote

    calls: list[int] = []
    original = _remote._RemoteState.rpc_many

    def counting(self, method, requests, in_flight):
        calls.append(len(requests))
        return original(self, method, requests, in_flight)

    _remote._RemoteState.rpc_many = counting
    try:
        ds = RemoteDataset.from_entry(server.client().get_dataset("many"))
        it = iter(
            RerunIterableDataset(
                DataSource(ds), "time", FIELDS, timeline_sampling=FixedRateSampling(RATE_HZ), fetch_size=64, seed=1
            )
        )
        next(it)
        del it
    finally:
        _remote._RemoteState.rpc_many = original
    stats = ds.cache_stats()
    assert calls and calls[0] >= 10, calls  # the first block (16 samples) of ~16 segments: one round
    # Blocks with a single missing manifest ask for it alone; every other one came in rounds.
    assert sum(calls) >= stats["manifest_fetches"] - len(calls) - 3, (stats, calls)


def _held_back(remote, **options) -> RerunIterableDataset:
    """An iterable dataset whose fetch thread stays a block or two ahead of the consumer (one
    decoded block waits for it), while the pipeline's segment thread looks thousands ahead."""
    return RerunIterableDataset(
        DataSource(remote),
        "time",
        FIELDS,
        timeline_sampling=FixedRateSampling(RATE_HZ),
        prefetch_blocks=1,
        max_ready_bytes=1,
        **options,
    )


def test_remote_manifests_of_later_blocks_come_while_the_consumer_waits(server, data_dir):
    """The pipeline's segment thread asks for the manifests of the samples ahead of the block
    being fetched (thousands of samples ahead, a block's worth per round), so that a shuffled
    block over many segments does not wait for them: with the consumer holding one sample and
    the fetch thread stopped by a full queue of small blocks, every segment's manifest arrives,
    each once."""
    import time

    ds = RemoteDataset.from_entry(server.client().get_dataset("many"))
    loader = _held_back(ds, fetch_size=4, seed=5)
    it = iter(loader)
    first = next(it)
    # The fetch thread stops a few blocks of 4 samples ahead: a dozen segments at most.
    deadline = time.monotonic() + 30
    while ds.cache_stats()["manifests_cached"] < SEGMENTS and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = ds.cache_stats()
    assert stats["manifests_cached"] == SEGMENTS, stats
    assert stats["manifest_fetches"] == SEGMENTS, stats  # none twice
    # The samples are unchanged (the embedded read is checked against what was written above),
    # and chunks were still fetched block by block: most of them after the wait.
    rest = list(it)
    assert ds.cache_stats()["chunks_fetched"] > 2 * stats["chunks_fetched"], (stats, ds.cache_stats())
    local = RerunIterableDataset(
        DataSource(LocalDataset(str(data_dir))),
        "time",
        FIELDS,
        timeline_sampling=FixedRateSampling(RATE_HZ),
        fetch_size=4,
        seed=5,
    )
    expected = list(local)
    assert len(expected) == 1 + len(rest)
    for k, (a, b) in enumerate(zip([first, *rest], expected, strict=True)):
        _same(a, b, f"sample {k}")


@pytest.mark.parametrize("shuffle", [False, True])
def test_remote_chunks_of_the_next_blocks_come_while_the_fetch_thread_waits(server, data_dir, shuffle):
    """The segment thread also fetches the chunks of the blocks after the one being fetched (a
    few blocks' worth per round, one batched call): with the fetch thread stopped by a full
    queue, chunks beyond its blocks arrive, none of them fetched twice, and the samples are the
    embedded read's. In a sequential read each block needs about one new segment, so without
    this every block waits for one round trip."""
    import time

    ds = RemoteDataset.from_entry(server.client().get_dataset("many"))
    loader = _held_back(ds, fetch_size=4, shuffle=shuffle, seed=7)
    it = iter(loader)
    first = next(it)
    deadline = time.monotonic() + 30
    while loader.fetch_stats()["chunks_ahead"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = loader.fetch_stats()
    assert waiting["chunks_ahead"] > 0, waiting
    # The look-ahead goes a few blocks past the fetch thread, not further: most chunks are
    # fetched as the consumer moves on.
    fetched_while_waiting = ds.cache_stats()["chunks_fetched"]
    rest = list(it)
    stats, done = ds.cache_stats(), loader.fetch_stats()
    assert fetched_while_waiting < stats["chunks_fetched"] / 4, (fetched_while_waiting, stats)
    assert done["chunks_ahead"] > stats["chunks_fetched"] / 2, (done, stats)  # most came ahead
    # Every chunk fetched once (the cache holds them all): as many as a read in one large block
    # (its own dataset object and cache) fetches.
    fresh = RemoteDataset.from_entry(server.client().get_dataset("many"))
    with_one_block = RerunIterableDataset(
        DataSource(fresh), "time", FIELDS, timeline_sampling=FixedRateSampling(RATE_HZ), fetch_size=4096,
        shuffle=shuffle, seed=7,
    )  # fmt: skip
    assert len(list(with_one_block)) == 1 + len(rest)
    assert stats["chunks_fetched"] == fresh.cache_stats()["chunks_fetched"], (stats, fresh.cache_stats())
    local = RerunIterableDataset(
        DataSource(LocalDataset(str(data_dir))), "time", FIELDS, timeline_sampling=FixedRateSampling(RATE_HZ),
        fetch_size=4, shuffle=shuffle, seed=7,
    )  # fmt: skip
    expected = list(local)
    assert len(expected) == 1 + len(rest)
    for k, (a, b) in enumerate(zip([first, *rest], expected, strict=True)):
        _same(a, b, f"sample {k}")


def test_remote_look_ahead_stops_at_its_first_failure(server):
    """A server that stops answering while the segment thread still has rounds to ask for (160
    segments, one sample per block): its first failed round ends the look-ahead. Otherwise it
    would start one round after another, each waiting out remote_timeout_s, and the pipeline's
    destruction (after the error a block reports) would wait for the one in flight."""
    import threading
    import time

    from rrloader import _remote
    from test_remote import FreezableProxy, connect_through_proxy

    timeout_s = 1.0
    started: list[float] = []
    lock = threading.Lock()
    original = _remote._RemoteState.rpc_many

    def recording(self, method, requests, in_flight):
        with lock:
            started.append(time.monotonic())
        return original(self, method, requests, in_flight)

    proxy = FreezableProxy(int(server.url().rsplit(":", 1)[1]))
    _remote._RemoteState.rpc_many = recording
    try:
        remote = connect_through_proxy(f"rerun+http://127.0.0.1:{proxy.port}", "many", remote_timeout_s=timeout_s)
        ds = _held_back(remote, fetch_size=1, shuffle=False)
        it = iter(ds)
        next(it)
        proxy.frozen.set()
        frozen_at = time.monotonic()
        time.sleep(3.5 * timeout_s)  # the consumer waits: only the segment thread asks for anything
        with lock:
            after = [t - frozen_at for t in started if t > frozen_at]
            before = sum(t <= frozen_at for t in started)
        cached = remote.cache_stats()["manifests_cached"]
        assert cached < SEGMENTS, "the look-ahead finished before the freeze: nothing was tested"
        # At most the round that started as the server froze; not one per timeout after it.
        assert len(after) <= 1, (after, before, cached)
        del it
    finally:
        _remote._RemoteState.rpc_many = original
        proxy.close()


@pytest.mark.parametrize("order", ["shuffled", "sequential"])
def test_cold_blocks_load_their_chunks_ahead_on_the_pool_once_each(data_dir, monkeypatch, order):
    """Embedded, from a cold cache that holds everything: a block's missing chunks are loaded on
    the engine's pool before its lookups (chunks_preloaded), each chunk of the dataset once
    whatever the order; with one decode thread nothing is loaded ahead, and the same chunks are
    loaded."""
    from rrloader._loader import _datasets

    def epoch(decode_threads: int) -> tuple[dict, list[dict], list]:
        blocks: list[dict] = []
        monkeypatch.setattr(_datasets, "_record_spans", blocks.append)
        source = DataSource(LocalDataset(str(data_dir)))
        ds = RerunIterableDataset(
            source,
            "time",
            FIELDS,
            timeline_sampling=FixedRateSampling(RATE_HZ),
            fetch_size=32,
            shuffle=order == "shuffled",
            seed=11,
            decode_threads=decode_threads,
        )
        samples = list(ds)
        return dict(source.dataset.cache_stats()), blocks, samples

    parallel, blocks, samples = epoch(2)
    serial, serial_blocks, serial_samples = epoch(1)
    preloaded = sum(b["chunks_preloaded"] for b in blocks)
    assert sum(b["chunks_preloaded"] for b in serial_blocks) == 0
    # Nothing was evicted, so each chunk was read once: as many misses as without loading ahead.
    assert parallel["misses"] == serial["misses"] > 2 * SEGMENTS, (parallel, serial)
    # All but the chunks of blocks that missed a single one were loaded ahead.
    assert 0.9 * parallel["misses"] <= preloaded <= parallel["misses"], (preloaded, parallel)
    assert len(samples) == len(serial_samples)
    for k, (a, b) in enumerate(zip(samples, serial_samples, strict=True)):
        _same(a, b, f"{order} sample {k}")
