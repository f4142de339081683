"""Memory over many epochs (issue 14): is rrloader's RSS flat from the first epoch to the last?

    python bench/bench_soak.py [--workloads state_action cameras video] [--epochs 10]
                               [--workers 0] [--episodes N] [--max-samples-per-epoch N]

For each workload (make_dataloader_data.py's data, bench_dataloader's fields), one fresh
process builds ``rrloader.experimental.dataloader.RerunIterableDataset(DataSource(dataset=
rrloader.LocalDataset(dir)), "frame", fields, fetch_block_size=128, shuffle_strategy=S)`` and
iterates ``DataLoader(dataset, batch_size=32, num_workers=W)`` (spawned workers,
``persistent_workers`` when W > 0, ``set_epoch`` before each epoch) for ``--epochs`` whole epochs
(or the first ``--max-samples-per-epoch`` samples of each). Strategies: ``state_action`` and
``cameras`` the default ``SampleShuffle()``, ``video`` ``InterleavedShuffle()`` (what each
workload is best read with; ``--strategy`` overrides).

Measured at the end of every epoch: the RSS summed over the process and its DataLoader workers
(psutil; shared pages count once per process), samples, seconds. Reported: the RSS after the
first epoch and after the last, their ratio, and the largest end-of-epoch RSS. Target (issue 14):
last within 5 % of first. A second reading follows each one, after glibc's ``malloc_trim(0)``
in the main process: rrloader returns the heap's free pages when an iteration ends, but the
DataLoader then still collates and frees its last batches (torch allocates them from the heap),
so the first reading also holds up to two freed batches wherever glibc placed them; the second
shows what is in use. Writes bench/results/soak.md and soak.png (RSS by epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import make_strategy, run_child, tree_rss_mb  # noqa: E402
from bench_dataloader import make_fields  # noqa: E402

RESULTS = HERE / "results"
WORKLOADS = ("state_action", "cameras", "video")
DEFAULT_STRATEGY = {"state_action": "sample", "cameras": "sample", "video": "interleaved"}
TARGET_DRIFT = 0.05


def child(args) -> dict:
    import rrloader
    import rrloader.experimental.dataloader as api
    import torch

    warnings.simplefilter("ignore")
    dataset = api.RerunIterableDataset(
        api.DataSource(dataset=rrloader.LocalDataset(str(args.data))),
        "frame",
        make_fields(api, args.workload),
        fetch_block_size=128,
        shuffle_strategy=make_strategy(api, args.strategy),
    )
    kwargs = {"batch_size": 32, "num_workers": args.workers}
    if args.workers:
        kwargs.update(multiprocessing_context="spawn", persistent_workers=True)
    loader = torch.utils.data.DataLoader(dataset, **kwargs)
    epochs = []
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        t0 = time.perf_counter()
        n = 0
        for batch in loader:
            n += len(batch["state"])
            if args.max_samples_per_epoch and n >= args.max_samples_per_epoch:
                break
        del batch
        seconds, rss = time.perf_counter() - t0, tree_rss_mb()
        trim()  # the second reading: what stays once the heap's free pages are returned
        epochs.append(
            {"epoch": epoch, "samples": n, "seconds": seconds, "rss_mb": rss, "rss_trimmed_mb": tree_rss_mb()}
        )
        print(f"  {args.workload} epoch {epoch}: {n} samples in {seconds:.1f} s, RSS {rss:,.0f} MiB, "
              f"after malloc_trim {epochs[-1]['rss_trimmed_mb']:,.0f}", file=sys.stderr, flush=True)  # fmt: skip
    return {"epochs": epochs}


def trim() -> None:
    """glibc's malloc_trim(0) in this process (not in DataLoader workers); nothing elsewhere."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def data_for(workload: str, episodes: int | None) -> Path:
    from make_dataloader_data import ensure_workload

    data, _ = ensure_workload(workload, episodes=episodes)
    return data


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for workload, r in results.items():
        if "epochs" not in r:
            continue
        xs = [e["epoch"] for e in r["epochs"]]
        line = ax.plot(
            xs, [e["rss_mb"] for e in r["epochs"]], marker="o", label=f"{workload} ({r['strategy']})"
        )
        ax.plot(
            xs,
            [e["rss_trimmed_mb"] for e in r["epochs"]],
            marker=".",
            linestyle="--",
            color=line[0].get_color(),
            label=f"{workload}, after malloc_trim",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("RSS at the end of the epoch, MiB (summed)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("rrloader: memory over epochs, DataLoader(batch_size=32)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def trimmed(ep: list[dict]) -> str:
    t = [e["rss_trimmed_mb"] for e in ep]
    return f"{t[0]:,.0f} → {t[-1]:,.0f} ({t[-1] / t[0]:.3f}; {min(t):,.0f}–{max(t):,.0f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--strategy", help="one strategy for every workload (default: per workload)")
    parser.add_argument("--episodes", type=int, help="episodes per workload (make_dataloader_data's default)")
    parser.add_argument("--max-samples-per-epoch", type=int, default=0, help="0: whole epochs")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    results: dict = {}
    for workload in args.workloads:
        strategy = args.strategy or DEFAULT_STRATEGY[workload]
        data = data_for(workload, args.episodes)
        argv_child = ["--child", "--workload", workload, "--data", str(data), "--strategy", strategy,
                      "--epochs", str(args.epochs), "--workers", str(args.workers),
                      "--max-samples-per-epoch", str(args.max_samples_per_epoch)]  # fmt: skip
        print(f"{workload}: {args.epochs} epochs, {strategy}, {args.workers} workers ...", flush=True)
        r = run_child(Path(__file__), argv_child, args.timeout)
        r["strategy"] = strategy
        results[workload] = r

    lines = [
        f"DataLoader(batch_size=32, num_workers={args.workers}), rrloader.experimental.dataloader, "
        f"{args.epochs} epochs; RSS summed over the process and its workers at the end of each epoch.",
        "",
        "| workload | strategy | samples/epoch | s/epoch (median) | RSS after epoch 1 MiB | after the last | "
        "last / first | largest end-of-epoch | target (within 5 %) | after malloc_trim: first → last (range) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for workload, r in results.items():
        if "epochs" not in r:
            lines.append(f"| {workload} | {r['strategy']} | error: {r.get('error')} |||||||")
            continue
        ep = r["epochs"]
        first, last = ep[0]["rss_mb"], ep[-1]["rss_mb"]
        ratio = last / first
        secs = sorted(e["seconds"] for e in ep)[len(ep) // 2]
        met = "met" if abs(ratio - 1) <= TARGET_DRIFT else "NOT met"
        lines.append(
            f"| {workload} | {r['strategy']} | {ep[0]['samples']:,} | {secs:.1f} | {first:,.0f} | {last:,.0f} | "
            f"{ratio:.3f} | {max(e['rss_mb'] for e in ep):,.0f} | {met} | {trimmed(ep)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "soak.md").write_text(text)
    (args.results / "soak.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.results / "soak.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
