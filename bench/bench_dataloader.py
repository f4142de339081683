"""PyTorch dataloader throughput: rrloader vs rerun-sdk's `rerun.experimental.dataloader`.

    python bench/bench_dataloader.py [--workloads state_action cameras] [--styles iterable map]
                                     [--batch-size 32] [--workers 0] [--repeats 1]

Both loaders read the same recordings (written once by make_dataloader_data.py under
bench/data/) and are used the way a user would: `torch.utils.data.DataLoader(dataset,
batch_size=32, num_workers=0)` over

* rrloader:  `rrloader.RerunIterableDataset(rrloader.DataSource(dataset=rrloader.LocalDataset(dir)), ...)`
  (embedded: no server);
* rerun-sdk: `rerun.experimental.dataloader.RerunIterableDataset(DataSource(dataset=...), ...)` on
  the dataset of an `rr.server.Server(host="127.0.0.1", datasets={"ds": dir})` started in the
  same process (rerun-sdk's server runs inside the Python process, so its memory is counted
  with the loader's);
* rrloader-remote (`--backends ... rrloader-remote`): rrloader reading that same kind of
  in-process server, `rrloader.DataSource(dataset=server.client().get_dataset("ds"))` (issue 5:
  remote rrloader vs remote rerun-sdk, and vs embedded rrloader).

Workloads (index `frame`, the 50 Hz control tick):

* `state_action`: {"state": NumericDecoder on /robot/joint_state (7 values), "action":
  NumericDecoder on /robot/action with a window of the next 50 steps};
* `cameras`: {"state", "cam_left", "cam_right": ImageDecoder on two 640x480 JPEG
  EncodedImage streams at 15 Hz (latest-at on the 50 Hz tick)};
* `video` (index `frame` = the 30 Hz camera tick): {"state", "cam0", "cam1", "cam2":
  VideoFrameDecoder on three 640x480 H.264 VideoStreams, GOP 30}. Styles `iterable`
  (shuffled) and `sequential` (natural order: `shuffle=False` / `NoShuffle()`). Each run also
  reports frames decoded per frame delivered (rrloader: `dataset.video_stats()`; rerun-sdk:
  its PyAV codec contexts' `decode` wrapped in the child process, frames counted as they come
  out, over the frames its decoder hands out) and, once per run, the decode limit: libavcodec
  decoding every frame of the same streams with RGB conversion on every core (the faster of
  PyAV in one process per core and rrloader's native decoder on one thread per core).

Styles: `iterable` (RerunIterableDataset, shuffled over the whole dataset: `shuffle=True` /
the default `SampleShuffle`) and `map` (RerunMapDataset with `DataLoader(shuffle=True)`, which
fetches one batch per `__getitems__` call).

The two API generations are bridged by looking at each side's real signatures:
fetch_size vs fetch_block_size, shuffle=bool vs shuffle_strategy=..., and the action window
as the inclusive range (1, 50) vs the explicit offsets (1, 2, ..., 50); both ask for the same
sample index and the same 50 values.

Each (workload, style, backend) runs in a fresh Python process. Measured there: time to
first batch (open/start server + build the dataset + first batch out of the DataLoader),
then steady-state samples/s over the next `--samples` samples (or `--max-seconds`,
whichever comes first). Peak memory: the child's peak RSS (`ru_maxrss` from `os.wait4`), and
with `--workers` the peak of the summed RSS of the child and its DataLoader workers (psutil
polling). A separate process loads both loaders and compares their samples value by value
(first batches in natural order, and a few map-style indices). Writes a markdown table to
stdout, bench/results/dataloader.json and bench/results/dataloader.png.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from bench_open import DEFAULT_RESULTS, bar_chart, machine_info, median, write_json
from make_dataloader_data import (
    CAMERAS,
    DATA_ROOT,
    ENTITY_ACTION,
    ENTITY_STATE,
    VIDEO_CAMERAS,
    VIDEO_GOP,
    WORKLOADS,
    ensure_workload,
)

BACKENDS = ("rrloader", "rrloader-remote", "rerun")
DEFAULT_BACKENDS = ("rrloader", "rerun")
STYLES = ("iterable", "map", "sequential")
DEFAULT_STYLES = {"state_action": ("iterable", "map"), "cameras": ("iterable", "map"), "video": ("iterable", "sequential")}
INDEX = "frame"
ACTION_STEPS = 50
DEFAULT_SAMPLES = {"state_action": 8192, "cameras": 2048, "video": 2048}
# rrloader / rerun samples/s: issue 3 (state_action, cameras), issue 4 (video, shuffled)
TARGETS = {"state_action": 20.0, "cameras": 5.0, "video": 10.0}
# rrloader-remote / rerun samples/s, issue 5
REMOTE_TARGETS = {"state_action": 10.0, "cameras": 5.0, "video": 10.0}
VIDEO_LIMIT_TARGET = 0.70  # issue 4: sequential video at >= 70% of the decode limit
SHIM_ENV = "RRL_BENCH_TORCHVISION_SHIM"


# --- torchvision stand-in for the reference --------------------------------------------------------
#
# rerun-sdk's ImageDecoder imports `torchvision.transforms.functional.pil_to_tensor`, and its
# dataloader package imports the decoders eagerly, so without a working torchvision the
# reference cannot run at all. When the installed torchvision cannot load (e.g. a CUDA build
# next to a CPU torch: "operator torchvision::nms does not exist"), the reference process uses
# this copy of torchvision's own pil_to_tensor (same steps: np.array copy, view, permute).


def _install_torchvision_shim() -> None:
    import types

    import numpy as np
    import torch

    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]

    def pil_to_tensor(pic):
        img = torch.as_tensor(np.array(pic, copy=True))
        img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
        return img.permute((2, 0, 1))

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.pil_to_tensor = pil_to_tensor
    transforms.functional = functional
    tv.transforms = transforms
    tv.__version__ = "shim"
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


def ensure_torchvision() -> bool:
    """Import torchvision's pil_to_tensor; fall back to the shim. True when the shim is used."""
    if os.environ.get(SHIM_ENV) == "1":
        if "torchvision.transforms.functional" not in sys.modules:
            _install_torchvision_shim()
        return True
    try:
        import torchvision.transforms.functional  # noqa: F401

        return False
    except Exception:  # noqa: BLE001 - a broken build raises RuntimeError/OSError, not ImportError
        _install_torchvision_shim()
        os.environ[SHIM_ENV] = "1"  # spawned DataLoader workers inherit it (see the module bottom)
        return True


