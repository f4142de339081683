"""A dataset that costs nothing: the DataLoader's own ceiling with workers (bench_workers.py).

Its own module, so that spawned DataLoader workers import it by name (and torch with it) while
the benchmark's driver process does not.
"""

from __future__ import annotations

import torch


class ReadySamples(torch.utils.data.IterableDataset):
    """Yields ``sample`` (a dict of tensors) ``count`` times in all, split over the workers."""

    def __init__(self, sample: dict, count: int):
        self.sample, self.count = sample, count

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for _ in range(worker, self.count, workers):
            yield self.sample
