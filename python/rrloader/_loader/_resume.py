"""Mid-epoch state and exact resume of the iterable datasets (internal).

A dataset's state is small and JSON-serialisable::

    {"rrloader_state": 1, "generation": "rerun-0.41", "epoch": 3, "strategy": "BlockShuffle(...)",
     "total": 12000, "shards": [{"rank": 0, "world_size": 2, "worker": 1, "num_workers": 2,
                                 "consumed": 480, "emitted": 466, ...}, ...]}

One shard per (rank, DataLoader worker) that iterated: ``consumed`` = how many entries of the
shard's fetch order were read (delivered, dropped as incomplete, or — with an emission
buffer — still in the buffer), ``emitted`` = samples delivered; with an emission buffer also
the positions it holds (in its order), its phase and its generator's state (numpy PCG64).
States of several shards combine with ``merge_states`` (e.g. gathered from every rank).

Resuming:
* the same topology (this rank and worker have a shard in the state): the shard's fetch order
  is recomputed and the engine starts at ``consumed``, after first re-reading the samples the
  buffer held (they are restored into it, not pushed again); the samples that follow are
  exactly those of the uninterrupted run, in its order. Nothing before the resume point is
  fetched or decoded.
* another topology (R x W -> R' x W'): every shard of the saved topology must be in the state;
  the delivered samples are worked out from the shards (each shard's order up to
  ``consumed``, less what its buffer held) and the rest of the epoch — in the epoch's order,
  with its block structure — is cut into shards for the new topology by the usual rules; an
  emission buffer starts afresh (seeded as always). Every sample not delivered before comes
  out exactly once more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

STATE_VERSION = 1


def rng_state_from_tuple(t: Sequence[int]) -> dict[str, Any]:
    """numpy's ``PCG64().state`` of the engine's ``(state_hi, state_lo, inc_hi, inc_lo, has_uint32, uinteger)``."""
    sh, sl, ih, il, has32, u32 = (int(x) for x in t)
    return {
        "bit_generator": "PCG64",
        "state": {"state": (sh << 64) | sl, "inc": (ih << 64) | il},
        "has_uint32": has32,
        "uinteger": u32,
    }


def rng_tuple_from_state(state: dict[str, Any]) -> tuple[int, int, int, int, bool, int]:
    s, inc = int(state["state"]["state"]), int(state["state"]["inc"])
    mask = (1 << 64) - 1
    return (s >> 64, s & mask, inc >> 64, inc & mask, bool(state["has_uint32"]), int(state["uinteger"]))


@dataclasses.dataclass
class Progress:
    """One iteration's progress as samples are handed out (kept by the dataset, read by state_dict).

    Blocks without a buffer report the positions of the samples they hand out; with a buffer,
    the block's ``snapshot`` (the buffer's state before it and what was pushed meanwhile) is
    replayed to the number of its samples delivered.
    """

    rank: int
    world_size: int
    worker: int
    num_workers: int
    length: int  # entries in the shard's fetch order
    consumed: int = 0
    emitted: int = 0
    buffer_size: int = 0
    min_fill: int | None = None
    held: list[int] = dataclasses.field(default_factory=list)
    awaiting_extra: bool = False
    rng: tuple | None = None
    finished: bool = False
    # The block being handed out: its emitted samples' positions, or its buffer snapshot.
    block_positions: np.ndarray | None = None
    block_snapshot: dict[str, Any] | None = None
    block_delivered: int = 0
    block_consumed: int = 0  # `consumed` before the block
    block_end: int = 0  # without a buffer: the position after the block's last sample
    epoch: int = 0
    resumed_from: dict[str, Any] | None = None
    python_stage: bool = False

    def start_block(self, stats: dict[str, Any], emit: np.ndarray | None) -> None:
        self.block_consumed = self.consumed
        self.block_delivered = 0
        self.block_snapshot = stats.get("snapshot")
        positions = stats["positions"]
        self.block_positions = positions if emit is None or self.block_snapshot is not None else positions[emit]
        self.block_end = int(positions.max()) + 1 if len(positions) and self.block_snapshot is None else 0

    def shard(self) -> dict[str, Any]:
        """This shard's state now (after ``emitted`` samples)."""
        consumed, held, awaiting, rng, finished = self.consumed, self.held, self.awaiting_extra, self.rng, self.finished
        if self.block_snapshot is not None:
            consumed, held, awaiting, rng, finished = self._replay()
        elif self.block_positions is not None and self.block_delivered:
            consumed = max(consumed, int(self.block_positions[self.block_delivered - 1]) + 1)
        out = {
            "rank": self.rank,
            "world_size": self.world_size,
            "worker": self.worker,
            "num_workers": self.num_workers,
            "consumed": int(consumed),
            "emitted": int(self.emitted),
        }
        if self.buffer_size:
            out.update(
                held=[int(x) for x in held],
                awaiting_extra=bool(awaiting),
                rng=None if rng is None else [int(x) for x in rng],
                finished=bool(finished),
            )
        return out

    def end_block(self) -> None:
        """The whole block was handed out: fold it into the shard's running state."""
        state = self.shard()
        # Every sample of the block is handed out: the ones it dropped as incomplete are done too.
        self.consumed = max(state["consumed"], self.block_end)
        if self.buffer_size and self.block_snapshot is not None:
            self.held, self.awaiting_extra = state["held"], state["awaiting_extra"]
            self.rng, self.finished = tuple(state["rng"]), state["finished"]
        self.block_snapshot = None
        self.block_positions = None
        self.block_delivered = 0

    def _replay(self) -> tuple[int, list[int], bool, tuple, bool]:
        """The buffer's state after this block's first ``block_delivered`` emissions (0.41's algorithm)."""
        snap = self.block_snapshot
        held = [int(x) for x in snap["held"]]
        awaiting = bool(snap["awaiting_extra"])
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = rng_state_from_tuple(snap["rng"])
        consumed = self.block_consumed
        want = self.block_delivered
        min_fill = self.min_fill if self.min_fill is not None else self.buffer_size // 2
        emitted = 0

        def pick() -> None:
            j = int(gen.integers(len(held)))
            held[j], held[-1] = held[-1], held[j]
            held.pop()

        if snap["finished"]:
            while emitted < want:
                pick()
                emitted += 1
            return self.length, held, awaiting, rng_tuple_from_state(gen.bit_generator.state), True
        for p in snap["pushes"].tolist():
            if emitted == want:
                break
            held.append(p)
            consumed = max(consumed, p + 1)
            if not awaiting and len(held) < self.buffer_size:
                awaiting = True
                continue
            awaiting = False
            if len(held) >= min_fill:
                pick()
                emitted += 1
        return consumed, held, awaiting, rng_tuple_from_state(gen.bit_generator.state), False