# --- the two APIs --------------------------------------------------------------------------------


def rrloader_api():
    """rrloader's dataloader namespace, or None while it does not exist."""
    import rrloader

    if hasattr(rrloader, "RerunIterableDataset"):
        return rrloader
    try:
        import rrloader.dataloader as dl
    except ImportError:
        return None
    return dl if hasattr(dl, "RerunIterableDataset") else None


def rrloader_unavailable_reason() -> str | None:
    try:
        api = rrloader_api()
    except Exception as exc:  # noqa: BLE001
        return f"rrloader does not import ({type(exc).__name__}: {exc})"
    if api is None:
        return "rrloader's dataloader is not available (no rrloader.RerunIterableDataset yet)"
    return None


def _params(obj) -> set[str]:
    try:
        return set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):  # no introspectable signature (e.g. a native class): the seed API
        return set()


def api_generation(api) -> dict:
    """Which keyword names this dataloader API generation uses (read off its signatures)."""
    it = _params(api.RerunIterableDataset)
    field = _params(api.Field)
    return {
        "fetch_kw": "fetch_block_size" if "fetch_block_size" in it else "fetch_size",
        # the seed generation takes both (shuffle=bool, and shuffle_strategy= as an extension)
        "shuffle_kw": "shuffle" if "shuffle" in it else "shuffle_strategy",
        # explicit offsets came with max_staleness (0.37+); before, window=(start, end) inclusive
        "window": "offsets" if "max_staleness" in field else "range",
    }


def make_fields(api, workload: str) -> dict:
    gen = api_generation(api)
    state = api.Field(f"{ENTITY_STATE}:Scalars:scalars", decode=api.NumericDecoder())
    if workload == "state_action":
        window = tuple(range(1, ACTION_STEPS + 1)) if gen["window"] == "offsets" else (1, ACTION_STEPS)
        action = api.Field(f"{ENTITY_ACTION}:Scalars:scalars", decode=api.NumericDecoder(), window=window)
        return {"state": state, "action": action}
    if workload == "video":
        # rerun-sdk 0.41's VideoFrameDecoder takes codec= only by keyword; rrloader's reads the
        # stream's codec component (logged), so both decode the same streams the same way.
        out = {"state": state}
        for c, entity in enumerate(VIDEO_CAMERAS):
            out[f"cam{c}"] = api.Field(f"{entity}:VideoStream:sample", decode=api.VideoFrameDecoder(codec="h264"))
        return out
    left, right = CAMERAS
    return {
        "state": state,
        "cam_left": api.Field(f"{left}:EncodedImage:blob", decode=api.ImageDecoder()),
        "cam_right": api.Field(f"{right}:EncodedImage:blob", decode=api.ImageDecoder()),
    }


def iterable_kwargs(api, shuffle: bool, fetch: int) -> dict:
    gen = api_generation(api)
    kwargs = {gen["fetch_kw"]: fetch}
    if gen["shuffle_kw"] == "shuffle":
        kwargs["shuffle"] = shuffle
    else:
        kwargs["shuffle_strategy"] = api.SampleShuffle() if shuffle else api.NoShuffle()
    return kwargs


