"""Configuration both front ends share: data sources, the engine's field description, generations (internal)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

SEED = "seed"
RERUN_041 = "rerun-0.41"
MODULE_OF = {SEED: "rrloader.dataloader", RERUN_041: "rrloader.experimental.dataloader"}


def check_generation(obj: Any, generation: str, what: str) -> None:
    """``TypeError`` when ``obj`` (a Field, decoder, strategy...) belongs to the other API generation.

    Objects of the two generations spell the same things with different meanings (a window
    ``(a, b)`` is a range in one and two offsets in the other), so one is never read as the other.
    """
    other = getattr(obj, "_rrl_generation", generation)
    if other != generation:
        raise TypeError(
            f"{what} {obj!r} is from {MODULE_OF[other]}, but this dataset is from {MODULE_OF[generation]}: "
            f"use {MODULE_OF[generation]}.{type(obj).__name__} (the two generations differ in meaning, "
            "e.g. Field.window)"
        )


def as_source(source: Any, generation: str, make: Any) -> DataSourceBase:
    """``source`` as a ``DataSource`` of ``generation``: one of it as is, a dataset wrapped with
    ``make``; a ``DataSource`` of the other generation is a ``TypeError`` (see ``check_generation``)."""
    check_generation(source, generation, "source")
    if isinstance(source, DataSourceBase):
        return source
    return make(source)


def native_kind(decoder: Any) -> str:
    """How the engine runs ``decoder``: ``"numeric"``/``"image"``/``"video"`` natively, ``"raw"`` in Python.

    A built-in decoder class names its kind in ``_native_kind``; a subclass that overrides
    ``decode`` is a Python decoder.
    """
    for cls in type(decoder).__mro__:
        kind = cls.__dict__.get("_native_kind")
        if kind is not None:
            return kind if type(decoder).decode is cls.decode else "raw"
    return "raw"


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """The engine's settings of a native video field."""

    codec: str = ""  # the codec used when the stream logs none ("" = the stream's own, required)
    height: int = 0  # 0 x 0: each frame's own size
    width: int = 0
    session_cache_bytes: int = 0
    threads: int = 1  # libavcodec threads per session (0: libavcodec chooses; else 1 frame-threads)
    output_format: str = "rgb"  # or "yuv420p"
    max_sessions: int = -1  # cached decoder sessions (-1: bounded by session_cache_bytes only)
    codec_overrides: bool = False  # `codec` wins over the stream's codec component

    def spec(self) -> tuple[str, int, int, int, int, str, int, bool]:
        return (
            self.codec,
            self.height,
            self.width,
            self.session_cache_bytes,
            self.threads,
            self.output_format,
            self.max_sessions,
            self.codec_overrides,
        )


@dataclasses.dataclass(frozen=True)
class EngineField:
    """One field as the engine takes it, whatever the generation that described it.

    ``window``: explicit offsets in the index's native unit (integer steps; ns on time
    timelines), in output order, repeats allowed; ``None``: no window (no leading T axis).
    ``decoder``: the user's decoder object (called from Python when ``kind == "raw"``);
    ``context_range``: a seed decoder that overrides ``context_range`` (it reads row ranges);
    ``batch_select``: a rerun 0.41 selector object a Python decoder's ``FieldBatch`` applies.
    """

    key: str
    path: str
    kind: str
    window: tuple[int, ...] | None
    select: str
    join: tuple[str, ...]
    video: VideoOptions
    semantics: str
    decoder: Any
    context_range: bool = False
    batch_select: Any = None

    def spec(self) -> tuple:
        """The tuple ``_core.Engine`` takes."""
        return (
            self.key,
            self.path,
            self.kind,
            list(self.window) if self.window is not None else None,
            self.select,
            list(self.join),
            self.video.spec(),
            self.semantics,
        )


class DataSourceBase:
    """What both generations' ``DataSource`` share: the segment filter and the native dataset.

    ``dataset`` is an ``rrloader.LocalDataset`` (or a view of one), an ``rrloader.RemoteDataset``,
    or a dataset on a Rerun catalog server as rerun-sdk gives it (a ``DatasetEntry`` or a
    ``DatasetSelection``), read through an ``rrloader.RemoteDataset`` with the default options.
    ``segments``: an allow-list; the dataset's own segment order is kept, unknown ids are
    ignored and ``[]`` means no segments.
    """

    dataset: Any
    segments: list[str] | None

    def native_dataset(self) -> Any:
        """The dataset the engine reads (``dataset`` itself, or a ``RemoteDataset`` around it)."""
        cached = self.__dict__.get("_native")
        if cached is None:
            from .._remote import as_dataset

            cached = as_dataset(self.dataset)
            object.__setattr__(self, "_native", cached)
        return cached

    def filter_segments(self, segment_ids: Sequence[str]) -> Any:
        return dataclasses.replace(self, segments=list(segment_ids))

    def segment_ids(self) -> list[str]:
        ids = list(self.native_dataset().segment_ids())
        if self.segments is not None:
            keep = set(self.segments)
            ids = [s for s in ids if s in keep]
        return ids

    def __getstate__(self) -> dict[str, Any]:
        # A rerun-sdk entry does not pickle; its RemoteDataset (URL, name, metadata) does.
        state = dict(self.__dict__)
        native = self.native_dataset()
        if native is not self.dataset:
            state["dataset"] = native
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
