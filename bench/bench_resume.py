"""Mid-epoch resume: time from ``load_state_dict`` to the first batch, rrloader vs rerun-sdk 0.41 (issue 15).

    python bench/bench_resume.py [--backends rrloader rerun] [--workers 0 2] [--fractions 0 0.5]
        [--strategy block] [--repeats 3] [--epochs 5]

Both loaders run through torchdata's ``StatefulDataLoader(dataset, batch_size=32,
num_workers=W)`` (W = 0, and 2 spawned workers) on the video workload (three 640x480 H.264
cameras, bench/data/dataloader_video), with the same strategy (``BlockShuffle()`` unless told
otherwise) and seed:

* rrloader: ``rrloader.experimental.dataloader.RerunIterableDataset`` over
  ``rrloader.LocalDataset``; the dataset has ``state_dict``/``load_state_dict``, which
  StatefulDataLoader saves and restores per worker: the engine starts at the resume point.
* rerun-sdk 0.41: its ``RerunIterableDataset`` over an in-process ``rr.server.Server``. It has
  no ``state_dict``, so StatefulDataLoader restores it the only way it can: it re-iterates
  the dataset and throws away the batches already delivered (its "fast-forward").

For each (loader, W, fraction f of the epoch, epoch e), a preparing process iterates the loader to
``f * len(dataset)`` samples (whole batches), saves ``loader.state_dict()`` and the ``state``
rows of the next batch (the uninterrupted run's). Then each measured run, in a fresh
process: build the dataset and loader (not timed), then time ``loader.load_state_dict(state)``
and ``next(iter(loader))`` together (with W = 2 that includes spawning the workers, the same
at every fraction), and check that the batch is the uninterrupted run's. With W = 0 it also
records what was read before that batch: rrloader's ``fetch_stats()`` samples, and the video
frames rerun-sdk's decoder decoded. Repeats alternate the order of the runs; the table shows
medians over the repeats and the epochs. rrloader is measured at ``--epochs`` epochs (5; each
epoch's order starts at other blocks, and a first block's cost depends on where it falls in its
GOPs and segment: 0.2-0.35 s here), rerun-sdk at ``--reference-epochs`` (1: its fast-forward
dominates). Writes ``bench/results/resume.json`` and ``bench/results/resume.png``.

Target (issue 15): rrloader's time at 50% of the epoch within 20% of its time at 0%.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from _common import (
    STRATEGY_LABELS,
    Backend,
    import_backend,
    load_average,
    make_strategy,
    run_child,
    state_rows,
    strategy_available,
    uptime_line,
)
from bench_dataloader import (
    INDEX,
    ensure_workload,
    install_reference_video_counter,
    make_fields,
    markdown_table,
)
from bench_open import DEFAULT_RESULTS, bar_chart, machine_info, write_json

BACKENDS = ("rrloader", "rerun")
LABELS = {"rrloader": "rrloader", "rerun": "rerun-sdk 0.41 (StatefulDataLoader fast-forward)"}
TARGET = 0.20  # issue 15: time to the first batch at 50% within 20% of the time at 0%


def _loader(backend: Backend, args):
    from torchdata.stateful_dataloader import StatefulDataLoader

    api = backend.api
    dataset = api.RerunIterableDataset(
        backend.source, INDEX, make_fields(api, "video"), fetch_block_size=args.fetch,
        shuffle_strategy=make_strategy(api, args.strategy),
    )  # fmt: skip
    dataset.set_epoch(args.epoch)
    kwargs = {"batch_size": args.batch_size, "num_workers": args.workers}
    if args.workers:
        kwargs["multiprocessing_context"] = "spawn"  # rerun-sdk's client is not fork-safe
    return dataset, StatefulDataLoader(dataset, **kwargs)


def prepare_child(args) -> dict:
    """Iterate to the resume point; save the loader's state and the next batch's state rows."""
    import numpy as np

    warnings.simplefilter("ignore")
    import_backend(args.child)
    backend = Backend(args.child, args.data)
    dataset, loader = _loader(backend, args)
    n_batches = int(args.fraction * len(dataset)) // args.batch_size
    t0 = time.perf_counter()
    it = iter(loader)
    for _ in range(n_batches):
        next(it)
    state = loader.state_dict()
    expected = state_rows(next(it))
    seconds = time.perf_counter() - t0
    del it, loader
    with open(args.state_out, "wb") as f:
        pickle.dump(state, f)
    np.save(args.rows_out, expected)
    backend.close()
    return {"batches_before": n_batches, "samples_before": n_batches * args.batch_size,
            "dataset_len": len(dataset), "prepare_s": seconds}  # fmt: skip


def child(args) -> dict:
    """Fresh process: time load_state_dict + the first batch; is it the uninterrupted run's?"""
    import numpy as np

    warnings.simplefilter("ignore")
    import_backend(args.child)
    counter = install_reference_video_counter() if args.child == "rerun" and not args.workers else None
    backend = Backend(args.child, args.data)
    dataset, loader = _loader(backend, args)
    with open(args.state_out, "rb") as f:
        state = pickle.load(f)
    expected = np.load(args.rows_out)
    t0 = time.perf_counter()
    loader.load_state_dict(state)
    it = iter(loader)
    first = next(it)
    seconds = time.perf_counter() - t0
    got = state_rows(first)
    read_before = None
    if not args.workers:
        if args.child == "rrloader":
            read_before = {"samples_fetched": int(dataset.fetch_stats()["samples"])}
        else:
            read_before = {"frames_decoded": int(counter["frames_decoded"])}
    del it, loader
    backend.close()
    return {
        "first_batch_s": seconds,
        "matches_uninterrupted": bool(got.shape == expected.shape and np.array_equal(got, expected)),
        "read_before_first_batch": read_before,
    }


