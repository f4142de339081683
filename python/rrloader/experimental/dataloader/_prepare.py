"""What both 0.41 datasets do at construction: check, index, describe the fields to the engine."""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from ..._loader._config import RERUN_041, DataSourceBase, EngineField, as_source, check_generation
from ..._loader._sample_index import FixedRateSampling, SampleIndex
from ..._remote import RemoteDataset
from ._config import DataSource, Field


def prepare(
    source: Any, index: str, fields: Mapping[str, Field], timeline_sampling: FixedRateSampling | None
) -> tuple[DataSourceBase, SampleIndex, list[EngineField], list[str]]:
    """``(source, sample index, engine fields, sample key order)`` of a 0.41 dataset."""
    source = as_source(source, RERUN_041, DataSource)
    for key, f in fields.items():
        check_generation(f, RERUN_041, f"field {key!r}")
        if not isinstance(f, Field):
            raise TypeError(f"field {key!r} must be an rrloader.experimental.dataloader.Field, got {f!r}")
    si = SampleIndex.build(source, index, fields, timeline_sampling=timeline_sampling)
    types = column_types(source, fields)
    engine_fields = [f._engine_field(key, si.kind, si.ns_per_sample, types[key]) for key, f in fields.items()]
    if isinstance(source.native_dataset(), RemoteDataset):
        warn_if_fork(stacklevel=4)
    return source, si, engine_fields, key_order(fields)


def setup_replay(
    ds: Any, manifest: Any, source: Any, fields: Mapping[str, Field], *, decode_threads: int | None, thread_nice: int
) -> None:
    """Set up ``ds`` (a dataset made with ``__new__``, of either kind) to replay ``manifest``.

    Both datasets' ``from_manifest`` call this directly (the fork warning's stack level counts on it).
    """
    if decode_threads is not None and decode_threads < 1:
        raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
    from .manifest import Manifest
    from .manifest._manifest_read import space

    if not isinstance(manifest, Manifest):
        raise TypeError(
            f"manifest must be an rrloader.experimental.dataloader.Manifest (Manifest.generate or "
            f"Manifest.from_parquet, which reads rerun-sdk's files too), got {manifest!r}"
        )
    source = as_source(source, RERUN_041, DataSource)
    for key, f in fields.items():
        check_generation(f, RERUN_041, f"field {key!r}")
        if not isinstance(f, Field):
            raise TypeError(f"field {key!r} must be an rrloader.experimental.dataloader.Field, got {f!r}")
    meta = manifest.metadata
    kind = {"datetime64[ns]": "timestamp", "timedelta64[ns]": "duration"}.get(meta.ns_dtype or "", "sequence")
    replay = space(manifest)
    types = column_types(source, fields)
    engine_fields = [f._engine_field(key, kind, meta.ns_per_sample, types[key]) for key, f in fields.items()]
    if isinstance(source.native_dataset(), RemoteDataset):
        warn_if_fork(stacklevel=4)
    ds._fields = dict(fields)
    ds._setup(
        source.native_dataset(),
        meta.index_name,
        engine_fields,
        replay.sample_index,
        decode_threads=decode_threads,
        thread_nice=thread_nice,
        key_order=key_order(fields),
    )
    ds._manifest = manifest
    ds._replay = replay


def column_types(source: DataSourceBase, fields: Mapping[str, Field]) -> dict[str, Any]:
    """Each field's Arrow column type (None for a column the dataset lacks; the engine names it):
    which selectors the engine can evaluate itself depends on it."""
    schema = source.native_dataset().schema()
    return {key: schema.field(f.path).type if f.path in schema.names else None for key, f in fields.items()}


def key_order(fields: Mapping[str, Field]) -> list[str]:
    """The key order of rerun 0.41's sample dicts: fields grouped by how 0.41 queries them
    (latest-at fill, keyframe-anchored range, window), groups in order of first appearance."""
    groups: dict[tuple, list[str]] = {}
    for key, f in fields.items():
        contiguous = f.prior_keyframe_path is not None
        fill = f.fill_latest_at and not contiguous
        window = tuple(f.window) if f.window is not None else None
        groups.setdefault((fill, contiguous, window), []).append(key)
    return [k for keys in groups.values() for k in keys]


def warn_if_fork(stacklevel: int) -> None:
    """0.41's warning: DataLoader workers of a remote dataset must be spawned, not forked."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method == "fork" or (method is None and sys.platform.startswith("linux")):
        warnings.warn(
            "The default multiprocessing start method is 'fork'. A dataset on a Rerun catalog server "
            "needs 'spawn' or 'forkserver' for DataLoader workers (num_workers > 0): forked workers "
            "fail on their first catalog call. Pass "
            "`multiprocessing_context=multiprocessing.get_context('spawn')` to your DataLoader, or call "
            "`torch.multiprocessing.set_start_method('spawn')` before creating workers. You can ignore "
            "this warning if you use num_workers=0.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
