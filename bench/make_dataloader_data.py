"""Write (once) the robot-episode recordings that bench_dataloader.py reads.

    python bench/make_dataloader_data.py [--workloads state_action cameras] [--episodes N] [--seconds S]

Two workloads, one folder of single-episode `.rrd` files each, written with rerun-sdk
(`rr.RecordingStream` + `send_columns`, footers on), recording id = segment id =
`episode_NNNN`. Every row is on a `frame` sequence timeline (the 50 Hz control tick) and on
a `time` timestamp timeline.

* `state_action` (bench/data/dataloader_state_action/, default 20 episodes x 30 s):
  `/robot/joint_state` and `/robot/action`, Scalars with 7 values at 50 Hz, logged in chunks
  of `--scalar-chunk-rows` rows.
* `cameras` (bench/data/dataloader_cameras/, default 10 episodes x 30 s): the same two
  50 Hz streams plus `/camera/left` and `/camera/right`, EncodedImage 640x480 JPEG
  (quality 85) at 15 Hz, logged in chunks of `--image-chunk-rows` images. A camera image
  taken at time k/15 s sits on `frame` floor(k * 50 / 15). The pictures are smooth colour
  gradients that move over time plus a grain texture (about 70 KiB per JPEG, decoded cost
  like a real camera frame's), so no two frames are equal.

A folder is rewritten only when its parameters (saved next to the files in
`bench_dataloader.json`) change; otherwise nothing is done. Data go under bench/data/,
which is git-ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_ROOT = HERE / "data"
START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
FORMAT = 1  # bump when the content written for the same parameters changes

JOINT_HZ = 50
DOF = 7
WIDTH, HEIGHT = 640, 480

WORKLOADS = {
    "state_action": {"episodes": 20, "seconds": 30.0, "camera_hz": 0},
    "cameras": {"episodes": 10, "seconds": 30.0, "camera_hz": 15},
}
ENTITY_STATE = "/robot/joint_state"
ENTITY_ACTION = "/robot/action"
CAMERAS = ("/camera/left", "/camera/right")


def workload_dir(name: str, root: Path = DATA_ROOT) -> Path:
    return root / f"dataloader_{name}"


def segment_id(i: int) -> str:
    return f"episode_{i:04d}"


# --- pictures ------------------------------------------------------------------------------------


class _Frames:
    """Deterministic 640x480 RGB frames: moving gradients + a grain texture (per camera)."""

    def __init__(self, seed: int):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.x = np.arange(WIDTH, dtype=np.float32) / WIDTH
        self.y = np.arange(HEIGHT, dtype=np.float32) / HEIGHT
        # coarse (2x2 pixel) grain plus fine sensor noise; a few textures, rolled per frame
        self.bank = [
            (
                rng.normal(0, 10, (HEIGHT // 2, WIDTH // 2, 3)).repeat(2, 0).repeat(2, 1)
                + rng.normal(0, 3, (HEIGHT, WIDTH, 3))
            ).astype(np.float32)
            for _ in range(4)
        ]

    def frame(self, k: int, hz: float, phase: float):
        import numpy as np

        x, y = self.x, self.y
        t = k / hz + phase
        img = np.empty((HEIGHT, WIDTH, 3), np.float32)
        img[..., 0] = (x * 150 + 50 * np.sin(t))[None, :] + (y * 60)[:, None]
        img[..., 1] = (y * 180 + 40 * np.cos(0.7 * t))[:, None] + (x * 30)[None, :]
        img[..., 2] = (100 + 80 * np.sin(x * 6 + t))[None, :] + (60 * np.cos(y * 4 - t))[:, None]
        img += np.roll(self.bank[k % len(self.bank)], (k * 37) % HEIGHT, axis=0)
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)


def _jpeg(rgb, quality: int = 85) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- one episode ---------------------------------------------------------------------------------


def _write_episode(job: dict) -> int:
    """Write one episode file; returns its size in bytes."""
    import warnings

    import numpy as np
    import rerun as rr

    path, i, seconds = job["path"], job["episode"], job["seconds"]
    camera_hz, scalar_rows, image_rows = job["camera_hz"], job["scalar_chunk_rows"], job["image_chunk_rows"]
    n = int(round(seconds * JOINT_HZ))
    t0 = START_NS + i * 3_600_000_000_000  # episodes an hour apart
    frames = np.arange(n, dtype=np.int64)
    times = np.datetime64(t0, "ns") + (frames * (10**9 // JOINT_HZ)).astype("timedelta64[ns]")
    rng = np.random.default_rng([7, i])
    state = rng.standard_normal((n, DOF)).cumsum(axis=0) * 0.01
    action = state + rng.standard_normal((n, DOF)) * 0.001  # a commanded target near the state

    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rr.RecordingStream("bench_dataloader", recording_id=segment_id(i), send_properties=False) as rec:
            rec.save(tmp)
            for entity, values in ((ENTITY_STATE, state), (ENTITY_ACTION, action)):
                for lo in range(0, n, scalar_rows):
                    hi = min(n, lo + scalar_rows)
                    rec.send_columns(
                        entity,
                        indexes=[
                            rr.TimeColumn("frame", sequence=frames[lo:hi]),
                            rr.TimeColumn("time", timestamp=times[lo:hi]),
                        ],
                        columns=rr.Scalars.columns(scalars=values[lo:hi]),
                    )
            if camera_hz:
                m = int(seconds * camera_hz)
                ks = np.arange(m, dtype=np.int64)
                cam_frames = (ks * JOINT_HZ) // camera_hz  # the control tick the picture belongs to
                cam_times = np.datetime64(t0, "ns") + (ks * 10**9 // camera_hz).astype("timedelta64[ns]")
                for c, entity in enumerate(CAMERAS):
                    pictures = _Frames(seed=1000 * i + c)
                    for lo in range(0, m, image_rows):
                        hi = min(m, lo + image_rows)
                        blobs = [
                            _jpeg(pictures.frame(int(k), camera_hz, phase=1.3 * c + 0.1 * i))
                            for k in ks[lo:hi]
                        ]
                        rec.send_columns(
                            entity,
                            indexes=[
                                rr.TimeColumn("frame", sequence=cam_frames[lo:hi]),
                                rr.TimeColumn("time", timestamp=cam_times[lo:hi]),
                            ],
                            columns=rr.EncodedImage.columns(
                                blob=blobs, media_type=["image/jpeg"] * len(blobs)
                            ),
                        )
    os.replace(tmp, path)  # a file only appears once its footer is written
    return os.path.getsize(path)


def ensure_workload(
    name: str,
    *,
    episodes: int | None = None,
    seconds: float | None = None,
    camera_hz: int | None = None,
    scalar_chunk_rows: int = 256,
    image_chunk_rows: int = 8,
    root: Path = DATA_ROOT,
    jobs: int | None = None,
    quiet: bool = False,
) -> tuple[Path, dict]:
    """Write workload `name` under root (once); return (folder, parameters)."""
    defaults = WORKLOADS[name]
    params = {
        "format": FORMAT,
        "workload": name,
        "episodes": defaults["episodes"] if episodes is None else episodes,
        "seconds": defaults["seconds"] if seconds is None else seconds,
        "joint_hz": JOINT_HZ,
        "camera_hz": defaults["camera_hz"] if camera_hz is None else camera_hz,
        "scalar_chunk_rows": scalar_chunk_rows,
        "image_chunk_rows": image_chunk_rows,
    }
    data = workload_dir(name, root)
    marker = data / "bench_dataloader.json"
    try:
        if json.loads(marker.read_text()) == params and len(list(data.glob("*.rrd"))) == params["episodes"]:
            return data, params
    except (OSError, ValueError):
        pass
    data.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in data.glob("*.rrd*"):
        stale.unlink()
    todo = [
        {
            "path": str(data / f"{segment_id(i)}.rrd"),
            "episode": i,
            "seconds": params["seconds"],
            "camera_hz": params["camera_hz"],
            "scalar_chunk_rows": scalar_chunk_rows,
            "image_chunk_rows": image_chunk_rows,
        }
        for i in range(params["episodes"])
    ]
    if not quiet:
        print(f"writing {len(todo)} {name} episodes to {data} (once) ...", flush=True)
    t0 = time.perf_counter()
    from multiprocessing import get_context

    total = 0
    with get_context("spawn").Pool(jobs or os.cpu_count() or 1) as pool:
        for size in pool.imap_unordered(_write_episode, todo):
            total += size
    marker.write_text(json.dumps(params) + "\n")
    if not quiet:
        print(f"  done in {time.perf_counter() - t0:.1f} s, {total / 2**20:.0f} MiB", flush=True)
    return data, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--episodes", type=int, help="episodes per workload (default: 20 state_action, 10 cameras)"
    )
    parser.add_argument("--seconds", type=float, help="length of each episode (default 30)")
    parser.add_argument("--camera-hz", type=int, help="camera rate of the cameras workload (default 15)")
    parser.add_argument("--root", type=Path, default=DATA_ROOT)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="writer processes")
    args = parser.parse_args(argv)
    for name in args.workloads:
        data, params = ensure_workload(
            name,
            episodes=args.episodes,
            seconds=args.seconds,
            camera_hz=args.camera_hz if name == "cameras" else None,
            root=args.root,
            jobs=args.jobs,
        )
        print(f"{name}: {data} {json.dumps(params)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