def plot(path: Path, summary: dict, args) -> None:
    labels = [f"{w} workers\nresume at {f:.0%}" for w in args.workers for f in args.fractions]
    series = {
        b: [
            (summary.get(f"w{w}/{b}/{f:g}") or {}).get("first_batch_s")
            for w in args.workers
            for f in args.fractions
        ]
        for b in args.backends
    }
    title = f"Resume, video workload, {STRATEGY_LABELS.get(args.strategy, args.strategy)}"
    panel = {"ylabel": "load_state_dict -> first batch, s (median)", "labels": labels, "series": series,
             "log": True, "fmt": "{:.2f}"}  # fmt: skip
    bar_chart(path, title, [panel])


# --- driver ---------------------------------------------------------------------------------------------


def _child_argv(args, mode: str, case: tuple, tmp: str) -> list[str]:
    backend, workers, fraction, epoch = case
    stem = os.path.join(tmp, f"{backend}-w{workers}-{fraction}-e{epoch}")
    return [
        mode, backend, "--worker-count", str(workers), "--fraction", str(fraction), "--epoch", str(epoch),
        "--data", str(args.data), "--batch-size", str(args.batch_size), "--fetch", str(args.fetch),
        "--strategy", args.strategy, "--state-out", stem + ".pkl", "--rows-out", stem + ".npy",
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="num_workers settings (spawn)")
    parser.add_argument(
        "--fractions", nargs="+", type=float, default=[0.0, 0.5], help="resume points (of the epoch)"
    )
    parser.add_argument("--strategy", default="block", help="sample, block, block512, none, interleaved")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fetch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=5, help="rrloader: epochs (different first blocks) per point"
    )
    parser.add_argument("--reference-epochs", type=int, default=1, help="rerun-sdk: epochs per point")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--name", default="resume", help="results file stem")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-count", type=int, dest="worker_count", help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--epoch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state-out", help=argparse.SUPPRESS)
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child or args.prepare:
        args.workers = args.worker_count
        if args.prepare:
            args.child = args.prepare
            print(json.dumps(prepare_child(args)))
        else:
            print(json.dumps(child(args)))
        return 0

    args.data, params = ensure_workload("video")
    uptimes = [("start", uptime_line())]
    print(uptimes[-1][1], flush=True)
    cases = [
        (b, w, f, e) for w in args.workers for b in args.backends for f in args.fractions
        for e in range(args.epochs if b == "rrloader" else args.reference_epochs)
        if strategy_available(b, args.strategy)
    ]  # fmt: skip
    prepared, runs, errors = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            key = "w{1}/{0}/{2:g}/e{3}".format(*case)
            res = run_child(Path(__file__), _child_argv(args, "--prepare", case, tmp), args.timeout)
            if "error" in res:
                errors[key] = res["error"]
                print(f"  prepare {key}: {res['error']}", file=sys.stderr, flush=True)
                continue
            prepared[key] = res
            print(f"  prepared {key:28s} {res['samples_before']:>6,} of {res['dataset_len']:,} samples "
                  f"in {res['prepare_s']:.1f} s", flush=True)  # fmt: skip
        for r in range(args.repeats):
            for case in cases if r % 2 == 0 else list(reversed(cases)):
                key = "w{1}/{0}/{2:g}/e{3}".format(*case)
                if key not in prepared or key in errors:
                    continue
                res = run_child(Path(__file__), _child_argv(args, "--child", case, tmp), args.timeout)
                if "error" in res:
                    errors[key] = res["error"]
                    print(f"  {key}: {res['error']}", file=sys.stderr, flush=True)
                    continue
                res["load_average"] = load_average()
                runs.setdefault(key, []).append({**res, "epoch": case[3]})
                print(f"  {key:28s} first batch {res['first_batch_s']:7.2f} s, matches the uninterrupted run: "
                      f"{res['matches_uninterrupted']}, read before it: {res['read_before_first_batch']} "
                      f"(load {res['load_average'][0]:.1f})", flush=True)  # fmt: skip
    uptimes.append(("end", uptime_line()))
    print(uptimes[-1][1], flush=True)

    # per (workers, loader, fraction): every epoch's runs together (epochs start at different blocks)
    grouped: dict = {}
    for key, rs in runs.items():
        grouped.setdefault(key.rsplit("/", 1)[0], []).extend(rs)
    summary = {}
    for key, rs in grouped.items():
        summary[key] = {
            "first_batch_s": statistics.median(r["first_batch_s"] for r in rs),
            "first_batch_s_runs": [r["first_batch_s"] for r in rs],
            "all_match": all(r["matches_uninterrupted"] for r in rs),
            "read_before_first_batch": rs[0]["read_before_first_batch"],
            # 0 workers: ru_maxrss of the process; 2 workers: the polled RSS summed over the processes
            "peak_rss_mb": statistics.median(
                r["peak_rss_mb" if key.startswith("w0/") else "peak_tree_rss_mb"] or 0 for r in rs
            ),  # fmt: skip
            "epochs": sorted({r["epoch"] for r in rs}),
            **prepared[key + "/e0"],
        }
    rows, checks = [], {}
    base_fraction = min(args.fractions)
    for backend, workers, fraction in dict.fromkeys(c[:3] for c in cases):
        key = f"w{workers}/{backend}/{fraction:g}"
        s = summary.get(key)
        if s is None:
            continue
        base = summary.get(f"w{workers}/{backend}/{base_fraction:g}")
        ratio = s["first_batch_s"] / base["first_batch_s"] if base else None
        if backend == "rrloader" and fraction != base_fraction and ratio is not None:
            checks[key] = {"vs_start": ratio, "target": 1 + TARGET, "met": ratio <= 1 + TARGET}
        rr_key = f"w{workers}/rerun/{fraction:g}"
        vs_rerun = (
            summary[rr_key]["first_batch_s"] / s["first_batch_s"]
            if backend == "rrloader" and rr_key in summary
            else None
        )
        rows.append([
            LABELS[backend], workers, f"{fraction:.0%}", f"{s['samples_before']:,}", f"{s['first_batch_s']:.2f}",
            "" if ratio is None else f"{ratio:.2f}x", "" if vs_rerun is None else f"{vs_rerun:.1f}x",
            "yes" if s["all_match"] else "NO", json.dumps(s["read_before_first_batch"]) if s["read_before_first_batch"] else "",
            f"{s['peak_rss_mb']:,.0f}",
        ])  # fmt: skip
    headers = ["loader", "num_workers", "resume at", "samples before", "load_state_dict -> first batch (s)",
               f"vs {base_fraction:.0%}", "rerun-sdk / rrloader", "batch = uninterrupted run's",
               "read before the first batch (0 workers)", "peak RSS MiB"]  # fmt: skip
    table = markdown_table(headers, rows)
    print(table)
    for key, c in checks.items():
        print(f"target: rrloader {key} within {TARGET:.0%} of the start: {c['vs_start']:.2f}x -> "
              f"{'met' if c['met'] else 'NOT met'}")  # fmt: skip
    payload = {
        "machine": machine_info(), "workload": params, "strategy": args.strategy, "batch_size": args.batch_size,
        "fetch_block_size": args.fetch, "repeats": args.repeats, "uptime": uptimes, "summary": summary,
        "runs": runs, "errors": errors, "checks": checks, "table": table,
        "command": "python bench/bench_resume.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    write_json(args.results / f"{args.name}.json", payload)
    (args.results / f"{args.name}.md").write_text(table + "\n")
    plot(args.results / f"{args.name}.png", summary, args)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
