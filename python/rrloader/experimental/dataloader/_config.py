"""``Field`` and ``DataSource`` with rerun-sdk 0.41's meaning."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar

from ..._loader._config import (
    RERUN_041,
    DataSourceBase,
    EngineField,
    VideoOptions,
    check_generation,
    native_kind,
)

# The selectors the engine evaluates exactly as rerun's Selector.execute does, for a
# NumericDecoder field: an instance picked by position, then struct fields and elements of
# (variable-size) lists by position ("[0]", "[1].pose.x", "[0].v[2]"), ending at numbers or
# bools (possibly in lists). Each keeps one value (or a null) per row, as the engine's path does;
# a null or an index out of range on the way is a null, which the decoder makes None (the engine:
# missing). Everything else runs through rerun: "[]" iteration, "?", "!", "|", string constants,
# a Python callable piped in, other leaves, and what rerun refuses (a field picked from the row's
# list; an index into a fixed-size list, "not yet implemented" in rerun 0.41; a field the struct
# lacks), so that the values, or the exception's type and message, are rerun's own
# (tests/python/test_selectors041.py). A failure there gets a note naming the field, the
# selector and, where the column type tells, the step at fault (``selector_note``).
_SELECTOR_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")


def _selector_text(select: Any) -> str | None:
    """The query of a rerun ``Selector`` without a Python callable piped in, else None."""
    internal = getattr(select, "_internal", None)
    text = internal.try_to_string() if internal is not None and hasattr(internal, "try_to_string") else None
    return None if text is None else text.strip()


def _selector_steps(text: str) -> list[tuple[str | None, str | None]] | None:
    """``(name, index)`` per step of a path of ``.name`` and ``[i]`` steps ([] for "."), or None
    for any other query."""
    steps, at = [], 1 if text == "." else 0
    while at < len(text):
        m = _SELECTOR_STEP.match(text, at)
        if m is None:
            return None
        steps.append(m.groups())
        at = m.end()
    return steps


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _walk(steps: list, column_type: Any) -> tuple[Any, str | None]:
    """``(selected type, None)``, or ``(None, why)`` for the first step rerun refuses (or whose
    result is no value per row) on a column of ``column_type``."""
    import pyarrow as pa

    t, done = column_type, ""
    for k, (name, index) in enumerate(steps):
        step = f"[{index}]" if index is not None else f".{name}"
        where = f"step {step!r}" + (f" (after {done!r})" if done else "")
        if index is not None:
            # The first step picks an instance of the row's list; later ones need a list value.
            if pa.types.is_fixed_size_list(t) and k > 0:
                return None, f"{where}: an index into {t} (rerun 0.41 does not implement it)"
            if not _is_list(t):
                return None, f"{where}: needs a list, found {t}"
            t = t.value_type
        else:
            if k == 0:
                return None, (
                    f"{where}: picks a field of the row's list of instances; "
                    f"pick an instance first ('[0]{step}') or all of them ('[]{step}')"
                )
            if not pa.types.is_struct(t):
                return None, f"{where}: needs a struct, found {t}"
            if t.get_field_index(name) < 0:
                fields = ", ".join(t.field(i).name for i in range(t.num_fields))
                return None, f"{where}: the struct has no field {name!r} (fields: {fields})"
            t = t.field(name).type
        done += step
    return t, None


def _numeric_leaf(t: Any) -> bool:
    import pyarrow as pa

    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def native_selector(select: Any, column_type: Any) -> str | None:
    """The engine's spelling of a rerun ``Selector`` it evaluates exactly like rerun on a column
    of ``column_type`` ("" for the identity "."), or None when rerun must run it (see above)."""
    text = _selector_text(select)
    if text is None or column_type is None:
        return None  # a Python callable piped in, not a rerun Selector, or an unknown column
    steps = _selector_steps(text)
    if steps is None:
        return None
    t, _ = _walk(steps, column_type)
    # Numbers only: for anything else rerun fails (or gives None) per value, the engine at once.
    if t is None or not _numeric_leaf(t):
        return None
    return "" if text == "." else "." + text


def selector_note(key: str, path: str, select: Any, column_type: Any, decoder: Any) -> str:
    """What a failure of rerun's ``Selector.execute`` (or of the decoder after it) is about: a
    note added to the exception, whose type and message stay rerun-sdk's."""
    note = f"field {key!r} (column {path!r}): select={select!r} ran through rerun's Selector.execute"
    text = _selector_text(select)
    steps = None if text is None or column_type is None else _selector_steps(text)
    if steps is not None:
        t, why = _walk(steps, column_type)
        if why is not None:
            note += f"; {why}"
        elif native_kind(decoder) == "numeric" and not _numeric_leaf(t):
            note += f"; it selects {t} values, which NumericDecoder cannot make a tensor of"
    return note


