"""Train a tiny visuomotor policy on the demo dataset, fed by rrloader's PyTorch dataloader.

    python -m rrloader.train_demo [--data DIR] [--steps N] [--batch-size B] [--seed S]

The policy maps the robot's joint state (7 floats), the front camera image (JPEG, 128x96)
and the wrist camera's video frame (H.264 VideoStream, 128x96) at a `frame` tick to the next
50 actions (a 50 x 7 window): a small CNN over both pictures, an MLP for the state, an MLP
head. The data comes through the public API:

    source = rrloader.DataSource(dataset=rrloader.LocalDataset(DIR))
    fields = {
        "state": rrloader.Field("/robot/joint_state:Scalars:scalars", decode=rrloader.NumericDecoder()),
        "action": rrloader.Field("/robot/action:Scalars:scalars", decode=rrloader.NumericDecoder(),
                                 window=(1, 50)),
        "image": rrloader.Field("/camera/front:EncodedImage:blob", decode=rrloader.ImageDecoder()),
        "wrist": rrloader.Field("/camera/wrist:VideoStream:sample", decode=rrloader.VideoFrameDecoder()),
    }
    ds = rrloader.RerunIterableDataset(source, "frame", fields, fetch_size=128, shuffle=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, collate_fn=rrloader.collate_samples)

`python -m rrloader.demo` runs this after writing the dataset (`make demo`). Runs are
deterministic for a seed on a given machine and thread count. torch is imported only when
training starts, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

STATE_PATH = "/robot/joint_state:Scalars:scalars"
ACTION_PATH = "/robot/action:Scalars:scalars"
IMAGE_PATH = "/camera/front:EncodedImage:blob"
WRIST_PATH = "/camera/wrist:VideoStream:sample"
INDEX = "frame"
NUM_JOINTS = 7
HORIZON = 50  # actions at frame t+1 .. t+50
ACTION_WINDOW = (1, HORIZON)
IMAGE_SHAPE = (3, 96, 128)  # C, H, W

DEFAULT_STEPS = 2000
# The demo trains on one thread: the model is too small to gain much from more, and with
# num_workers=0 the loader's fetch/decode threads then have the other core(s) to themselves.
# It also keeps the run time predictable on a busy machine (a 2-thread OpenMP region waits
# for its slowest thread).
DEMO_TORCH_THREADS = 1
DEFAULT_BATCH_SIZE = 32
DEFAULT_FETCH_SIZE = 128
DEFAULT_LR = 2e-3
DEFAULT_SEED = 0


@dataclass
class TrainResult:
    """What a training run did. `losses` has one entry per optimiser step."""

    steps: int
    samples: int
    epochs: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    prediction_shape: tuple[int, ...] = ()

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")

    def _edge(self, last: bool) -> float:
        k = max(1, min(10, len(self.losses) // 10))
        part = self.losses[-k:] if last else self.losses[:k]
        return sum(part) / len(part) if part else float("nan")

    @property
    def first_loss(self) -> float:
        """Mean loss of the first steps (up to 10, a tenth of the run)."""
        return self._edge(last=False)

    @property
    def last_loss(self) -> float:
        """Mean loss of the last steps (up to 10, a tenth of the run)."""
        return self._edge(last=True)

    def summary(self) -> str:
        k = max(1, min(10, len(self.losses) // 10))
        return (
            f"trained {self.steps} steps ({self.epochs} epoch(s)) in {self.seconds:.1f} s: "
            f"{self.samples} samples seen, {self.samples_per_s:.0f} samples/s, "
            f"loss {self.first_loss:.4f} -> {self.last_loss:.4f} (mean of the first/last {k} steps)"
        )


# --- data ---------------------------------------------------------------------------------------


def make_fields() -> dict[str, Any]:
    import rrloader

    return {
        "state": rrloader.Field(STATE_PATH, decode=rrloader.NumericDecoder()),
        "action": rrloader.Field(ACTION_PATH, decode=rrloader.NumericDecoder(), window=ACTION_WINDOW),
        "image": rrloader.Field(IMAGE_PATH, decode=rrloader.ImageDecoder()),
        "wrist": rrloader.Field(WRIST_PATH, decode=rrloader.VideoFrameDecoder()),
    }


def make_dataset(
    data_dir: str | os.PathLike,
    *,
    fetch_size: int = DEFAULT_FETCH_SIZE,
    shuffle: bool = True,
    seed: int = DEFAULT_SEED,
):
    """The demo's training samples: `state` [7], `action` [50, 7], `image` and `wrist` [3, 96, 128] uint8."""
    import rrloader

    source = rrloader.DataSource(dataset=rrloader.LocalDataset(str(data_dir)))
    return rrloader.RerunIterableDataset(
        source, INDEX, make_fields(), fetch_size=fetch_size, shuffle=shuffle, seed=seed
    )