class Opened:
    """A backend's DataSource over the workload folder (and the server, for rerun-sdk)."""

    def __init__(self, backend: str, data: Path):
        self.backend = backend
        self.server = None
        self.torchvision_shim = False
        if backend == "rerun":
            self.torchvision_shim = ensure_torchvision()
            import rerun as rr
            import rerun.experimental.dataloader as dl

            self.api = dl
            self.server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(data)})
            self.source = dl.DataSource(dataset=self.server.client().get_dataset("ds"))
        elif backend == "rrloader-remote":
            import rerun as rr

            self.api = rrloader_api()
            if self.api is None:
                raise RuntimeError(rrloader_unavailable_reason())
            self.server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(data)})
            self.source = self.api.DataSource(dataset=self.server.client().get_dataset("ds"))
        else:
            import rrloader

            self.api = rrloader_api()
            if self.api is None:
                raise RuntimeError(rrloader_unavailable_reason())
            self.source = self.api.DataSource(dataset=rrloader.LocalDataset(data))

    def dataset(
        self, workload: str, style: str, *, shuffle: bool = True, fetch: int = 128, decode_threads=None
    ):
        fields = make_fields(self.api, workload)
        extra = {} if decode_threads is None else {"decode_threads": decode_threads}
        if style == "map":
            return self.api.RerunMapDataset(self.source, INDEX, fields, **extra)
        if style == "sequential":
            shuffle = False
        return self.api.RerunIterableDataset(
            self.source, INDEX, fields, **iterable_kwargs(self.api, shuffle, fetch), **extra
        )

    def remote_stats(self) -> dict | None:
        """rrloader-remote: the remote dataset's fetch counters in this process (chunks and bytes
        fetched from the server, round trips), or None for the other backends."""
        if self.backend != "rrloader-remote":
            return None
        return dict(self.source.dataset.cache_stats())

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def make_loader(dataset, style: str, batch_size: int, workers: int, seed: int, collate_fn=None):
    import torch

    kwargs = {"batch_size": batch_size, "num_workers": workers}
    if collate_fn is not None:
        kwargs["collate_fn"] = collate_fn
    if workers:
        # rerun-sdk's catalog client is not fork-safe (its docs ask for spawn); same context for both
        kwargs["multiprocessing_context"] = "spawn"
    if style == "map":
        kwargs["shuffle"] = True
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, **kwargs)


def _peak_rss_mb(who) -> float:
    import resource

    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _shapes(batch: dict) -> dict:
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in batch.items()}


# --- video: the reference's decode counts, the decode limit ----------------------------------------


def install_reference_video_counter() -> dict:
    """Count what rerun-sdk's VideoFrameDecoder decodes (frames out of its PyAV codec contexts)
    and hands out (non-None frames of its results, per slot), by wrapping, in this process,
    the method that creates its codec contexts and its batch decode method."""
    counts = {"frames_decoded": 0, "frames_delivered": 0}
    from rerun.experimental.dataloader.decoders import _video

    class CountingContext:
        def __init__(self, context):
            self._context = context

        def decode(self, packet=None):
            frames = self._context.decode(packet)
            counts["frames_decoded"] += len(frames)
            return frames

        def __getattr__(self, name):
            return getattr(self._context, name)

    create = _video.VideoFrameDecoder._create_context
    decode = _video.VideoFrameDecoder.decode

    def counting_create(self):
        return CountingContext(create(self))

    def counting_decode(self, batch, requests):
        out = decode(self, batch, requests)
        for value in out:
            if value is not None:
                counts["frames_delivered"] += value.shape[0] if value.dim() == 4 else 1
        return out

    _video.VideoFrameDecoder._create_context = counting_create
    _video.VideoFrameDecoder.decode = counting_decode
    return counts


def _video_packets(data: Path, episodes: int) -> list[list[bytes]]:
    """Every camera stream of the first `episodes` segments: packets in order."""
    import rrloader

    ds = rrloader.LocalDataset(data)
    streams = []
    for seg in ds.segment_ids()[:episodes]:
        table = ds.reader(INDEX, segments=[seg], contents=["/camera/**"])
        for entity in VIDEO_CAMERAS:
            cells = table[f"{entity}:VideoStream:sample"].to_pylist()
            streams.append([bytes(c[0]) for c in cells if c])
    return streams


def _pyav_decode_all(packets: list[bytes]) -> int:
    """PyAV (one thread): decode every packet, convert every frame to RGB24; frames out."""
    import av

    dec = av.CodecContext.create("h264", "r")
    dec.thread_count = 1
    n = 0
    for p in packets:
        for frame in dec.decode(av.Packet(p)):
            frame.to_ndarray(format="rgb24")
            n += 1
    for frame in dec.decode(None):
        frame.to_ndarray(format="rgb24")
        n += 1
    return n


