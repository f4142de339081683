"""DataLoader ``num_workers`` sweep: rrloader's 0.41 front end vs rerun-sdk 0.41 (issue 14, item 5).

    python bench/bench_workers.py [--workloads cameras video state_action] [--loaders rrloader rerun]
        [--strategies sample block] [--workers 0 1 2 4] [--repeats 3] [--max-seconds 15]

For every (workload, loader, strategy, num_workers), a fresh process runs
``torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=W)`` (spawned workers) over

* rrloader: ``rrloader.experimental.dataloader.RerunIterableDataset(DataSource(dataset=
  rrloader.LocalDataset(dir)), "frame", fields, fetch_block_size=128, shuffle_strategy=S)``;
* rerun-sdk 0.41: ``rerun.experimental.dataloader.RerunIterableDataset(...)`` the same way, on an
  in-process ``rr.server.Server`` (its CPU and memory count with the loader's).

The timed process is bench_strategies.py's child (``--child``): the same fields
(bench_dataloader's ``make_fields``), the same strategy objects from each module
(``_common.make_strategy``). Workloads (make_dataloader_data.py): ``cameras`` (two 640x480 JPEG
cameras + state) and ``state_action`` under each of ``--strategies`` (``SampleShuffle()``, the
default, and ``BlockShuffle()``); ``video`` (three H.264 cameras + state) in natural order
(``NoShuffle()``, ``--video-strategies``).

Measured per run: samples/s after the first batch (``--samples`` or ``--max-seconds``), time to
first batch, CPU ms per sample (the process and its workers), peak RSS summed over the process
and its DataLoader workers (polled, ``_common.run_child``; with 0 workers the process's exact
``ru_maxrss``). Repeats alternate the order of the runs; medians are reported.

Once per run, the limits the loaders are measured against:

* ``cameras``: Pillow (libjpeg-turbo) decoding the workload's JPEG blobs (read from the .rrd
  files with rrloader's reader, the first ``--limit-episodes`` episodes) to RGB, one process per
  usable core, all started together; samples/s = JPEGs decoded per s / 2 (two cameras);
* ``video``: bench_dataloader's ``decode_limit`` (libavcodec decoding every frame with RGB
  conversion on every core), samples/s = frames per s / 3;
* ``state_action``: the DataLoader's own ceiling with workers: an ``IterableDataset`` that does
  nothing but yield one ready sample of the workload (its tensors, as rrloader yields them) over
  and over, through the same ``DataLoader(batch_size, num_workers=W)`` (spawn) at W = 1 and 2,
  with ``default_collate`` and with the API's ``PooledBatchCollator``; the best of the four.
  Every batch a worker makes crosses to the training process (pickled storage handles, a pipe,
  a queue thread), which bounds any dataset's samples/s with workers; at 0 workers no such cost.

Reported per workload: each loader's best configuration (strategy, num_workers), rrloader at
each num_workers as a percentage of its best over num_workers with the same strategy, the ratio
of the two loaders' bests, peak RSS side by side (same strategy and num_workers), rrloader's best
as a percentage of the limit, and issue 14's targets. Writes the markdown to stdout and
``bench/results/workers.md``, and ``bench/results/workers.json`` and ``bench/results/workers.png``
(samples/s and peak RSS vs num_workers, one column per workload, a line per loader and strategy).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import (
    STRATEGIES,
    STRATEGY_LABELS,
    load_average,
    run_child,
    strategy_available,
    uptime_line,
)
from bench_dataloader import INDEX, _fmt, markdown_table
from bench_open import DEFAULT_RESULTS, machine_info, write_json
from bench_strategies import _median
from make_dataloader_data import CAMERAS, DATA_ROOT, VIDEO_CAMERAS, ensure_workload

HERE = Path(__file__).resolve().parent
CHILD_SCRIPT = HERE / "bench_strategies.py"  # its --child mode is the timed run
LIMIT_SCRIPT = HERE / "bench_dataloader.py"  # its --limit-child mode is the video decode limit
WORKLOADS = ("cameras", "video", "state_action")
LOADERS = ("rrloader", "rerun")
LOADER_LABELS = {"rrloader": "rrloader", "rerun": "rerun-sdk 0.41"}
# issue 14's targets, measured in the same run
OWN_BEST_TARGET = 0.90  # rrloader at num_workers 1, 2, 4 >= 90% of its own best
JPEG_VS_RERUN_TARGET = 2.0  # cameras: rrloader's best >= 2x rerun-sdk's best configuration
JPEG_LIMIT_TARGET = 0.85  # cameras: rrloader's best >= 85% of the libjpeg-turbo limit


POOLED = "+pooled"  # a configuration's suffix: DataLoader(collate_fn=PooledBatchCollator())


def strategies_for(workload: str, args) -> list[str]:
    """The configurations run on `workload`: each strategy with default_collate, and where
    `--pooled-workloads` names the workload, also with the API's PooledBatchCollator (torch's
    default_collate in a worker stacks every batch into fresh shared memory: page faults and
    zeroing in the worker; the pooled collator reuses its slots)."""
    base = list(args.video_strategies if workload == "video" else args.strategies)
    pooled = [s + POOLED for s in base] if workload in args.pooled_workloads else []
    return base + pooled


def label(config: str) -> str:
    """A configuration (strategy, maybe +pooled) as text."""
    base = config.removesuffix(POOLED)
    return STRATEGY_LABELS[base] + (", pooled batches" if config != base else "")


# --- the JPEG limit -----------------------------------------------------------------------------------


def jpeg_blobs(data: Path, episodes: int, part: int = 0, parts: int = 1) -> list[bytes]:
    """The cameras workload's JPEG blobs (both cameras, the first ``episodes`` segments), every
    ``parts``-th one starting at ``part``."""
    import rrloader

    ds = rrloader.LocalDataset(data)
    blobs = []
    for seg in ds.segment_ids()[:episodes]:
        table = ds.reader(INDEX, segments=[seg], contents=["/camera/**"])
        for entity in CAMERAS:
            cells = table[f"{entity}:EncodedImage:blob"].combine_chunks().flatten()  # one blob per row
            blobs += [cell.values.to_numpy().tobytes() for cell in cells]
    return blobs[part::parts]


def _decode_rgb(blob: bytes) -> None:
    from PIL import Image

    im = Image.open(io.BytesIO(blob))
    im.load()
    if im.mode != "RGB":
        im.convert("RGB")


def _jpeg_worker(data: str, episodes: int, part: int, parts: int, barrier, results) -> None:
    """One decoding process: read its share of the blobs, warm up, wait for the others, decode."""
    blobs = jpeg_blobs(Path(data), episodes, part, parts)
    for blob in blobs[:4]:
        _decode_rgb(blob)
    barrier.wait()
    t = time.perf_counter()
    for blob in blobs:
        _decode_rgb(blob)
    results.put((len(blobs), time.perf_counter() - t))


def jpeg_limit(args) -> dict:
    """Pillow decoding the workload's JPEGs to RGB in one process per usable core, all at once."""
    from multiprocessing import get_context

    import PIL
    from PIL import features

    cores = len(os.sched_getaffinity(0))
    ctx = get_context("spawn")
    barrier = ctx.Barrier(cores + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_jpeg_worker, args=(str(args.data), args.limit_episodes, i, cores, barrier, results)
        )
        for i in range(cores)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t = time.perf_counter()
    done = [results.get(timeout=args.timeout) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    jpegs = sum(n for n, _ in done)
    return {
        "cores": cores,
        "jpegs": jpegs,
        "jpegs_per_s": jpegs / wall,
        "ms_per_jpeg": statistics.mean(1e3 * s / n for n, s in done if n),
        "limit_samples_per_s": jpegs / wall / len(CAMERAS),
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo")
        if features.check_feature("libjpeg_turbo")
        else None,
    }


# --- the DataLoader's ceiling with workers (state_action) ---------------------------------------------


def worker_ceiling(args) -> dict:
    """samples/s of a DataLoader with workers over a dataset that costs nothing (see the module
    docstring), for the workload's own sample."""
    import rrloader
    import rrloader.experimental.dataloader as api
    import torch
    from _ready_samples import ReadySamples
    from bench_dataloader import make_fields

    dataset = api.RerunIterableDataset(
        api.DataSource(dataset=rrloader.LocalDataset(str(args.data))), INDEX, make_fields(api, "state_action"),
        fetch_block_size=args.fetch, shuffle_strategy=api.NoShuffle(),
    )  # fmt: skip
    sample = {k: v.clone() for k, v in next(iter(dataset)).items()}
    out: dict = {"cores": os.cpu_count() or 1, "shapes": {k: list(v.shape) for k, v in sample.items()}, "cells": {}}
    for workers in (1, 2):
        for collate in ("default", "pooled"):
            loader = torch.utils.data.DataLoader(
                ReadySamples(sample, args.ceiling_samples + 64 * workers * args.batch_size), batch_size=args.batch_size,
                num_workers=workers, multiprocessing_context="spawn",
                collate_fn=api.PooledBatchCollator() if collate == "pooled" else None,
            )  # fmt: skip
            it = iter(loader)
            for _ in range(8 * workers):  # every worker has started and made batches
                next(it)
            n, t = 0, time.perf_counter()
            for batch in it:
                n += len(batch["state"])
                if n >= args.ceiling_samples:
                    break
            out["cells"][f"{collate}/w{workers}"] = n / (time.perf_counter() - t)
            del it, loader
    best = max(out["cells"], key=out["cells"].get)
    out["best"] = best
    out["limit_samples_per_s"] = out["cells"][best]
    return out


def measure_limit(workload: str, data: Path, args) -> dict | None:
    if workload == "cameras":
        argv = ["--limit-child", "--data", str(data), "--limit-episodes", str(args.limit_episodes)]
        res = run_child(Path(__file__), argv, args.timeout)
        if "error" not in res:
            res["what"] = (
                f"Pillow {res['pillow']} (libjpeg-turbo {res['libjpeg_turbo']}) in {res['cores']} processes: "
                f"{res['jpegs_per_s']:,.0f} JPEGs/s ({res['ms_per_jpeg']:.2f} ms each) = "
                f"{res['limit_samples_per_s']:,.0f} samples/s of {len(CAMERAS)} cameras"
            )
    elif workload == "video":
        argv = ["--limit-child", "--data", str(data), "--limit-episodes", str(args.limit_episodes)]
        res = run_child(LIMIT_SCRIPT, argv, args.timeout)
        if "error" not in res:
            res["what"] = (
                f"libavcodec on {res['cores']} cores: {res['limit_fps']:,.0f} frames/s (PyAV "
                f"{res['pyav_fps']:,.0f}, rrloader native {res['native_fps']:,.0f}) = "
                f"{res['limit_samples_per_s']:,.0f} samples/s of {len(VIDEO_CAMERAS)} cameras"
            )
    elif workload == "state_action":
        argv = ["--ceiling-child", "--data", str(data), "--batch-size", str(args.batch_size), "--fetch",
                str(args.fetch), "--ceiling-samples", str(args.ceiling_samples)]  # fmt: skip
        res = run_child(Path(__file__), argv, args.timeout)
        if "error" not in res:
            res["kind"] = "workers"  # a bound on every num_workers >= 1, not on 0 workers
            cells = ", ".join(f"{k.replace('/w', ', ')} worker(s) {v:,.0f}" for k, v in res["cells"].items())
            res["what"] = (
                f"the DataLoader's ceiling with workers (a dataset that yields one ready sample, "
                f"batch {args.batch_size}, spawn): {res['limit_samples_per_s']:,.0f} samples/s ({cells})"
            )
    else:
        return None
    res["load_average"] = load_average()
    return res


# --- summary ------------------------------------------------------------------------------------------


def summarize(runs: list[dict], workers: int) -> dict:
    # with 0 workers the process's own ru_maxrss is exact; with workers, the polled sum
    rss_key = "peak_tree_rss_mb" if workers else "peak_rss_mb"
    return {
        "runs": len(runs),
        "samples_per_s": _median([r["samples_per_s"] for r in runs]),
        "samples_per_s_runs": [r["samples_per_s"] for r in runs],
        "time_to_first_batch_s": _median([r["time_to_first_batch_s"] for r in runs]),
        "cpu_ms_per_sample": _median([r["cpu_ms_per_sample"] for r in runs]),
        "peak_rss_mb": _median([r[rss_key] for r in runs]),
        "peak_rss_kind": "summed over the process and its workers (polled)" if workers else "ru_maxrss",
        "decoded_per_delivered": _median([(r.get("video") or {}).get("decoded_per_delivered") for r in runs]),
        "steady_s": _median([r["steady_s"] for r in runs]),
        "samples": runs[0]["samples"],
        "dataset_len": runs[0]["dataset_len"],
    }


class Summary:
    """Medians per (workload, strategy, loader, num_workers), and the bests over them."""

    def __init__(self, runs: dict):
        self.cells: dict = {}
        for key, rs in runs.items():
            workload, strategy, loader, w = key.split("/")
            self.cells.setdefault(workload, {}).setdefault(strategy, {}).setdefault(loader, {})[
                int(w[1:])
            ] = summarize(rs, int(w[1:]))

    def get(self, workload: str, strategy: str, loader: str, workers: int) -> dict | None:
        return self.cells.get(workload, {}).get(strategy, {}).get(loader, {}).get(workers)

    def best(self, workload: str, loader: str, strategy: str | None = None) -> tuple[str, int, dict] | None:
        """The (strategy, num_workers, medians) with the highest samples/s (one strategy, or all)."""
        cands = [
            (s, w, c)
            for s, per_loader in self.cells.get(workload, {}).items()
            if strategy in (None, s)
            for w, c in per_loader.get(loader, {}).items()
            if c["samples_per_s"]
        ]
        return max(cands, key=lambda x: x[2]["samples_per_s"]) if cands else None


def _workers(w: int) -> str:
    return f"{w} worker" if w == 1 else f"{w} workers"


def _config(b) -> str:
    """A best configuration (strategy, num_workers, medians) as text."""
    return "n/a" if b is None else f"{b[2]['samples_per_s']:,.0f} ({label(b[0])}, {_workers(b[1])})"


def report(summary: Summary, limits: dict, args) -> tuple[str, dict]:
    """The markdown report and the derived figures (targets) for the JSON."""
    workers = sorted(args.workers)
    out = [
        f"DataLoader(batch_size={args.batch_size}), spawned workers, fetch_block_size={args.fetch}, "
        f"samples/s after the first batch (at most {args.max_seconds:g} s), median of {args.repeats}; "
        "rrloader's cells give its samples/s as a % of its best over num_workers with the same strategy.",
        "",
    ]
    headers = ["workload", "loader", "strategy"] + [_workers(w) for w in workers]
    headers += ["best", "first batch s (best)", "CPU ms/sample (best)"]
    rows = []
    derived: dict = {}
    for workload in summary.cells:
        d = derived.setdefault(workload, {"own_best": {}, "rss": {}})
        for loader in args.loaders:
            for strategy in strategies_for(workload, args):
                b = summary.best(workload, loader, strategy)
                if b is None:
                    continue
                _, w_best, c_best = b
                cells = []
                for w in workers:
                    c = summary.get(workload, strategy, loader, w)
                    speed = c and c["samples_per_s"]
                    text = _fmt(speed, ",.0f")
                    if loader == "rrloader" and speed:
                        fraction = speed / c_best["samples_per_s"]
                        d["own_best"].setdefault(strategy, {})[w] = fraction
                        text += f" ({100 * fraction:.0f}%)"
                    cells.append(text)
                rows.append(
                    [workload, LOADER_LABELS[loader], label(strategy), *cells, _workers(w_best),
                     _fmt(c_best["time_to_first_batch_s"], ".2f"), _fmt(c_best["cpu_ms_per_sample"], ".3g")]
                )  # fmt: skip
    out += ["### samples/s by num_workers", "", markdown_table(headers, rows, left=3), ""]

    # peak RSS side by side, same strategy and num_workers
    headers = ["workload", "strategy"] + [_workers(w) for w in workers] + ["rrloader ≤ rerun-sdk"]
    rows = []
    for workload in summary.cells:
        d = derived[workload]
        for strategy in strategies_for(workload, args):
            cells, met, n = [], 0, 0
            for w in workers:
                ours = (summary.get(workload, strategy, "rrloader", w) or {}).get("peak_rss_mb")
                ref = (summary.get(workload, strategy, "rerun", w) or {}).get("peak_rss_mb")
                cells.append(f"{_fmt(ours, ',.0f')} / {_fmt(ref, ',.0f')}")
                if ours and ref:
                    d["rss"].setdefault(strategy, {})[w] = ours / ref
                    met += ours <= ref
                    n += 1
            rows.append([workload, label(strategy), *cells, f"{met} of {n}" if n else ""])
    out += [
        "### peak RSS MiB, rrloader / rerun-sdk (summed over the process and its DataLoader workers, polled; "
        "0 workers: the process's ru_maxrss)",
        "",
        markdown_table(headers, rows, left=2),
        "",
    ]

    # per workload: bests, ratio, limits, targets
    headers = ["workload", "rrloader best", "rerun-sdk best", "rrloader / rerun-sdk",
               "rrloader, lowest % of own best at 1+ workers", "peak RSS ≤ rerun-sdk", "limit samples/s",
               "rrloader best % of limit"]  # fmt: skip
    rows = []
    targets: dict = {}
    for workload in summary.cells:
        d = derived[workload]
        ours, ref = summary.best(workload, "rrloader"), summary.best(workload, "rerun")
        t = targets.setdefault(workload, {})

        ratio = ours[2]["samples_per_s"] / ref[2]["samples_per_s"] if ours and ref else None
        d["best"] = {lo: (None if b is None else {"strategy": b[0], "workers": b[1], "samples_per_s": b[2]["samples_per_s"]})
                     for lo, b in (("rrloader", ours), ("rerun", ref))}  # fmt: skip
        d["rrloader_vs_rerun_best"] = ratio
        if workload == "cameras" and ratio is not None:
            t["best_vs_rerun_best"] = {
                "value": ratio,
                "target": JPEG_VS_RERUN_TARGET,
                "met": ratio >= JPEG_VS_RERUN_TARGET,
            }
        with_workers = [(s, w, f) for s, per_w in d["own_best"].items() for w, f in per_w.items() if w >= 1]
        lowest = min(with_workers, key=lambda x: x[2]) if with_workers else None
        if lowest:
            t["own_best_at_1plus_workers"] = {
                "value": lowest[2], "target": OWN_BEST_TARGET, "met": lowest[2] >= OWN_BEST_TARGET,
                "where": f"{label(lowest[0])}, {_workers(lowest[1])}",
            }  # fmt: skip
        rss = [(s, w, x) for s, per_w in d["rss"].items() for w, x in per_w.items()]
        if rss:
            worst = max(rss, key=lambda x: x[2])
            t["rss_vs_rerun"] = {
                "value": worst[2], "target": "≤ 1 at every (strategy, num_workers)", "met": worst[2] <= 1,
                "where": f"{label(worst[0])}, {_workers(worst[1])}",
                "met_count": sum(x <= 1 for *_, x in rss), "count": len(rss),
            }  # fmt: skip
        limit = (limits.get(workload) or {}).get("limit_samples_per_s")
        of_limit = ours[2]["samples_per_s"] / limit if ours and limit else None
        if (limits.get(workload) or {}).get("kind") == "workers":
            # The ceiling bounds num_workers >= 1 only: rrloader's best with workers against it.
            cells = [summary.get(workload, st, "rrloader", w) for st in strategies_for(workload, args)
                     for w in args.workers if w >= 1]  # fmt: skip
            with_w = [c["samples_per_s"] for c in cells if c and c.get("samples_per_s")]
            of_limit = max(with_w) / limit if with_w and limit else None
            if ours and limit:
                d["own_best_needs_x_ceiling"] = OWN_BEST_TARGET * ours[2]["samples_per_s"] / limit
        d["rrloader_best_of_limit"] = of_limit
        if workload == "cameras" and of_limit is not None:
            t["jpeg_of_limit"] = {
                "value": of_limit,
                "target": JPEG_LIMIT_TARGET,
                "met": of_limit >= JPEG_LIMIT_TARGET,
            }
        rows.append([
            workload, _config(ours), _config(ref), "" if ratio is None else f"{ratio:.2f}x",
            "" if lowest is None else f"{100 * lowest[2]:.0f}% ({label(lowest[0])}, {_workers(lowest[1])})",
            "" if not rss else f"{t['rss_vs_rerun']['met_count']} of {len(rss)} (worst {worst[2]:.2f}x)",
            _fmt(limit, ",.0f"), "" if of_limit is None else f"{100 * of_limit:.0f}%",
        ])  # fmt: skip
    out += ["### per workload", "", markdown_table(headers, rows, left=1), ""]
    # An epoch shorter than the cap (state_action) ends the timed part early: say where.
    short = [
        f"{workload}/{strategy}/{loader}/{_workers(w)} ({c['steady_s']:.1f} s)"
        for workload, per_s in summary.cells.items()
        for strategy, per_loader in per_s.items()
        for loader, per_w in per_loader.items()
        for w, c in sorted(per_w.items())
        if c["steady_s"] is not None and c["steady_s"] < 0.5 * args.max_seconds
    ]
    if short:
        out += [
            f"- the epoch ended before {args.max_seconds:g} s (samples/s over the rest of one epoch): "
            + ", ".join(short)
        ]
    for workload, lim in limits.items():
        if lim:
            out.append(f"- {workload} limit: {lim.get('what') or lim.get('error')}")
            need = derived.get(workload, {}).get("own_best_needs_x_ceiling")
            if lim.get("kind") == "workers" and need is not None:
                out.append(
                    f"  ('limit' for {workload} is this ceiling, and 'rrloader best % of limit' its best with "
                    f"workers against it; {100 * OWN_BEST_TARGET:.0f}% of its own best at 0 workers would be "
                    f"{need:.1f}x the ceiling)"
                )
    lines = [
        f"- {workload}: {name} = {v['value']:.3g} (target {v['target']}{', at ' + v['where'] if 'where' in v else ''}) "
        f"{'met' if v['met'] else 'NOT met'}"
        for workload, t in targets.items()
        for name, v in t.items()
    ]
    if lines:
        out += ["", "Targets (issue 14, this run):", *lines]
    return "\n".join(out), {"derived": derived, "targets": targets}


# --- the chart ----------------------------------------------------------------------------------------


def plot(path: Path, summary: Summary, limits: dict, args) -> None:
    """Per workload (a column): samples/s and peak RSS vs num_workers, a line per loader and strategy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -r bench/requirements.txt): no chart")
        return
    workloads = list(summary.cells)
    if not workloads:
        return
    colors = {"rrloader": "#2a7ab9", "rerun": "#e5883a"}  # bench_open.bar_chart's
    styles = {"sample": ("o", "-"), "block": ("s", "--"), "block512": ("D", "-."), "none": ("^", "-"),
              "interleaved": ("*", ":")}  # fmt: skip
    workers = sorted(args.workers)
    fig, axes = plt.subplots(2, len(workloads), figsize=(max(6.0, 4.8 * len(workloads)), 7.8), squeeze=False)
    for col, workload in enumerate(workloads):
        for row, key, ylabel in (
            (0, "samples_per_s", "samples / s"),
            (1, "peak_rss_mb", "peak RSS MiB (summed)"),
        ):
            ax = axes[row][col]
            for loader in args.loaders:
                for strategy in strategies_for(workload, args):
                    ys = [(summary.get(workload, strategy, loader, w) or {}).get(key) for w in workers]
                    if not any(ys):
                        continue
                    marker, ls = styles[strategy.removesuffix(POOLED)]
                    if strategy.endswith(POOLED):
                        ls = ":"
                    ax.plot(workers, [float("nan") if y is None else y for y in ys], color=colors[loader],
                            marker=marker, ls=ls, label=f"{LOADER_LABELS[loader]}, {label(strategy)}")  # fmt: skip
            limit = (limits.get(workload) or {}).get("limit_samples_per_s")
            if row == 0 and limit:
                ax.axhline(limit, color="grey", ls=":", lw=1)
                what = {"cameras": "libjpeg-turbo limit", "video": "decode limit"}.get(workload,
                                                                                        "DataLoader ceiling, workers")
                ax.annotate(what, (workers[0], limit), fontsize=7, va="bottom", color="grey")
            ax.set_xticks(workers)
            ax.set_xlabel("num_workers")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(workload)
                ax.legend(fontsize=7)
    fig.suptitle(
        f"DataLoader(batch_size={args.batch_size}), spawned workers:\nrrloader vs rerun-sdk 0.41", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


# --- driver -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    parser.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, default=["sample", "block"], help="shuffled workloads"
    )
    parser.add_argument("--video-strategies", nargs="+", choices=STRATEGIES, default=["none"])
    parser.add_argument(
        "--pooled-workloads",
        nargs="*",
        choices=WORKLOADS,
        default=["cameras", "video"],
        help="workloads also run with PooledBatchCollator (none: default_collate only)",
    )
    parser.add_argument(
        "--workers", nargs="+", type=int, default=[0, 1, 2, 4], help="num_workers settings (spawn)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fetch", type=int, default=128, help="fetch_block_size")
    parser.add_argument(
        "--samples", type=int, default=10**9, help="cap on samples timed (default: --max-seconds)"
    )
    parser.add_argument("--max-seconds", type=float, default=15, help="cap on the timed part of one run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-episodes", type=int, default=4, help="episodes decoded for the limits")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--timeout", type=float, default=300, help="per child process, seconds")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--name", default="workers", help="results file stem")
    parser.add_argument("--ceiling-samples", type=int, default=100_000,
                        help="samples timed for the DataLoader's ceiling with workers (state_action)")
    parser.add_argument("--limit-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ceiling-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.limit_child:
        print(json.dumps(jpeg_limit(args)))
        return 0
    if args.ceiling_child:
        print(json.dumps(worker_ceiling(args)))
        return 0

    uptimes = [("start", uptime_line())]
    print(uptimes[-1][1], flush=True)
    load_before = load_average()
    runs: dict = {}
    errors: dict = {}
    limits: dict = {}
    data_params: dict = {}
    for workload in args.workloads:
        data, params = ensure_workload(workload, root=args.data_root)
        data_params[workload] = params
        cases = [
            (strategy, loader, w)
            for w in args.workers
            for strategy in strategies_for(workload, args)
            for loader in args.loaders
            if strategy_available(loader, strategy.removesuffix(POOLED))
        ]
        uptimes.append((workload, uptime_line()))
        print(f"{workload}: {uptimes[-1][1]}", flush=True)
        for r in range(args.repeats):
            for strategy, loader, w in cases if r % 2 == 0 else list(reversed(cases)):
                key = f"{workload}/{strategy}/{loader}/w{w}"
                if key in errors:
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    res = run_child(
                        CHILD_SCRIPT,
                        [
                            "--child", loader, "--variant", workload, "--strategy", strategy.removesuffix(POOLED),
                            "--collate", "pooled" if strategy.endswith(POOLED) else "default",
                            "--worker-count", str(w), "--data", str(data),
                            "--batch-size", str(args.batch_size), "--fetch", str(args.fetch),
                            "--samples", str(args.samples), "--max-seconds", str(args.max_seconds),
                            "--seed", str(args.seed), "--rows-out", os.path.join(tmp, "rows.npy"),
                        ],
                        args.timeout,
                    )  # fmt: skip
                if "error" in res:
                    errors[key] = res["error"]
                    print(f"  {key}: {res['error']}", file=sys.stderr, flush=True)
                    continue
                res.pop("batch_sizes", None)
                res["load_average"] = load_average()
                runs.setdefault(key, []).append(res)
                print(
                    f"  {key:34s} {_fmt(res['samples_per_s'], ',.0f'):>8s} samples/s ({res['samples']} in "
                    f"{res['steady_s']:.1f} s), first batch {res['time_to_first_batch_s']:.2f} s, RSS "
                    f"{res['peak_rss_mb']:,.0f} / summed {_fmt(res['peak_tree_rss_mb'], ',.0f')} MiB "
                    f"(load {res['load_average'][0]:.1f})",
                    flush=True,
                )
        limits[workload] = measure_limit(workload, data, args)
        if limits[workload]:
            print(
                f"  {workload} limit: {limits[workload].get('what') or limits[workload].get('error')}",
                flush=True,
            )
    uptimes.append(("end", uptime_line()))
    print(uptimes[-1][1], flush=True)

    summary = Summary(runs)
    text, derived = report(summary, limits, args)
    for key, error in errors.items():
        text += f"\n- {key} failed: {error}"
    text += "\n\nload: " + "; ".join(f"{k}: {v}" for k, v in uptimes)
    print()
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text(text + "\n")
    print(f"wrote {args.results / f'{args.name}.md'}")
    payload = {
        "benchmark": "workers",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if v is not None},
        "data": data_params,
        "machine": machine_info(),
        "uptime": uptimes,
        "load_average": {"before": load_before, "after": load_average()},
        "summary": summary.cells,
        **derived,
        "limits": limits,
        "errors": errors,
        "runs": runs,
    }
    write_json(args.results / f"{args.name}.json", payload)
    plot(args.results / f"{args.name}.png", summary, limits, args)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
