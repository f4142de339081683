"""Shared pieces of bench_strategies.py, bench_yuv.py and bench_resume.py (not a benchmark).

* ``open_backend``: rrloader's 0.41 front end (``rrloader.experimental.dataloader`` over a
  ``LocalDataset``, embedded) or rerun-sdk 0.41 (``rerun.experimental.dataloader`` over an
  in-process ``rr.server.Server``, as bench_dataloader.py runs it);
* ``make_strategy``: the shuffle strategies by short name;
* ``run_child``: run a script as a child process, read the JSON object it prints last, with
  its ``wait4`` peak RSS and the polled peak of the RSS summed over it and its children
  (DataLoader workers);
* ``tree_cpu_s``: CPU seconds of this process and its live children (DataLoader workers);
* ``SampleLocator``: which (segment, index value) a delivered sample is, from its ``state``
  row (a random walk: every row differs), for batch diversity;
* data variants that make_dataloader_data.py does not write: the video workload with a
  longer GOP, and the cameras workload with PNG images.

Everything else (fields, the torchvision stand-in, the reference's video counters, the decode
limit, the data of the three workloads) is imported from bench_dataloader.py and
make_dataloader_data.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_dataloader import INDEX, Opened, ensure_torchvision
from make_dataloader_data import (
    CAMERAS,
    DATA_ROOT,
    DOF,
    ENTITY_STATE,
    HEIGHT,
    JOINT_HZ,
    START_NS,
    VIDEO_CAMERAS,
    VIDEO_GOP,
    WIDTH,
    _Frames,
    ensure_workload,
    segment_id,
)

STATE_COLUMN = f"{ENTITY_STATE}:Scalars:scalars"

# Workload variants: name -> (base workload whose fields they use, how to write them)
VARIANTS = {
    "state_action": {"base": "state_action"},
    "cameras": {"base": "cameras"},
    "video": {"base": "video", "gop": VIDEO_GOP},
    "video_gop60": {"base": "video", "gop": 60, "episodes": 10, "seconds": 20.0},
    "cameras_png": {"base": "cameras", "episodes": 4, "seconds": 10.0},
}


# --- data -------------------------------------------------------------------------------------------


def _write_video_episode_gop(job: dict) -> int:
    """make_dataloader_data's video episode with another GOP (its encoder and chunking read the
    GOP from the module; set here, in the writer process only)."""
    import make_dataloader_data as mdd

    gop = int(job["gop"])
    mdd.VIDEO_GOP = gop  # chunk per GOP
    mdd._h264_stream.__defaults__ = (gop,)  # encoder keyint
    return mdd._write_video_episode(job)


def _png(rgb) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_png_episode(job: dict) -> int:
    """The cameras workload's episode (state at 50 Hz, two 640x480 cameras at 15 Hz), images as PNG."""
    import warnings

    import numpy as np
    import rerun as rr

    path, i, seconds, camera_hz = job["path"], job["episode"], job["seconds"], job["camera_hz"]
    n = int(round(seconds * JOINT_HZ))
    t0 = START_NS + i * 3_600_000_000_000
    frames = np.arange(n, dtype=np.int64)
    times = np.datetime64(t0, "ns") + (frames * (10**9 // JOINT_HZ)).astype("timedelta64[ns]")
    state = np.random.default_rng([17, i]).standard_normal((n, DOF)).cumsum(axis=0) * 0.01
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rr.RecordingStream("bench_dataloader", recording_id=segment_id(i), send_properties=False) as rec:
            rec.save(tmp)
            index = [rr.TimeColumn("frame", sequence=frames), rr.TimeColumn("time", timestamp=times)]
            rec.send_columns(ENTITY_STATE, indexes=index, columns=rr.Scalars.columns(scalars=state))
            m = int(seconds * camera_hz)
            ks = np.arange(m, dtype=np.int64)
            cam_frames = (ks * JOINT_HZ) // camera_hz
            cam_times = np.datetime64(t0, "ns") + (ks * 10**9 // camera_hz).astype("timedelta64[ns]")
            for c, entity in enumerate(CAMERAS):
                pictures = _Frames(seed=1000 * i + c)
                for lo in range(0, m, 8):  # chunks of 8 images, as the JPEG workload
                    hi = min(m, lo + 8)
                    blobs = [_png(pictures.frame(int(k), camera_hz, phase=1.3 * c + 0.1 * i)) for k in ks[lo:hi]]
                    rec.send_columns(
                        entity,
                        indexes=[
                            rr.TimeColumn("frame", sequence=cam_frames[lo:hi]),
                            rr.TimeColumn("time", timestamp=cam_times[lo:hi]),
                        ],
                        columns=rr.EncodedImage.columns(blob=blobs, media_type=["image/png"] * len(blobs)),
                    )
    os.replace(tmp, path)
    return os.path.getsize(path)


def ensure_variant(name: str, root: Path = DATA_ROOT) -> tuple[Path, dict]:
    """The folder of workload variant ``name`` (written once, like make_dataloader_data's)."""
    spec = VARIANTS[name]
    if name in ("state_action", "cameras", "video"):
        return ensure_workload(name, root=root)
    if name == "video_gop60":
        params = {"format": 1, "variant": name, "episodes": spec["episodes"], "seconds": spec["seconds"],
                  "camera_hz": 30, "gop": spec["gop"]}  # fmt: skip
        writer = _write_video_episode_gop
    else:
        params = {"format": 1, "variant": name, "episodes": spec["episodes"], "seconds": spec["seconds"],
                  "camera_hz": 15, "image": "png", "compress_level": 1}  # fmt: skip
        writer = _write_png_episode
    data = root / f"strategies_{name}"
    marker = data / "bench_variant.json"
    try:
        if json.loads(marker.read_text()) == params and len(list(data.glob("*.rrd"))) == params["episodes"]:
            return data, params
    except (OSError, ValueError):
        pass
    data.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in data.glob("*.rrd*"):
        stale.unlink()
    jobs = [
        {"path": str(data / f"{segment_id(i)}.rrd"), "episode": i, **params}
        for i in range(params["episodes"])
    ]
    print(f"writing {len(jobs)} {name} episodes to {data} (once) ...", flush=True)
    t0 = time.perf_counter()
    from multiprocessing import get_context

    with get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        total = sum(pool.imap_unordered(writer, jobs))
    marker.write_text(json.dumps(params) + "\n")
    print(f"  done in {time.perf_counter() - t0:.1f} s, {total / 2**20:.0f} MiB", flush=True)
    return data, params


# --- the two loaders ----------------------------------------------------------------------------------


class Backend:
    """A loader's API module and DataSource over a workload folder.

    ``rrloader``: ``rrloader.experimental.dataloader`` (the 0.41 front end) over
    ``rrloader.LocalDataset(data)``; ``rerun``: rerun-sdk 0.41 over an in-process server
    (bench_dataloader's ``Opened``: its memory and CPU count with the loader's).
    """

    def __init__(self, backend: str, data: Path):
        self.backend = backend
        self._opened = None
        if backend == "rerun":
            self._opened = Opened("rerun", data)
            self.api, self.source = self._opened.api, self._opened.source
        elif backend == "rrloader":
            import rrloader
            import rrloader.experimental.dataloader as dl

            self.api = dl
            self.source = dl.DataSource(dataset=rrloader.LocalDataset(data))
        else:
            raise ValueError(f"unknown backend {backend!r}")

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()


def import_backend(backend: str) -> bool:
    """Import a backend's modules (before timing); True when the torchvision stand-in is used."""
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import torch  # noqa: F401

    if backend == "rerun":
        shim = ensure_torchvision()
        import rerun.experimental.dataloader  # noqa: F401

        return shim
    import rrloader.experimental.dataloader as dl

    dl.RerunIterableDataset  # noqa: B018 - the lazy import (torch side) happens here
    return False


STRATEGIES = ("sample", "block", "block512", "none", "interleaved")
STRATEGY_LABELS = {
    "sample": "SampleShuffle()",
    "block": "BlockShuffle()",
    "block512": "BlockShuffle(buffer_size=512)",
    "none": "NoShuffle()",
    "interleaved": "InterleavedShuffle()",
}


def make_strategy(api, name: str):
    if name == "sample":
        return api.SampleShuffle()
    if name == "block":
        return api.BlockShuffle()
    if name == "block512":
        return api.BlockShuffle(buffer_size=512)
    if name == "none":
        return api.NoShuffle()
    if name == "interleaved":
        return api.InterleavedShuffle()
    raise ValueError(f"unknown strategy {name!r}")


def strategy_available(backend: str, name: str) -> bool:
    return not (backend == "rerun" and name == "interleaved")


# --- measuring ----------------------------------------------------------------------------------------


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its descendants: the live ones, and
    those already waited for (a DataLoader's workers exit at the end of an epoch: without
    their CPU a difference of two readings could come out negative)."""
    import psutil

    def own_and_reaped(p) -> float:
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    me = psutil.Process()
    total = own_and_reaped(me)
    for c in me.children(recursive=True):
        try:
            total += own_and_reaped(c)
        except psutil.Error:
            pass
    return total


def tree_rss_mb(pid: int | None = None) -> float:
    """RSS of process ``pid`` (default: this one) and its live descendants, MiB (shared pages
    count once per process). psutil.Error when ``pid`` itself is gone."""
    import psutil

    p = psutil.Process(pid)
    rss = p.memory_info().rss
    for c in p.children(recursive=True):
        try:
            rss += c.memory_info().rss
        except psutil.Error:
            pass
    return rss / 2**20


def run_child(script: Path, argv: Sequence[str], timeout: float, poll_s: float = 0.1) -> dict:
    """Run ``python script argv...``; its last stdout line as JSON, plus ``peak_rss_mb`` (wait4's
    ru_maxrss of the child) and ``peak_tree_rss_mb`` (the polled peak of the RSS summed over the
    child and its descendants; shared pages count once per process)."""
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(script), *argv], stdout=out, stderr=err)
        tree_peak = 0.0
        start = time.monotonic()
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                for c in psutil.Process(proc.pid).children(recursive=True):
                    c.kill()
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"error": f"timed out after {timeout:.0f} s"}
            try:
                tree_peak = max(tree_peak, tree_rss_mb(proc.pid))
            except psutil.Error:
                pass
            time.sleep(poll_s)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = (err.read().strip().splitlines() or ["(no output)"])[-3:]
            return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    res = json.loads(lines[-1])
    res["peak_rss_mb"] = rusage.ru_maxrss / 1024
    res["peak_tree_rss_mb"] = tree_peak or None
    return res


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {load_average()}"


# --- which sample is it ---------------------------------------------------------------------------------


class SampleLocator:
    """(segment number, index value) of a delivered sample, from its ``state`` row.

    The state of every workload is a random walk logged at every index value, so its rows
    differ; they are read once from the recordings (rrloader's reader) and looked up by their
    float32 bytes (what both loaders hand out is compared to the recorded float64 values cast
    the same way).
    """

    def __init__(self, data: Path):
        import numpy as np
        import rrloader

        ds = rrloader.LocalDataset(data)
        self.segments = list(ds.segment_ids())
        self._where: dict[bytes, tuple[int, int]] = {}
        for k, seg in enumerate(self.segments):
            table = ds.reader(INDEX, segments=[seg], contents=[ENTITY_STATE])
            values = table[STATE_COLUMN].to_pylist()
            index = table[INDEX].to_pylist()
            for v, i in zip(values, index, strict=True):
                if v:
                    row = np.asarray(v, dtype=np.float32).tobytes()
                    self._where[row] = (k, int(i))

    def locate(self, rows) -> list[tuple[int, int] | None]:
        import numpy as np

        rows = np.ascontiguousarray(np.asarray(rows, dtype=np.float32))
        return [self._where.get(r.tobytes()) for r in rows]


def batch_diversity(locator: SampleLocator, batches: list, span: int) -> dict:
    """Mean distinct segments and distinct (segment, index // span) pairs per batch (``span``:
    the GOP of a video workload); and how many samples were not found (should be 0)."""
    import statistics

    segs, pairs, unknown, n = [], [], 0, 0
    for rows in batches:
        where = locator.locate(rows)
        found = [w for w in where if w is not None]
        unknown += len(where) - len(found)
        n += len(where)
        segs.append(len({s for s, _ in found}))
        pairs.append(len({(s, i // span) for s, i in found}))
    return {
        "batches": len(batches),
        "batch_size_mean": n / len(batches) if batches else None,
        "distinct_segments": statistics.mean(segs) if segs else None,
        "distinct_segment_spans": statistics.mean(pairs) if pairs else None,
        "span": span,
        "unknown_samples": unknown,
    }


def state_rows(batch) -> object:
    """The ``state`` rows of a collated batch (dict, or (dict, masks) from rrloader's collate)."""
    if isinstance(batch, tuple):
        batch = batch[0]
    return batch["state"].detach().to("cpu").numpy().copy()


__all__ = [
    "Backend",
    "CAMERAS",
    "HEIGHT",
    "SampleLocator",
    "STRATEGIES",
    "STRATEGY_LABELS",
    "VARIANTS",
    "VIDEO_CAMERAS",
    "WIDTH",
    "batch_diversity",
    "ensure_variant",
    "import_backend",
    "load_average",
    "make_strategy",
    "run_child",
    "state_rows",
    "strategy_available",
    "tree_cpu_s",
    "uptime_line",
]
