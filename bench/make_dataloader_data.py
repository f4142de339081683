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

* `video` (bench/data/dataloader_video/, default 20 episodes x 20 s): `/robot/joint_state`
  (Scalars, 7 values) and three cameras `/camera/cam0..2` as Rerun `VideoStream`s: 640x480
  H.264 at 30 fps, GOP 30, no B-frames, Annex B with SPS/PPS on every IDR (PyAV's libx264,
  preset veryfast, CRF 23, raw packets), one chunk per GOP (like `rerun rrd optimize`'s GOP
  batching), the codec logged once as static, `is_keyframe` logged sparse (`True` at the
  keyframes, a chunk of its own; the reference dataloader needs it). Every row is on the
  `frame` timeline (the 30 Hz camera tick, 600 per episode) and `time`. The pictures are a
  panning texture with a moving bright block and drifting colour, about 3 KiB per P-frame and
  60 KiB per keyframe.

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
    "video": {"episodes": 20, "seconds": 20.0, "camera_hz": 30, "format": 1},
}
ENTITY_STATE = "/robot/joint_state"
ENTITY_ACTION = "/robot/action"
CAMERAS = ("/camera/left", "/camera/right")
VIDEO_CAMERAS = ("/camera/cam0", "/camera/cam1", "/camera/cam2")
VIDEO_GOP = 30


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


def _h264_stream(seed: int, frames: int, gop: int = VIDEO_GOP) -> tuple[list[bytes], list[bool]]:
    """One camera's H.264 packets (decode order = presentation order) and keyframe flags.

    The picture is drawn straight in YUV 4:2:0 (no RGB round trip, so writing stays cheap): a
    smooth random texture twice the frame size that pans, a bright block sliding across, and
    chroma planes of their own texture drifting the other way.
    """
    import fractions

    import av
    import numpy as np

    rng = np.random.default_rng(seed)

    def texture(h: int, w: int, cell: int, lo: int, hi: int):
        t = rng.integers(lo, hi, (h // cell + 2, w // cell + 2)).astype(np.float32)
        t = t.repeat(cell, 0).repeat(cell, 1)[:h, :w]
        for axis in (0, 1):  # a little smoothing: shifted averages
            t = (t + np.roll(t, cell // 2, axis) + np.roll(t, -cell // 2, axis)) / 3
        return t.astype(np.uint8)

    y_tex = texture(2 * HEIGHT, 2 * WIDTH, 16, 16, 235)
    u_tex = texture(HEIGHT, WIDTH, 16, 90, 170)
    v_tex = texture(HEIGHT, WIDTH, 16, 90, 170)
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    cc.time_base = fractions.Fraction(1, 30)
    cc.framerate = 30
    cc.gop_size = gop
    cc.max_b_frames = 0
    cc.options = {
        "preset": "veryfast",
        "crf": "23",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:threads=1:log=-1",
    }
    packets: list[bytes] = []
    keys: list[bool] = []
    yuv = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
    for k in range(frames):
        dx = int(WIDTH / 2 + WIDTH / 3 * np.sin(k / 90.0 + seed))
        dy = int(HEIGHT / 2 + HEIGHT / 3 * np.cos(k / 70.0 + seed))
        y = yuv[:HEIGHT]
        y[:] = y_tex[dy : dy + HEIGHT, dx : dx + WIDTH]
        bx, by = (k * 7 + 53 * seed) % (WIDTH - 80), (k * 3 + 31 * seed) % (HEIGHT - 60)
        y[by : by + 60, bx : bx + 80] = 230
        cx, cy = (WIDTH // 2 - dx // 2) % (WIDTH // 2), (HEIGHT // 2 - dy // 2) % (HEIGHT // 2)
        yuv[HEIGHT : HEIGHT + HEIGHT // 4].reshape(HEIGHT // 2, WIDTH // 2)[:] = u_tex[
            cy : cy + HEIGHT // 2, cx : cx + WIDTH // 2
        ]
        yuv[HEIGHT + HEIGHT // 4 :].reshape(HEIGHT // 2, WIDTH // 2)[:] = v_tex[cy : cy + HEIGHT // 2, cx : cx + WIDTH // 2]
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = k
        for p in cc.encode(frame):
            packets.append(bytes(p))
            keys.append(bool(p.is_keyframe))
    for p in cc.encode(None):
        packets.append(bytes(p))
        keys.append(bool(p.is_keyframe))
    assert len(packets) == frames and all(keys[::gop]) and sum(keys) == -(-frames // gop), "unexpected GOPs"
    return packets, keys


def _write_video_episode(job: dict) -> int:
    """Write one `video` episode (state + three H.264 VideoStream cameras); returns its size."""
    import warnings

    import numpy as np
    import rerun as rr

    path, i, seconds, hz = job["path"], job["episode"], job["seconds"], job["camera_hz"]
    n = int(round(seconds * hz))
    t0 = START_NS + i * 3_600_000_000_000
    frames = np.arange(n, dtype=np.int64)
    times = np.datetime64(t0, "ns") + (frames * 10**9 // hz).astype("timedelta64[ns]")
    state = np.random.default_rng([11, i]).standard_normal((n, DOF)).cumsum(axis=0) * 0.01
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rr.RecordingStream("bench_dataloader", recording_id=segment_id(i), send_properties=False) as rec:
            rec.save(tmp)
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            index = [rr.TimeColumn("frame", sequence=frames), rr.TimeColumn("time", timestamp=times)]
            rec.send_columns(ENTITY_STATE, indexes=index, columns=rr.Scalars.columns(scalars=state))
            for c, entity in enumerate(VIDEO_CAMERAS):
                packets, keys = _h264_stream(seed=100 * i + c, frames=n)
                rec.log(entity, rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
                for lo in range(0, n, VIDEO_GOP):  # one chunk per GOP
                    hi = min(n, lo + VIDEO_GOP)
                    rec.send_columns(
                        entity,
                        indexes=[
                            rr.TimeColumn("frame", sequence=frames[lo:hi]),
                            rr.TimeColumn("time", timestamp=times[lo:hi]),
                        ],
                        columns=rr.VideoStream.columns(sample=packets[lo:hi]),
                    )
                key_rows = np.flatnonzero(keys)
                rec.send_columns(
                    entity,
                    indexes=[
                        rr.TimeColumn("frame", sequence=frames[key_rows]),
                        rr.TimeColumn("time", timestamp=times[key_rows]),
                    ],
                    columns=rr.VideoStream.columns(is_keyframe=[True] * len(key_rows)),
                )
    os.replace(tmp, path)
    return os.path.getsize(path)


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
        "format": FORMAT if name != "video" else f"{FORMAT}.{defaults['format']}",
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
    writer = _write_video_episode if name == "video" else _write_episode
    with get_context("spawn").Pool(jobs or os.cpu_count() or 1) as pool:
        for size in pool.imap_unordered(writer, todo):
            total += size
    marker.write_text(json.dumps(params) + "\n")
    if not quiet:
        print(f"  done in {time.perf_counter() - t0:.1f} s, {total / 2**20:.0f} MiB", flush=True)
    return data, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--episodes", type=int, help="episodes per workload (default: 20 state_action, 10 cameras, 20 video)"
    )
    parser.add_argument("--seconds", type=float, help="length of each episode (default 30; video 20)")
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
