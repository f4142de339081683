"""PooledBatchCollator (python/rrloader/_pooled_batches.py): rerun-sdk 0.41's contract.

* Batches equal ``default_collate``'s (``Yuv420Frame.stack`` for the YUV field) on the same samples,
  with 0 and 2 spawned DataLoader workers, for every leaf kind (tensors, NumPy, numbers, nested
  containers, Yuv420Frame).
* Slot reuse, seen through ``stats()`` from inside a worker: a consumer that drops its batches gets
  the same buffers back; one that keeps them makes the worker fall back to unpooled buffers.
* The pool's policy and its error cases side by side with 0.41's collator, in this process posing as
  a DataLoader worker (the batch goes through the same pickling as between processes), step by step:
  same counters, same exception types.
"""

from __future__ import annotations

import gc
import pickle
import threading
import time
import types
import warnings
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import rerun.experimental.dataloader._pooled_batches as ref_pooled
import rerun041  # noqa: F401  (0.41 importable)
import torch
from pooled_samples import FrameSamples, WithStats, expected_order, sample, use_file_system_strategy
from rerun041 import ref
from rrloader._loader import _pooled_batches
from rrloader._loader._pooled_batches import PooledBatchCollator
from rrloader._loader._yuv import Yuv420Frame
from torch.utils.data import DataLoader, default_collate

GROUPS = 10  # tensor leaves of pooled_samples.sample (image, state, array, index, score, 3 nested, 2 video)


def reference_batch(numbers: list[int]) -> dict:
    samples = [sample(i) for i in numbers]
    out = default_collate([{k: v for k, v in s.items() if k != "video"} for s in samples])
    out["video"] = Yuv420Frame.stack([s["video"] for s in samples])
    return out


