"""Thousands of segments (issue 16): shuffled DataLoader reads over many small recordings.

    python bench/bench_many_segments.py [--datasets seg2000 seg10000 seg20 cam2000 cam20]
                                        [--backends rrloader rrloader-remote rerun]
                                        [--orders shuffled sequential] [--repeats 1]

Data (written once with rerun-sdk under bench/data/many_<name>/, rewritten only when the
parameters change): single-episode recordings with footers, `episode_NNNNN.rrd`, recording
id = segment id, each 10 s at 15 Hz (150 rows) on one timestamp timeline `time` (row k at
t0 + round(k * 1e9 / 15) ns):

* `/robot/joint_state` and `/robot/action`: Scalars with 7 values, one chunk each;
* with a camera (`cam*`): `/camera/front` EncodedImage, 640x480 JPEG (quality 75, about
  47 KiB: moving gradients with grain as in make_dataloader_data.py) at 5 Hz, chunks of 5
  images (2.3 GiB for 2,000 episodes).

| dataset | segments | fields (index `time`, FixedRateSampling(15)) |
| --- | ---: | --- |
| `seg2000`, `seg10000`, `seg20` | 2,000 / 10,000 / 20 | `state` (7), `action`: window of the next 10 steps ([10, 7]) |
| `cam2000`, `cam20` | 2,000 / 20 | the same plus `image`: ImageDecoder ([3, 480, 640]) |

The action window is the seed API's inclusive range in ns on the time timeline for rrloader,
`(step, 10 * step)` with `step = round(1e9 / 15)` (the slots walk down from `v + 10 * step`
in grid steps: the next 10 grid values), and rerun-sdk 0.41's explicit offsets in seconds,
`(1/15, 2/15, ..., 10/15)`; both trim the last 10 steps of every episode (139 samples each)
and read the same rows (checked: see below).

Backends (each run in a fresh Python process), `DataLoader(batch_size=32, num_workers=0)`:

| backend | what |
| --- | --- |
| `rrloader` | `rrloader.dataloader.RerunIterableDataset(DataSource(LocalDataset(dir)), "time", fields, timeline_sampling=FixedRateSampling(15), fetch_size=128, shuffle=...)` |
| `rrloader-remote` | the same over `DataSource(server.client().get_dataset("ds"))` of an `rr.server.Server(host="127.0.0.1", datasets={"ds": dir})` in the process |
| `rerun` | rerun-sdk 0.41's `rerun.experimental.dataloader.RerunIterableDataset(DataSource(entry), "time", fields, timeline_sampling=FixedRateSampling(15), fetch_block_size=128, shuffle_strategy=SampleShuffle()/NoShuffle())` on the same kind of server |

`seg10000` runs the embedded backend only (issue 16). Orders: `shuffled` (the whole epoch
permuted) and `sequential` (natural order).

Measured per run: time to first batch (open the folder or start the server and get the
dataset, build the dataset, first batch out of the DataLoader; imports not included), then
samples/s over the next `--samples` samples (default 278,000 numeric: one epoch of the
2,000-segment datasets; 1,024 with the camera; at most `--max-seconds`, the same cap for
every loader), going on into the next epoch (`set_epoch`) when one ends (the 20-segment
datasets have 2,780 samples an epoch), and the same over the first 16,384 of them alone (a
cold start: at 2,000 segments they load nearly every chunk of the dataset, where a whole
epoch loads each once and then reads it from the chunk cache), CPU time per sample of the process (the
in-process server's included), peak RSS (`ru_maxrss` from `os.wait4`), and for rrloader the
chunk cache's counters (local: `cache_stats()`; remote: FetchChunks calls, chunks, bytes,
manifests). A separate process checks the samples: rrloader embedded against rerun-sdk (the
first two batches in natural order) and rrloader remote against embedded (two shuffled
batches), value by value.

Targets (issue 16), at 2,000 segments, shuffled, same run: rrloader remote >= 10x rerun-sdk,
embedded >= 20x; samples/s at 2,000 segments >= 50% of the same fields at 20 segments;
first batch <= 1 s. Writes a markdown table to stdout and bench/results/many_segments.md,
the figures to bench/results/many_segments.json and a chart to many_segments.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_dataloader import (  # noqa: E402
    SHIM_ENV,
    _compare,
    _cpu_s,
    _install_torchvision_shim,
    _peak_rss_mb,
    _shapes,
    ensure_torchvision,
    markdown_table,
)
from bench_open import DEFAULT_RESULTS, bar_chart, machine_info, median, write_json  # noqa: E402

DATA_ROOT = HERE / "data"
FORMAT = 1  # bump when the content written for the same parameters changes
START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
RATE_HZ = 15
SECONDS = 10
DOF = 7
ACTION_STEPS = 10
CAMERA_HZ = 5
IMAGE_CHUNK_ROWS = 5
JPEG_QUALITY = 75
WIDTH, HEIGHT = 640, 480
INDEX = "time"
STATE = "/robot/joint_state"
ACTION = "/robot/action"
CAMERA = "/camera/front"
STEP_NS = round(1e9 / RATE_HZ)

DATASETS = {
    "seg2000": {"segments": 2000, "camera": False},
    "seg10000": {"segments": 10000, "camera": False},
    "seg20": {"segments": 20, "camera": False},
    "cam2000": {"segments": 2000, "camera": True},
    "cam20": {"segments": 20, "camera": True},
}
CONTROL = {"seg2000": "seg20", "seg10000": "seg20", "cam2000": "cam20"}
EMBEDDED_ONLY = {"seg10000"}
BACKENDS = ("rrloader", "rrloader-remote", "rerun")
ORDERS = ("shuffled", "sequential")
TARGET_VS_REF = {"rrloader": 20.0, "rrloader-remote": 10.0}
TARGET_VS_CONTROL = 0.5
TARGET_FIRST_BATCH_S = 1.0
FIRST_WINDOW = 16_384  # samples: the cold start reported beside the whole run
EPOCH_SAMPLES = 2000 * (SECONDS * RATE_HZ - ACTION_STEPS - 1)  # one epoch of seg2000: 278,000
LABELS = {
    "rrloader": "rrloader (embedded)",
    "rrloader-remote": "rrloader (remote, same server)",
    "rerun": "rerun-sdk 0.41 (+ in-process server)",
}


# --- data ----------------------------------------------------------------------------------------


def segment_id(i: int) -> str:
    return f"episode_{i:05d}"


def row_times_ns(i: int, n: int, hz: int):
    """Row k of episode i at t0 + round(k * 1e9 / hz) ns (a 15 Hz logger's clock, to the ns)."""
    import numpy as np

    k = np.arange(n, dtype=np.int64)
    return START_NS + i * 60_000_000_000 + (k * 10**9 * 2 + hz) // (2 * hz)


_JPEG_BANK: list[bytes] = []


def _jpegs() -> list[bytes]:
    """The camera's pictures: one episode's worth (50), encoded once per writer process and
    used by every episode (rotated by episode), so writing stays cheap."""
    if not _JPEG_BANK:
        from make_dataloader_data import _Frames, _jpeg

        frames = _Frames(seed=16)
        n = SECONDS * CAMERA_HZ
        _JPEG_BANK.extend(_jpeg(frames.frame(k, CAMERA_HZ, phase=0.0), quality=JPEG_QUALITY) for k in range(n))
    return _JPEG_BANK


def _write_episode(job: tuple[str, int, bool]) -> int:
    import numpy as np
    import rerun as rr

    path, i, camera = job
    n = SECONDS * RATE_HZ
    times = row_times_ns(i, n, RATE_HZ).astype("datetime64[ns]")
    rng = np.random.default_rng([16, i])
    state = rng.standard_normal((n, DOF)).cumsum(axis=0) * 0.01
    action = state + rng.standard_normal((n, DOF)) * 0.001
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rr.RecordingStream("bench_many_segments", recording_id=segment_id(i), send_properties=False) as rec:
            rec.save(tmp)
            for entity, values in ((STATE, state), (ACTION, action)):
                rec.send_columns(
                    entity,
                    indexes=[rr.TimeColumn(INDEX, timestamp=times)],
                    columns=rr.Scalars.columns(scalars=values),
                )
            if camera:
                bank = _jpegs()
                m = SECONDS * CAMERA_HZ
                cam_times = row_times_ns(i, m, CAMERA_HZ).astype("datetime64[ns]")
                blobs = [bank[(k + i) % len(bank)] for k in range(m)]
                for lo in range(0, m, IMAGE_CHUNK_ROWS):
                    hi = min(m, lo + IMAGE_CHUNK_ROWS)
                    rec.send_columns(
                        CAMERA,
                        indexes=[rr.TimeColumn(INDEX, timestamp=cam_times[lo:hi])],
                        columns=rr.EncodedImage.columns(blob=blobs[lo:hi], media_type=["image/jpeg"] * (hi - lo)),
                    )
    os.replace(tmp, path)  # a file only appears once its footer is written
    return os.path.getsize(path)


def ensure_dataset(name: str, root: Path = DATA_ROOT, jobs: int | None = None) -> tuple[Path, dict]:
    """Write dataset `name` under root (once); return (folder, parameters)."""
    spec = DATASETS[name]
    params = {
        "format": FORMAT,
        "segments": spec["segments"],
        "camera": spec["camera"],
        "rate_hz": RATE_HZ,
        "seconds": SECONDS,
        "camera_hz": CAMERA_HZ if spec["camera"] else 0,
        "image_chunk_rows": IMAGE_CHUNK_ROWS if spec["camera"] else 0,
        "jpeg_quality": JPEG_QUALITY if spec["camera"] else 0,
    }
    data = root / f"many_{name}"
    marker = data / "bench_many_segments.json"
    try:
        if json.loads(marker.read_text()) == params and len(list(data.glob("*.rrd"))) == params["segments"]:
            return data, params
    except (OSError, ValueError):
        pass
    data.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in data.glob("*.rrd*"):
        stale.unlink()
    todo = [(str(data / f"{segment_id(i)}.rrd"), i, spec["camera"]) for i in range(spec["segments"])]
    print(f"writing {len(todo)} recordings to {data} (once) ...", flush=True)
    t0 = time.perf_counter()
    from multiprocessing import get_context

    total = 0
    with get_context("spawn").Pool(jobs or os.cpu_count() or 1) as pool:
        for size in pool.imap_unordered(_write_episode, todo, chunksize=16):
            total += size
    marker.write_text(json.dumps(params) + "\n")
    print(f"  done in {time.perf_counter() - t0:.1f} s, {total / 2**20:.0f} MiB", flush=True)
    return data, params


# --- the loaders ---------------------------------------------------------------------------------


def make_fields(api, camera: bool, reference: bool) -> dict:
    state = api.Field(f"{STATE}:Scalars:scalars", decode=api.NumericDecoder())
    if reference:  # rerun-sdk 0.41: explicit offsets, in seconds on a time timeline
        window = tuple(k / RATE_HZ for k in range(1, ACTION_STEPS + 1))
    else:  # the seed API: an inclusive range in ns; the slots are the grid values in it
        window = (STEP_NS, ACTION_STEPS * STEP_NS)
    fields = {
        "state": state,
        "action": api.Field(f"{ACTION}:Scalars:scalars", decode=api.NumericDecoder(), window=window),
    }
    if camera:
        fields["image"] = api.Field(f"{CAMERA}:EncodedImage:blob", decode=api.ImageDecoder())
    return fields


class Opened:
    """A backend's DataSource over a dataset folder (and its server, for the remote backends)."""

    def __init__(self, backend: str, data: Path):
        self.backend = backend
        self.server = None
        if backend == "rerun":
            ensure_torchvision()
            import rerun as rr
            import rerun.experimental.dataloader as api
        else:
            import rrloader
            import rrloader.dataloader as api
        self.api = api
        if backend == "rrloader":
            self.source = api.DataSource(dataset=rrloader.LocalDataset(str(data)))
        else:
            import rerun as rr

            self.server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(data)})
            self.source = api.DataSource(dataset=self.server.client().get_dataset("ds"))

    def dataset(self, camera: bool, shuffle: bool, fetch: int):
        api = self.api
        sampling = api.FixedRateSampling(RATE_HZ)
        if self.backend == "rerun":
            return api.RerunIterableDataset(
                self.source,
                INDEX,
                make_fields(api, camera, reference=True),
                timeline_sampling=sampling,
                fetch_block_size=fetch,
                shuffle_strategy=api.SampleShuffle() if shuffle else api.NoShuffle(),
            )
        return api.RerunIterableDataset(
            self.source,
            INDEX,
            make_fields(api, camera, reference=False),
            timeline_sampling=sampling,
            fetch_size=fetch,
            shuffle=shuffle,
        )

    def cache_stats(self) -> dict | None:
        if self.backend == "rerun":
            return None
        return dict(self.source.dataset.cache_stats())

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def child(args) -> dict:
    import resource

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import torch

    if args.child == "rerun":
        ensure_torchvision()
        import rerun.experimental.dataloader  # noqa: F401
    else:
        import rrloader.dataloader  # noqa: F401

        if args.child == "rrloader-remote":
            import rerun  # noqa: F401
    import_s = time.perf_counter() - t0
    camera = DATASETS[args.dataset]["camera"]
    shuffle = args.order == "shuffled"

    t1 = time.perf_counter()
    opened = Opened(args.child, args.data)
    t2 = time.perf_counter()
    dataset = opened.dataset(camera, shuffle, args.fetch)
    t3 = time.perf_counter()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=0)
    it = iter(loader)
    first = next(it)
    t4 = time.perf_counter()
    stats_first = opened.cache_stats()

    cpu0 = _cpu_s()
    n = 0
    epochs = 1
    deadline = t4 + args.max_seconds
    t_end = t4
    first_window = None  # (samples, seconds) when FIRST_WINDOW samples were reached
    while n < args.samples and t_end < deadline:
        batch = next(it, None)
        if batch is None:  # the epoch ended: the next one, as a training loop would
            dataset.set_epoch(epochs)
            epochs += 1
            it = iter(loader)
            continue
        n += len(batch["state"])
        t_end = time.perf_counter()
        if first_window is None and n >= FIRST_WINDOW:
            first_window = (n, t_end - t4)
    cpu = _cpu_s() - cpu0
    out = {
        "import_s": import_s,
        "open_s": t2 - t1,
        "build_s": t3 - t2,
        "first_batch_s": t4 - t3,
        "time_to_first_batch_s": t4 - t1,
        "samples": n,
        "epochs": epochs,
        "steady_s": t_end - t4,
        "samples_per_s": n / (t_end - t4) if n and t_end > t4 else None,
        "first_window_samples_per_s": first_window[0] / first_window[1] if first_window else None,
        "cpu_ms_per_sample": 1e3 * cpu / n if n else None,
        "dataset_len": len(dataset),
        "batch_shapes": _shapes(first),
        "peak_rss_self_mb": _peak_rss_mb(resource.RUSAGE_SELF),
        "cache_first_batch": stats_first,
        "cache_end": opened.cache_stats(),
    }
    del it, loader
    opened.close()
    return out


