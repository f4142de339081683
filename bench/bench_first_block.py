"""What a first shuffled block costs, and a warm re-read (the figures of bench/README.md,
"Remote and video: chunk-granular fetches"). One case per run, in this process:

    python bench/bench_first_block.py WORKLOAD BACKEND [--reread]

WORKLOAD is a bench_dataloader.py workload (`cameras`, `video`, ...; its data must have been
written, e.g. by bench/make_dataloader_data.py), BACKEND `embedded` (LocalDataset) or `remote`
(rr.server.Server on 127.0.0.1 in this process). Prints one JSON line:

* default: the time from opening the dataset to the first sample of
  RerunIterableDataset(fetch_size=128, shuffle=True, seed=0) — block 0 fetched and decoded —
  and what had been read by then (block 1 is being fetched meanwhile: the counts include part
  of it): the remote dataset's cache_stats() (FetchChunks calls, chunks, bytes) or the local
  chunk cache's counters (misses = chunks read from the files), and video_stats().
* --reread: 512 shuffled samples read twice through RerunMapDataset in batches of 32
  (__getitems__, nothing overlapped): samples/s of the first pass and of the second (a later
  epoch over a warm cache).

To compare two builds, put one's installed package first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("backend", choices=["embedded", "remote"])
    parser.add_argument("--reread", action="store_true")
    parser.add_argument("--data-root", type=Path, default=HERE / "data")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import numpy as np
    import rerun as rr
    import rrloader
    import torch  # noqa: F401 (imported before timing)
    from bench_dataloader import make_fields, rrloader_api

    data = args.data_root / f"dataloader_{args.workload}"
    api = rrloader_api()
    t0 = time.perf_counter()
    server = local = None
    if args.backend == "remote":
        server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(data)})
        source = api.DataSource(dataset=server.client().get_dataset("ds"))
    else:
        local = rrloader.LocalDataset(str(data))
        source = api.DataSource(dataset=local)
    t1 = time.perf_counter()
    fields = make_fields(api, args.workload)
    out: dict = {"rrloader": rrloader.__file__, "workload": args.workload, "backend": args.backend}
    if args.reread:
        ds = api.RerunMapDataset(source, "frame", fields)
        order = np.random.default_rng(0).permutation(len(ds))[:512].tolist()
        for p in (1, 2):
            t = time.perf_counter()
            for k in range(0, len(order), 32):
                ds.__getitems__(order[k : k + 32])
            out[f"pass{p}_samples_per_s"] = len(order) / (time.perf_counter() - t)
    else:
        ds = api.RerunIterableDataset(source, "frame", fields, fetch_size=128, shuffle=True, seed=0)
        it = iter(ds)
        next(it)
        out["open_s"] = t1 - t0
        out["first_sample_s"] = time.perf_counter() - t1
    # Read now: the pipeline is fetching block 1 meanwhile, so these include part of it (in
    # every build alike).
    if server is not None:
        out["remote"] = dict(source.dataset.cache_stats())
    else:
        out["local_cache"] = dict(local.cache_stats())
    if any(type(f.decode).__name__ == "VideoFrameDecoder" for f in fields.values()):
        out["video"] = {k: dict(v) for k, v in ds.video_stats().items()}
    if not args.reread:
        del it
    if server is not None:
        server.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
