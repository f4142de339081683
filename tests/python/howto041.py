"""Rerun's dataloader how-to (``docs/snippets/all/howto/dataloader.py`` in rerun-io/rerun), as a
user of rerun-sdk 0.41 would write it, with the import prefix as a parameter.

    python howto041.py PREFIX SOURCE DATA_DIR OUT_JSON

PREFIX is ``rerun.`` (the reference, rerun-sdk 0.41) or ``rrloader.``: the only difference
between the two runs is the module the dataloader names come from. SOURCE is ``served`` (an
in-process ``rr.server.Server`` on 127.0.0.1, the episodes registered into a catalog dataset
and read through ``CatalogClient.get_dataset``, as the how-to does) or ``local`` (rrloader only:
``DataSource(dataset=rrloader.LocalDataset(DATA_DIR))``).

The shape follows the how-to: a state field, the action windowed 50 steps ahead in seconds on
the ``real_time`` timestamp timeline, the wrist camera decoded from H.264, ``FixedRateSampling``
at 15 Hz, two selected episodes, ``BlockShuffle`` (Rerun's advice for video), a DataLoader with
a collate function, and a small policy's training loop over two epochs. What the loop saw (a
digest of every batch, every loss) goes to OUT_JSON.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

import torch
import torch.multiprocessing
from torch import nn

EPISODES = ["droid_ep_0001", "droid_ep_0002"]  # the two the how-to selects (the folder has three)
RATE_HZ = 15.0


def main(prefix: str, source_kind: str, data_dir: str, out_json: str) -> None:
    if prefix == "rerun.":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import rerun041  # noqa: F401  (torchvision cannot be imported here; rerun's ImageDecoder needs it)

    import rerun as rr

    torch.multiprocessing.set_start_method("spawn", force=True)
    dl = importlib.import_module(prefix + "experimental.dataloader")  # the one changed line
    DataSource, Field, FixedRateSampling = dl.DataSource, dl.Field, dl.FixedRateSampling
    NumericDecoder, VideoFrameDecoder = dl.NumericDecoder, dl.VideoFrameDecoder
    RerunIterableDataset, RerunMapDataset, BlockShuffle = dl.RerunIterableDataset, dl.RerunMapDataset, dl.BlockShuffle

    server = None
    if source_kind == "served":
        server = rr.server.Server(host="127.0.0.1")
        client = rr.catalog.CatalogClient(server.url())
        dataset = client.create_dataset("my_robot_data", exist_ok=True)
        dataset.register([f"file://{p.resolve()}" for p in sorted(Path(data_dir).glob("*.rrd"))]).wait()
        source = DataSource(dataset=client.get_dataset("my_robot_data"), segments=EPISODES)
    else:
        import rrloader

        source = DataSource(dataset=rrloader.LocalDataset(data_dir), segments=EPISODES)

    fields = {
        "state": Field("/observation/joint_positions:Scalars:scalars", decode=NumericDecoder()),
        # the next 50 action steps, offsets in seconds on the timestamp timeline
        "action": Field(
            "/action/joint_positions:Scalars:scalars",
            decode=NumericDecoder(),
            window=tuple(step / RATE_HZ for step in range(1, 51)),
        ),
        "image": Field("/camera/wrist:VideoStream:sample", decode=VideoFrameDecoder(codec="h264")),
    }
    ds = RerunIterableDataset(
        source=source,
        index="real_time",
        fields=fields,
        timeline_sampling=FixedRateSampling(rate_hz=RATE_HZ),
        fetch_block_size=16,
        shuffle_strategy=BlockShuffle(buffer_size=24),
    )

    def my_collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {
            "state": torch.stack([s["state"] for s in samples]).float(),
            "action": torch.stack([s["action"] for s in samples]).float(),
            "image": torch.stack([s["image"] for s in samples]),
        }

    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, num_workers=0, shuffle=isinstance(ds, RerunMapDataset), collate_fn=my_collate
    )

    class TinyPolicy(nn.Module):
        def __init__(self, state_dim: int = 7, horizon: int = 50, action_dim: int = 7) -> None:
            super().__init__()
            self.shape = (horizon, action_dim)
            self.linear = nn.Linear(state_dim + 3, horizon * action_dim)

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            pixels = batch["image"].float().mean(dim=(-1, -2)) / 255.0  # [B, 3]: per-channel mean of CHW
            prediction = self.linear(torch.cat([batch["state"], pixels], dim=1))
            return nn.functional.mse_loss(prediction.view(-1, *self.shape), batch["action"])

    torch.manual_seed(0)
    policy = TinyPolicy()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    seen: dict = {"len": len(ds), "epochs": []}
    for epoch in range(2):
        if isinstance(ds, RerunIterableDataset):
            ds.set_epoch(epoch)
        batches = []
        for batch in loader:
            loss = policy.forward(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            digest = hashlib.sha256()
            for key in sorted(batch):
                t = batch[key].contiguous()
                digest.update(f"{key}{t.dtype}{tuple(t.shape)}".encode())
                digest.update(t.numpy().tobytes())
            batches.append(
                {
                    "digest": digest.hexdigest(),
                    "shapes": {k: list(v.shape) for k, v in batch.items()},
                    "state0": [float(v) for v in batch["state"][:, 0]],
                    "loss": float(loss),
                }
            )
        seen["epochs"].append(batches)
    seen["params"] = [float(v) for p in policy.parameters() for v in p.detach().flatten()[:16]]
    Path(out_json).write_text(json.dumps(seen))
    if server is not None:
        server.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