def decode_limit(args) -> dict:
    """libavcodec's throughput decoding every frame of the workload's streams, with RGB
    conversion, on all cores: PyAV in one process per core, and rrloader's native decoder
    (the one its dataloader uses) on one thread per core. Frames per second of each."""
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing import get_context

    from rrloader import _core

    cores = os.cpu_count() or 1
    streams = _video_packets(args.data, args.limit_episodes)
    frames = sum(len(s) for s in streams)
    out = {"cores": cores, "streams": len(streams), "frames": frames}
    with get_context("spawn").Pool(cores) as pool:
        pool.map(_pyav_decode_all, streams[:cores])  # warm up: imports, first contexts
        t = time.perf_counter()
        decoded = sum(pool.map(_pyav_decode_all, streams, chunksize=1))
        out["pyav_fps"] = decoded / (time.perf_counter() - t)

    def native(packets: list[bytes]) -> int:
        # GOP by GOP (keyframe every VIDEO_GOP packets), every frame converted to RGB.
        n = 0
        for lo in range(0, len(packets), VIDEO_GOP):
            gop = packets[lo : lo + VIDEO_GOP]
            n += sum(f is not None for f in _core.decode_video_packets("h264", gop, list(range(len(gop)))))
        return n

    with ThreadPoolExecutor(cores) as pool:
        t = time.perf_counter()
        decoded = sum(pool.map(native, streams))
        out["native_fps"] = decoded / (time.perf_counter() - t)
    out["limit_fps"] = max(out["pyav_fps"], out["native_fps"])
    out["limit_samples_per_s"] = out["limit_fps"] / len(VIDEO_CAMERAS)
    return out


# --- the timed child -------------------------------------------------------------------------------


def child(args) -> dict:
    import resource

    warnings.simplefilter("ignore")  # fork-safety notes etc.: not measured, not interesting here
    t0 = time.perf_counter()
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import torch  # noqa: F401 - imported before timing, like the others

    if args.child == "rerun":
        shim = ensure_torchvision()
        import rerun  # noqa: F401
        import rerun.experimental.dataloader  # noqa: F401
    else:
        shim = False
        import rrloader  # noqa: F401

        if args.child == "rrloader-remote":
            import rerun  # noqa: F401
        rrloader_api()
    import_s = time.perf_counter() - t0
    rss_import = _peak_rss_mb(resource.RUSAGE_SELF)

    reference_counter = install_reference_video_counter() if args.child == "rerun" else None
    t1 = time.perf_counter()
    opened = Opened(args.child, args.data)
    t2 = time.perf_counter()
    dataset = opened.dataset(args.workload, args.style, fetch=args.fetch, decode_threads=args.decode_threads)
    t3 = time.perf_counter()
    collate = None
    if args.collate == "rrloader" and args.child != "rerun":
        import rrloader

        collate = rrloader.collate_samples  # returns (batch, missing masks)
    loader = make_loader(dataset, args.style, args.batch_size, args.workers, args.seed, collate)
    it = iter(loader)
    first = next(it)
    if isinstance(first, tuple):
        first = first[0]
    t4 = time.perf_counter()
    # What the first batch cost on the wire (rrloader-remote only; the blocks being fetched
    # ahead of it are included, as they are in the time to first batch).
    remote_first = opened.remote_stats() if not args.workers else None

    cpu0 = _cpu_s()
    n = 0
    batches = 0
    deadline = t4 + args.max_seconds
    t_end = t4
    for batch in it:
        if isinstance(batch, tuple):
            batch = batch[0]
        n += len(next(iter(batch.values())))
        batches += 1
        t_end = time.perf_counter()
        if n >= args.samples or t_end >= deadline:
            break
    cpu = _cpu_s() - cpu0
    video = None
    if args.workload == "video":
        if args.child == "rrloader" and not args.workers:
            per_field = dataset.video_stats()
            decoded = sum(v["frames_decoded"] for v in per_field.values())
            handed = sum(v["slots_filled"] for v in per_field.values())
            video = {"frames_decoded": decoded, "frames_delivered": handed, "per_field": per_field}
        elif reference_counter is not None and not args.workers:
            video = dict(reference_counter)
        if video and video["frames_delivered"]:
            video["decoded_per_delivered"] = video["frames_decoded"] / video["frames_delivered"]
    del it, loader
    out = {
        "import_s": import_s,
        "open_s": t2 - t1,
        "build_s": t3 - t2,
        "first_batch_s": t4 - t3,
        "time_to_first_batch_s": t4 - t1,
        "samples": n,
        "batches": batches,
        "steady_s": t_end - t4,
        "samples_per_s": n / (t_end - t4) if n and t_end > t4 else None,
        # CPU time of this process (all its threads, the in-process server's included) per sample:
        # steadier than samples/s on a busy machine; without the workers' CPU when --workers > 0
        "cpu_ms_per_sample": 1e3 * cpu / n if n and not args.workers else None,
        "dataset_len": len(dataset),
        "batch_shapes": _shapes(first),
        "rss_after_import_mb": rss_import,
        "peak_rss_self_mb": _peak_rss_mb(resource.RUSAGE_SELF),
        "peak_rss_workers_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN) if args.workers else None,
        "torchvision_shim": shim,
        "server_in_process": args.child in ("rerun", "rrloader-remote"),
        "video": video,
        "remote_first_batch": remote_first,
        "remote_end": opened.remote_stats() if not args.workers else None,
    }
    opened.close()
    return out


