"""``PooledBatchCollator``: DataLoader batches in reusable shared-memory buffers (rerun-sdk 0.41's contract).

Without it, every batch a DataLoader worker collates is a fresh shared-memory allocation: the worker
asks the kernel for new pages, fills them, and the training process maps them and drops them after
the step, so each batch pays page faults and zeroing on both sides. This collator keeps, per worker
and per tensor leaf of the sample, up to ``slots_per_field`` shared buffers and reuses one once the
training process has let go of every view of it.

How a slot comes back: the batch travels as file descriptors (``multiprocessing``'s descriptor passing,
PyTorch's ``file_descriptor`` sharing strategy), plus the write end of a pipe owned by the worker. The
training process maps the buffers and watches them with weak storage references (one background
thread for the whole process, polling every few milliseconds while it has something to watch); when
the last tensor or NumPy view of a buffer is gone it writes the buffer's use number into the pipe.
The worker reads those numbers before each batch and marks the slots free.

Linux only, DataLoader workers started with ``spawn``, PyTorch's ``file_descriptor`` sharing strategy;
PyTorch's private storage sharing calls (the ones its own ``torch.multiprocessing`` uses). With
``num_workers=0`` nothing is pooled: each leaf goes through ``default_collate``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils.data import default_collate, get_worker_info

from . import _yuv  # noqa: F401  (registers Yuv420Frame as a pytree node)

_Group = str | tuple[str, int]

# One acknowledgement: a buffer's use number, 8 bytes little-endian. Writes up to PIPE_BUF bytes are
# atomic, so a reader never sees half of one.
_ACK_BYTES = 8
_POLL_SECONDS = 0.005

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- batch structure
def _structure(spec: pytree.TreeSpec) -> Any:
    """A picklable description of a tree spec: None for a leaf, else (node type, context, children).

    TreeSpec objects themselves are not pickled (PyTorch 2.13 warns when they are)."""
    if spec.is_leaf():
        return None
    children = spec.children() if callable(getattr(spec, "children", None)) else spec.children_specs
    return (spec.type, spec.context, tuple(_structure(child) for child in children))


def _assemble(structure: Any, leaves: Any) -> Any:
    """Rebuild a tree from `_structure` output, taking leaves from the iterator `leaves` in order."""
    if structure is None:
        return next(leaves)
    node_type, context, children = structure
    values = [_assemble(child, leaves) for child in children]
    return pytree.SUPPORTED_NODES[node_type].unflatten_fn(values, context)


def _group_samples(samples: list[dict[str, Any]]) -> tuple[dict[_Group, list[Any]], pytree.TreeSpec]:
    """The samples' leaves by group (a top-level field, or (field, i) for the i-th leaf of a nested
    field), and the tree spec every sample must share (structure, and node metadata such as a
    Yuv420Frame's colour space)."""
    names = list(samples[0])
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Sample field names must be strings, got {name!r}")
    for i, sample in enumerate(samples[1:], start=1):
        if list(sample) != names:
            raise ValueError(
                f"Samples must have the same fields in the same order: sample 0 has {names}, "
                f"sample {i} has {list(sample)}"
            )
    rows = []
    spec = None
    for i, sample in enumerate(samples):
        leaves, sample_spec = pytree.tree_flatten(dict(sample))
        if spec is None:
            spec = sample_spec
        elif sample_spec != spec:
            raise ValueError(
                f"Samples must have the same structure and metadata: sample {i} differs from sample 0"
            )
        rows.append(leaves)
    assert spec is not None
    groups: list[_Group] = []
    for name in names:
        field_spec = pytree.tree_structure(samples[0][name])
        if field_spec.is_leaf():
            groups.append(name)
        else:
            groups.extend((name, i) for i in range(field_spec.num_leaves))
    columns = list(zip(*rows, strict=True)) if rows and rows[0] else [() for _ in groups]
    return {group: list(column) for group, column in zip(groups, columns, strict=True)}, spec


# --------------------------------------------------------------------------- consumer side
@dataclass
class _BatchLeases:
    """The pooled buffers of one received batch, and the pipe to tell their worker when each is free."""

    pipe: Connection
    pending: list[tuple[StorageWeakRef, int]] = field(default_factory=list)


class _ReleaseWatcher:
    """Tells workers when the training process has dropped every view of a pooled buffer.

    One per process, for every loader; its daemon thread starts with the first pooled batch received
    and sleeps while there is nothing to watch. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._batches: list[_BatchLeases] = []
        self._thread: threading.Thread | None = None

    def watch(self, batch: _BatchLeases) -> None:
        with self._lock:
            self._batches.append(batch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="rrloader-pooled-batch-release", daemon=True
                )
                self._thread.start()
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._batches:
                    self._lock.wait()
                batches, self._batches = self._batches, []
            still = []
            for batch in batches:
                try:
                    if not self._release(batch):
                        still.append(batch)
                except Exception:  # never let one batch end the thread: every later release would stop
                    _log.exception("Could not release a pooled batch; its buffers stay with the worker")
                    batch.pipe.close()
            with self._lock:
                self._batches.extend(still)
                if self._batches:
                    self._lock.wait(timeout=_POLL_SECONDS)

    @staticmethod
    def _release(batch: _BatchLeases) -> bool:
        """Acknowledge the batch's expired buffers; True when none is left (its pipe then closed)."""
        waiting = []
        for i, (ref, use) in enumerate(batch.pending):
            if not ref.expired():
                waiting.append((ref, use))
                continue
            try:
                os.write(batch.pipe.fileno(), use.to_bytes(_ACK_BYTES, "little"))
            except BlockingIOError:  # the worker has not read its pipe for a while: later
                waiting.append((ref, use))
            except BrokenPipeError:  # the worker is gone: nobody to tell
                waiting = []
                break
            except OSError:
                _log.exception("Could not tell a DataLoader worker that a pooled batch buffer is free")
                waiting.extend(batch.pending[i + 1 :])
                break
        batch.pending = waiting
        if waiting:
            return False
        batch.pipe.close()
        return True


_release_watcher = _ReleaseWatcher()


def _storage_from(handle: Any, nbytes: int) -> torch.UntypedStorage:
    fd = handle.detach()
    try:
        return torch.UntypedStorage._new_shared_fd_cpu(fd, nbytes)  # type: ignore[attr-defined]
    finally:
        os.close(fd)  # the storage holds its own mapping


def _view(storage: torch.UntypedStorage, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)  # type: ignore[call-overload]


def _receive_batch(
    structure: Any, leaves: list[tuple[Any, int, torch.dtype, tuple[int, ...], int | None]], pipe_handle: Any
) -> Any:
    """Unpickling a pooled batch in the training process: map each buffer, watch the pooled ones."""
    leases = None
    if pipe_handle is not None:
        pipe = Connection(pipe_handle.detach(), readable=False, writable=True)
        os.set_blocking(pipe.fileno(), False)
        leases = _BatchLeases(pipe)
    tensors = []
    try:
        for handle, nbytes, dtype, shape, use in leaves:
            storage = _storage_from(handle, nbytes)
            if use is not None and leases is not None:
                leases.pending.append((StorageWeakRef(storage), use))
            tensors.append(_view(storage, dtype, shape))
    except BaseException:
        if leases is not None:
            leases.pipe.close()
        raise
    if leases is not None:
        _release_watcher.watch(leases)
    return _assemble(structure, iter(tensors))


# --------------------------------------------------------------------------- worker side
@dataclass
class _Slot:
    """A shared buffer of the pool; `use` is its current use number while a batch holds it, else None."""

    storage: torch.UntypedStorage
    use: int | None = None

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes()


class _OutgoingBatch:
    """What a worker's collate returns: pickles (once) into descriptors of its buffers."""

    def __init__(
        self,
        spec: pytree.TreeSpec,
        leaves: list[tuple[_Slot, torch.dtype, tuple[int, ...], bool]],
        pipe: Connection | None,
    ) -> None:
        self._structure = _structure(spec)
        self._leaves = leaves
        self._pipe = pipe
        self._sent = False

    def __reduce__(self) -> Any:
        from multiprocessing.reduction import DupFd

        if self._sent:
            raise RuntimeError("A pooled batch can be sent to another process only once")
        self._sent = True
        leaves = []
        for slot, dtype, shape, pooled in self._leaves:
            fd, nbytes = slot.storage._share_fd_cpu_()  # type: ignore[attr-defined]
            leaves.append((DupFd(fd), nbytes, dtype, shape, slot.use if pooled else None))
        any_pooled = any(pooled for *_, pooled in self._leaves)
        pipe_handle = DupFd(self._pipe.fileno()) if any_pooled and self._pipe is not None else None
        return _receive_batch, (self._structure, leaves, pipe_handle)


def _leaf_tensors(group: _Group, values: list[Any]) -> list[torch.Tensor]:
    """One group's leaves as CPU tensors of one shape and dtype (numbers as default_collate types them)."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        tensors = values
    elif isinstance(first, (np.ndarray, np.generic)):
        tensors = [torch.as_tensor(v, device="cpu") for v in values]
    else:
        # default_collate decides Python numbers' dtypes (a float is float64, unlike torch.as_tensor).
        with torch.device("cpu"):
            stacked = default_collate(values)
        if not isinstance(stacked, torch.Tensor):
            raise TypeError(
                f"PooledBatchCollator needs tensor, NumPy array or number leaves; field {group!r} holds "
                f"{type(first).__name__}"
            )
        tensors = list(stacked.unbind(0))
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"Field {group!r} mixes tensors with other leaf types")
    for t in tensors:
        if (
            t.is_quantized
            or t.is_nested
            or t.requires_grad
            or t.device.type != "cpu"
            or t.layout != torch.strided
        ):
            raise ValueError(
                f"PooledBatchCollator needs dense, non-quantized CPU tensors without gradients; field {group!r} "
                f"has a {t.layout} {t.dtype} tensor on {t.device}"
                + (" that requires grad" if t.requires_grad else "")
            )
    shape, dtype = tensors[0].shape, tensors[0].dtype
    for t in tensors[1:]:
        if t.shape != shape or t.dtype != dtype:
            raise ValueError(
                f"Field {group!r} must have one shape and dtype across the batch: {tuple(shape)} {dtype} vs "
                f"{tuple(t.shape)} {t.dtype}"
            )
    return tensors


class PooledBatchCollator:
    """``collate_fn`` that collates CPU samples (dicts) into shared buffers reused across batches.

    Pass it as a DataLoader's ``collate_fn`` with ``multiprocessing_context="spawn"`` workers on Linux
    and PyTorch's ``file_descriptor`` sharing strategy (the Linux default). Each worker keeps, per
    tensor leaf, up to ``slots_per_field`` shared buffers, at most ``max_pool_bytes`` in all, made
    when first needed; a buffer is reused once the receiving process has dropped every tensor and
    NumPy view of it. When every kept buffer is still in use (or the limits are reached) a batch gets
    a fresh buffer that is not kept ("fallback"), so loading never waits and never overwrites a live
    batch. Clone a pooled tensor before handing it to another process, and keep it alive until an
    asynchronous copy from it has finished.

    Leaves may be dense CPU tensors without gradients, NumPy arrays, numbers, and
    :class:`~rrloader._loader._yuv.Yuv420Frame`, inside nested dicts, lists and tuples; the samples of a batch
    must have the same fields in the same order, structure, shapes, dtypes and metadata (no missing
    values). With ``num_workers=0`` (any platform) nothing is pooled: each leaf is ``default_collate``-d.

    ``slots_per_field``: buffers kept per leaf, per worker (default 4). ``max_pool_bytes``: bytes of
    kept buffers per worker (default 4 GiB); it does not bound batches held by the consumer or
    fallback buffers, so shared memory (``/dev/shm``) must hold those too. Pickling (to a spawned
    worker) carries only these two limits; each worker builds its own pool.
    """

    def __init__(self, *, slots_per_field: int = 4, max_pool_bytes: int = 4 * 1024**3) -> None:
        for name, value in (("slots_per_field", slots_per_field), ("max_pool_bytes", max_pool_bytes)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"PooledBatchCollator {name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"PooledBatchCollator {name} must be positive, got {value}")
        self.slots_per_field = slots_per_field
        self.max_pool_bytes = max_pool_bytes
        self._pool: dict[_Group, list[_Slot]] = {}
        self._in_use: dict[int, _Slot] = {}
        self._next_use = 0
        self._acks: Connection | None = None  # read end: use numbers of released buffers
        self._ack_sender: Connection | None = None  # write end, passed along with each batch
        self._allocations = 0
        self._reuses = 0
        self._fallbacks = 0

    def __getstate__(self) -> dict[str, int]:
        return {"slots_per_field": self.slots_per_field, "max_pool_bytes": self.max_pool_bytes}

    def __setstate__(self, state: dict[str, int]) -> None:
        PooledBatchCollator.__init__(self, **state)

    def stats(self) -> dict[str, Any]:
        """This process's pool: ``allocations`` (buffers made), ``reuses``, ``fallbacks`` (buffers made
        but not kept), ``pool_bytes`` (kept), and per group ``{"slots": kept, "busy": held by a batch}``."""
        self._collect_releases()
        return {
            "allocations": self._allocations,
            "reuses": self._reuses,
            "fallbacks": self._fallbacks,
            "pool_bytes": self._pool_bytes(),
            "groups": {
                group: {"slots": len(slots), "busy": sum(slot.use is not None for slot in slots)}
                for group, slots in self._pool.items()
            },
        }

    def __call__(self, samples: list[dict[str, Any]]) -> Any:
        if not samples or not isinstance(samples[0], dict):
            return default_collate(samples)
        if get_worker_info() is None:
            groups, spec = _group_samples(samples)
            return pytree.tree_unflatten([default_collate(values) for values in groups.values()], spec)
        if sys.platform != "linux" or mp.get_start_method() != "spawn":
            raise RuntimeError(
                "PooledBatchCollator needs Linux DataLoader workers started with multiprocessing_context='spawn'"
            )
        if torch.multiprocessing.get_sharing_strategy() != "file_descriptor":
            raise RuntimeError(
                "PooledBatchCollator needs PyTorch's 'file_descriptor' sharing strategy "
                f"(torch.multiprocessing.set_sharing_strategy), not {torch.multiprocessing.get_sharing_strategy()!r}"
            )
        return self._collate_pooled(samples)

    # -- worker side
    def _pool_bytes(self) -> int:
        return sum(slot.nbytes for slots in self._pool.values() for slot in slots)

    def _collect_releases(self) -> None:
        if self._acks is None:
            return
        fd = self._acks.fileno()
        while self._acks.poll():
            ack = os.read(fd, _ACK_BYTES)
            if len(ack) != _ACK_BYTES:
                raise RuntimeError(
                    f"PooledBatchCollator: a release note of {len(ack)} bytes (expected {_ACK_BYTES})"
                )
            slot = self._in_use.pop(int.from_bytes(ack, "little"), None)
            if slot is not None:
                slot.use = None

    def _take_slot(self, group: _Group, nbytes: int) -> tuple[_Slot, bool]:
        """A buffer of at least `nbytes` for `group` and whether it belongs to the pool.

        The smallest free kept buffer that fits; else a new one, kept in place of the largest free
        (too small) buffer of the group or in a free place of it, if the pool stays within
        max_pool_bytes; else not kept (a fallback)."""
        slots = self._pool.setdefault(group, [])
        fitting = [slot for slot in slots if slot.use is None and slot.nbytes >= nbytes]
        if fitting:
            slot = min(fitting, key=lambda s: s.nbytes)
            self._reuses += 1
            kept = True
        else:
            free = [slot for slot in slots if slot.use is None]
            replaced = max(free, key=lambda s: s.nbytes) if free else None
            slot = _Slot(torch.UntypedStorage._new_using_fd_cpu(max(1, nbytes)))  # type: ignore[attr-defined]
            self._allocations += 1
            kept_bytes = self._pool_bytes() - (replaced.nbytes if replaced is not None else 0)
            has_place = replaced is not None or len(slots) < self.slots_per_field
            kept = has_place and kept_bytes + slot.nbytes <= self.max_pool_bytes
            if not kept:
                self._fallbacks += 1
            elif replaced is None:
                slots.append(slot)
            else:
                slots[slots.index(replaced)] = slot
        self._next_use += 1
        slot.use = self._next_use
        if kept:
            self._in_use[slot.use] = slot
        return slot, kept

    def _collate_pooled(self, samples: list[dict[str, Any]]) -> _OutgoingBatch:
        groups, spec = _group_samples(samples)
        self._collect_releases()
        columns = {group: _leaf_tensors(group, values) for group, values in groups.items()}
        taken: list[tuple[_Slot, torch.dtype, tuple[int, ...], bool]] = []
        try:
            for group, tensors in columns.items():
                shape = (len(samples), *tensors[0].shape)
                dtype = tensors[0].dtype
                nbytes = len(samples) * tensors[0].numel() * tensors[0].element_size()
                slot, kept = self._take_slot(group, nbytes)
                taken.append((slot, dtype, shape, kept))
                torch.stack(tensors, out=_view(slot.storage, dtype, shape))
            if self._ack_sender is None:
                self._acks, self._ack_sender = mp.Pipe(duplex=False)
            return _OutgoingBatch(spec, taken, self._ack_sender)
        except BaseException:
            for slot, _, _, _ in taken:
                if slot.use is not None:
                    self._in_use.pop(slot.use, None)
                slot.use = None
            raise
