"""Rerun's dataloader how-to on rrloader with only the import prefix changed (``howto041.py``).

DROID-like episodes are written here (joint positions and actions, 7 values at ~15 Hz on a
``real_time`` timestamp timeline with jitter, a wrist camera as an H.264 ``VideoStream`` with
``is_keyframe``). The how-to runs three times, each in a fresh process: ``rerun.`` over a served
dataset (the reference), ``rrloader.`` over a served dataset and ``rrloader.`` over a
``LocalDataset``. Its training loop completes in each, and what it saw — every batch's bytes
(digest), shapes and loss, over two epochs — is the reference's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import videoutil  # noqa: E402

T0_NS = 1_688_000_000_000_000_000
PERIOD_NS = 66_666_667  # 15 Hz


def write_droid_like(folder: Path) -> None:
    import rerun as rr

    rng = np.random.default_rng(11)
    # Episodes of 4-6 s: a sample needs its whole 50-step (3.3 s) action window inside the episode.
    for k, (name, n) in enumerate([("droid_ep_0001", 90), ("droid_ep_0002", 80), ("droid_ep_0003", 60)]):
        t = T0_NS + k * 10**12 + np.arange(n) * PERIOD_NS + rng.integers(0, PERIOD_NS // 5, n)
        times = [rr.TimeColumn("real_time", timestamp=t.astype("datetime64[ns]"))]
        joints = np.cumsum(rng.normal(scale=0.05, size=(n, 7)), axis=0)
        actions = joints + rng.normal(scale=0.01, size=(n, 7))
        packets, keys = videoutil.encode("h264", 32, 24, n, 10, seed=k)
        with rr.RecordingStream("rrloader_howto041", recording_id=name, send_properties=False) as rec:
            rec.save(folder / f"{name}.rrd")
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            rec.send_columns("/observation/joint_positions", indexes=times, columns=rr.Scalars.columns(scalars=joints))
            rec.send_columns("/action/joint_positions", indexes=times, columns=rr.Scalars.columns(scalars=actions))
            rec.log("/camera/wrist", rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
            rec.send_columns(
                "/camera/wrist", indexes=times, columns=rr.VideoStream.columns(sample=packets, is_keyframe=keys)
            )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("droid_like")
    write_droid_like(data)
    out = tmp_path_factory.mktemp("howto_runs")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    results = {}
    for prefix, source in [("rerun.", "served"), ("rrloader.", "served"), ("rrloader.", "local")]:
        path = out / f"{prefix}{source}.json"
        proc = subprocess.run(
            [sys.executable, str(HERE / "howto041.py"), prefix, source, str(data), str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{prefix} {source}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        results[(prefix, source)] = json.loads(path.read_text())
    return results


def test_the_reference_loop_trains_on_something(runs):
    ref = runs[("rerun.", "served")]
    assert len(ref["epochs"]) == 2
    for batches in ref["epochs"]:
        assert len(batches) >= 4
        assert batches[0]["shapes"] == {"state": [8, 7], "action": [8, 50, 7], "image": [8, 3, 24, 32]}
        assert all(np.isfinite(b["loss"]) for b in batches)
    # BlockShuffle: the two epochs are different orders of the same samples.
    assert [b["digest"] for b in ref["epochs"][0]] != [b["digest"] for b in ref["epochs"][1]]
    assert sorted(v for b in ref["epochs"][0] for v in b["state0"]) == sorted(
        v for b in ref["epochs"][1] for v in b["state0"]
    )


@pytest.mark.parametrize("source", ["served", "local"])
def test_rrloader_loop_sees_what_rerun_sdks_sees(runs, source):
    ref = runs[("rerun.", "served")]
    ours = runs[("rrloader.", source)]
    assert ours["len"] == ref["len"]
    for epoch, (a, b) in enumerate(zip(ours["epochs"], ref["epochs"], strict=True)):
        assert len(a) == len(b), f"epoch {epoch}: {len(a)} batches vs rerun-sdk's {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert x["shapes"] == y["shapes"], f"epoch {epoch} batch {i}"
            assert x["state0"] == y["state0"], f"epoch {epoch} batch {i}: other samples"
            assert x["digest"] == y["digest"], f"epoch {epoch} batch {i}: same samples, other bytes"
            assert x["loss"] == y["loss"], f"epoch {epoch} batch {i}"
    assert ours["params"] == ref["params"]