def verify(args) -> dict:
    """rrloader embedded vs rerun-sdk (natural order) and remote vs embedded (shuffled)."""
    import torch

    warnings.simplefilter("ignore")
    ensure_torchvision()
    camera = DATASETS[args.dataset]["camera"]
    out: dict = {"checked": [], "problems": []}
    opened = {b: Opened(b, args.data) for b in BACKENDS}
    try:

        def batches(backend: str, shuffle: bool, count: int) -> list[dict]:
            ds = opened[backend].dataset(camera, shuffle, args.fetch)
            out.setdefault("len", {})[f"{backend}/{'shuffled' if shuffle else 'sequential'}"] = len(ds)
            it = iter(torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=0))
            return [next(it) for _ in range(count)]

        ref, ours = batches("rerun", False, args.verify_batches), batches("rrloader", False, args.verify_batches)
        for b, (x, y) in enumerate(zip(ref, ours, strict=True)):
            out["problems"] += [f"sequential batch {b} vs rerun-sdk: {p}" for p in _compare(x, y)]
        out["checked"].append(f"rrloader vs rerun-sdk: {args.verify_batches} batches in natural order")
        ours, remote = batches("rrloader", True, args.verify_batches), batches("rrloader-remote", True, args.verify_batches)
        for b, (x, y) in enumerate(zip(ours, remote, strict=True)):
            out["problems"] += [f"shuffled batch {b}, remote vs embedded: {p}" for p in _compare(x, y)]
        out["checked"].append(f"remote vs embedded: {args.verify_batches} shuffled batches")
        lens = set(out["len"].values())
        if len(lens) != 1:
            out["problems"].append(f"lengths differ: {out['len']}")
    finally:
        for o in opened.values():
            o.close()
    out["match"] = not out["problems"]
    return out


