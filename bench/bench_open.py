"""Opening a large folder of recordings: rrloader vs rerun-sdk's catalog server.

    python bench/bench_open.py [--data bench/data/open2000] [--files 2000] [--repeats 5]

The data (written once with rerun-sdk, then reused): `--files` single-episode recordings
with footers, each `--seconds` of 50 Hz `/robot/joint_state` Scalars (7 values) on a
`frame` (sequence) and a `time` (timestamp) timeline.

What is timed, each time in a fresh Python process so that nothing is cached in memory
(the OS page cache is warm: the files were just written or read by the previous run):

* rrloader: `rrloader.LocalDataset(dir)` then `ds.get_index_ranges()`;
* rerun:    `rr.server.Server(host="127.0.0.1", datasets={"ds": dir})`, `server.client()`,
            then `get_dataset("ds").get_index_ranges().to_arrow_table()`.

`import` time is measured separately and not included. Peak RSS is the child's
`ru_maxrss`; "above import" subtracts the peak reached by the imports alone. Several
repeats (backends alternating), median reported. Both backends' index-range tables are
compared and the result printed. Writes a table to stdout, `bench/results/open.json` and
`bench/results/open.png` (if matplotlib is installed).

The helpers at the top (median, subprocess runner, charts) are shared with
bench_latest_at.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"
BACKENDS = ("rrloader", "rerun")
JOINT_HZ = 50
START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


# --- shared helpers (also used by bench_latest_at.py) ---------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for mod in ("rrloader", "rerun"):
        try:
            info[f"{mod}_version"] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - report whatever is missing
            info[f"{mod}_version"] = f"unavailable ({type(exc).__name__}: {exc})"
    return info


def run_child(script: Path, args: Sequence[str], timeout: float) -> dict:
    """Run `python script args...` and parse the JSON object it prints on its last line."""
    cmd = [sys.executable, str(script), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: float | None, digits: int = 3) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def bar_chart(path: Path, title: str, panels: Sequence[dict]) -> None:
    """One PNG with one bar panel per dict {ylabel, labels, series: {name: values}, log}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -r bench/requirements.txt): no chart")
        return
    colors = {"rrloader": "#2a7ab9", "rrloader-remote": "#7fbce8", "rerun": "#e5883a"}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        labels, series = panel["labels"], panel["series"]
        width = 0.8 / max(1, len(series))
        for i, (name, values) in enumerate(series.items()):
            xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
            ys = [float("nan") if v is None else v for v in values]
            bars = ax.bar(xs, ys, width, label=name, color=colors.get(name))
            for bar, v in zip(bars, values, strict=True):
                x = bar.get_x() + bar.get_width() / 2
                if v is None:  # no bar: say so at the bottom of the axes (also on a log scale)
                    ax.annotate("n/a", (x, 0.01), xycoords=("data", "axes fraction"), ha="center", fontsize=8)
                else:
                    text = panel.get("fmt", "{:.3g}").format(v)
                    ax.annotate(text, (x, bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel(panel["ylabel"])
        if panel.get("log"):
            ax.set_yscale("log")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


# --- data ------------------------------------------------------------------------------------


def _write_one(job: tuple[str, int, float]) -> None:
    import warnings

    import numpy as np
    import rerun as rr

    path, i, seconds = job
    n = int(round(seconds * JOINT_HZ))
    frames = np.arange(n, dtype=np.int64)
    times = np.datetime64(START_NS + i * 60_000_000_000, "ns") + (frames * (10**9 // JOINT_HZ)).astype(
        "timedelta64[ns]"
    )
    joints = np.random.default_rng(i).standard_normal((n, 7)).cumsum(axis=0) * 0.01
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rr.RecordingStream("bench_open", recording_id=f"episode_{i:05d}", send_properties=False) as rec:
            rec.save(tmp)
            rec.send_columns(
                "/robot/joint_state",
                indexes=[rr.TimeColumn("frame", sequence=frames), rr.TimeColumn("time", timestamp=times)],
                columns=rr.Scalars.columns(scalars=joints),
            )
    os.replace(tmp, path)  # a file only appears once its footer is written


def ensure_data(data: Path, n_files: int, seconds: float, jobs: int) -> None:
    params = {"format": 1, "files": n_files, "seconds": seconds}
    marker = data / "bench_open.json"
    try:
        if json.loads(marker.read_text()) == params and len(list(data.glob("*.rrd"))) == n_files:
            return
    except (OSError, ValueError):
        pass
    data.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in data.glob("*.rrd*"):
        stale.unlink()
    todo = [(str(data / f"episode_{i:05d}.rrd"), i, seconds) for i in range(n_files)]
    print(f"writing {n_files} recordings to {data} (once) ...", flush=True)
    t0 = time.perf_counter()
    from multiprocessing import get_context

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    with get_context("spawn").Pool(jobs) as pool:
        results = pool.imap_unordered(_write_one, todo, chunksize=8)
        if tqdm is not None:
            results = tqdm(results, total=len(todo), unit="file", disable=not sys.stderr.isatty())
        for _ in results:
            pass
    marker.write_text(json.dumps(params) + "\n")
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)


# --- the timed child -------------------------------------------------------------------------


def _table_digest(table) -> str:
    """Order-independent digest of an index-ranges table (columns by name, rows by segment)."""
    cols = sorted(table.column_names)
    rows = sorted(zip(*[[str(v) for v in table.column(c).to_pylist()] for c in cols], strict=True))
    return hashlib.sha256(repr((cols, rows)).encode()).hexdigest()[:16]


def child(backend: str, data: Path) -> dict:
    t0 = time.perf_counter()
    if backend == "rrloader":
        import pyarrow  # noqa: F401
        import rrloader

        import_s = time.perf_counter() - t0
        rss_import = peak_rss_mb()
        t1 = time.perf_counter()
        ds = rrloader.LocalDataset(data)
        t2 = time.perf_counter()
        table = ds.get_index_ranges()
        t3 = time.perf_counter()
        server = None
    else:
        import pyarrow  # noqa: F401
        import rerun as rr

        import_s = time.perf_counter() - t0
        rss_import = peak_rss_mb()
        t1 = time.perf_counter()
        server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(data)})
        dataset = server.client().get_dataset("ds")
        t2 = time.perf_counter()
        table = dataset.get_index_ranges().to_arrow_table()
        t3 = time.perf_counter()
    peak = peak_rss_mb()
    out = {
        "import_s": import_s,
        "open_s": t2 - t1,
        "ranges_s": t3 - t2,
        "total_s": t3 - t1,
        "segments": table.num_rows,
        "peak_rss_mb": peak,
        "peak_rss_above_import_mb": peak - rss_import,
        "digest": _table_digest(table),
    }
    if server is not None:
        server.shutdown()
    return out


