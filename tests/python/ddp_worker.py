"""One rank of test_dataloader_torch.py's torchrun test (gloo, CPU).

    python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py DATA_DIR OUT_DIR --seed S --epoch E

Trains a tiny DDP model a few steps on DATA_DIR's recordings (the test's /id + /img layout), first
through RerunIterableDataset (sharded by rank inside the dataset, then by 2 forked DataLoader
workers), then through RerunMapDataset + DistributedSampler(drop_last=True). Every sample id the
rank saw (trained on or not: the epoch is read to the end) goes to OUT_DIR/rank{R}.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import rrloader
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

TRAIN_STEPS = 3
BATCH = 4


def fields() -> dict[str, rrloader.Field]:
    return {
        "id": rrloader.Field("/id:Scalars:scalars", decode=rrloader.NumericDecoder()),
        "img": rrloader.Field("/img:EncodedImage:blob", decode=rrloader.ImageDecoder()),
    }


def run_phase(loader, model, opt) -> tuple[list[list[int]], int, list[float]]:
    ids: list[list[int]] = []
    losses: list[float] = []
    steps = 0
    for batch in loader:
        ids.extend([[int(v) for v in row] for row in batch["id"].tolist()])
        if steps < TRAIN_STEPS:  # every rank has at least TRAIN_STEPS batches: the all-reduces pair up
            x = torch.cat([batch["id"].float(), batch["img"].flatten(1).float() / 255], dim=1)
            loss = (model(x).squeeze(1) - batch["id"][:, 1].float() / 10).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            steps += 1
    return ids, steps, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epoch", type=int, required=True)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(2 + 3 * 4 * 6, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    paths = sorted(str(p) for p in Path(args.data_dir).glob("*.rrd"))
    src = rrloader.DataSource(rrloader.LocalDataset(paths))

    iterable = rrloader.RerunIterableDataset(src, "frame", fields(), fetch_size=4, seed=args.seed)
    iterable.set_epoch(args.epoch)
    loader = DataLoader(iterable, batch_size=BATCH, num_workers=2, multiprocessing_context="fork")
    it_ids, it_steps, it_losses = run_phase(loader, model, opt)
    dist.barrier()

    mapped = rrloader.RerunMapDataset(src, "frame", fields())
    sampler = DistributedSampler(mapped, shuffle=True, seed=0, drop_last=True)
    sampler.set_epoch(args.epoch)
    map_ids, map_steps, map_losses = run_phase(
        DataLoader(mapped, batch_size=BATCH, sampler=sampler), model, opt
    )
    dist.barrier()

    report = {
        "rank": rank,
        "world": world,
        "iterable": it_ids,
        "map": map_ids,
        "steps": {"iterable": it_steps, "map": map_steps},
        "losses": {"iterable": it_losses, "map": map_losses},
        "params": [float(v) for p in model.module.parameters() for v in p.detach().flatten()],
    }
    (Path(args.out_dir) / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