def _dataset_states(obj: Any) -> list[dict[str, Any]]:
    """The dataset states inside ``obj``: itself, or those a StatefulDataLoader's state holds."""
    if isinstance(obj, dict):
        if "rrloader_state" in obj:
            return [obj]
        return [s for v in obj.values() for s in _dataset_states(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _dataset_states(v)]
    return []


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One state of several shards' states (e.g. every rank's, gathered), checked to agree.

    Each entry is a dataset's ``state_dict()`` or a torchdata ``StatefulDataLoader``'s
    ``state_dict()`` (its workers' dataset states are found inside it).
    """
    states = [s for entry in states for s in _dataset_states(entry) if s.get("shards")]
    if not states:
        raise InvalidArgumentError("merge_states needs at least one state")
    head = {k: v for k, v in states[0].items() if k != "shards"}
    shards: dict[tuple[int, int], dict[str, Any]] = {}
    for s in states:
        check_state(s)
        mine = {k: v for k, v in s.items() if k != "shards"}
        if mine != head:
            raise InvalidArgumentError(f"states of different iterations cannot be merged: {mine} vs {head}")
        for sh in s["shards"]:
            shards[(sh["rank"], sh["worker"])] = sh
    return {**head, "shards": [shards[k] for k in sorted(shards)]}


def check_state(state: Any) -> None:
    if not isinstance(state, dict) or state.get("rrloader_state") != STATE_VERSION or "shards" not in state:
        raise InvalidArgumentError(f"not an rrloader dataset state (version {STATE_VERSION}): {state!r:.200}")


def delivered(state: dict[str, Any] | None, plan: Callable[..., tuple[np.ndarray, Any]]) -> np.ndarray | None:
    """The global sample numbers ``state`` says were delivered (None: no state), through the
    chain of elastic resumes it was reached by (``resumed_from``)."""
    if state is None:
        return None
    base = delivered(state.get("resumed_from"), plan)
    parts = [] if base is None else [base]
    for sh in state["shards"]:
        order, _ = plan(sh["rank"], sh["world_size"], sh["worker"], sh["num_workers"], exclude=base)
        c = int(sh["consumed"])
        keep = np.ones(c, dtype=bool)
        keep[np.asarray(sh.get("held", []), dtype=np.int64)] = False
        parts.append(order[:c][keep])
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def resume_plan(
    state: dict[str, Any],
    *,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
    plan: Callable[..., tuple[np.ndarray, np.ndarray | None]],
) -> dict[str, Any]:
    """What this (rank, worker) iterates when resuming ``state`` (see the module docstring).

    ``plan(rank, world_size, worker, num_workers, exclude=None)`` gives a shard's fetch order
    and fetch-block ends (None: the dataset's block size), leaving out the global sample numbers
    in ``exclude``. Returns ``{"order", "block_ends", "positions", "restore", "length",
    "resumed_from"}``: ``restore`` the shard to continue (same topology) or None (elastic),
    ``length`` the shard's whole fetch order, ``resumed_from`` what the new state must name as
    its base.
    """
    shards = {(s["rank"], s["worker"]): s for s in state["shards"]}
    saved = {(s["world_size"], s["num_workers"]) for s in state["shards"]}
    if len(saved) != 1:
        raise InvalidArgumentError(f"the state's shards come from different topologies: {sorted(saved)}")
    ((old_world, old_workers),) = saved
    base = state.get("resumed_from")
    mine = shards.get((rank, worker))
    if mine is not None and (old_world, old_workers) == (world_size, num_workers):
        order, ends = plan(rank, world_size, worker, num_workers, exclude=delivered(base, plan))
        c = int(mine["consumed"])
        held = np.asarray(mine.get("held", []), dtype=np.int64)
        if c > len(order) or (held.size and (held.min() < 0 or held.max() >= c)):
            raise InvalidArgumentError(
                f"the state of shard (rank {rank}, worker {worker}) does not fit its order of {len(order)} samples "
                f"(consumed {c}, buffer {held.tolist()})"
            )
        rest_ends = None
        if ends is not None:
            rest = [int(e) - c + len(held) for e in ends if e > c]
            rest_ends = np.asarray(([len(held)] if len(held) else []) + rest, dtype=np.int64)
        return {
            "order": np.concatenate([order[held], order[c:]]).astype(np.int64),
            "block_ends": rest_ends,
            "positions": np.concatenate([held, np.arange(c, len(order), dtype=np.int64)]),
            "restore": mine,
            "length": len(order),
            "resumed_from": base,
        }
    # Elastic: every shard of the saved topology is needed to know what was delivered.
    missing = [(r, w) for r in range(old_world) for w in range(old_workers) if (r, w) not in shards]
    if missing:
        raise InvalidArgumentError(
            f"resuming a state saved with {old_world} rank(s) x {old_workers} worker(s) on {world_size} x "
            f"{num_workers} needs every saved shard; missing (rank, worker): {missing} (merge_states of every "
            "rank's state, or resume with the same topology)"
        )
    order, ends = plan(rank, world_size, worker, num_workers, exclude=delivered(state, plan))
    return {
        "order": order,
        "block_ends": ends,
        "positions": None,
        "restore": None,
        "length": len(order),
        "resumed_from": state,
    }