def complete_rows(batch: dict[str, Any], missing: dict[str, Any]) -> dict[str, Any] | None:
    """The rows of a `rrloader.collate_samples` batch that have every field, or None if none has.

    (A sample misses its image before the camera's first frame, for instance.)
    """
    if any(value is None for value in batch.values()):
        return None  # a field missing in the whole batch
    incomplete = None
    for mask in missing.values():
        incomplete = mask if incomplete is None else incomplete | mask
    if incomplete is None or not bool(incomplete.any()):
        return batch
    keep = ~incomplete
    if not bool(keep.any()):
        return None
    return {key: value[keep] for key, value in batch.items()}


# --- model --------------------------------------------------------------------------------------


def make_policy():
    """A small CNN + MLP: (state [B,7], image and wrist [B,3,96,128] uint8) -> actions [B,50,7].

    The two pictures are stacked as 6 channels into one CNN."""
    import torch
    from torch import nn

    class TinyPolicy(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int) -> list[nn.Module]:
                return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(4, cout), nn.ReLU()]

            self.vision = nn.Sequential(
                nn.AvgPool2d(4),  # 96x128 -> 24x32
                *block(6, 16),  # 12x16
                *block(16, 32),  # 6x8
                *block(32, 32),  # 3x4
                nn.Flatten(),
                nn.Linear(32 * 3 * 4, 128),
                nn.ReLU(),
            )
            self.proprio = nn.Sequential(nn.Linear(NUM_JOINTS, 64), nn.ReLU())
            self.head = nn.Sequential(
                nn.Linear(128 + 64, 256),
                nn.ReLU(),
                nn.Linear(256, HORIZON * NUM_JOINTS),
            )

        def forward(self, state: torch.Tensor, image: torch.Tensor, wrist: torch.Tensor) -> torch.Tensor:
            x = torch.cat([image, wrist], dim=1).float().div_(255.0).sub_(0.5)
            features = torch.cat([self.vision(x), self.proprio(state)], dim=1)
            delta = self.head(features).view(-1, HORIZON, NUM_JOINTS)
            return state.unsqueeze(1) + delta  # actions as offsets from the current state

    return TinyPolicy()


# --- training -----------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on stderr when it is a terminal, else a line every tenth of the run."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.bar = None
        self.next_line = 0
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="training", unit="step", file=sys.stderr, leave=False)
            except ImportError:
                pass

    def update(self, step: int, loss: float, samples_per_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.0f}", refresh=False)
            self.bar.update(1)
        elif step >= self.next_line or step == self.total:
            print(
                f"training: step {step}/{self.total}  loss {loss:.4f}  {samples_per_s:.0f} samples/s",
                file=sys.stderr,
                flush=True,
            )
            self.next_line = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    data: Any,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    fetch_size: int = DEFAULT_FETCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
    threads: int | None = None,
    on_batch: Callable[[dict[str, Any], Any], None] | None = None,
) -> TrainResult:
    """Train the tiny policy for `steps` optimiser steps on `data`: a dataset folder, or a
    dataset made by `make_dataset`.

    Epochs repeat (with `set_epoch`, so the shuffle changes) until `steps` is reached.
    `threads` sets torch's intra-op thread count for the run (restored afterwards); None
    leaves it as it is. `on_batch(batch, prediction)` is called after each step (tests look
    at shapes).
    """
    import torch

    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(data, steps, batch_size, fetch_size, lr, seed, progress, on_batch)
    finally:
        torch.set_num_threads(threads_before)