def run_child(argv: Sequence[str], timeout: float, poll_s: float = 0.1) -> dict:
    """Run this script as a child; its JSON result, plus wait4's peak RSS and the polled tree peak."""
    try:
        import psutil
    except ImportError:
        psutil = None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__)), *argv], stdout=out, stderr=err)
        tree_peak = 0.0
        status = None
        rusage = None
        start = time.monotonic()
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"error": f"timed out after {timeout:.0f} s"}
            if psutil is not None:
                try:
                    p = psutil.Process(proc.pid)
                    rss = p.memory_info().rss
                    for c in p.children(recursive=True):
                        try:
                            rss += c.memory_info().rss
                        except psutil.Error:
                            pass
                    tree_peak = max(tree_peak, rss / 2**20)
                except psutil.Error:
                    pass
            time.sleep(poll_s)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = (err.read().strip().splitlines() or ["(no output)"])[-1]
            return {"error": f"exit {proc.returncode}: {tail}"}
    res = json.loads(lines[-1])
    res["peak_rss_mb"] = rusage.ru_maxrss / 1024  # the child process (its waited-for children included)
    res["peak_tree_rss_mb"] = tree_peak or None  # child + DataLoader workers, summed, polled
    return res


# --- sameness check ----------------------------------------------------------------------------------


def _compare(a: dict, b: dict) -> list[str]:
    """Differences between two samples (or batches); values compared flattened per sample."""
    import torch

    problems = []
    if set(a) != set(b):
        return [f"fields differ: {sorted(a)} vs {sorted(b)}"]
    for key in a:
        x, y = a[key], b[key]
        if x is None or y is None:
            if (x is None) != (y is None):
                problems.append(f"{key}: None on one side only")
            continue
        if x.dtype != y.dtype:
            problems.append(f"{key}: dtype {x.dtype} vs {y.dtype}")
            continue
        if x.numel() != y.numel():
            problems.append(f"{key}: {x.numel()} values ({list(x.shape)}) vs {y.numel()} ({list(y.shape)})")
            continue
        if not torch.equal(x.reshape(-1), y.reshape(-1)):
            problems.append(f"{key}: values differ")
    return problems


def verify(args) -> dict:
    """Load both loaders in this process and compare their samples."""
    import numpy as np
    import torch

    warnings.simplefilter("ignore")
    ensure_torchvision()
    out: dict = {"checked": [], "problems": [], "shapes": {}}
    ref = Opened("rerun", args.data)
    ours = Opened("rrloader", args.data)
    remote = Opened("rrloader-remote", args.data) if args.verify_remote else None
    try:
        # natural order (no shuffle), first batches through a DataLoader
        loaders = {}
        for name, opened in (("rerun", ref), ("rrloader", ours)):
            ds = opened.dataset(args.workload, "iterable", shuffle=False, fetch=args.fetch)
            out.setdefault("len", {})[name] = len(ds)
            loaders[name] = iter(make_loader(ds, "iterable", args.batch_size, 0, args.seed))
        for b in range(args.verify_batches):
            x, y = next(loaders["rerun"]), next(loaders["rrloader"])
            if b == 0:
                out["shapes"] = {"rerun": _shapes(x), "rrloader": _shapes(y)}
            out["problems"] += [f"iterable batch {b}: {p}" for p in _compare(x, y)]
            out["checked"].append(f"iterable batch {b} ({len(x['state'])} samples, no shuffle)")
        del loaders
        if out["len"]["rerun"] != out["len"]["rrloader"]:
            out["problems"].append(f"len differs: {out['len']}")
        # map style: a few indices spread over the dataset (first, last, random)
        maps = {name: o.dataset(args.workload, "map") for name, o in (("rerun", ref), ("rrloader", ours))}
        total = len(maps["rerun"])
        rng = np.random.default_rng(args.seed)
        picks = sorted({0, total - 1, *rng.choice(total, size=min(6, total), replace=False).tolist()})
        got = {
            name: m.__getitems__(picks) if hasattr(m, "__getitems__") else [m[i] for i in picks]
            for name, m in maps.items()
        }
        for i, x, y in zip(picks, got["rerun"], got["rrloader"], strict=True):
            out["problems"] += [f"map index {i}: {p}" for p in _compare(x, y)]
        out["checked"].append(f"map indices {picks}")
        # a few single __getitem__ calls as well
        for i in picks[:2]:
            out["problems"] += [f"map [{i}]: {p}" for p in _compare(maps["rerun"][i], maps["rrloader"][i])]
        if remote is not None:
            # remote rrloader against embedded rrloader: the same shuffled epoch, every batch
            # checked for the first verify_batches, and the map indices
            its = {
                name: iter(make_loader(o.dataset(args.workload, "iterable", fetch=args.fetch), "iterable",
                                       args.batch_size, 0, args.seed))
                for name, o in (("rrloader", ours), ("rrloader-remote", remote))
            }  # fmt: skip
            for b in range(args.verify_batches):
                x, y = next(its["rrloader"]), next(its["rrloader-remote"])
                out["problems"] += [f"remote iterable batch {b}: {p}" for p in _compare(x, y)]
            out["checked"].append(f"remote vs embedded: {args.verify_batches} shuffled iterable batches")
            del its
            got_remote = remote.dataset(args.workload, "map").__getitems__(picks)
            for i, x, y in zip(picks, got["rrloader"], got_remote, strict=True):
                out["problems"] += [f"remote map index {i}: {p}" for p in _compare(x, y)]
            out["checked"].append("remote vs embedded: map indices")
        del torch
    finally:
        ref.close()
        ours.close()
        if remote is not None:
            remote.close()
    out["match"] = not out["problems"]
    return out


