"""Batching samples: ``collate_samples`` (internal; exported by the seed front end)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InvalidArgumentError


def _consecutive_view(values: Sequence[Any]) -> Any:
    """``values`` stacked as a view, when they already lie back to back in one buffer; else None.

    The engine decodes a block's samples of a field into one ``[B, ...]`` buffer and yields
    views of it, so the samples of a batch taken in order from one block are consecutive
    there and need no copy.
    """
    first = values[0]
    if not first.is_contiguous():
        return None
    ptr, step, offset = first.untyped_storage().data_ptr(), first.numel(), first.storage_offset()
    for k, v in enumerate(values):
        if (
            v.untyped_storage().data_ptr() != ptr
            or v.storage_offset() != offset + k * step
            or v.shape != first.shape
            or v.dtype != first.dtype
            or not v.is_contiguous()
        ):
            return None
    return torch.as_strided(first, (len(values), *first.shape), (step, *first.stride()), offset)


def _stack(values: Sequence[Any]) -> Any:
    from torch.utils.data import default_collate, get_worker_info

    if get_worker_info() is not None:
        # In a DataLoader worker, torch's own collate stacks straight into shared memory, so
        # the batch crosses to the main process without another copy.
        return default_collate(list(values))
    view = _consecutive_view(values)
    return view if view is not None else torch.stack(list(values))


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stack a list of samples into batch tensors: ``(batch, missing)``.

    ``batch[name]`` is ``[B, ...]``; a missing value (``None``) is a zero-filled slot and
    ``missing[name]`` is a ``[B]`` bool tensor that is True there. A field missing in every
    sample is ``None`` in ``batch``. Shapes must agree across present samples (ragged
    fields: collate them yourself).

    No copy where none is needed: in the iterating process, a batch of consecutive samples
    of one engine block (an iterable dataset's batch, usually) is a view of the block's
    buffer; in a DataLoader worker the batch is stacked into shared memory, as torch's
    ``default_collate`` does.
    """
    if not samples:
        return {}, {}
    batch: dict[str, Any] = {}
    missing: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        mask = torch.tensor([v is None for v in values], dtype=torch.bool)
        missing[key] = mask
        present = [v for v in values if v is not None]
        if not present:
            batch[key] = None
            continue
        shapes = {tuple(v.shape) for v in present}
        if len(shapes) > 1:
            raise InvalidArgumentError(f"field {key!r} has samples of different shapes {sorted(shapes)}; cannot stack")
        if len(present) == len(values):
            batch[key] = _stack(values)
        else:
            zero = torch.zeros_like(present[0])
            batch[key] = _stack([zero if v is None else v for v in values])
    return batch, missing
