"""The training demo (rrloader.train_demo): a tiny policy trained through rrloader's dataloader.

Runs for real on a tiny demo dataset (2 episodes of 2 s: 100 frames each, so 49 samples per
episode with the 50-step action window), a handful of steps, a few seconds on CPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

N_EPISODES = 2
SECONDS = 2
STEPS = 6
BATCH = 8


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from rrloader import demo

    out = tmp_path_factory.mktemp("train_demo")
    demo.write_demo_dataset(out, n_episodes=N_EPISODES, seconds=SECONDS, progress=False)
    return out


def test_dataset_yields_the_fields_the_policy_needs(demo_dir):
    from rrloader import train_demo

    ds = train_demo.make_dataset(demo_dir, fetch_size=16)
    frames = SECONDS * 50
    assert len(ds) == N_EPISODES * (frames - train_demo.HORIZON)
    sample = next(iter(ds))
    assert set(sample) == {"state", "action", "image", "wrist"}
    assert tuple(sample["state"].shape) == (train_demo.NUM_JOINTS,)
    assert tuple(sample["action"].shape) == (train_demo.HORIZON, train_demo.NUM_JOINTS)
    if sample["image"] is not None:
        assert tuple(sample["image"].shape) == train_demo.IMAGE_SHAPE
    # The wrist video starts at frame 0: every sample has its frame, decoded from H.264.
    before = ds.video_stats()["wrist"]  # counts the blocks the first iterator decoded ahead too
    wrist = [s["wrist"] for s in ds]
    assert all(w is not None and tuple(w.shape) == train_demo.IMAGE_SHAPE for w in wrist)
    after = ds.video_stats()["wrist"]
    assert after["slots_filled"] - before["slots_filled"] == len(ds)
    assert after["missing_no_keyframe"] == 0


def test_train_a_few_steps(demo_dir):
    import torch
    from rrloader import train_demo

    shapes = []

    def on_batch(batch, prediction):
        shapes.append(
            (
                tuple(batch["state"].shape),
                tuple(batch["image"].shape),
                batch["image"].dtype,
                tuple(batch["wrist"].shape),
                tuple(batch["action"].shape),
                tuple(prediction.shape),
            )
        )

    threads = torch.get_num_threads()
    result = train_demo.train(
        demo_dir, steps=STEPS, batch_size=BATCH, progress=False, threads=1, on_batch=on_batch
    )
    assert torch.get_num_threads() == threads  # restored
    assert result.steps == STEPS == len(result.losses) == len(shapes)
    assert all(math.isfinite(x) for x in result.losses)
    assert math.isfinite(result.first_loss) and math.isfinite(result.last_loss)
    assert 0 < result.samples <= STEPS * BATCH
    assert result.samples == sum(s[0][0] for s in shapes)
    assert result.seconds > 0 and result.samples_per_s > 0
    h, j = train_demo.HORIZON, train_demo.NUM_JOINTS
    for state, image, image_dtype, wrist, action, prediction in shapes:
        b = state[0]
        assert 0 < b <= BATCH
        assert state == (b, j)
        assert image == (b, *train_demo.IMAGE_SHAPE) and image_dtype == torch.uint8
        assert wrist == (b, *train_demo.IMAGE_SHAPE)
        assert action == (b, h, j)
        assert prediction == (b, h, j)
    assert result.prediction_shape == (shapes[-1][0][0], h, j)
    assert "samples/s" in result.summary()


def test_training_is_deterministic(demo_dir):
    from rrloader import train_demo

    a = train_demo.train(demo_dir, steps=3, batch_size=BATCH, progress=False, threads=1)
    b = train_demo.train(demo_dir, steps=3, batch_size=BATCH, progress=False, threads=1)
    assert a.losses == b.losses


def test_loss_decreases(demo_dir):
    from rrloader import train_demo

    result = train_demo.train(demo_dir, steps=40, batch_size=16, progress=False, threads=1)
    assert result.epochs >= 2  # 98 samples, 16 a batch: the loop goes over several epochs
    assert result.last_loss < 0.5 * result.first_loss, result.losses


def test_demo_main_trains(tmp_path):
    """`python -m rrloader.demo` (what `make demo` runs) trains after inspecting."""
    from rrloader import demo

    out = tmp_path / "demo"
    demo.write_demo_dataset(out, n_episodes=1, seconds=SECONDS, progress=False)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = ["--out", str(out), "--episodes", "1", "--seconds", str(SECONDS), "--train-steps", "3"]
    proc = subprocess.run(
        [sys.executable, "-m", "rrloader.demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "episode_0000" in proc.stdout  # the inspect output comes first
    assert "final loss:" in proc.stdout and "trained 3 steps" in proc.stdout
    assert "samples/s" in proc.stdout
    # not a terminal: progress as plain lines on stderr
    assert "training: step 3/3" in proc.stderr

    no_train = subprocess.run(
        [sys.executable, "-m", "rrloader.demo", *args, "--no-train", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert no_train.returncode == 0, no_train.stderr
    assert "episode_0000" in no_train.stdout and "final loss" not in no_train.stdout


def test_too_short_episodes_skip_training(tmp_path, capsys):
    from rrloader import demo, train_demo

    demo.write_demo_dataset(tmp_path, n_episodes=1, seconds=1, progress=False)  # 50 frames: no sample
    assert train_demo.run(str(tmp_path), steps=3, progress=False) == 0
    captured = capsys.readouterr()
    assert "skipping training" in captured.err
    assert captured.out == ""
