"""Tiny in-test datasets for the collator tests (importable by spawned DataLoader workers).

``FrameSamples(n)`` yields n samples of every leaf kind the collators take: tensors of two dtypes,
a NumPy array, Python numbers, a nested dict/list/tuple, and a ``Yuv420Frame`` window; each value is
a function of the sample number only. In a DataLoader with k workers, worker j yields samples
j, j + k, j + 2k, ... (``expected_order`` gives the order DataLoader then returns them in).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from rrloader._loader._yuv import Yuv420Frame
from torch.utils.data import IterableDataset, get_worker_info


def sample(i: int) -> dict:
    g = torch.Generator().manual_seed(i)
    return {
        "image": torch.randint(0, 256, (3, 6, 10), dtype=torch.uint8, generator=g),
        "state": torch.randn(7, generator=g),
        "array": np.arange(5, dtype=np.int32) * i,
        "index": i,
        "score": i / 4,
        "nested": {"pose": [torch.full((2,), float(i)), (i, torch.tensor([i, -i]))]},
        "video": Yuv420Frame(
            torch.randint(0, 256, (2, 1, 5, 7), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (2, 2, 3, 4), dtype=torch.uint8, generator=g),
            "bt709",
            "limited",
        ),
    }


class FrameSamples(IterableDataset):
    """`n` samples, sharded over DataLoader workers; `pause_s` sleeps after each batch's worth
    (`batch` samples), giving the consumer time to release buffers before the next collate."""

    def __init__(self, n: int, *, batch: int = 4, pause_s: float = 0.0, big: int = 0) -> None:
        self.n, self.batch, self.pause_s, self.big = n, batch, pause_s, big

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, i in enumerate(range(worker, self.n, workers)):
            if self.pause_s and k and k % self.batch == 0:
                time.sleep(self.pause_s)
            s = sample(i)
            if self.big:
                s["big"] = torch.full((self.big,), i, dtype=torch.uint8)
            yield s


def expected_order(n: int, batch: int, workers: int) -> list[list[int]]:
    """The sample numbers of each batch a DataLoader over FrameSamples(n) returns (workers in turn)."""
    if workers == 0:
        return [list(range(s, min(n, s + batch))) for s in range(0, n, batch)]
    per_worker = [list(range(w, n, workers)) for w in range(workers)]
    chunks = [[shard[s : s + batch] for s in range(0, len(shard), batch)] for shard in per_worker]
    out = []
    for r in range(max(len(c) for c in chunks)):
        out += [c[r] for c in chunks if r < len(c)]
    return out


class WithStats:
    """collate_fn wrapper: (the wrapped collator's batch, its stats() right after collating it), so a
    test can watch a worker's pool from the training process."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, samples):
        batch = self.collator(samples)
        return batch, self.collator.stats()


def use_file_system_strategy(worker_id: int) -> None:
    """worker_init_fn: PyTorch's other sharing strategy, which PooledBatchCollator refuses."""
    torch.multiprocessing.set_sharing_strategy("file_system")
