"""A small synthetic robot dataset, written with rerun-sdk, to try rrloader on.

    python -m rrloader.demo [--out DIR] [--episodes N] [--seconds S] [--train-steps N | --no-train]

writes one `.rrd` per episode (skipped when DIR already holds a complete dataset made with
the same parameters), then opens DIR with rrloader and prints `rrloader inspect DIR`, then
trains a tiny policy (joint state + camera image + wrist video -> the next 50 actions) on it
for a fixed number of steps through rrloader's PyTorch dataloader (`rrloader.train_demo`).

Each episode (recording id `episode_0000`, `episode_0001`, ...) holds, on two timelines —
`frame` (sequence: the 50 Hz tick index) and `time` (timestamp, ns) — :

* `/robot/joint_state`  Scalars, 7 values, 50 Hz
* `/robot/action`       Scalars, 7 values, 50 Hz
* `/camera/front`       EncodedImage, JPEG 128x96, 15 Hz (a pattern that moves over time)
* `/camera/wrist`       VideoStream, H.264 128x96, 30 fps, GOP 10, no B-frames, Annex B with
                        SPS/PPS on every IDR (PyAV's libx264), `is_keyframe` logged sparse;
                        the picture follows the robot's first two joints

and static data: `/robot` TextDocument("franka"), `/camera/front` Pinhole intrinsics and
`/camera/wrist` VideoStream codec. No `log_time`/`log_tick` timelines. rerun-sdk, numpy,
Pillow and PyAV are imported only when a dataset is written, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

JOINT_HZ = 50
CAMERA_HZ = 15
WRIST_HZ = 30
WRIST_GOP = 10  # short GOPs keep random access cheap: a shuffled sample decodes 5.5 frames on average
NUM_JOINTS = 7
IMAGE_WIDTH = 128
IMAGE_HEIGHT = 96
APPLICATION_ID = "rrloader_demo"
START_TIME_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
EPISODE_SPACING_NS = 60_000_000_000  # episodes start one minute apart
MANIFEST_NAME = "demo.json"
DEFAULT_OUT = "demo_data"


def episode_id(i: int) -> str:
    return f"episode_{i:04d}"


def _params(n_episodes: int, seconds: float, seed: int) -> dict:
    return {"format": 2, "n_episodes": n_episodes, "seconds": seconds, "seed": seed}


def _has_footer(path: Path) -> bool:
    """True if the file ends with an RRD stream footer, i.e. its writer finished it."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() < 44:
                return False
            f.seek(-12, 2)
            return f.read(8) == b"RRF2FOOT"
    except OSError:
        return False


def existing_dataset(
    out_dir: str | Path, n_episodes: int = 4, seconds: float = 10, seed: int = 0
) -> list[Path] | None:
    """The files of a complete demo dataset made with these parameters, or None."""
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("params") != _params(n_episodes, seconds, seed):
        return None
    paths = [out / name for name in manifest.get("files", [])]
    if len(paths) != n_episodes or not all(_has_footer(p) for p in paths):
        return None
    return paths