def _train(data, steps, batch_size, fetch_size, lr, seed, progress, on_batch) -> TrainResult:
    import torch

    import rrloader
    from rrloader import tracing

    torch.manual_seed(seed)
    if isinstance(data, (str, os.PathLike)):
        dataset = make_dataset(data, fetch_size=fetch_size, seed=seed)
    else:
        dataset = data
    if len(dataset) == 0:
        raise ValueError(f"no training samples in {data}")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=0, collate_fn=rrloader.collate_samples
    )
    policy = make_policy()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-4, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 2), pct_start=0.1
    )

    result = TrainResult(steps=0, samples=0, epochs=0, seconds=0.0)
    bar = _Progress(steps, progress)
    start = time.perf_counter()
    try:
        while result.steps < steps:
            dataset.set_epoch(result.epochs)
            batches_this_epoch = 0
            with tracing.tracing_scope("train_demo.epoch", attributes={"train_demo.epoch": result.epochs}):
                for collated in loader:
                    batch = complete_rows(*collated)
                    if batch is None:
                        continue
                    batches_this_epoch += 1
                    prediction = policy(batch["state"].float(), batch["image"], batch["wrist"])
                    loss = torch.nn.functional.mse_loss(prediction, batch["action"].float())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()

                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise FloatingPointError(f"loss became {value} at step {result.steps + 1}")
                    result.steps += 1
                    result.samples += int(batch["state"].shape[0])
                    result.losses.append(value)
                    result.prediction_shape = tuple(prediction.shape)
                    if on_batch is not None:
                        on_batch(batch, prediction.detach())
                    result.seconds = time.perf_counter() - start
                    bar.update(result.steps, value, result.samples_per_s)
                    if result.steps >= steps:
                        break
            result.epochs += 1
            if batches_this_epoch == 0:
                raise ValueError(f"every sample in {data} lacks a field; nothing to train on")
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from rrloader.demo import DEFAULT_OUT

    parser = argparse.ArgumentParser(
        prog="python -m rrloader.train_demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", default=DEFAULT_OUT, help=f"dataset folder (default: ./{DEFAULT_OUT})")
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help=f"optimiser steps (default: {DEFAULT_STEPS})"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return run(
        args.data, steps=args.steps, batch_size=args.batch_size, seed=args.seed, progress=not args.quiet
    )


def run(
    data_dir: str,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> int:
    """Train and print the outcome (the demo's last step); returns an exit status.

    A dataset without training samples (episodes not longer than the action window) is
    reported on stderr and skipped, not an error.
    """
    dataset = make_dataset(data_dir, seed=seed)
    if len(dataset) == 0:
        print(
            f"\nno training samples in {data_dir} (episodes need at least {HORIZON + 1} frames "
            f"for a {HORIZON}-step action window): skipping training",
            file=sys.stderr,
        )
        return 0
    print(
        f"\ntraining a tiny policy (joint state + camera image + wrist video -> {HORIZON} x {NUM_JOINTS} actions) on "
        f"{len(dataset)} samples: {steps} steps, batch size {batch_size}, {DEMO_TORCH_THREADS} torch thread(s)",
        file=sys.stderr,
        flush=True,
    )
    result = train(
        dataset, steps=steps, batch_size=batch_size, seed=seed, progress=progress, threads=DEMO_TORCH_THREADS
    )
    print(f"\nfinal loss: {result.last_loss:.4f}")
    print(result.summary())
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
