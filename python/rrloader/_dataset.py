"""LocalDataset: a folder (or list) of .rrd files, shaped like rerun-sdk's DatasetEntry."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .errors import InvalidArgumentError, NoRecordingsError, NotFoundError

IndexValuesLike = Any  # np.ndarray (int64 / datetime64 / timedelta64), pa.Array, or a list of ints


def _as_int64(values: IndexValuesLike) -> np.ndarray:
    """Index values as a contiguous int64 array (nanoseconds for time types)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_timestamp(values.type) or pa.types.is_duration(values.type):
            values = values.cast(pa.int64())
        values = values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.dtype.kind in "mM":
        arr = arr.astype(f"{arr.dtype.kind}8[ns]").view(np.int64)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"index values must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"index values must be integers or datetimes, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _as_time_int(v: Any) -> int:
    if isinstance(v, pa.Scalar):
        v = v.cast(pa.int64()).as_py() if (pa.types.is_timestamp(v.type) or pa.types.is_duration(v.type)) else v.as_py()
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return int(v.astype(f"{v.dtype.kind}8[ns]").view(np.int64))
    return int(v)


class DatasetView:
    """A dataset narrowed to some segments and/or some entities (rerun's DatasetView).

    Immutable: ``filter_segments`` and ``filter_contents`` return new views. Thread-safe
    to read from several threads.
    """

    def __init__(
        self,
        core: _core.LocalDataset,
        segments: list[str] | None,
        contents: list[str] | None,
        origin: tuple[list[str], int, int] | None = None,
    ):
        self._core = core
        self._segments = segments
        self._contents = contents
        self._origin = origin  # (paths, chunk_cache_bytes, num_threads): how to open it again

    def _reopened(self) -> DatasetView:
        """The same view over freshly opened files (a forked process must not share the parent's)."""
        paths, cache_bytes, threads = self._origin
        return DatasetView(_core.LocalDataset(paths, cache_bytes, threads), self._segments, self._contents, self._origin)

    def __reduce__(self):
        # Pickled by how it was opened (DataLoader workers under spawn reopen the files).
        return (_open_view, (self._origin, self._segments, self._contents))

    # ----------------------------------------------------------------- metadata
    def segment_ids(self) -> list[str]:
        """Segment ids (the recordings' ids), sorted."""
        ids = self._core.segment_ids()
        if self._segments is not None:
            wanted = set(self._segments)
            ids = [s for s in ids if s in wanted]
        return ids

    def schema(self) -> pa.Schema:
        """Index columns and component columns (``/entity:Archetype:component``) with their types."""
        return pa.Schema._import_from_c_capsule(self._core.schema())

    arrow_schema = schema

    def index_columns(self) -> list[str]:
        return sorted(self._core.timelines())

    def timelines(self) -> dict[str, str]:
        """Timeline name -> kind ('sequence', 'timestamp' or 'duration')."""
        return dict(self._core.timelines())

    def component_columns(self) -> list[str]:
        return [f.name for f in self.schema() if f.metadata and f.metadata.get(b"rerun:kind") == b"data"]

    def files(self) -> list[str]:
        return list(self._core.files())

    def get_index_ranges(self, index: str | None = None) -> pa.Table:
        """Per segment: ``rerun_segment_id`` and ``<timeline>:start`` / ``<timeline>:end`` (inclusive)."""
        table = pa.RecordBatchReader._import_from_c_capsule(self._core.index_ranges(index)).read_all()
        if self._segments is not None:
            mask = pc.is_in(table["rerun_segment_id"], value_set=pa.array(self._segments, pa.string()))
            table = table.filter(mask)
        return table

    def chunk_row_counts(self) -> dict[str, int]:
        """Total rows over all chunks of each segment (cheap: from the footers)."""
        return dict(self._core.chunk_row_counts())

    def cache_stats(self) -> dict[str, int]:
        return dict(self._core.cache_stats())

    # ----------------------------------------------------------------- views
    def filter_segments(self, segments: str | Sequence[str]) -> DatasetView:
        ids = [segments] if isinstance(segments, str) else list(segments)
        if self._segments is not None:
            keep = set(self._segments)
            ids = [s for s in ids if s in keep]
        return DatasetView(self._core, ids, self._contents, self._origin)

    def filter_contents(self, exprs: str | Sequence[str]) -> DatasetView:
        new = [exprs] if isinstance(exprs, str) else list(exprs)
        # As in rerun, a second content filter adds to the first (a union).
        return DatasetView(self._core, self._segments, (self._contents or []) + new, self._origin)

    # ----------------------------------------------------------------- reading
    def reader(
        self,
        index: str | None,
        *,
        segments: Sequence[str] | None = None,
        contents: str | Sequence[str] | None = None,
        using_index_values: IndexValuesLike | Mapping[str, IndexValuesLike] | None = None,
        fill_latest_at: bool = False,
        include_semantically_empty_columns: bool = False,
        include_tombstone_columns: bool = False,
        index_range: tuple[Any, Any] | None = None,
    ) -> pa.Table:
        """Rerun's dataframe query, materialized as a ``pyarrow.Table``.

        Same columns, types and rows as rerun-sdk's ``DatasetEntry.reader(...)`` for the same
        files: ``rerun_segment_id``, the index columns, then one column per component.

        - ``using_index_values``: a dict ``{segment_id: values}`` (other segments give no
          rows), or one array applied to every segment within that segment's range.
        - ``index_range``: ``(lo, hi)``, inclusive, filters the output rows (the latest-at
          look-back of ``fill_latest_at`` still sees earlier data).
        - ``contents``: entity path expressions such as ``"/robot/**"`` or ``"-/robot/cam"``.
        """
        seg_filter = self._segments
        if segments is not None:
            seg_list = [segments] if isinstance(segments, str) else list(segments)
            seg_filter = seg_list if seg_filter is None else [s for s in seg_list if s in set(seg_filter)]
        content_list = self._contents
        if contents is not None:
            extra = [contents] if isinstance(contents, str) else list(contents)
            content_list = (content_list or []) + extra
        per_segment = None
        everywhere = None
        if using_index_values is not None:
            if index is None:
                raise InvalidArgumentError("using_index_values needs an index")
            if isinstance(using_index_values, Mapping):
                per_segment = {str(k): _as_int64(v) for k, v in using_index_values.items()}
            else:
                everywhere = _as_int64(using_index_values)
        rng = None
        if index_range is not None:
            lo, hi = index_range
            rng = (_as_time_int(lo), _as_time_int(hi))
        if seg_filter is not None and len(seg_filter) == 0:
            seg_filter = ["\x00no-segment\x00"]
        capsule, _stats = self._core.read(
            index,
            list(seg_filter or []),
            content_list,
            bool(fill_latest_at),
            bool(include_semantically_empty_columns),
            bool(include_tombstone_columns),
            per_segment,
            everywhere,
            rng,
        )
        return pa.RecordBatchReader._import_from_c_capsule(capsule).read_all()


