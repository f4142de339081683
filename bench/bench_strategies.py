"""Shuffle strategies: rrloader's 0.41 front end vs rerun-sdk 0.41, per strategy (issues 11 and 13).

    python bench/bench_strategies.py [--variants state_action cameras video video_gop60 cameras_png]
        [--strategies sample block block512 none interleaved] [--workers 0 2] [--repeats 3]

For each workload variant and strategy, both loaders through
``torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=W)`` (W = 0, and 2 spawned
workers), each run in a fresh process:

* rrloader: ``rrloader.experimental.dataloader.RerunIterableDataset(DataSource(dataset=
  rrloader.LocalDataset(dir)), "frame", fields, fetch_block_size=128, shuffle_strategy=S)``;
* rerun-sdk 0.41: ``rerun.experimental.dataloader.RerunIterableDataset(DataSource(dataset=
  server.client().get_dataset("ds")), ...)`` on an in-process ``rr.server.Server`` (its CPU
  and memory count with the loader's).

S is ``SampleShuffle()`` (the default), ``BlockShuffle()``, ``BlockShuffle(buffer_size=512)``,
``NoShuffle()``, and rrloader's ``InterleavedShuffle()`` (rerun-sdk has no equivalent). The
fields are bench_dataloader.py's (``make_fields``). Variants: the three workloads of
make_dataloader_data.py, ``video_gop60`` (the video workload with GOP 60, 10 episodes) and
``cameras_png`` (the cameras workload with PNG images, 4 episodes x 10 s), written once by
``_common.ensure_variant``.

Measured per run: samples/s after the first batch (``--samples`` or ``--max-seconds``), CPU ms
per sample (the process and its DataLoader workers, psutil), time to first batch, peak RSS
(``ru_maxrss`` with 0 workers; the polled peak of the RSS summed over the process and its
workers otherwise), frames decoded per frame delivered (0 workers: rrloader's
``dataset.video_stats()``, rerun-sdk's PyAV contexts counted), and batch diversity: the
mean number of distinct segments and of distinct (segment, GOP) pairs per batch, from the
delivered ``state`` rows (``_common.SampleLocator``; 30 index steps in place of the GOP for
workloads without video). Per video variant, once: the decode limit (bench_dataloader's
``decode_limit``: every frame of 4 episodes' streams, PyAV in one process per core).
Repeats alternate the order of the runs; the table shows medians. Writes
``bench/results/strategies.json`` and ``bench/results/strategies.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from _common import (
    STRATEGIES,
    STRATEGY_LABELS,
    VARIANTS,
    VIDEO_CAMERAS,
    Backend,
    SampleLocator,
    batch_diversity,
    ensure_variant,
    import_backend,
    load_average,
    make_strategy,
    run_child,
    state_rows,
    strategy_available,
    tree_cpu_s,
    uptime_line,
)
from bench_dataloader import (
    INDEX,
    install_reference_video_counter,
    make_fields,
    make_loader,
    markdown_table,
)
from bench_open import DEFAULT_RESULTS, machine_info, write_json

HERE = Path(__file__).resolve().parent
BACKENDS = ("rrloader", "rerun")
DEFAULT_SAMPLES = {
    "state_action": 4096,
    "cameras": 1024,
    "cameras_png": 1024,
    "video": 1024,
    "video_gop60": 1024,
}
NON_VIDEO_SPAN = 30
# issue 11: rrloader BlockShuffle on video >= 1.5x rerun-sdk's
BLOCK_TARGET = 1.5
# issue 13: InterleavedShuffle vs the decode limit and rerun-sdk
T13 = {"limit": 0.85, "vs_block512": 2.0, "vs_sample": 10.0, "diversity": 0.90, "decoded_per_delivered": 1.2}


def is_video(variant: str) -> bool:
    return VARIANTS[variant]["base"] == "video"


def span_of(variant: str) -> int:
    return int(VARIANTS[variant].get("gop", NON_VIDEO_SPAN)) if is_video(variant) else NON_VIDEO_SPAN


# --- the timed child ---------------------------------------------------------------------------------


def child(args) -> dict:
    import numpy as np

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    shim = import_backend(args.child)
    import_s = time.perf_counter() - t0
    base = VARIANTS[args.variant]["base"]
    counter = install_reference_video_counter() if args.child == "rerun" and base == "video" else None

    t1 = time.perf_counter()
    backend = Backend(args.child, args.data)
    api = backend.api
    dataset = api.RerunIterableDataset(
        backend.source,
        INDEX,
        make_fields(api, base),
        fetch_block_size=args.fetch,
        shuffle_strategy=make_strategy(api, args.strategy),
    )
    t2 = time.perf_counter()
    # --collate pooled: the API's PooledBatchCollator (batches in reused shared-memory slots)
    collate = api.PooledBatchCollator() if args.collate == "pooled" else None
    loader = make_loader(dataset, "iterable", args.batch_size, args.workers, args.seed, collate)
    it = iter(loader)
    first = next(it)
    t3 = time.perf_counter()
    rows = [state_rows(first)]
    cpu0 = tree_cpu_s()
    n = batches = 0
    t_end = t3
    deadline = t3 + args.max_seconds
    for batch in it:
        rows.append(state_rows(batch))
        n += len(rows[-1])
        batches += 1
        t_end = time.perf_counter()
        if n >= args.samples or t_end >= deadline:
            break
    cpu = tree_cpu_s() - cpu0
    video = None
    if base == "video" and not args.workers:
        if args.child == "rrloader":
            per_field = dataset.video_stats()
            video = {
                "frames_decoded": sum(v["frames_decoded"] for v in per_field.values()),
                "frames_delivered": sum(v["slots_filled"] for v in per_field.values()),
                "per_field": per_field,
            }
        elif counter is not None:
            video = dict(counter)
        if video and video["frames_delivered"]:
            video["decoded_per_delivered"] = video["frames_decoded"] / video["frames_delivered"]
    del it, loader
    np.save(args.rows_out, np.concatenate(rows).astype(np.float32))
    out = {
        "import_s": import_s,
        "build_s": t2 - t1,
        "time_to_first_batch_s": t3 - t1,
        "samples": n,
        "batches": batches,
        "batch_sizes": [len(r) for r in rows],
        "steady_s": t_end - t3,
        "samples_per_s": n / (t_end - t3) if n and t_end > t3 else None,
        "cpu_ms_per_sample": 1e3 * cpu / n if n else None,
        "dataset_len": len(dataset),
        "torchvision_shim": shim,
        "video": video,
    }
    backend.close()
    return out


def decode_limit_child(args) -> dict:
    """bench_dataloader's decode limit on this variant's streams (its native path cuts GOPs
    at the module's VIDEO_GOP: set to the variant's)."""
    import bench_dataloader

    bench_dataloader.VIDEO_GOP = int(VARIANTS[args.variant]["gop"])
    return bench_dataloader.decode_limit(args)


# --- driver ---------------------------------------------------------------------------------------------


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def summarize(runs: list[dict], workers: int) -> dict:
    rss_key = "peak_tree_rss_mb" if workers else "peak_rss_mb"
    ratios = [(r.get("video") or {}).get("decoded_per_delivered") for r in runs]
    return {
        "runs": len(runs),
        "samples_per_s": _median([r["samples_per_s"] for r in runs]),
        "samples_per_s_runs": [r["samples_per_s"] for r in runs],
        "cpu_ms_per_sample": _median([r["cpu_ms_per_sample"] for r in runs]),
        "time_to_first_batch_s": _median([r["time_to_first_batch_s"] for r in runs]),
        "peak_rss_mb": _median([r[rss_key] for r in runs]),
        "peak_rss_kind": "summed over processes (polled)" if workers else "ru_maxrss",
        "decoded_per_delivered": _median(ratios),
        "distinct_segment_spans": _median([r["diversity"]["distinct_segment_spans"] for r in runs]),
        "distinct_segments": _median([r["diversity"]["distinct_segments"] for r in runs]),
        "unknown_samples": max(r["diversity"]["unknown_samples"] for r in runs),
        "samples": runs[0]["samples"],
        "dataset_len": runs[0]["dataset_len"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="num_workers settings (spawn)")
    parser.add_argument(
        "--workers-variants",
        nargs="+",
        choices=list(VARIANTS),
        help="run the num_workers > 0 settings only on these variants (default: all)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fetch", type=int, default=128)
    parser.add_argument(
        "--samples", type=int, help="samples timed after the first batch (default per variant)"
    )
    parser.add_argument("--max-seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-episodes", type=int, default=4, help="episodes decoded for the decode limit")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--name", default="strategies", help="results file stem")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--limit-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--worker-count", type=int, dest="worker_count", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)
    parser.add_argument("--collate", choices=["default", "pooled"], default="default", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        args.workers = args.worker_count
        print(json.dumps(child(args)))
        return 0
    if args.limit_child:
        print(json.dumps(decode_limit_child(args)))
        return 0

    uptimes = [("start", uptime_line())]
    print(uptimes[-1][1], flush=True)
    load_before = load_average()
    runs: dict = {}
    errors: dict = {}
    limits: dict = {}
    data_params: dict = {}
    for variant in args.variants:
        data, params = ensure_variant(variant)
        data_params[variant] = params
        locator = SampleLocator(data)
        samples = args.samples or DEFAULT_SAMPLES[variant]
        worker_settings = [
            w
            for w in args.workers
            if w == 0 or args.workers_variants is None or variant in args.workers_variants
        ]
        cases = [(b, s) for s in args.strategies for b in args.backends if strategy_available(b, s)]
        for workers in worker_settings:
            uptimes.append((f"{variant} workers={workers}", uptime_line()))
            print(f"{variant}, num_workers={workers}: {uptimes[-1][1]}", flush=True)
            for r in range(args.repeats):
                for backend, strategy in cases if r % 2 == 0 else list(reversed(cases)):
                    key = f"{variant}/w{workers}/{strategy}/{backend}"
                    if key in errors:
                        continue
                    with tempfile.TemporaryDirectory() as tmp:
                        rows_out = os.path.join(tmp, "rows.npy")
                        res = run_child(
                            Path(__file__),
                            [
                                "--child", backend, "--variant", variant, "--strategy", strategy,
                                "--worker-count", str(workers), "--data", str(data),
                                "--batch-size", str(args.batch_size), "--fetch", str(args.fetch),
                                "--samples", str(samples), "--max-seconds", str(args.max_seconds),
                                "--seed", str(args.seed), "--rows-out", rows_out,
                            ],
                            args.timeout,
                        )  # fmt: skip
                        if "error" not in res:
                            import numpy as np

                            rows = np.load(rows_out)
                            sizes = res["batch_sizes"]
                            bounds = np.cumsum([0, *sizes])
                            res["diversity"] = batch_diversity(
                                locator, [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                                span_of(variant),
                            )  # fmt: skip
                            del res["batch_sizes"]
                    if "error" in res:
                        errors[key] = res["error"]
                        print(f"  {key}: {res['error']}", file=sys.stderr, flush=True)
                        continue
                    res["load_average"] = load_average()
                    runs.setdefault(key, []).append(res)
                    v = res.get("video") or {}
                    print(
                        f"  {key:42s} {_fmt(res['samples_per_s'], ',.0f'):>8s} samples/s "
                        f"cpu {_fmt(res['cpu_ms_per_sample'], '.2f')} ms/sample, first batch "
                        f"{res['time_to_first_batch_s']:.2f} s, RSS {res['peak_rss_mb']:.0f} / tree "
                        f"{_fmt(res['peak_tree_rss_mb'], '.0f')} MiB, diversity "
                        f"{res['diversity']['distinct_segment_spans']:.1f} pairs "
                        f"{res['diversity']['distinct_segments']:.1f} segs, decoded/delivered "
                        f"{_fmt(v.get('decoded_per_delivered'), '.2f')}  (load {res['load_average'][0]:.1f})",
                        flush=True,
                    )
        if is_video(variant):
            res = run_child(
                Path(__file__),
                ["--limit-child", "--variant", variant, "--data", str(data),
                 "--limit-episodes", str(args.limit_episodes)],
                args.timeout,
            )  # fmt: skip
            res["load_average"] = load_average()
            limits[variant] = res
            if "error" in res:
                print(f"  {variant} decode limit failed: {res['error']}", file=sys.stderr, flush=True)
            else:
                print(
                    f"  {variant} decode limit: {res['limit_fps']:,.0f} frames/s (PyAV {res['pyav_fps']:,.0f} in "
                    f"{res['cores']} processes, rrloader native {res['native_fps']:,.0f}) = "
                    f"{res['limit_samples_per_s']:,.0f} samples/s of {len(VIDEO_CAMERAS)} cameras "
                    f"(load {res['load_average'][0]:.1f})",
                    flush=True,
                )
    uptimes.append(("end", uptime_line()))
    print(uptimes[-1][1], flush=True)

    # --- summary ---
    summary: dict = {}
    for key, rs in runs.items():
        variant, w, strategy, backend = key.split("/")
        summary.setdefault(variant, {}).setdefault(strategy, {}).setdefault(backend, {})[w] = summarize(
            rs, int(w[1:])
        )

    def best(variant: str, strategy: str, backend: str) -> tuple[str | None, dict | None]:
        per_w = summary.get(variant, {}).get(strategy, {}).get(backend, {})
        cands = [(w, s) for w, s in per_w.items() if s["samples_per_s"]]
        if not cands:
            return None, None
        return max(cands, key=lambda ws: ws[1]["samples_per_s"])

    headers = ["variant", "strategy", "loader", "samples/s (0 workers)", "samples/s (2 workers)", "best",
               "vs rerun-sdk (best)", "CPU ms/sample (best)", "first batch s (best)", "peak RSS MiB (best)",
               "decoded / delivered (0 w.)", "distinct (segment, GOP) / batch", "distinct segments / batch",
               "diversity vs rerun SampleShuffle"]  # fmt: skip
    table = []
    derived: dict = {}
    for variant in summary:
        ref_sample = best(variant, "sample", "rerun")[1]
        ref_div = (ref_sample or {}).get("distinct_segment_spans")
        for strategy in args.strategies:
            for backend in args.backends:
                per_w = summary[variant].get(strategy, {}).get(backend)
                if not per_w:
                    continue
                w_best, s = best(variant, strategy, backend)
                _, ref = best(variant, strategy, "rerun")
                ratio = (
                    s["samples_per_s"] / ref["samples_per_s"] if (s and ref and backend != "rerun") else None
                )
                div_rel = s["distinct_segment_spans"] / ref_div if (s and ref_div) else None
                derived.setdefault(variant, {}).setdefault(strategy, {})[backend] = {
                    "best_workers": w_best, "vs_rerun_same_strategy": ratio, "diversity_vs_rerun_sample": div_rel,
                }  # fmt: skip
                w0 = per_w.get("w0", {})
                table.append([
                    variant, STRATEGY_LABELS[strategy], "rrloader" if backend == "rrloader" else "rerun-sdk 0.41",
                    _fmt(w0.get("samples_per_s"), ",.0f"), _fmt(per_w.get("w2", {}).get("samples_per_s"), ",.0f"),
                    w_best or "n/a", "" if ratio is None else f"{ratio:.2f}x",
                    _fmt(s and s["cpu_ms_per_sample"], ".3g"), _fmt(s and s["time_to_first_batch_s"], ".2f"),
                    _fmt(s and s["peak_rss_mb"], ",.0f"), _fmt(w0.get("decoded_per_delivered"), ".2f"),
                    _fmt(s and s["distinct_segment_spans"], ".1f"), _fmt(s and s["distinct_segments"], ".1f"),
                    "" if div_rel is None else f"{100 * div_rel:.0f}%",
                ])  # fmt: skip
    print()
    print(
        f"DataLoader(batch_size={args.batch_size}), fetch_block_size={args.fetch}, medians of {args.repeats}; "
        "'best' = the num_workers setting with the higher samples/s (its CPU, first batch and RSS shown); "
        "RSS with workers is summed over processes"
    )
    print(markdown_table(headers, table, left=3))

    # --- targets ---
    targets: dict = {}
    lines = []
    for variant in summary:
        if not is_video(variant):
            continue
        t: dict = {}
        lim = limits.get(variant, {}).get("limit_samples_per_s")
        _, rr_block = best(variant, "block", "rrloader")
        _, ref_block = best(variant, "block", "rerun")
        if rr_block and ref_block:
            x = rr_block["samples_per_s"] / ref_block["samples_per_s"]
            t["issue11_block_vs_rerun_block"] = {"value": x, "target": BLOCK_TARGET, "met": x >= BLOCK_TARGET}
        _, il = best(variant, "interleaved", "rrloader")
        _, ref_b512 = best(variant, "block512", "rerun")
        _, ref_sample = best(variant, "sample", "rerun")
        il0 = summary[variant].get("interleaved", {}).get("rrloader", {}).get("w0")
        if il:
            if lim:
                x = il["samples_per_s"] / lim
                t["issue13_fraction_of_decode_limit"] = {
                    "value": x,
                    "target": T13["limit"],
                    "met": x >= T13["limit"],
                }
            if ref_b512:
                x = il["samples_per_s"] / ref_b512["samples_per_s"]
                t["issue13_vs_rerun_block512"] = {
                    "value": x,
                    "target": T13["vs_block512"],
                    "met": x >= T13["vs_block512"],
                }
                x = il["peak_rss_mb"] / ref_b512["peak_rss_mb"]
                t["issue13_rss_vs_rerun_block512"] = {"value": x, "target": "< 1", "met": x < 1}
            if ref_sample:
                x = il["samples_per_s"] / ref_sample["samples_per_s"]
                t["issue13_vs_rerun_sample"] = {
                    "value": x,
                    "target": T13["vs_sample"],
                    "met": x >= T13["vs_sample"],
                }
                x = il["distinct_segment_spans"] / ref_sample["distinct_segment_spans"]
                t["issue13_diversity_vs_rerun_sample"] = {
                    "value": x,
                    "target": T13["diversity"],
                    "met": x >= T13["diversity"],
                }
            if il0 and il0.get("decoded_per_delivered") is not None:
                x = il0["decoded_per_delivered"]
                t["issue13_decoded_per_delivered"] = {"value": x, "target": T13["decoded_per_delivered"],
                                                      "met": x <= T13["decoded_per_delivered"]}  # fmt: skip
        targets[variant] = t
        for name, v in t.items():
            lines.append(
                f"{variant}: {name} = {v['value']:.3g} (target {v['target']}) {'met' if v['met'] else 'NOT met'}"
            )
        if lim:
            lines.append(
                f"{variant}: decode limit {limits[variant]['limit_fps']:,.0f} frames/s = {lim:,.0f} samples/s"
            )
    if lines:
        print("\nTargets (each loader at its best num_workers; decoded/delivered at 0 workers):")
        print("\n".join(f"- {x}" for x in lines))
    for key, error in errors.items():
        print(f"{key} failed: {error}")
    print("\nload: " + "; ".join(f"{k}: {v}" for k, v in uptimes))

    payload = {
        "benchmark": "strategies",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if v is not None},
        "data": data_params,
        "machine": machine_info(),
        "uptime": uptimes,
        "load_average": {"before": load_before, "after": load_average()},
        "summary": summary,
        "derived": derived,
        "targets": targets,
        "decode_limit": limits,
        "errors": errors,
        "runs": runs,
    }
    write_json(args.results / f"{args.name}.json", payload)
    plot(args.results / f"{args.name}.png", summary, best, args)
    return 1 if errors else 0


def plot(path: Path, summary: dict, best, args) -> None:
    """Per variant: samples/s (log) against batch diversity, one point per (loader, strategy) at
    its best num_workers; below, peak RSS per strategy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    variants = list(summary)
    if not variants:
        return
    colors = {"rrloader": "#2a7ab9", "rerun": "#e5883a"}
    markers = {"sample": "o", "block": "s", "block512": "D", "none": "^", "interleaved": "*"}
    fig, axes = plt.subplots(2, len(variants), figsize=(4.6 * len(variants), 8.4), squeeze=False)
    for col, variant in enumerate(variants):
        ax = axes[0][col]
        for strategy in args.strategies:
            for backend in args.backends:
                w, s = best(variant, strategy, backend)
                if not s or s["distinct_segment_spans"] is None:
                    continue
                ax.scatter(s["distinct_segment_spans"], s["samples_per_s"], c=colors[backend],
                           marker=markers[strategy], s=90 if strategy == "interleaved" else 45)  # fmt: skip
                ax.annotate(f"{strategy} ({w})", (s["distinct_segment_spans"], s["samples_per_s"]),
                            fontsize=7, xytext=(4, 3), textcoords="offset points")  # fmt: skip
        ax.set_yscale("log")
        unit = "GOP" if is_video(variant) else f"{NON_VIDEO_SPAN}-step span"
        ax.set_xlabel(f"distinct (segment, {unit}) per batch of {args.batch_size}")
        ax.set_ylabel("samples / s (log)")
        ax.set_title(variant)
        ax.grid(alpha=0.3)
        ax2 = axes[1][col]
        labels = args.strategies
        width = 0.4
        for i, backend in enumerate(args.backends):
            ys = [(best(variant, st, backend)[1] or {}).get("peak_rss_mb") for st in labels]
            xs = [x + (i - 0.5) * width for x in range(len(labels))]
            ax2.bar(
                xs,
                [float("nan") if y is None else y for y in ys],
                width,
                color=colors[backend],
                label=backend,
            )
        ax2.set_xticks(range(len(labels)), labels, rotation=30)
        ax2.set_ylabel("peak RSS MiB (best num_workers)")
        ax2.grid(axis="y", alpha=0.3)
        ax2.legend(fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ls="", label=b) for b, c in colors.items()]
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=s) for s, m in markers.items()]
    axes[0][0].legend(handles=handles, fontsize=7)
    fig.suptitle(
        f"Shuffle strategies, DataLoader batch {args.batch_size}: rrloader (0.41 front end) vs rerun-sdk 0.41"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
