"""One rank of test_dataloader041_ddp.py's torchrun test (gloo, CPU): 2 spawned DataLoader workers.

    python -m torch.distributed.run --nproc_per_node=2 ddp_spawn_worker.py DATA_DIR URL DATASET OUT_DIR \
        --seed S --epoch E

For each front end (the seed ``rrloader.dataloader`` and ``rrloader.experimental.dataloader``)
and each source (a ``LocalDataset`` of DATA_DIR, and the catalog at URL, which every rank
connects to itself), iterates a ``RerunIterableDataset`` over the numeric dataset of dlutil.py
through a ``DataLoader`` with 2 *spawned* workers: the rank travels into the workers (a spawned
worker has no process group of its own). Every sample's id (segment number, frame: the state
value k * 1000 + 10 * frame names it) and the worker that yielded it go, in order, to
OUT_DIR/rank{R}.json, with the all-reduced number of samples of each configuration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, get_worker_info

STATE = "/state:Scalars:scalars"


def tag_worker(sample: dict) -> tuple[int, list[int]]:
    """DataLoader collate (batch_size=None: per sample, in the worker): (worker id, sample id)."""
    v = int(sample["state"][0])
    return get_worker_info().id, [v // 1000, (v % 1000) // 10]


def dataset(front: str, source: object, seed: int):
    if front == "seed":
        import rrloader.dataloader as m

        fields = {"state": m.Field(STATE, decode=m.NumericDecoder())}
        return m.RerunIterableDataset(m.DataSource(source), "frame", fields, fetch_size=2, seed=seed)
    import rrloader.experimental.dataloader as m

    fields = {"state": m.Field(STATE, decode=m.NumericDecoder())}
    return m.RerunIterableDataset(m.DataSource(source), "frame", fields, fetch_block_size=2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("url")
    parser.add_argument("dataset")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epoch", type=int, required=True)
    args = parser.parse_args()

    import rerun as rr
    import rrloader

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    sources = {
        "local": rrloader.LocalDataset(args.data_dir),
        "remote": rr.catalog.CatalogClient(args.url).get_dataset(args.dataset),
    }
    report: dict = {"rank": rank, "world": world, "runs": {}}
    for front in ("seed", "0.41"):
        for name, source in sources.items():
            ds = dataset(front, source, args.seed)
            ds.set_epoch(args.epoch)
            loader = DataLoader(
                ds, batch_size=None, num_workers=2, multiprocessing_context="spawn", collate_fn=tag_worker
            )
            seen = [[w, ident] for w, ident in loader]
            total = torch.tensor(len(seen))
            dist.all_reduce(total)
            report["runs"][f"{front}/{name}"] = {"samples": seen, "total": int(total), "len": len(ds)}
    (Path(args.out_dir) / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