@dataclasses.dataclass(frozen=True)
class Field:
    """Declarative spec for one field of a training sample (rerun 0.41's).

    - ``path``: ``entity_path:Archetype:component`` (e.g. ``"/camera:EncodedImage:blob"``).
    - ``decode``: a ``ColumnDecoder`` of ``rrloader.experimental.dataloader``.
    - ``select``: an optional ``rerun.chunk.Selector`` applied to the column before decoding.
    - ``window``: optional explicit offsets of the values to return, relative to the sample's
      index value, in the given order (repeats allowed): integral steps on integer timelines,
      seconds on timestamp and duration timelines. The output has a leading T axis, even for
      one offset.
    - ``max_staleness``: optional maximum age (same units as ``window``) of the data behind a
      sample; enforced when a ``Manifest`` is generated, not while streaming.
    """

    path: str
    decode: Any
    select: Any = None
    window: tuple[int | float, ...] | None = None
    max_staleness: int | float | None = None

    _rrl_generation: ClassVar[str] = RERUN_041

    def __post_init__(self) -> None:
        check_generation(self.decode, RERUN_041, f"Field {self.path!r}: the decoder")
        if self.select is not None and not callable(getattr(self.select, "execute", None)):
            # rerun-sdk 0.41 takes it here and fails at the first decode ('str' has no 'execute').
            hint = f"; write Selector({self.select!r})" if isinstance(self.select, str) else ""
            raise TypeError(
                f"Field {self.path!r}: select must be a rerun.chunk.Selector, got {type(self.select).__name__} "
                f"{self.select!r}{hint}"
            )
        if self.window is not None and not self.window:
            raise ValueError("Field.window must contain at least one offset")
        if self.window is not None and any(not math.isfinite(offset) for offset in self.window):
            raise ValueError(f"Field.window offsets must be finite, got {self.window!r}")
        if self.max_staleness is not None:
            if not math.isfinite(self.max_staleness):
                raise ValueError(f"Field.max_staleness must be finite, got {self.max_staleness!r}")
            if self.max_staleness < 0:
                raise ValueError(f"Field.max_staleness must be non-negative, got {self.max_staleness!r}")

    @property
    def prior_keyframe_path(self) -> str | None:
        """The column of keyframe markers this field's decoder needs (video), or None."""
        return self.decode.prior_keyframe_path(self.path)

    @property
    def fill_latest_at(self) -> bool:
        """Whether this field reads the latest value at or before each index value."""
        return self.decode.fill_latest_at

    def to_recipe(self) -> dict[str, Any]:
        """A JSON-serialisable record of this field (a manifest's provenance header)."""
        return {
            "path": self.path,
            "window": list(self.window) if self.window is not None else None,
            "max_staleness": self.max_staleness,
            "decoder": repr(self.decode),
            "select": repr(self.select) if self.select is not None else None,
        }

    # How the shared sample index and the engine read a 0.41 window: explicit offsets,
    # integral steps on integer timelines, seconds (rounded to ns) on time timelines.
    def _native_window(self, kind: str, step: int | None = None) -> tuple[int, ...] | None:
        if self.window is None:
            return None
        if kind == "sequence":
            if any(int(o) != o for o in self.window):
                raise ValueError(f"Integer timelines require integral window offsets, got {self.window!r}")
            return tuple(int(o) for o in self.window)
        return tuple(round(float(o) * 1e9) for o in self.window)

    def _native_extent(self, kind: str) -> tuple[int, int] | None:
        offsets = self._native_window(kind)
        return None if offsets is None else (min(offsets), max(offsets))

    def _engine_field(self, key: str, kind: str, step: int | None, column_type: Any = None) -> EngineField:
        native = native_kind(self.decode)
        video = VideoOptions()
        if native == "video":
            video = self.decode._video_options()
        select = ""
        if self.select is not None:
            engine_select = native_selector(self.select, column_type) if native == "numeric" else None
            if engine_select is not None:
                select = engine_select  # "" for the identity
            else:
                # rerun's own Selector.execute runs on the block's rows, then the decoder's
                # Python path: exact for every operator (video: 0.41's keyframe-range query).
                native = "raw"
        return EngineField(
            key=key,
            path=self.path,
            kind=native,
            window=self._native_window(kind, step),
            select=select,
            join=(),
            video=video,
            semantics=RERUN_041,
            decoder=self.decode,
            batch_select=self.select if native == "raw" else None,
        )


@dataclasses.dataclass(frozen=True)
class DataSource(DataSourceBase):
    """An immutable reference to a dataset with an optional segment filter (rerun 0.41's).

    ``dataset``: a rerun-sdk ``DatasetEntry`` (``rr.catalog.CatalogClient(url).get_dataset(name)``,
    read through rrloader's own remote path), or an ``rrloader.LocalDataset`` /
    ``rrloader.RemoteDataset``. ``segments``: an optional allow-list of segment ids.
    """

    dataset: Any
    segments: list[str] | None = None

    _rrl_generation: ClassVar[str] = RERUN_041