def tuples_as_lists(x):
    """default_collate turns a tuple of a sample into a list; the pooled collators (0.41's too) keep it."""
    if isinstance(x, dict):
        return {k: tuples_as_lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [tuples_as_lists(v) for v in x]
    return x


def assert_same_batch(got: dict, want: dict, *, default_collated: bool = True) -> None:
    assert list(got) == list(want)
    if default_collated:
        assert isinstance(got["nested"]["pose"][1], tuple)
        got = tuples_as_lists(got)
    got_leaves, got_spec = torch.utils._pytree.tree_flatten(got)
    want_leaves, want_spec = torch.utils._pytree.tree_flatten(want)
    assert got_spec == want_spec
    for g, w in zip(got_leaves, want_leaves, strict=True):
        assert isinstance(g, torch.Tensor) and g.dtype == w.dtype and torch.equal(g, w)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_equal_default_collate(workers):
    kw = {"multiprocessing_context": "spawn"} if workers else {}
    loader = DataLoader(
        FrameSamples(22), batch_size=4, num_workers=workers, collate_fn=PooledBatchCollator(), **kw
    )
    order = expected_order(22, 4, workers)
    batches = list(loader)  # kept: later batches cannot have overwritten earlier ones
    assert len(batches) == len(order)
    for got, numbers in zip(batches, order, strict=True):
        assert_same_batch(got, reference_batch(numbers))
    # Same at num_workers=0 as 0.41's collator.
    if workers == 0:
        theirs = ref.PooledBatchCollator()(
            [{k: v for k, v in sample(i).items() if k != "video"} for i in range(3)]
        )
        ours = PooledBatchCollator()([{k: v for k, v in sample(i).items() if k != "video"} for i in range(3)])
        assert_same_batch(ours, theirs, default_collated=False)


def test_released_slots_are_reused_and_kept_batches_force_fallbacks():
    # The consumer drops each batch at once: after the first batch or two every leaf reuses a slot.
    loader = DataLoader(
        FrameSamples(48, batch=4, pause_s=0.15),
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",
        collate_fn=WithStats(PooledBatchCollator()),
    )
    history = []
    for batch, stats in loader:
        history.append(stats)
        del batch
    last = history[-1]
    assert last["allocations"] + last["reuses"] == 12 * GROUPS
    assert last["reuses"] >= 8 * GROUPS, last
    assert last["fallbacks"] == 0
    assert set(last["groups"]) >= {"image", "state", ("nested", 0), ("nested", 2), ("video", 0), ("video", 1)}
    assert all(g["slots"] <= 4 for g in last["groups"].values())
    assert last["pool_bytes"] > 0

    # The consumer keeps every batch: nothing comes back, 2 slots per leaf fill up, then fallbacks.
    keeper = DataLoader(
        FrameSamples(24, batch=4),
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",
        collate_fn=WithStats(PooledBatchCollator(slots_per_field=2)),
    )
    kept = list(keeper)
    final = kept[-1][1]
    assert (final["allocations"], final["reuses"], final["fallbacks"]) == (6 * GROUPS, 0, 4 * GROUPS)
    assert all(g == {"slots": 2, "busy": 2} for g in final["groups"].values())
    for (got, _), numbers in zip(kept, expected_order(24, 4, 1), strict=True):
        assert_same_batch(got, reference_batch(numbers))


def test_workers_must_be_spawned_and_share_by_file_descriptor():
    forked = DataLoader(
        FrameSamples(8),
        batch_size=4,
        num_workers=1,
        multiprocessing_context="fork",
        collate_fn=PooledBatchCollator(),
    )
    with pytest.raises(RuntimeError, match="spawn"):
        list(forked)
    file_system = DataLoader(
        FrameSamples(8),
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",
        worker_init_fn=use_file_system_strategy,
        collate_fn=PooledBatchCollator(),
    )
    with pytest.raises(RuntimeError, match="file_descriptor"):
        list(file_system)


# --------------------------------------------------------------------------- in-process, beside 0.41
@pytest.fixture
def as_worker(monkeypatch):
    """This process poses as a spawned DataLoader worker for both collators."""
    worker = types.SimpleNamespace(id=0, num_workers=1)
    import multiprocessing

    spawn = types.SimpleNamespace(get_start_method=lambda *a, **k: "spawn", Pipe=multiprocessing.Pipe)
    for module in (_pooled_batches, ref_pooled):
        monkeypatch.setattr(module, "get_worker_info", lambda: worker)
        monkeypatch.setattr(module, "mp", spawn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 0.41 pickles pytree specs
        yield


def transfer(batch):
    """Through the pickling a DataLoader result queue does, descriptors and all."""
    return ForkingPickler.loads(ForkingPickler.dumps(batch))


def settle(collators, busy_total: int) -> None:
    """Wait until each collator's pool shows `busy_total` busy slots (the release thread polls).

    The deadline is generous (the wait ends as soon as the pool settles): late in the full suite, on
    two loaded cores, a collection of the whole heap can take long while it holds the GIL the release
    threads need. A failure names the collator and whether the release threads are alive."""
    deadline = time.monotonic() + 60
    for c in collators:
        last_gc = 0.0
        while sum(g["busy"] for g in c.stats()["groups"].values()) != busy_total:
            threads = sorted(t.name for t in threading.enumerate() if "release" in t.name)
            assert time.monotonic() < deadline, (type(c).__module__, c.stats(), threads)
            if time.monotonic() - last_gc > 0.5:
                gc.collect()
                last_gc = time.monotonic()
            time.sleep(0.01)


def small(i: int, n: int = 6) -> dict:
    return {
        "x": torch.full((n,), i, dtype=torch.int64),
        "v": {"a": np.full((2,), i, np.float32), "b": float(i)},
    }


def test_pool_policy_matches_rerun041_step_by_step(as_worker):
    ours = PooledBatchCollator(slots_per_field=2, max_pool_bytes=10_000)
    theirs = ref.PooledBatchCollator(slots_per_field=2, max_pool_bytes=10_000)
    held = {"ours": [], "theirs": []}

    def step(numbers, *, keep=True, n=6):
        for name, c in (("ours", ours), ("theirs", theirs)):
            got = transfer(c([small(i, n) for i in numbers]))
            assert torch.equal(got["x"][:, 0], torch.tensor(numbers))
            assert got["v"]["b"].dtype == torch.float64 and got["v"]["a"].dtype == torch.float32
            if keep:
                held[name].append(got)
            del got
        if not keep:  # nothing else is held then: wait for both release threads to see this batch go
            settle([ours, theirs], busy_total=0)
        assert ours.stats() == theirs.stats()

    step([0, 1])  # allocate
    step([2, 3])  # the first is held: allocate a second slot
    step([4, 5])  # both held, 2 slots per leaf: fallback
    assert ours.stats()["fallbacks"] == 3 and ours.stats()["allocations"] == 9
    held["ours"].pop(0)
    held["theirs"].pop(0)
    settle([ours, theirs], busy_total=3)  # batch [0, 1]'s three leaves came back
    step([6, 7])  # reuses them
    assert ours.stats()["reuses"] == 3
    held["ours"].clear()
    held["theirs"].clear()
    settle([ours, theirs], busy_total=0)
    step([8, 9], n=40, keep=False)  # a larger x: a free slot is replaced by a larger one
    step([10, 11], n=40, keep=False)
    settle([ours, theirs], busy_total=0)
    step([12, 13], n=2000, keep=False)  # 32 KB > max_pool_bytes: not kept (fallback), pool unchanged
    settle([ours, theirs], busy_total=0)
    assert ours.stats() == theirs.stats()
    stats = ours.stats()
    assert stats["pool_bytes"] <= 10_000 and stats["groups"]["x"]["slots"] == 2
    # A view (even a NumPy one) keeps its buffer busy.
    got = transfer(ours([small(i) for i in (20, 21)]))
    view = got["x"].numpy()[1:]
    del got
    gc.collect()
    time.sleep(0.05)
    assert ours.stats()["groups"]["x"]["busy"] == 1 and view[0, 0] == 21
    del view
    settle([ours], busy_total=0)


def test_yuv_frames_travel_as_pooled_leaves(as_worker):
    c = PooledBatchCollator()
    got = transfer(c([sample(i) for i in range(3)]))
    assert_same_batch(got, reference_batch([0, 1, 2]))
    assert isinstance(got["video"], Yuv420Frame) and got["video"].color_space == "bt709"
    assert ("video", 0) in c.stats()["groups"] and ("video", 1) in c.stats()["groups"]


def _error_cases():
    ok = [small(0), small(1)]
    yield "keys differ", [small(0), {"v": small(1)["v"], "x": small(1)["x"]}]
    yield "shape differs", [small(0), small(1, n=7)]
    yield "dtype differs", [small(0), {**small(1), "x": torch.ones(6, dtype=torch.int32)}]
    yield "string leaf", [{**s, "name": "a"} for s in ok]
    yield "requires grad", [{**s, "w": torch.ones(2, requires_grad=True)} for s in ok]
    yield "structure differs", [small(0), {**small(1), "v": {"a": np.zeros(2, np.float32)}}]
    planes = (torch.zeros(1, 4, 4, dtype=torch.uint8), torch.zeros(2, 2, 2, dtype=torch.uint8))
    yield "metadata differs", [{"f": Yuv420Frame(*planes, space, "full")} for space in ("bt709", "bt601")]
    yield "non-string key", [{1: torch.zeros(2)}, {1: torch.zeros(2)}]
    yield "None value", [small(0), {**small(1), "x": None}]


@pytest.mark.parametrize(("case", "samples"), list(_error_cases()))
def test_bad_samples_raise_what_rerun041_raises(as_worker, case, samples):
    def to_ref(s):
        if isinstance(s, Yuv420Frame):
            return ref.Yuv420Frame(s.y, s.uv, s.color_space, s.color_range)
        return {k: to_ref(v) for k, v in s.items()} if isinstance(s, dict) else s

    with pytest.raises(Exception) as theirs:
        ref.PooledBatchCollator()([to_ref(s) for s in samples])
    with pytest.raises(type(theirs.value)):
        PooledBatchCollator()(samples)


def test_limits_pickling_and_single_send(as_worker):
    for bad in (1.5, True, "4", None):
        for cls in (PooledBatchCollator, ref.PooledBatchCollator):
            with pytest.raises(TypeError):
                cls(slots_per_field=bad)
            with pytest.raises(TypeError):
                cls(max_pool_bytes=bad)
    for bad in (0, -3):
        for cls in (PooledBatchCollator, ref.PooledBatchCollator):
            with pytest.raises(ValueError):
                cls(slots_per_field=bad)
            with pytest.raises(ValueError):
                cls(max_pool_bytes=bad)
    c = PooledBatchCollator(slots_per_field=3, max_pool_bytes=12345)
    batch = c([small(0), small(1)])
    assert c.__getstate__() == ref.PooledBatchCollator(slots_per_field=3, max_pool_bytes=12345).__getstate__()
    copy = pickle.loads(pickle.dumps(c))  # the pool does not travel
    assert (copy.slots_per_field, copy.max_pool_bytes) == (3, 12345)
    assert copy.stats() == {"allocations": 0, "reuses": 0, "fallbacks": 0, "pool_bytes": 0, "groups": {}}
    ForkingPickler.dumps(batch)
    with pytest.raises(RuntimeError, match="once"):
        ForkingPickler.dumps(batch)
    # Not a list of dicts: default_collate, as 0.41 (an empty list fails there, the same way).
    assert torch.equal(c([torch.ones(2), torch.zeros(2)]), torch.stack([torch.ones(2), torch.zeros(2)]))
    with pytest.raises(Exception) as theirs:
        ref.PooledBatchCollator()([])
    with pytest.raises(type(theirs.value)):
        c([])
