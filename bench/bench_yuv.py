"""Video frames as YUV 4:2:0 vs RGB: rrloader's 0.41 front end vs rerun-sdk 0.41 (issue 12).

    python bench/bench_yuv.py [--strategies none block interleaved] [--configs rrloader-yuv rrloader-rgb rerun-yuv]
                              [--workers 0] [--repeats 3]

The video workload (three 640x480 H.264 cameras, GOP 30; make_dataloader_data.py) through
``DataLoader(dataset, batch_size=32, num_workers=W)``, each run in a fresh process, fields
``state`` and ``cam0..2`` with ``VideoFrameDecoder(codec="h264", output_format=F)``:

* ``rrloader-yuv`` / ``rrloader-rgb``: ``rrloader.experimental.dataloader`` over a
  ``LocalDataset``, F = ``"yuv420p"`` (``collate_fn=Yuv420Collator()``) / ``"rgb"``
  (``default_collate``);
* ``rerun-yuv`` (and ``rerun-rgb`` when asked): rerun-sdk 0.41 on an in-process server, the
  same way (its ``Yuv420Collator``).

Strategies: ``none`` (``NoShuffle()``: sequential), ``block`` (``BlockShuffle()``),
``sample`` (``SampleShuffle()``), ``interleaved`` (rrloader's ``InterleavedShuffle()``: rrloader
only). Measured as bench_strategies.py does: samples/s after the first batch, CPU ms per
sample (process and workers), time to first batch, peak RSS, frames decoded per frame
delivered (rrloader, 0 workers). Repeats alternate the order; medians. Writes
``bench/results/yuv.json`` and ``bench/results/yuv.png``.

Targets (issue 12): rrloader YUV >= 1.3x rrloader RGB and >= 1.5x rerun-sdk's YUV, same strategy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from _common import (
    STRATEGY_LABELS,
    VIDEO_CAMERAS,
    Backend,
    ensure_variant,
    import_backend,
    load_average,
    make_strategy,
    run_child,
    tree_cpu_s,
    uptime_line,
)
from bench_dataloader import INDEX, make_loader, markdown_table
from bench_open import DEFAULT_RESULTS, bar_chart, machine_info, write_json
from make_dataloader_data import ENTITY_STATE

CONFIGS = ("rrloader-yuv", "rrloader-rgb", "rerun-yuv", "rerun-rgb")
DEFAULT_CONFIGS = ("rrloader-yuv", "rrloader-rgb", "rerun-yuv")
STRATEGIES = ("none", "block", "sample", "interleaved")
TARGET_VS_RGB = 1.3
TARGET_VS_RERUN = 1.5


def video_fields(api, output_format: str) -> dict:
    out = {"state": api.Field(f"{ENTITY_STATE}:Scalars:scalars", decode=api.NumericDecoder())}
    for c, entity in enumerate(VIDEO_CAMERAS):
        out[f"cam{c}"] = api.Field(
            f"{entity}:VideoStream:sample", decode=api.VideoFrameDecoder(codec="h264", output_format=output_format)
        )
    return out


def child(args) -> dict:
    warnings.simplefilter("ignore")
    backend_name, fmt = args.child.split("-")
    output_format = "yuv420p" if fmt == "yuv" else "rgb"
    t0 = time.perf_counter()
    shim = import_backend(backend_name)
    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    backend = Backend(backend_name, args.data)
    api = backend.api
    dataset = api.RerunIterableDataset(
        backend.source,
        INDEX,
        video_fields(api, output_format),
        fetch_block_size=args.fetch,
        shuffle_strategy=make_strategy(api, args.strategy),
    )
    collate = api.Yuv420Collator() if fmt == "yuv" else None
    loader = make_loader(dataset, "iterable", args.batch_size, args.workers, args.seed, collate)
    it = iter(loader)
    first = next(it)
    t2 = time.perf_counter()
    cam = first["cam0"]
    shape = {"y": list(cam.y.shape), "uv": list(cam.uv.shape)} if fmt == "yuv" else list(cam.shape)
    cpu0 = tree_cpu_s()
    n = 0
    t_end = t2
    deadline = t2 + args.max_seconds
    for batch in it:
        n += len(batch["state"])
        t_end = time.perf_counter()
        if n >= args.samples or t_end >= deadline:
            break
    cpu = tree_cpu_s() - cpu0
    video = None
    if backend_name == "rrloader" and not args.workers:
        per_field = dataset.video_stats()
        decoded = sum(v["frames_decoded"] for v in per_field.values())
        handed = sum(v["slots_filled"] for v in per_field.values())
        video = {"frames_decoded": decoded, "frames_delivered": handed,
                 "decoded_per_delivered": decoded / handed if handed else None}  # fmt: skip
    del it, loader
    backend.close()
    return {
        "import_s": import_s,
        "time_to_first_batch_s": t2 - t1,
        "samples": n,
        "steady_s": t_end - t2,
        "samples_per_s": n / (t_end - t2) if n and t_end > t2 else None,
        "cpu_ms_per_sample": 1e3 * cpu / n if n else None,
        "cam_batch_shape": shape,
        "torchvision_shim": shim,
        "video": video,
    }


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["none", "block", "interleaved"])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS))
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (spawn)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fetch", type=int, default=128)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--max-seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--name", default="yuv")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    uptimes = [("start", uptime_line())]
    print(uptimes[-1][1], flush=True)
    data, params = ensure_variant("video")
    cases = [(c, s) for s in args.strategies for c in args.configs if not (s == "interleaved" and c.startswith("rerun"))]
    runs: dict = {}
    errors: dict = {}
    for r in range(args.repeats):
        for config, strategy in cases if r % 2 == 0 else list(reversed(cases)):
            key = f"{strategy}/{config}"
            if key in errors:
                continue
            res = run_child(
                Path(__file__),
                ["--child", config, "--strategy", strategy, "--data", str(data), "--workers", str(args.workers),
                 "--batch-size", str(args.batch_size), "--fetch", str(args.fetch), "--samples", str(args.samples),
                 "--max-seconds", str(args.max_seconds), "--seed", str(args.seed)],
                args.timeout,
            )  # fmt: skip
            if "error" in res:
                errors[key] = res["error"]
                print(f"  {key}: {res['error']}", file=sys.stderr, flush=True)
                continue
            res["load_average"] = load_average()
            runs.setdefault(key, []).append(res)
            print(
                f"  {key:28s} {_fmt(res['samples_per_s'], ',.0f'):>7s} samples/s, cpu "
                f"{_fmt(res['cpu_ms_per_sample'], '.2f')} ms/sample, first batch {res['time_to_first_batch_s']:.2f} s, "
                f"RSS {res['peak_rss_mb']:.0f} / tree {_fmt(res['peak_tree_rss_mb'], '.0f')} MiB "
                f"(load {res['load_average'][0]:.1f})",
                flush=True,
            )
    uptimes.append(("end", uptime_line()))
    print(uptimes[-1][1], flush=True)

    rss_key = "peak_tree_rss_mb" if args.workers else "peak_rss_mb"
    summary: dict = {}
    for key, rs in runs.items():
        strategy, config = key.split("/")
        summary.setdefault(strategy, {})[config] = {
            "runs": len(rs),
            "samples_per_s": _median([x["samples_per_s"] for x in rs]),
            "samples_per_s_runs": [x["samples_per_s"] for x in rs],
            "cpu_ms_per_sample": _median([x["cpu_ms_per_sample"] for x in rs]),
            "time_to_first_batch_s": _median([x["time_to_first_batch_s"] for x in rs]),
            "peak_rss_mb": _median([x[rss_key] for x in rs]),
            "decoded_per_delivered": _median([(x.get("video") or {}).get("decoded_per_delivered") for x in rs]),
            "cam_batch_shape": rs[0]["cam_batch_shape"],
        }
    headers = ["strategy", "loader", "format", "samples/s", "CPU ms/sample", "first batch s", "peak RSS MiB",
               "decoded / delivered", "rrloader YUV vs this"]  # fmt: skip
    rows = []
    targets: dict = {}
    for strategy, per in summary.items():
        ours = (per.get("rrloader-yuv") or {}).get("samples_per_s")
        for config in args.configs:
            s = per.get(config)
            if not s:
                continue
            backend, fmt = config.split("-")
            ratio = ours / s["samples_per_s"] if (ours and s["samples_per_s"] and config != "rrloader-yuv") else None
            rows.append([
                STRATEGY_LABELS[strategy], "rrloader" if backend == "rrloader" else "rerun-sdk 0.41",
                "yuv420p" if fmt == "yuv" else "rgb", _fmt(s["samples_per_s"], ",.0f"),
                _fmt(s["cpu_ms_per_sample"], ".3g"), _fmt(s["time_to_first_batch_s"], ".2f"),
                _fmt(s["peak_rss_mb"], ",.0f"), _fmt(s["decoded_per_delivered"], ".2f"),
                "" if ratio is None else f"{ratio:.2f}x",
            ])  # fmt: skip
            if ratio is not None and config in ("rrloader-rgb", "rerun-yuv"):
                target = TARGET_VS_RGB if config == "rrloader-rgb" else TARGET_VS_RERUN
                targets.setdefault(strategy, {})[f"yuv_vs_{config}"] = {"value": ratio, "target": target,
                                                                         "met": ratio >= target}  # fmt: skip
    print()
    print(
        f"Video workload, DataLoader(batch_size={args.batch_size}, num_workers={args.workers}), "
        f"fetch_block_size={args.fetch}, medians of {args.repeats}"
    )
    print(markdown_table(headers, rows, left=3))
    print("\nTargets (issue 12):")
    for strategy, t in targets.items():
        for name, v in t.items():
            print(f"- {strategy}: {name} = {v['value']:.2f}x (target {v['target']}x) {'met' if v['met'] else 'NOT met'}")
    for key, error in errors.items():
        print(f"{key} failed: {error}")
    print("\nload: " + "; ".join(f"{k}: {v}" for k, v in uptimes))
    payload = {
        "benchmark": "yuv",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if v is not None},
        "data": params,
        "machine": machine_info(),
        "uptime": uptimes,
        "summary": summary,
        "targets": targets,
        "errors": errors,
        "runs": runs,
    }
    write_json(args.results / f"{args.name}.json", payload)
    labels = list(summary)
    bar_chart(
        args.results / f"{args.name}.png",
        f"Video: YUV 4:2:0 vs RGB, DataLoader batch {args.batch_size}, {args.workers} workers",
        [
            {"ylabel": "samples / s", "labels": labels, "fmt": "{:,.0f}",
             "series": {c: [summary[s].get(c, {}).get("samples_per_s") for s in labels] for c in args.configs}},
            {"ylabel": "CPU ms / sample", "labels": labels, "fmt": "{:.1f}",
             "series": {c: [summary[s].get(c, {}).get("cpu_ms_per_sample") for s in labels] for c in args.configs}},
            {"ylabel": "peak RSS (MiB)", "labels": labels, "fmt": "{:.0f}",
             "series": {c: [summary[s].get(c, {}).get("peak_rss_mb") for s in labels] for c in args.configs}},
        ],
    )  # fmt: skip
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