def _camera_frame(k: int, t_s: float, rng) -> bytes:
    """One JPEG: a gradient background with a disc orbiting the centre and a moving bar."""
    import numpy as np
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH]
    phase = 2 * np.pi * 0.2 * t_s
    rgb = np.stack(
        [
            (128 + 100 * np.sin(x / 17.0 + phase)),
            (128 + 100 * np.cos(y / 13.0 - phase)),
            np.full_like(x, (40 * k) % 256),
        ],
        axis=-1,
    )
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(img)
    cx = IMAGE_WIDTH / 2 + 35 * np.cos(phase * 2)
    cy = IMAGE_HEIGHT / 2 + 25 * np.sin(phase * 2)
    draw.ellipse([cx - 10, cy - 10, cx + 10, cy + 10], fill=(255, 255, 255))
    bar_x = int((t_s * 40) % IMAGE_WIDTH)
    draw.rectangle([bar_x, 0, bar_x + 4, IMAGE_HEIGHT - 1], fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _wrist_video(joints, frames: int) -> tuple[list[bytes], list[bool]]:
    """H.264 packets of the wrist camera: a disc whose position follows joints 0 and 1 (so the
    video carries information about the state) over a slowly shifting colour background."""
    import fractions

    import av
    import numpy as np

    y, x = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH]
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = IMAGE_WIDTH, IMAGE_HEIGHT, "yuv420p"
    cc.time_base = fractions.Fraction(1, WRIST_HZ)
    cc.framerate = WRIST_HZ
    cc.gop_size = WRIST_GOP
    cc.max_b_frames = 0  # Rerun's VideoStream has no decode order: no B-frames
    cc.options = {
        "preset": "veryfast",
        "x264-params": f"keyint={WRIST_GOP}:min-keyint={WRIST_GOP}:scenecut=0:bframes=0:threads=1:log=-1",
    }
    packets: list[bytes] = []
    keys: list[bool] = []
    for k in range(frames):
        j0, j1 = joints[k, 0], joints[k, 1]
        cx = IMAGE_WIDTH / 2 + 40 * np.tanh(j0)
        cy = IMAGE_HEIGHT / 2 + 30 * np.tanh(j1)
        disc = ((x - cx) ** 2 + (y - cy) ** 2) < 12**2
        rgb = np.stack(
            [np.full_like(x, 60 + (k % 60)), 90 + 60 * np.sin(x / 20.0 + k / 30.0), 120 + 40 * np.cos(y / 15.0)],
            axis=-1,
        )
        rgb[disc] = (250, 240, 40)
        frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = k
        for p in cc.encode(frame):
            packets.append(bytes(p))
            keys.append(bool(p.is_keyframe))
    for p in cc.encode(None):
        packets.append(bytes(p))
        keys.append(bool(p.is_keyframe))
    return packets, keys