class LocalDataset(DatasetView):
    """A dataset over local ``.rrd`` files: a folder (its top-level ``*.rrd``) or a list of files.

    Each recording in a file is a segment whose id is the recording id. Files with a footer
    are opened by reading only the footer; chunk payloads are read, decoded and cached
    (``chunk_cache_bytes``, default 256 MiB; in N DataLoader workers each keeps a 1/N share) when a query needs them.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        chunk_cache_bytes: int = _core.DEFAULT_CHUNK_CACHE_BYTES,
        num_threads: int = 0,
    ):
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise NoRecordingsError("LocalDataset needs at least one .rrd file or directory")
        origin = ([os.fspath(p) for p in paths], int(chunk_cache_bytes), int(num_threads))
        try:
            core = _core.LocalDataset(*origin)
        except NoRecordingsError:
            raise
        except NotFoundError as e:  # opening can only miss files or recordings
            raise NoRecordingsError(str(e)) from None
        super().__init__(core, None, None, origin)
        self._paths = [os.fspath(p) for p in paths]

    def __repr__(self) -> str:
        return f"LocalDataset({self._paths!r}, segments={len(self.segment_ids())})"


def _open_view(origin: tuple[list[str], int, int], segments: list[str] | None, contents: list[str] | None) -> DatasetView:
    paths, cache_bytes, threads = origin
    return DatasetView(_core.LocalDataset(paths, cache_bytes, threads), segments, contents, origin)