# --- driver -----------------------------------------------------------------------------------------


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A markdown table; the first `left` columns are left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--styles",
        nargs="+",
        choices=STYLES,
        help="default: iterable and map; for video, iterable (shuffled) and sequential",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(DEFAULT_BACKENDS),
        help="default: rrloader rerun; add rrloader-remote for rrloader over the same in-process server",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--collate",
        choices=("default", "rrloader"),
        default="default",
        help="rrloader's collate_fn: torch's default_collate (default, like the reference) or "
        "rrloader.collate_samples (its documented one: a batch of one block's samples is a view, no copy)",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (spawn), both loaders")
    parser.add_argument("--fetch", type=int, default=128, help="fetch_size / fetch_block_size (default 128)")
    parser.add_argument(
        "--decode-threads",
        type=int,
        help="decode_threads for both loaders (default: each loader's own default; rerun-sdk's is 1 "
        "without video fields, rrloader's is the CPU count with num_workers=0)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        help=f"samples timed after the first batch (default {DEFAULT_SAMPLES['state_action']} state_action, "
        f"{DEFAULT_SAMPLES['cameras']} cameras, {DEFAULT_SAMPLES['video']} video)",
    )
    parser.add_argument("--max-seconds", type=float, default=60, help="cap on the timed part of one run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (median reported)")
    parser.add_argument("--episodes", type=int, help="episodes per workload (default 20 / 10)")
    parser.add_argument("--seconds", type=float, help="episode length (default 30)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify-batches", type=int, default=2)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="per child run, seconds")
    parser.add_argument(
        "--limit-episodes", type=int, default=4, help="video: episodes decoded for the decode limit (default 4)"
    )
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--limit-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--verify-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--verify-remote", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--style", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.verify_child:
        print(json.dumps(verify(args)))
        return 0
    if args.limit_child:
        print(json.dumps(decode_limit(args)))
        return 0

    load_before = os.getloadavg()
    if load_before[0] > 1.5:
        print(
            f"note: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: other work is running, "
            "timings will be low and noisy",
            flush=True,
        )
    unavailable = rrloader_unavailable_reason() if set(args.backends) - {"rerun"} else None
    if unavailable:
        print(f"rrloader: {unavailable}; running the reference only", flush=True)
    backends = [b for b in args.backends if not (b.startswith("rrloader") and unavailable)]

    results: dict = {}
    errors: dict = {}
    verified: dict = {}
    limits: dict = {}
    data_params: dict = {}
    for workload in args.workloads:
        data, params = ensure_workload(
            workload, episodes=args.episodes, seconds=args.seconds, root=args.data_root
        )
        data_params[workload] = params
        samples = args.samples or DEFAULT_SAMPLES[workload]
        styles = args.styles or list(DEFAULT_STYLES[workload])
        for style in styles:
            case = f"{workload}/{style}"
            results[case] = {}
            for r in range(args.repeats):
                order = backends if r % 2 == 0 else list(reversed(backends))
                for backend in order:
                    key = f"{case}/{backend}"
                    if key in errors:
                        continue
                    res = run_child(
                        [
                            "--child", backend, "--workload", workload, "--style", style,
                            "--data", str(data), "--batch-size", str(args.batch_size),
                            "--workers", str(args.workers), "--fetch", str(args.fetch),
                            "--samples", str(samples), "--max-seconds", str(args.max_seconds),
                            "--seed", str(args.seed),
                            *(["--decode-threads", str(args.decode_threads)] if args.decode_threads else []),
                            "--collate", args.collate,
                        ],
                        args.timeout,
                    )  # fmt: skip
                    if "error" in res:
                        errors[key] = res["error"]
                        print(f"  {key}: {res['error']}", file=sys.stderr, flush=True)
                        continue
                    results[case].setdefault(backend, []).append(res)
                    print(
                        f"  {case:22s} {backend:15s} {_fmt(res['samples_per_s'], ',.0f'):>9s} samples/s "
                        f"({res['samples']} in {res['steady_s']:.1f} s), first batch after "
                        f"{res['time_to_first_batch_s']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MiB",
                        flush=True,
                    )
                    if res.get("remote_first_batch"):
                        print(f"    remote at first batch: {res['remote_first_batch']}", flush=True)
                        print(f"    remote at the end:     {res['remote_end']}", flush=True)
        if set(DEFAULT_BACKENDS) <= set(backends) and not args.no_verify:
            res = run_child(
                [
                    "--verify-child", "--workload", workload, "--data", str(data),
                    "--batch-size", str(args.batch_size), "--fetch", str(args.fetch),
                    "--verify-batches", str(args.verify_batches), "--seed", str(args.seed),
                    *(["--verify-remote"] if "rrloader-remote" in backends else []),
                ],
                args.timeout,
            )  # fmt: skip
            verified[workload] = res
            if "error" in res:
                print(f"  {workload}: sameness check failed to run: {res['error']}", file=sys.stderr)
            else:
                verdict = "same samples" if res["match"] else "DIFFERENT: " + "; ".join(res["problems"][:5])
                print(f"  {workload}: {verdict} ({'; '.join(res['checked'])})", flush=True)
        if workload == "video":
            res = run_child(
                ["--limit-child", "--data", str(data), "--limit-episodes", str(args.limit_episodes)], args.timeout
            )
            limits[workload] = res
            if "error" in res:
                print(f"  video decode limit failed to run: {res['error']}", file=sys.stderr)
            else:
                print(
                    f"  video decode limit: {res['limit_fps']:,.0f} frames/s on {res['cores']} cores "
                    f"(PyAV {res['pyav_fps']:,.0f}, rrloader native {res['native_fps']:,.0f}; "
                    f"{res['frames']} frames of {res['streams']} streams) = "
                    f"{res['limit_samples_per_s']:,.0f} samples/s of {len(VIDEO_CAMERAS)} cameras",
                    flush=True,
                )

    keys = (
        "samples_per_s",
        "cpu_ms_per_sample",
        "time_to_first_batch_s",
        "open_s",
        "build_s",
        "first_batch_s",
        "peak_rss_mb",
        "peak_tree_rss_mb",
        "rss_after_import_mb",
        "import_s",
    )
    summary: dict = {}
    for case, per_backend in results.items():
        for backend, runs in per_backend.items():
            s = {k: median([x[k] for x in runs if x.get(k) is not None]) for k in keys}
            s["runs"] = len(runs)
            s["samples"] = runs[0]["samples"]
            s["dataset_len"] = runs[0]["dataset_len"]
            s["batch_shapes"] = runs[0]["batch_shapes"]
            s["torchvision_shim"] = runs[0]["torchvision_shim"]
            ratios = [x["video"]["decoded_per_delivered"] for x in runs if (x.get("video") or {}).get("decoded_per_delivered")]
            s["video_decoded_per_delivered"] = median(ratios) if ratios else None
            summary.setdefault(case, {})[backend] = s

    headers = [
        "workload",
        "dataset",
        "loader",
        "samples/s",
        "vs rerun-sdk",
        "target",
        "CPU ms/sample",
        "first batch s",
        "peak RSS MiB",
        "same samples",
    ]
    if args.workers:
        headers.insert(9, "RSS with workers")
    remote_run = "rrloader-remote" in args.backends
    if remote_run:
        headers.append("remote / embedded")
    labels_of = {
        "rerun": "rerun-sdk 0.41 (+ in-process server)",
        "rrloader": "rrloader (embedded)",
        "rrloader-remote": "rrloader (remote, same server)",
    }
    rows = []
    speedups: dict = {}
    remote_speedups: dict = {}
    for case, per_backend in summary.items():
        workload, style = case.split("/")
        ref = per_backend.get("rerun", {}).get("samples_per_s")
        for backend in args.backends:
            s = per_backend.get(backend)
            label = labels_of[backend]
            if s is None:
                why = errors.get(f"{case}/{backend}") or (unavailable if backend != "rerun" else "not run")
                rows.append([workload, style, label, "n/a"] + [""] * (len(headers) - 5) + [why])
                continue
            speed = s["samples_per_s"]
            ratio = speed / ref if (backend != "rerun" and ref and speed) else None
            if ratio is not None:
                (remote_speedups if backend == "rrloader-remote" else speedups)[case] = ratio
            target = (REMOTE_TARGETS if backend == "rrloader-remote" else TARGETS)[workload]
            target_text = "" if ratio is None else f"≥{target:g}x {'met' if ratio >= target else 'NOT met'}"
            if workload == "video" and style == "sequential":
                limit = limits.get(workload, {}).get("limit_samples_per_s")
                fraction = speed / limit if (backend != "rerun" and limit and speed) else None
                s["fraction_of_decode_limit"] = fraction
                target_text = (
                    ""
                    if fraction is None
                    else f"{100 * fraction:.0f}% of decode limit (≥{100 * VIDEO_LIMIT_TARGET:.0f}% "
                    f"{'met' if fraction >= VIDEO_LIMIT_TARGET else 'NOT met'})"
                )
            v = verified.get(workload, {})
            same = "-" if "match" not in v else ("yes" if v["match"] else "NO")
            row = [
                workload,
                style,
                label,
                _fmt(speed, ",.0f"),
                "" if ratio is None else f"{ratio:.1f}x",
                target_text,
                _fmt(s["cpu_ms_per_sample"], ".3g"),
                _fmt(s["time_to_first_batch_s"], ".2f"),
                _fmt(s["peak_rss_mb"], ".0f"),
                same if backend != "rerun" else "",
            ]
            if args.workers:
                row.insert(9, _fmt(s["peak_tree_rss_mb"], ".0f"))
            if remote_run:
                embedded = per_backend.get("rrloader", {}).get("samples_per_s")
                row.append(f"{speed / embedded:.2f}x" if backend == "rrloader-remote" and speed and embedded else "")
            rows.append(row)
    print()
    print(
        f"DataLoader(batch_size={args.batch_size}, num_workers={args.workers}), shuffled, index `{INDEX}`, "
        f"rrloader's collate_fn {'rrloader.collate_samples' if args.collate == 'rrloader' else 'default_collate'}; "
        f"samples/s after the first batch, median of {args.repeats}"
    )
    print(markdown_table(headers, rows, left=3))
    if any(s.get("torchvision_shim") for c in summary.values() for s in c.values()):
        print(
            "\nnote: the installed torchvision does not load with this torch; rerun-sdk's ImageDecoder "
            "ran with a copy of torchvision's pil_to_tensor (bench_dataloader.py, same steps)."
        )
    video_cases = [c for c in summary if c.startswith("video/")]
    if video_cases:
        print("\nvideo: frames decoded by libavcodec per frame delivered to a sample (all frames of the run)")
        vrows = []
        for case in video_cases:
            for backend in args.backends:
                s = summary[case].get(backend)
                if s is None:
                    continue
                vrows.append([case.split("/")[1], backend, _fmt(s.get("video_decoded_per_delivered"), ".3f")])
        print(markdown_table(["dataset", "loader", "decoded / delivered"], vrows, left=2))
        lim = limits.get("video", {})
        if "limit_fps" in lim:
            print(
                f"decode limit: {lim['limit_fps']:,.0f} frames/s = {lim['limit_samples_per_s']:,.0f} samples/s "
                f"(PyAV {lim['pyav_fps']:,.0f} frames/s in {lim['cores']} processes, rrloader's native decoder "
                f"{lim['native_fps']:,.0f} frames/s on {lim['cores']} threads)"
            )
    for key, error in errors.items():
        print(f"{key} failed: {error}")

    payload = {
        "benchmark": "dataloader",
        "params": {
            "workloads": args.workloads,
            "styles": args.styles or {w: DEFAULT_STYLES[w] for w in args.workloads},
            "batch_size": args.batch_size,
            "workers": args.workers,
            "fetch": args.fetch,
            "decode_threads": args.decode_threads,
            "collate": args.collate,
            "samples": {w: args.samples or DEFAULT_SAMPLES[w] for w in args.workloads},
            "max_seconds": args.max_seconds,
            "repeats": args.repeats,
            "seed": args.seed,
            "index": INDEX,
            "data": data_params,
            "targets": TARGETS,
            "remote_targets": REMOTE_TARGETS,
        },
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rrloader_unavailable": unavailable,
        "summary": summary,
        "speedups": speedups,
        "remote_speedups": remote_speedups,
        "verify": verified,
        "video_decode_limit": limits,
        "errors": errors,
        "runs": results,
    }
    # A run with the remote backend writes its own files (the embedded figures stay as they are).
    stem = "dataloader_remote" if remote_run else "dataloader"
    write_json(args.results / f"{stem}.json", payload)

    labels = [c.replace("/", "\n") for c in summary]
    series_for = {b: b for b in args.backends}
    bar_chart(
        args.results / f"{stem}.png",
        f"DataLoader, batch {args.batch_size}, {args.workers} workers: rrloader vs rerun-sdk (+ in-process server)",
        [
            {
                "ylabel": "samples / s (log)",
                "labels": labels,
                "series": {
                    series_for[b]: [summary[c].get(b, {}).get("samples_per_s") for c in summary]
                    for b in args.backends
                },
                "log": True,
                "fmt": "{:,.0f}",
            },
            {
                "ylabel": "time to first batch (s)",
                "labels": labels,
                "series": {
                    series_for[b]: [summary[c].get(b, {}).get("time_to_first_batch_s") for c in summary]
                    for b in args.backends
                },
                "fmt": "{:.2f}",
            },
            {
                "ylabel": "peak RSS (MiB)",
                "labels": labels,
                "series": {
                    series_for[b]: [
                        summary[c].get(b, {}).get("peak_tree_rss_mb" if args.workers else "peak_rss_mb")
                        for c in summary
                    ]
                    for b in args.backends
                },
                "fmt": "{:.0f}",
            },
        ]
        + (
            [
                {
                    "ylabel": "video: frames decoded / delivered",
                    "labels": [c.replace("/", "\n") for c in video_cases],
                    "series": {
                        series_for[b]: [summary[c].get(b, {}).get("video_decoded_per_delivered") for c in video_cases]
                        for b in args.backends
                    },
                    "fmt": "{:.2f}",
                }
            ]
            if video_cases
            else []
        ),
    )
    bad = bool(errors) or any(v.get("match") is False or "error" in v for v in verified.values())
    return 1 if bad else 0


# Spawned DataLoader workers import this file as __mp_main__ before unpickling the dataset,
# whose rerun-sdk decoders import torchvision: give them the same stand-in as their parent.
if os.environ.get(SHIM_ENV) == "1" and __name__ != "__main__":
    _install_torchvision_shim()

if __name__ == "__main__":
    sys.exit(main())
