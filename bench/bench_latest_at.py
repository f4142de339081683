"""Latest-at throughput: rrloader vs rerun-sdk's dataframe query, on one long recording.

    python bench/bench_latest_at.py [--minutes 10] [--queries 1000 10000] [--repeats 5]

The data (written once with rerun-sdk into --data, default bench/data/latest_at): one
recording `long` of `--minutes` minutes of `/robot/joint_state` Scalars (7 values) at 50 Hz
on a `frame` (sequence) and a `time` (timestamp) timeline, logged in chunks of
`--chunk-rows` rows (as a live logger's batcher would) plus one static `/robot`
TextDocument.

For each timeline in --index and each N in --queries, N distinct random index values
inside the recording's range are drawn once (fixed seed); on `time` they fall between the
50 Hz ticks, so each one is a real latest-at lookup. Timed, in this one process:

* rrloader: `ds.reader(index, using_index_values={"long": values}, fill_latest_at=True)`
  on a `rrloader.LocalDataset(dir)` opened once;
* rerun:    `dataset.reader(index, using_index_values={"long": values},
  fill_latest_at=True).to_arrow_table()` on `rr.server.Server(host="127.0.0.1",
  datasets={"ds": dir})`, started once.

The first call of each backend (cold: chunks not yet loaded) is reported on its own;
then `--repeats` warm calls, median. Throughput = N / median seconds. The two results are
compared (same rows, same values) and the verdict printed. Writes a table to stdout,
`bench/results/latest_at.json` and `bench/results/latest_at.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_open import (
    DEFAULT_RESULTS,
    HERE,
    JOINT_HZ,
    START_NS,
    bar_chart,
    fmt,
    machine_info,
    median,
    print_table,
    write_json,
)

SEGMENT = "long"
ENTITY = "/robot/joint_state"
COLUMN = f"{ENTITY}:Scalars:scalars"
BACKENDS = ("rrloader", "rerun")


def ensure_data(data: Path, minutes: float, chunk_rows: int) -> Path:
    params = {"format": 1, "minutes": minutes, "chunk_rows": chunk_rows}
    path = data / f"{SEGMENT}.rrd"
    marker = data / "bench_latest_at.json"
    try:
        if json.loads(marker.read_text()) == params and path.exists():
            return path
    except (OSError, ValueError):
        pass
    import warnings

    import numpy as np
    import rerun as rr

    data.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    n = int(round(minutes * 60 * JOINT_HZ))
    print(f"writing {path} ({n} rows, once) ...", flush=True)
    frames = np.arange(n, dtype=np.int64)
    times = np.datetime64(START_NS, "ns") + (frames * (10**9 // JOINT_HZ)).astype("timedelta64[ns]")
    joints = np.random.default_rng(0).standard_normal((n, 7)).cumsum(axis=0) * 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rr.RecordingStream("bench_latest_at", recording_id=SEGMENT, send_properties=False) as rec:
            rec.save(path)
            rec.log("/robot", rr.TextDocument("franka"), static=True)
            for lo in range(0, n, chunk_rows):
                hi = min(n, lo + chunk_rows)
                rec.send_columns(
                    ENTITY,
                    indexes=[
                        rr.TimeColumn("frame", sequence=frames[lo:hi]),
                        rr.TimeColumn("time", timestamp=times[lo:hi]),
                    ],
                    columns=rr.Scalars.columns(scalars=joints[lo:hi]),
                )
    marker.write_text(json.dumps(params) + "\n")
    return path


def query_values(index: str, n_queries: int, n_rows: int, seed: int):
    """N distinct sorted index values inside the recording (numpy int64 or datetime64[ns])."""
    import numpy as np

    rng = np.random.default_rng([seed, n_queries, index == "time"])
    if index == "frame":
        return np.sort(rng.choice(n_rows, size=min(n_queries, n_rows), replace=False)).astype(np.int64)
    period = 10**9 // JOINT_HZ
    span = n_rows * period
    offsets = np.unique(rng.integers(0, span, size=n_queries))
    return np.datetime64(START_NS, "ns") + offsets.astype("timedelta64[ns]")


class RrloaderBackend:
    name = "rrloader"

    def __init__(self, data: Path):
        import rrloader

        t0 = time.perf_counter()
        self.ds = rrloader.LocalDataset(data)
        self.setup_s = time.perf_counter() - t0

    def query(self, index: str, values):
        return self.ds.reader(index, using_index_values={SEGMENT: values}, fill_latest_at=True)

    def close(self) -> None:
        pass


class RerunBackend:
    name = "rerun"

    def __init__(self, data: Path):
        import rerun as rr

        t0 = time.perf_counter()
        self.server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(data)})
        self.dataset = self.server.client().get_dataset("ds")
        self.setup_s = time.perf_counter() - t0

    def query(self, index: str, values):
        return self.dataset.reader(
            index, using_index_values={SEGMENT: values}, fill_latest_at=True
        ).to_arrow_table()

    def close(self) -> None:
        self.server.shutdown()


def _normalized(table, index: str):
    """(index values, joint values) sorted by index, for comparing the two backends."""
    import pyarrow as pa
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[(index, "ascending")])
    t = table.take(order)
    idx = t.column(index).cast(pa.int64()).to_pylist()
    return idx, t.column(COLUMN).to_pylist()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "latest_at")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--chunk-rows", type=int, default=1024, help="rows per logged chunk (default 1024)")
    parser.add_argument(
        "--queries", type=int, nargs="+", default=[1000, 10000], help="index values per query"
    )
    parser.add_argument("--index", nargs="+", choices=["frame", "time"], default=["frame", "time"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)

    ensure_data(args.data, args.minutes, args.chunk_rows)
    n_rows = int(round(args.minutes * 60 * JOINT_HZ))
    cases = [(index, n) for index in args.index for n in args.queries]
    values = {case: query_values(case[0], case[1], n_rows, args.seed) for case in cases}

    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    outputs: dict[tuple[str, str, int], object] = {}
    for backend_cls in (RrloaderBackend, RerunBackend):
        if backend_cls.name not in args.backends:
            continue
        try:
            backend = backend_cls(args.data)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other backend
            errors[backend_cls.name] = f"{type(exc).__name__}: {exc}"
            print(f"{backend_cls.name} failed to open: {errors[backend_cls.name]}", file=sys.stderr)
            continue
        res = {"setup_s": backend.setup_s, "cases": {}}
        try:
            for index, n in cases:
                vals = values[(index, n)]
                t0 = time.perf_counter()
                table = backend.query(index, vals)
                cold = time.perf_counter() - t0
                warm = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    table = backend.query(index, vals)
                    warm.append(time.perf_counter() - t0)
                med = median(warm)
                res["cases"][f"{index}/{n}"] = {
                    "index": index,
                    "queries": int(len(vals)),
                    "rows": table.num_rows,
                    "cold_s": cold,
                    "warm_s": warm,
                    "median_s": med,
                    "rows_per_s": len(vals) / med if med else None,
                }
                outputs[(backend.name, index, n)] = table
                if table.num_rows != len(vals):
                    print(f"  note: {backend.name} returned {table.num_rows} rows for {len(vals)} values")
                print(
                    f"  {backend.name:8s} {index:5s} N={len(vals):6d}  median {med * 1e3:9.2f} ms", flush=True
                )
        except Exception as exc:  # noqa: BLE001
            errors[backend.name] = f"{type(exc).__name__}: {exc}"
            print(f"{backend.name} failed: {errors[backend.name]}", file=sys.stderr)
        finally:
            backend.close()
        results[backend.name] = res

    match = {}
    if {"rrloader", "rerun"} <= set(results):
        for index, n in cases:
            a, b = outputs.get(("rrloader", index, n)), outputs.get(("rerun", index, n))
            if a is not None and b is not None:
                match[f"{index}/{n}"] = _normalized(a, index) == _normalized(b, index)

    print(
        f"\nlatest-at on a {args.minutes:g}-minute 50 Hz recording ({n_rows} rows, chunks of "
        f"{args.chunk_rows}), fill_latest_at=True, median of {args.repeats} warm runs"
    )
    rows = []
    for index, n in cases:
        key = f"{index}/{n}"
        ref = results.get("rerun", {}).get("cases", {}).get(key)
        for name in args.backends:
            c = results.get(name, {}).get("cases", {}).get(key)
            if c is None:
                rows.append([name, index, len(values[(index, n)])] + ["n/a"] * 5)
                continue
            speedup = f"{ref['median_s'] / c['median_s']:.1f}x" if ref and c["median_s"] else None
            same = {True: "yes", False: "NO"}.get(match.get(key), "-")
            rows.append(
                [
                    name,
                    index,
                    c["queries"],
                    fmt(c["cold_s"] * 1e3, 2),
                    fmt(c["median_s"] * 1e3, 2),
                    f"{c['rows_per_s']:,.0f}",
                    speedup,
                    same,
                ]
            )
    print_table(["backend", "index", "N", "cold ms", "median ms", "rows/s", "vs rerun", "same result"], rows)
    for name, error in errors.items():
        print(f"{name} failed: {error}")

    write_json(
        args.results / "latest_at.json",
        {
            "benchmark": "latest_at",
            "params": {
                "minutes": args.minutes,
                "rows": n_rows,
                "chunk_rows": args.chunk_rows,
                "queries": args.queries,
                "index": args.index,
                "repeats": args.repeats,
                "seed": args.seed,
            },
            "machine": machine_info(),
            "results": results,
            "results_match": match,
            "errors": errors,
        },
    )
    labels = [f"{index}\nN={n}" for index, n in cases]
    bar_chart(
        args.results / "latest_at.png",
        f"Latest-at throughput, {args.minutes:g} min at 50 Hz (median of {args.repeats})",
        [
            {
                "ylabel": "index values / s (log)",
                "labels": labels,
                "series": {
                    name: [
                        results.get(name, {}).get("cases", {}).get(f"{i}/{n}", {}).get("rows_per_s")
                        for i, n in cases
                    ]
                    for name in args.backends
                },
                "log": True,
                "fmt": "{:,.0f}",
            }
        ],
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
