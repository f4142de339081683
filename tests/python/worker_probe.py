"""A dataset wrapper that reports, from inside each DataLoader worker, what its engine did
(importable by spawned workers): for test_workers.py.

``StatsProbe(inner, hold_s)`` yields every sample of ``inner`` as ``("sample", sample)``, waiting
``hold_s`` seconds before the first (so that the pipeline runs as far ahead as its memory bounds let
it), and then one ``("stats", {...})`` item: the worker's id and count, its usable cores, and the
engine's ``thread_stats()`` and ``fetch_stats()`` taken right after the last sample.
"""

from __future__ import annotations

import os
import time

from torch.utils.data import IterableDataset, get_worker_info


class StatsProbe(IterableDataset):
    def __init__(self, inner, hold_s: float = 0.0) -> None:
        self.inner, self.hold_s = inner, hold_s

    def __iter__(self):
        info = get_worker_info()
        it = iter(self.inner)
        ahead = None
        first = next(it, None)
        if first is not None:
            time.sleep(self.hold_s)
            ahead = self.inner.fetch_stats()["samples"]  # fetched while one sample was consumed
            yield ("sample", first)
        for s in it:
            yield ("sample", s)
        yield (
            "stats",
            {
                "worker": None if info is None else info.id,
                "workers": 0 if info is None else info.num_workers,
                "cores": len(os.sched_getaffinity(0)),
                "threads": self.inner.thread_stats(),
                "fetched_ahead": ahead,
            },
        )