# --- driver ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "open2000")
    parser.add_argument("--files", type=int, default=2000, help="recordings in the folder (default 2000)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each recording (default 10)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="writer processes")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--timeout", type=float, default=600, help="per child run, seconds")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.data)))
        return 0

    ensure_data(args.data, args.files, args.seconds, args.jobs)
    runs: dict[str, list[dict]] = {b: [] for b in args.backends}
    errors: dict[str, str] = {}
    for r in range(args.repeats):
        order = args.backends if r % 2 == 0 else list(reversed(args.backends))
        for backend in order:
            if backend in errors:
                continue
            res = run_child(Path(__file__), ["--child", backend, "--data", str(args.data)], args.timeout)
            if "error" in res:
                errors[backend] = res["error"]
                print(f"{backend}: {res['error']}", file=sys.stderr)
                continue
            runs[backend].append(res)
            print(f"  repeat {r + 1}/{args.repeats} {backend:8s} total {res['total_s']:.3f} s", flush=True)

    summary = {}
    for backend, rs in runs.items():
        if not rs:
            continue
        summary[backend] = {
            key: median([x[key] for x in rs])
            for key in (
                "import_s",
                "open_s",
                "ranges_s",
                "total_s",
                "peak_rss_mb",
                "peak_rss_above_import_mb",
            )
        }
        summary[backend]["segments"] = rs[0]["segments"]
        summary[backend]["digest"] = rs[0]["digest"]
    digests = {s["digest"] for s in summary.values()}
    match = len(digests) == 1 if len(summary) == 2 else None

    print(f"\nopen {args.files} recordings ({args.seconds:g} s at 50 Hz each), median of {args.repeats} runs")
    rows = []
    ref = summary.get("rerun", {}).get("total_s")
    for backend in args.backends:
        s = summary.get(backend)
        if s is None:
            rows.append([backend] + ["n/a"] * 7)
            continue
        speedup = f"{ref / s['total_s']:.1f}x" if ref else None
        rows.append(
            [
                backend,
                fmt(s["open_s"]),
                fmt(s["ranges_s"]),
                fmt(s["total_s"]),
                fmt(s["peak_rss_mb"], 0),
                fmt(s["peak_rss_above_import_mb"], 0),
                s["segments"],
                speedup,
            ]
        )
    print_table(
        ["backend", "open s", "ranges s", "total s", "peak RSS MiB", "above import", "segments", "vs rerun"],
        rows,
    )
    for backend, error in errors.items():
        print(f"{backend} failed: {error}")
    if match is not None:
        print(f"index ranges identical: {'yes' if match else 'NO'}")

    payload = {
        "benchmark": "open",
        "params": {
            "files": args.files,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "data": str(args.data),
        },
        "machine": machine_info(),
        "summary": summary,
        "ranges_match": match,
        "errors": errors,
        "runs": runs,
    }
    write_json(args.results / "open.json", payload)
    labels = [b for b in args.backends]
    bar_chart(
        args.results / "open.png",
        f"Open {args.files} recordings + list index ranges (median of {args.repeats})",
        [
            {
                "ylabel": "wall time (s)",
                "labels": ["open + index ranges"],
                "series": {b: [summary.get(b, {}).get("total_s")] for b in labels},
                "fmt": "{:.2f} s",
            },
            {
                "ylabel": "peak RSS (MiB)",
                "labels": ["whole process", "above imports"],
                "series": {
                    b: [
                        summary.get(b, {}).get("peak_rss_mb"),
                        summary.get(b, {}).get("peak_rss_above_import_mb"),
                    ]
                    for b in labels
                },
                "fmt": "{:.0f}",
            },
        ],
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