def run_child(argv: Sequence[str], timeout: float) -> dict:
    """This script as a child; its JSON result plus its peak RSS (wait4's ru_maxrss)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__)), *argv], stdout=out, stderr=err)
        start = time.monotonic()
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.05)
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if code != 0 or not lines:
            tail = (err.read().strip().splitlines() or ["(no output)"])[-1]
            return {"error": f"exit {code}: {tail}"}
    res = json.loads(lines[-1])
    res["peak_rss_mb"] = rusage.ru_maxrss / 1024
    return res


# --- driver --------------------------------------------------------------------------------------


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fetch", type=int, default=128, help="fetch_size / fetch_block_size")
    parser.add_argument(
        "--samples", type=int, help="samples timed after the first batch (278,000; 1,024 with a camera)"
    )
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cap on the timed part of a run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (median)")
    parser.add_argument("--verify-batches", type=int, default=2)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0, help="per child process")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--tag", default="", help="suffix of the result files (many_segments<tag>.*)")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--verify-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.verify_child:
        print(json.dumps(verify(args)))
        return 0

    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    results: dict = {}
    errors: dict = {}
    verified: dict = {}
    data_params: dict = {}
    for name in args.datasets:
        data, params = ensure_dataset(name, args.data_root)
        data_params[name] = params
        samples = args.samples or (1024 if DATASETS[name]["camera"] else EPOCH_SAMPLES)
        backends = [b for b in args.backends if not (name in EMBEDDED_ONLY and b != "rrloader")]
        for order in args.orders:
            case = f"{name}/{order}"
            for r in range(args.repeats):
                for backend in backends if r % 2 == 0 else list(reversed(backends)):
                    key = f"{case}/{backend}"
                    if key in errors:
                        continue
                    res = run_child(
                        [
                            "--child", backend, "--dataset", name, "--order", order, "--data", str(data),
                            "--batch-size", str(args.batch_size), "--fetch", str(args.fetch),
                            "--samples", str(samples), "--max-seconds", str(args.max_seconds),
                        ],
                        args.timeout,
                    )  # fmt: skip
                    if "error" in res:
                        errors[key] = res["error"]
                        print(f"  {key}: {res['error']}", file=sys.stderr, flush=True)
                        continue
                    results.setdefault(case, {}).setdefault(backend, []).append(res)
                    print(
                        f"  {case:22s} {backend:15s} {_fmt(res['samples_per_s'], ',.0f'):>9s} samples/s "
                        f"({res['samples']} in {res['steady_s']:.1f} s, {res['cpu_ms_per_sample']:.3f} CPU ms/sample; "
                        f"first {FIRST_WINDOW:,}: {_fmt(res['first_window_samples_per_s'], ',.0f')}), "
                        f"first batch after {res['time_to_first_batch_s']:.2f} s "
                        f"(open {res['open_s']:.2f}, build {res['build_s']:.2f}, batch {res['first_batch_s']:.2f}), "
                        f"peak RSS {res['peak_rss_mb']:.0f} MiB",
                        flush=True,
                    )
                    if res.get("cache_end"):
                        print(f"    cache at first batch: {res['cache_first_batch']}", flush=True)
                        print(f"    cache at the end:     {res['cache_end']}", flush=True)
        if not args.no_verify and name not in EMBEDDED_ONLY and set(BACKENDS) <= set(args.backends):
            res = run_child(
                [
                    "--verify-child", "--dataset", name, "--data", str(data), "--batch-size", str(args.batch_size),
                    "--fetch", str(args.fetch), "--verify-batches", str(args.verify_batches),
                ],
                args.timeout,
            )  # fmt: skip
            verified[name] = res
            if "error" in res:
                print(f"  {name}: sameness check failed to run: {res['error']}", file=sys.stderr, flush=True)
            else:
                verdict = "same samples" if res["match"] else "DIFFERENT: " + "; ".join(res["problems"][:5])
                print(f"  {name}: {verdict} ({'; '.join(res['checked'])})", flush=True)
    load_after = os.getloadavg()

    keys = ("samples_per_s", "first_window_samples_per_s", "cpu_ms_per_sample", "time_to_first_batch_s", "open_s", "build_s", "first_batch_s",
            "peak_rss_mb")  # fmt: skip
    summary: dict = {}
    for case, per_backend in results.items():
        for backend, runs in per_backend.items():
            s = {k: median([x[k] for x in runs if x.get(k) is not None]) for k in keys}
            s["runs"] = len(runs)
            s["dataset_len"] = runs[0]["dataset_len"]
            s["batch_shapes"] = runs[0]["batch_shapes"]
            summary.setdefault(case, {})[backend] = s

    headers = ["dataset", "order", "loader", "samples/s", "vs rerun-sdk", "vs 20 segments",
               f"first {FIRST_WINDOW:,}: samples/s", "vs rerun-sdk", "vs 20 segments", "first batch s",
               "CPU ms/sample", "peak RSS MiB", "targets (whole run; first 16,384)", "same samples"]  # fmt: skip
    rows = []
    for case, per_backend in summary.items():
        name, order = case.split("/")
        ref = per_backend.get("rerun", {}).get("samples_per_s")
        control = summary.get(f"{CONTROL.get(name)}/{order}", {})
        for backend in args.backends:
            s = per_backend.get(backend)
            if s is None:
                if f"{case}/{backend}" in errors:
                    rows.append([name, order, LABELS[backend], "failed"] + [""] * 9 + [errors[f"{case}/{backend}"]])
                continue
            speed, cold = s["samples_per_s"], s["first_window_samples_per_s"]
            ratio = speed / ref if backend != "rerun" and ref and speed else None
            base = control.get(backend, {}).get("samples_per_s")
            vs_control = speed / base if base and speed else None
            s["vs_rerun"], s["vs_control"] = ratio, vs_control
            ref_cold = per_backend.get("rerun", {}).get("first_window_samples_per_s")
            base_cold = control.get(backend, {}).get("first_window_samples_per_s")
            ratio_cold = cold / ref_cold if backend != "rerun" and ref_cold and cold else None
            vs_control_cold = cold / base_cold if base_cold and cold else None
            s["vs_rerun_first_window"], s["vs_control_first_window"] = ratio_cold, vs_control_cold
            notes = []
            if name in CONTROL and order == "shuffled" and backend != "rerun":
                target = TARGET_VS_REF[backend]

                def verdict(x, goal):
                    return "n/a" if x is None else "met" if x >= goal else "NOT met"

                if ratio is not None:
                    notes.append(f"≥{target:g}x {verdict(ratio, target)}; {verdict(ratio_cold, target)}")
                if vs_control is not None:
                    notes.append(
                        f"≥50% {verdict(vs_control, TARGET_VS_CONTROL)}; {verdict(vs_control_cold, TARGET_VS_CONTROL)}"
                    )
                first = s["time_to_first_batch_s"]
                notes.append(f"≤1 s {'met' if first <= TARGET_FIRST_BATCH_S else 'NOT met'}")
            v = verified.get(name, {})
            same = "" if backend == "rerun" or "match" not in v else ("yes" if v["match"] else "NO")
            rows.append([
                f"{name} ({DATASETS[name]['segments']:,} segments{', camera' if DATASETS[name]['camera'] else ''})",
                order, LABELS[backend], _fmt(speed, ",.0f"), "" if ratio is None else f"{ratio:.1f}x",
                "" if vs_control is None else f"{100 * vs_control:.0f}%", _fmt(cold, ",.0f"),
                "" if ratio_cold is None else f"{ratio_cold:.1f}x",
                "" if vs_control_cold is None else f"{100 * vs_control_cold:.0f}%",
                _fmt(s["time_to_first_batch_s"], ".2f"), _fmt(s["cpu_ms_per_sample"], ".3f"),
                _fmt(s["peak_rss_mb"], ".0f"), "; ".join(notes), same,
            ])  # fmt: skip
    title = (
        f"DataLoader(batch_size={args.batch_size}, num_workers=0), index `{INDEX}` with FixedRateSampling({RATE_HZ}), "
        f"fetch {args.fetch}; samples/s after the first batch over "
        f"{f'{args.samples:,}' if args.samples else f'{EPOCH_SAMPLES:,} (1,024 with a camera)'} samples "
        f"(at most {args.max_seconds:g} s) and over the first {FIRST_WINDOW:,} of them, median of {args.repeats}; "
        f"load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    table = markdown_table(headers, rows, left=3)
    print()
    print(title)
    print(table)
    for key, error in errors.items():
        print(f"{key} failed: {error}")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"many_segments{args.tag}.md").write_text(title + "\n\n" + table + "\n")
    print(f"wrote {args.results / f'many_segments{args.tag}.md'}")
    write_json(
        args.results / f"many_segments{args.tag}.json",
        {
            "benchmark": "many_segments",
            "params": {
                "datasets": args.datasets,
                "backends": args.backends,
                "orders": args.orders,
                "batch_size": args.batch_size,
                "fetch": args.fetch,
                "samples": args.samples,
                "max_seconds": args.max_seconds,
                "repeats": args.repeats,
                "data": data_params,
            },
            "machine": machine_info(),
            "load_average": {"before": load_before, "after": load_after},
            "summary": summary,
            "verify": verified,
            "errors": errors,
            "runs": results,
        },
    )
    cases = list(summary)
    labels = [c.replace("/", "\n") for c in cases]
    bar_chart(
        args.results / f"many_segments{args.tag}.png",
        "Many segments: DataLoader(batch 32, 0 workers), rrloader vs rerun-sdk (+ in-process server)",
        [
            {
                "ylabel": "samples / s (log)",
                "labels": labels,
                "series": {b: [summary[c].get(b, {}).get("samples_per_s") for c in cases] for b in args.backends},
                "log": True,
                "fmt": "{:,.0f}",
            },
            {
                "ylabel": "time to first batch (s)",
                "labels": labels,
                "series": {b: [summary[c].get(b, {}).get("time_to_first_batch_s") for c in cases] for b in args.backends},
                "fmt": "{:.2f}",
            },
            {
                "ylabel": "peak RSS (MiB)",
                "labels": labels,
                "series": {b: [summary[c].get(b, {}).get("peak_rss_mb") for c in cases] for b in args.backends},
                "fmt": "{:.0f}",
            },
        ],
    )
    bad = bool(errors) or any(v.get("match") is False or "error" in v for v in verified.values())
    return 1 if bad else 0


if os.environ.get(SHIM_ENV) == "1" and __name__ != "__main__":
    _install_torchvision_shim()

if __name__ == "__main__":
    sys.exit(main())
