"""``torchrun --nproc_per_node=2`` with 2 spawned DataLoader workers per rank, both front ends
(``rrloader.dataloader`` and ``rrloader.experimental.dataloader``), over a ``LocalDataset`` and
over a catalog server (``rr.server.Server`` on 127.0.0.1, each rank connecting itself): the
2 x 2 shards are disjoint and together yield every sample of the epoch exactly once.

Issue 11 measured the bug this guards against: spawned workers did not know their parent's
rank, so every rank read the whole epoch. One ``torchrun`` runs all four configurations
(``ddp_spawn_worker.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dlutil  # noqa: E402

SEED, EPOCH = 5, 1
CONFIGS = ["seed/local", "seed/remote", "0.41/local", "0.41/remote"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_ids() -> list[tuple[int, int]]:
    return [(k, f) for k, seg in enumerate(sorted(dlutil.NUM_FRAMES)) for f in dlutil.NUM_FRAMES[seg]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("ddp041_data")
    dlutil.write_numeric_dataset(data)
    return data


@pytest.fixture(scope="module")
def reports(tmp_path_factory, data_dir):
    import rerun as rr

    data = data_dir
    out = tmp_path_factory.mktemp("ddp041_ranks")
    server = rr.server.Server(host="127.0.0.1", datasets={"num": str(data)})
    try:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        env["MASTER_ADDR"] = "127.0.0.1"
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port",
            str(_free_port()),
            str(HERE / "ddp_spawn_worker.py"),
            str(data),
            server.url(),
            "num",
            str(out),
            "--seed",
            str(SEED),
            "--epoch",
            str(EPOCH),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        server.shutdown()
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("config", CONFIGS)
def test_shards_are_disjoint_and_cover_the_epoch_once(reports, config):
    everything = _all_ids()
    shards: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, rep in enumerate(reports):
        assert rep["rank"] == r and rep["world"] == 2
        run = rep["runs"][config]
        assert run["total"] == len(everything), f"{config}: the ranks read {run['total']} samples together"
        for worker, ident in run["samples"]:
            shards.setdefault((r, worker), []).append(tuple(ident))
    # Every rank and every worker of it read a part: 4 shards of an 18-sample epoch.
    assert sorted(shards) == [(0, 0), (0, 1), (1, 0), (1, 1)], f"{config}: shards {sorted(shards)}"
    seen = Counter(i for ids in shards.values() for i in ids)
    twice = sorted(i for i, c in seen.items() if c > 1)
    assert not twice, f"{config}: read more than once: {twice}"
    assert sorted(seen) == sorted(everything), f"{config}: missing {sorted(set(everything) - set(seen))}"


def _simulated_shard(data: Path, front: str, rank: int, worker: int, monkeypatch) -> list[tuple[int, int]]:
    """What (rank, worker) of 2 x 2 reads, in order, iterated here with the topology patched in."""
    import ddp_spawn_worker
    import rrloader
    import rrloader.dataloader as seed_dl
    import rrloader.experimental.dataloader._iterable_dataset as new_iter

    ds = ddp_spawn_worker.dataset(front, rrloader.LocalDataset(str(data)), SEED)
    ds.set_epoch(EPOCH)
    with monkeypatch.context() as m:
        if front == "seed":
            m.setattr(seed_dl, "_distributed", lambda: (rank, 2))
            m.setattr(seed_dl, "_worker", lambda: (worker, 2))
        else:
            m.setattr(ds, "_ddp_topology", lambda: (rank, 2))
            m.setattr(new_iter, "worker_topology", lambda: (worker, 2))
        out = []
        for sample in ds:
            v = int(sample["state"][0])
            out.append((v // 1000, (v % 1000) // 10))
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_each_worker_reads_its_own_shard_in_order(reports, data_dir, config, monkeypatch):
    """Each (rank, worker) of the torchrun yields exactly the shard that the same dataset iterated
    in one process with that topology patched in yields, in the same order."""
    front = config.split("/")[0]
    for r, rep in enumerate(reports):
        got: dict[int, list[tuple[int, int]]] = {}
        for worker, ident in rep["runs"][config]["samples"]:
            got.setdefault(worker, []).append(tuple(ident))
        for w in (0, 1):
            assert got.get(w) == _simulated_shard(data_dir, front, r, w, monkeypatch), f"{config} rank {r} worker {w}"


@pytest.mark.parametrize("front", ["seed", "0.41"])
def test_local_and_remote_shards_agree(reports, front):
    """The same epoch over either source: each rank gets the same samples in the same order."""
    for rep in reports:
        assert rep["runs"][f"{front}/local"]["samples"] == rep["runs"][f"{front}/remote"]["samples"]
