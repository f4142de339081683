"""One rank of test_remote.py's torchrun test (gloo, CPU): every rank reads one catalog.

    python -m torch.distributed.run --nproc_per_node=2 ddp_remote_worker.py URL DATASET OUT_DIR --seed S --epoch E

Each rank connects to the catalog itself (``rr.catalog.CatalogClient(URL).get_dataset(DATASET)``),
iterates its shard of a ``RerunIterableDataset`` over the numeric dataset of dlutil.py (state
values name their sample: k * 1000 + 10 * frame), all-reduces the number of samples it read and
writes the (segment number, frame) of each sample, in order, to OUT_DIR/rank{R}.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import rerun as rr
import rrloader
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("dataset")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epoch", type=int, required=True)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    entry = rr.catalog.CatalogClient(args.url).get_dataset(args.dataset)
    fields = {"state": rrloader.Field("/state:Scalars:scalars", decode=rrloader.NumericDecoder())}
    ds = rrloader.RerunIterableDataset(rrloader.DataSource(entry), "frame", fields, fetch_size=2, seed=args.seed)
    ds.set_epoch(args.epoch)
    ids = []
    for sample in DataLoader(ds, batch_size=None, num_workers=0):
        v = int(sample["state"][0])
        ids.append([v // 1000, (v % 1000) // 10])
    total = torch.tensor(len(ids))
    dist.all_reduce(total)
    report = {"rank": rank, "world": world, "ids": ids, "total": int(total)}
    (Path(args.out_dir) / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