def write_episode(path: str | Path, index: int, *, seconds: float = 10, seed: int = 0) -> Path:
    """Write one episode (recording id `episode_{index:04d}`) to `path` and return it."""
    import numpy as np
    import rerun as rr

    path = Path(path)
    rng = np.random.default_rng([seed, index])
    n = int(round(seconds * JOINT_HZ))
    frames = np.arange(n, dtype=np.int64)
    start_ns = START_TIME_NS + index * EPISODE_SPACING_NS
    times = np.datetime64(start_ns, "ns") + (frames * (1_000_000_000 // JOINT_HZ)).astype("timedelta64[ns]")

    # A smooth random walk for the joints; the action leads the state by one tick.
    t = frames / JOINT_HZ
    freqs = rng.uniform(0.1, 0.5, NUM_JOINTS)
    offsets = rng.uniform(-1, 1, NUM_JOINTS)
    joints = offsets + 0.8 * np.sin(2 * np.pi * np.outer(t, freqs) + rng.uniform(0, 2 * np.pi, NUM_JOINTS))
    actions = np.vstack([joints[1:], joints[-1:]]) + rng.normal(0, 0.01, joints.shape)

    n_cam = int(np.floor(seconds * CAMERA_HZ))
    cam_k = np.arange(n_cam)
    cam_ns = (cam_k * 1_000_000_000) // CAMERA_HZ
    cam_frames = (cam_k * JOINT_HZ) // CAMERA_HZ  # the 50 Hz tick at or before the exposure
    cam_times = np.datetime64(start_ns, "ns") + cam_ns.astype("timedelta64[ns]")
    jpegs = [_camera_frame(int(k), float(ns) / 1e9, rng) for k, ns in zip(cam_k, cam_ns, strict=True)]

    n_wrist = int(np.floor(seconds * WRIST_HZ))
    wrist_k = np.arange(n_wrist)
    wrist_ns = (wrist_k * 1_000_000_000) // WRIST_HZ
    wrist_frames = (wrist_k * JOINT_HZ) // WRIST_HZ  # the 50 Hz tick at or before the exposure
    wrist_times = np.datetime64(start_ns, "ns") + wrist_ns.astype("timedelta64[ns]")
    wrist_packets, wrist_keys = _wrist_video(joints[wrist_frames], n_wrist)

    focal = 0.8 * IMAGE_WIDTH
    with rr.RecordingStream(APPLICATION_ID, recording_id=episode_id(index), send_properties=False) as rec:
        rec.save(path)
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        rec.log("/robot", rr.TextDocument("franka"), static=True)
        rec.log(
            "/camera/front",
            rr.Pinhole(focal_length=focal, width=IMAGE_WIDTH, height=IMAGE_HEIGHT),
            static=True,
        )
        tick_index = [rr.TimeColumn("frame", sequence=frames), rr.TimeColumn("time", timestamp=times)]
        rec.send_columns("/robot/joint_state", indexes=tick_index, columns=rr.Scalars.columns(scalars=joints))
        rec.send_columns("/robot/action", indexes=tick_index, columns=rr.Scalars.columns(scalars=actions))
        rec.send_columns(
            "/camera/front",
            indexes=[rr.TimeColumn("frame", sequence=cam_frames), rr.TimeColumn("time", timestamp=cam_times)],
            columns=rr.EncodedImage.columns(blob=jpegs, media_type=["image/jpeg"] * n_cam),
        )
        rec.log("/camera/wrist", rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
        for lo in range(0, n_wrist, WRIST_GOP):  # one chunk per GOP
            hi = min(n_wrist, lo + WRIST_GOP)
            rec.send_columns(
                "/camera/wrist",
                indexes=[
                    rr.TimeColumn("frame", sequence=wrist_frames[lo:hi]),
                    rr.TimeColumn("time", timestamp=wrist_times[lo:hi]),
                ],
                columns=rr.VideoStream.columns(sample=wrist_packets[lo:hi]),
            )
        keyframes = np.flatnonzero(wrist_keys)
        if len(keyframes):
            rec.send_columns(
                "/camera/wrist",
                indexes=[
                    rr.TimeColumn("frame", sequence=wrist_frames[keyframes]),
                    rr.TimeColumn("time", timestamp=wrist_times[keyframes]),
                ],
                columns=rr.VideoStream.columns(is_keyframe=[True] * len(keyframes)),
            )
    return path


def write_demo_dataset(
    out_dir: str | Path,
    n_episodes: int = 4,
    seconds: float = 10,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Write `n_episodes` recordings `episode_XXXX.rrd` into `out_dir`; return their paths.

    Deterministic for a given (n_episodes, seconds, seed). A `demo.json` written last marks
    the folder complete; other `.rrd` files already in `out_dir` are left alone (and would
    become part of the dataset), so prefer an empty or dedicated folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    indices = range(n_episodes)
    if progress and sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="writing episodes", unit="episode", file=sys.stderr, leave=False)
        except ImportError:
            pass
    paths = [write_episode(out / f"{episode_id(i)}.rrd", i, seconds=seconds, seed=seed) for i in indices]
    manifest = {"params": _params(n_episodes, seconds, seed), "files": [p.name for p in paths]}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from rrloader import train_demo  # cheap: torch is imported only when training starts

    parser = argparse.ArgumentParser(prog="python -m rrloader.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--episodes", type=int, default=4, help="number of episodes (default: 4)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each episode (default: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite even if the dataset exists")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=train_demo.DEFAULT_STEPS,
        metavar="N",
        help=f"optimiser steps of the training demo (default: {train_demo.DEFAULT_STEPS})",
    )
    parser.add_argument("--no-train", action="store_true", help="only write and inspect the dataset")
    args = parser.parse_args(argv)
    if args.train_steps < 1:
        parser.error("--train-steps must be at least 1")

    paths = None if args.force else existing_dataset(args.out, args.episodes, args.seconds, args.seed)
    if paths is None:
        paths = write_demo_dataset(args.out, args.episodes, args.seconds, args.seed, progress=not args.quiet)
        print(f"wrote {len(paths)} episodes to {args.out}", file=sys.stderr)
    else:
        print(f"using the existing dataset in {args.out}", file=sys.stderr)

    from rrloader import cli

    inspect_args = ["inspect", str(args.out), "--count-rows"] + (["--quiet"] if args.quiet else [])
    rc = cli.main(inspect_args)
    if rc != 0 or args.no_train:
        return rc
    return train_demo.run(str(args.out), steps=args.train_steps, seed=args.seed, progress=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
