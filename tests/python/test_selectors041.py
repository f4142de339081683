"""``Field(select=rerun.chunk.Selector(...))`` of ``rrloader.experimental.dataloader`` against
rerun-sdk 0.41 on the same recordings (issue 12, item 5: "selectors give rerun's values").

The data: two segments written with rerun-sdk on a ``frame`` timeline (with gaps), with a
``list<struct>`` component (``/animals``: numbers, a nested struct, a variable-size list, a
fixed-size list, a bool, a string; 0-3 instances per row; null fields, null instances and a
``Clear``), ``Scalars`` (3 values, and a static one), ``Points3D`` positions (1-2 points of 3
floats), a ``list<list<float64>>`` component and a ``list<struct<v: list<float64>>>`` with nulls
inside ``v``. The reference is rerun-sdk 0.41's ``RerunIterableDataset`` / ``RerunMapDataset``
in this process over ``rr.server.Server`` serving the same ``.rrd`` files rrloader reads as a
``LocalDataset`` (and, in one test, as the served dataset); one test replays a manifest of
rerun-sdk's with selector fields on both sides.

* Selectors rrloader evaluates in its engine (``native_selector``: ``[i]`` instance and list
  indices, ``.name`` struct fields, nested, numeric and bool leaves, the identity ``.``) are
  compared with rerun-sdk sample by sample (keys in order, dtypes, shapes, bytes), unwindowed and
  in windows, iterable (several fetch block sizes) and map; and each is asserted to run natively.
* The rest (``[]``, ``?``, ``!``, ``|``, a Python callable piped in, a selector whose leaf is not
  a number) runs rerun's own ``Selector.execute``: the same samples, or the same error.
* Selectors rerun-sdk refuses (a field of the instance list, an index into a fixed-size list, a
  field the struct lacks, a string leaf): rrloader raises the same exception type and message,
  which names the operator.
* A plain string is not a ``Selector``; rerun-sdk 0.41 fails on it at the first decode
  (``AttributeError``), rrloader refuses it when the ``Field`` is made (deliberate).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import diff041util as u
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import rerun as rr
import rrloader.experimental.dataloader as rrl
from rerun.chunk import Selector
from rerun041 import ref
from rrloader import LocalDataset

APP_ID = "rrloader_selectors041"
SEGMENTS = {"sa": [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 14], "sb": [2, 3, 4, 5, 7, 8, 10, 11]}

ANIMALS = "/animals:Animals:animals"
STATE = "/state:Scalars:scalars"
POINTS = "/points:Points3D:positions"
NESTED = "/nested:Nest:v"
STATIC = "/static:Scalars:scalars"
HOLES = "/holes:Holes:h"  # list<struct<v: list<float64>>>, a null inside v at every 4th frame

ANIMAL_TYPE = pa.struct(
    [
        ("dog", pa.float64()),
        ("cat", pa.int32()),
        ("pose", pa.struct([("x", pa.float32()), ("y", pa.float32())])),
        ("v", pa.list_(pa.float64())),
        ("f", pa.list_(pa.float32(), 3)),
        ("ok", pa.bool_()),
        ("name", pa.string()),
    ]
)


def _animal(rng: np.random.Generator, k: int, frame: int) -> dict[str, Any] | None:
    if rng.random() < 0.06:
        return None  # a null instance
    return {
        "dog": None if rng.random() < 0.1 else float(rng.normal()),
        "cat": None if rng.random() < 0.1 else int(rng.integers(-1000, 1000)),
        "pose": None if rng.random() < 0.1 else {"x": float(rng.normal()), "y": float(rng.normal())},
        # Mostly 2 values (uniform windows), sometimes 3 or 1 (a window of mixed shapes: None).
        "v": [float(x) for x in rng.normal(size=int(rng.choice([2] * 7 + [3] * 2 + [1])))],
        "f": [float(x) for x in rng.normal(size=3)],
        "ok": bool(rng.random() < 0.5),
        "name": f"a{k}_{frame}",
    }


def write_dataset(folder: Path) -> Path:
    """One ``.rrd`` per segment (recording id = segment id), see the module docstring."""
    folder.mkdir(parents=True, exist_ok=True)
    for s, (seg, frames) in enumerate(sorted(SEGMENTS.items())):
        rng = np.random.default_rng(17 + s)
        fr = np.asarray(frames, dtype=np.int64)
        with rr.RecordingStream(APP_ID, recording_id=seg, send_properties=False) as rec:
            rec.save(folder / f"{seg}.rrd")
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)

            def columns(entity: str, at: list[int], cols: Any) -> None:
                rec.send_columns(entity, indexes=[rr.TimeColumn("frame", sequence=at)], columns=cols)

            # /animals on most frames (0-3 instances), a Clear at one frame.
            animal_frames = [f for f in frames if rng.random() < 0.8 or f == frames[0]]
            rows = []
            for f in animal_frames:
                n = int(rng.choice([0, 1, 2, 2, 3, 3])) if f != frames[0] else 2
                rows.append([_animal(rng, k, f) for k in range(n)])
            animals = pa.array(rows, type=pa.list_(ANIMAL_TYPE))
            columns("/animals", animal_frames, u._dynamic_columns("Animals", {"animals": animals}))
            rec.reset_time()
            cleared = frames[len(frames) // 3]
            rec.set_time("frame", sequence=cleared)
            rec.log("/animals", rr.Clear(recursive=False))

            holes = pa.array(
                [[{"v": [1.0 * f, None if f % 4 == 0 else 0.5]}] for f in frames],
                type=pa.list_(pa.struct([("v", pa.list_(pa.float64()))])),
            )
            columns("/holes", frames, u._dynamic_columns("Holes", {"h": holes}))
            rec.log("/static", rr.Scalars([10.0 * s, 10.0 * s + 1]), static=True)
            state = np.stack([s * 100 + fr + 0.25 * j for j in range(3)], axis=1).astype(np.float64)
            columns("/state", frames, rr.Scalars.columns(scalars=state))

            counts = np.asarray([1 + (f % 3 == 0) for f in frames])
            pts = rng.normal(size=(int(counts.sum()), 3)).astype(np.float32)
            columns("/points", frames, rr.Points3D.columns(positions=pts).partition(counts))

            for f in frames:  # list<list<float64>>: one call per row (as diff041util does)
                rec.reset_time()
                rec.set_time("frame", sequence=f)
                v = pa.array(
                    [list(rng.normal(size=2)) for _ in range(1 + (f % 2))], type=pa.list_(pa.float64())
                )
                rec.log("/nested", rr.DynamicArchetype("Nest", components={"v": v}))
    return folder


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fork warnings, skipped-sample warnings (compared elsewhere)
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("selectors041") / "ds")


@pytest.fixture(scope="module")
def sources(folder):
    server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(folder)})
    try:
        client = server.client()
        theirs = ref.DataSource(client.get_dataset("ds"))
        # rrloader reads the files (LocalDataset), and the served dataset through its own remote path.
        yield rrl.DataSource(LocalDataset(str(folder))), theirs, rrl.DataSource(client.get_dataset("ds"))
    finally:
        server.shutdown()


# --------------------------------------------------------------------------------------------------
# Running both sides


def _fields(m: Any, spec: dict[str, tuple[str, Any, tuple | None]]) -> dict[str, Any]:
    """``{key: (path, selector, window)}`` spelled with module ``m``; the selector is built anew
    per side from its text (or given as a callable making it)."""
    out = {}
    for key, (path, select, window) in spec.items():
        sel = select() if callable(select) else (None if select is None else Selector(select))
        out[key] = m.Field(path, decode=m.NumericDecoder(), select=sel, window=window)
    return out


def _run(m: Any, source: Any, spec: dict, mode: str, **kwargs: Any) -> tuple:
    """(len, encoded samples, (error type, message) or None, skipped-sample warnings) of one
    configuration."""
    samples: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _run_caught(m, source, spec, mode, samples, **kwargs)
    skipped = [
        str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "skip" in str(w.message)
    ]
    return result[0], samples, result[1], skipped


def _run_caught(m: Any, source: Any, spec: dict, mode: str, samples: list, **kwargs: Any):
    length = None
    try:
        fields = _fields(m, spec)
        if mode == "map":
            ds = m.RerunMapDataset(source, "frame", fields)
            length = len(ds)
            for batch in u.map_batches(length, 3):
                samples.extend(u.encode_sample(s) for s in ds.__getitems__(batch))
        else:
            ds = m.RerunIterableDataset(source, "frame", fields, shuffle_strategy=m.NoShuffle(), **kwargs)
            length = len(ds)
            samples.extend(u.encode_sample(s) for s in ds)
    except Exception as e:  # noqa: BLE001 - compared
        return length, (type(e).__name__, str(e))
    return length, None


MODES = [("iter", {"fetch_block_size": 3}), ("iter", {"fetch_block_size": 128}), ("map", {})]


def compare(sources, spec: dict, modes=MODES, *, served: bool = False) -> list[tuple]:
    """Runs ``spec`` on both sides in every mode; asserts equal outcomes; returns rerun-sdk's."""
    ours_src, theirs_src = sources[2 if served else 0], sources[1]
    out = []
    for mode, kwargs in modes:
        ours = _run(rrl, ours_src, spec, mode, **kwargs)
        theirs = _run(ref, theirs_src, spec, mode, **kwargs)
        label = f"{mode} {kwargs}"
        assert ours[0] == theirs[0], f"{label}: len rrloader {ours[0]} vs rerun-sdk {theirs[0]}"
        assert ours[2] == theirs[2], f"{label}: error rrloader {ours[2]} vs rerun-sdk {theirs[2]}"
        assert len(ours[1]) == len(theirs[1]), f"{label}: {len(ours[1])} vs {len(theirs[1])} samples"
        for i, (a, b) in enumerate(zip(ours[1], theirs[1], strict=True)):
            why = u.sample_diff(a, b)
            assert why is None, f"{label}: sample #{i}: {why}"
        assert ours[3] == theirs[3], f"{label}: warnings rrloader {ours[3]} vs rerun-sdk {theirs[3]}"
        out.append(theirs)
    return out


def engine_kinds(source: Any, spec: dict) -> dict[str, tuple[str, str]]:
    """How rrloader runs each field: (engine kind, engine selector), "raw" = through Python."""
    from rrloader.experimental.dataloader._prepare import prepare

    _, _, engine_fields, _ = prepare(source, "frame", _fields(rrl, spec), None)
    return {f.key: (f.kind, f.select) for f in engine_fields}


def _values(outcomes, key: str) -> list:
    return [dict(s)[key] for o in outcomes for s in o[1]]


# --------------------------------------------------------------------------------------------------
# Natively evaluated selectors


NATIVE = {
    # key: (path, selector text, engine spelling)
    "dog0": (ANIMALS, ".[0].dog", ".[0].dog"),
    "cat1": (ANIMALS, "[1].cat", ".[1].cat"),
    "dog2": (ANIMALS, ".[2].dog", ".[2].dog"),  # mostly out of range: None
    "posex": (ANIMALS, ".[0].pose.x", ".[0].pose.x"),
    "posey1": (ANIMALS, ".[1] .pose .y", ".[1].pose.y"),
    "v0": (ANIMALS, ".[0].v", ".[0].v"),  # a variable-size list leaf
    "v01": (ANIMALS, ".[0].v[1]", ".[0].v[1]"),
    "v03": (ANIMALS, ".[0].v[2]", ".[0].v[2]"),  # mostly out of range
    "ok0": (ANIMALS, ".[0].ok", ".[0].ok"),  # bool
    "state1": (STATE, ".[1]", ".[1]"),
    "state_id": (STATE, ".", ""),
    "point0": (POINTS, ".[0]", ".[0]"),  # one fixed-size list of 3 floats
    "point1": (POINTS, "[1]", ".[1]"),  # a second point on every third frame only
    "nested1": (NESTED, ".[1]", ".[1]"),
    "nested10": (NESTED, ".[0][1]", ".[0][1]"),
    "static1": (STATIC, ".[1]", ".[1]"),
}


def test_native_selectors_run_in_the_engine(sources):
    spec = {k: (p, s, None) for k, (p, s, _) in NATIVE.items()}
    kinds = engine_kinds(sources[0], spec)
    assert kinds == {k: ("numeric", native) for k, (_, _, native) in NATIVE.items()}


def _check_native(sources, key: str, window: tuple | None, modes=MODES) -> list:
    path, select, native = NATIVE[key]
    # With an always-present field: the iterable drops samples where the selector finds nothing.
    spec = {key: (path, select, window), "s": (STATE, None, None)}
    assert engine_kinds(sources[0], spec)[key] == ("numeric", native)
    outcomes = compare(sources, spec, modes)
    assert all(o[2] is None for o in outcomes)
    values = _values(outcomes, key)
    assert any(v is not None for v in values), f"{key}: every value is None"
    return values


@pytest.mark.parametrize("key", list(NATIVE))
def test_native_selectors_match_rerun(sources, key):
    values = _check_native(sources, key, None)
    if key in ("dog2", "v03", "point1", "dog0", "cat1", "posex"):
        assert any(v is None for v in values), f"{key}: expected some None (out of range, null)"


@pytest.mark.parametrize("window", [(0,), (-2, 0, 1), (1, -1, -1)], ids=["w0", "w-2_0_1", "w1_-1_-1"])
@pytest.mark.parametrize("key", ["dog0", "cat1", "posex", "v0", "v01", "ok0", "state1", "point0", "nested10"])
def test_native_selectors_in_windows_match_rerun(sources, key, window):
    values = _check_native(sources, key, window, modes=MODES[:1] + MODES[2:])
    shapes = {v[1] for v in values if v is not None}
    assert all(shape[0] == len(window) for shape in shapes), shapes
    if key == "point0":
        assert shapes == {(len(window), 3)}


@pytest.mark.parametrize("window", [None, (-1, 0)], ids=["nowin", "win"])
def test_native_selectors_on_the_served_dataset(sources, window):
    """rrloader reading ``rr.server.Server`` itself (RemoteDataset): the column types come from
    the served schema, the selectors still run in the engine."""
    keys = ["dog0", "v01", "point0", "nested10"]
    spec = {k: (NATIVE[k][0], NATIVE[k][1], window) for k in keys}
    spec["s"] = (STATE, ".", None)
    assert engine_kinds(sources[2], spec) == {
        **{k: ("numeric", NATIVE[k][2]) for k in keys},
        "s": ("numeric", ""),
    }
    outcomes = compare(sources, spec, modes=[("map", {})], served=True)
    for k in keys:
        assert any(v is not None for v in _values(outcomes, k)), k


def test_manifest_replay_with_selectors(sources, tmp_path):
    """A manifest of rerun-sdk's with selector fields, replayed by both (native and rerun-run)."""
    spec = {
        "dog0": (ANIMALS, ".[0].dog", (-1, 0)),
        "point0": (POINTS, "[0]", None),
        "piped": (ANIMALS, ".[0] | .pose | .x", None),
        "s": (STATE, "[2]", None),
    }
    path = tmp_path / "m.parquet"
    ref.Manifest.generate(sources[1], "frame", _fields(ref, spec), fetch_block_size=4).write_parquet(path)
    theirs = ref.RerunMapDataset.from_manifest(
        ref.Manifest.from_parquet(path), sources[1], _fields(ref, spec)
    )
    ours = rrl.RerunMapDataset.from_manifest(rrl.Manifest.from_parquet(path), sources[0], _fields(rrl, spec))
    n = len(theirs)
    assert len(ours) == n > 10
    ids = list(range(n)) + [0, n - 1]
    a = [u.encode_sample(x) for x in ours.__getitems__(ids)]
    b = [u.encode_sample(x) for x in theirs.__getitems__(ids)]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert u.sample_diff(x, y) is None, f"#{i}: {u.sample_diff(x, y)}"
    assert any(dict(x)["piped"] is not None for x in a) and any(dict(x)["dog0"] is not None for x in a)


def test_a_null_inside_the_selected_list_is_none(sources):
    """Deliberate (docs/dataloader.md): a null inside a numeric cell makes the value ``None``
    where rerun-sdk 0.41 gives NaN (its ``to_numpy``), with a selector as without one."""
    spec = {"h": (HOLES, ".[0].v", None)}
    assert engine_kinds(sources[0], spec)["h"] == ("numeric", ".[0].v")
    ours = _run(rrl, sources[0], spec, "map")
    theirs = _run(ref, sources[1], spec, "map")
    assert ours[0] == theirs[0] and len(ours[1]) == len(theirs[1]) > 10
    holes = 0
    for a, b in zip(ours[1], theirs[1], strict=True):
        x, y = dict(a)["h"], dict(b)["h"]
        t = np.frombuffer(y[2], dtype=np.float64)
        if np.isnan(t).any():
            holes += 1
            assert x is None and t[0] % 4 == 0
        else:
            assert x == y
    assert holes > 2


def test_selected_values_are_the_logged_ones(sources):
    """An anchor that does not depend on rerun-sdk: ``[1]`` of /state is the 2nd scalar logged
    at the latest frame at or before each sample's (every frame of a segment's range)."""
    outcomes = compare(sources, {"s": (STATE, ".[1]", None)}, modes=[("iter", {})])
    got = [float(np.frombuffer(v[2], dtype=np.float64)[0]) for v in _values(outcomes, "s")]
    want = [
        s * 100 + max(f for f in frames if f <= t) + 0.25
        for s, (_, frames) in enumerate(sorted(SEGMENTS.items()))
        for t in range(frames[0], frames[-1] + 1)
    ]
    assert got == want


# --------------------------------------------------------------------------------------------------
# Selectors run through rerun's Selector.execute


def _double(arr: pa.Array) -> pa.Array:
    return pc.multiply(arr, 2)


FALLBACK = {
    "try": (ANIMALS, ".[0].dog?"),
    "assert": (ANIMALS, ".[0].cat!"),
    "piped": (ANIMALS, ".[0] | .pose | .x"),
    "piped_sel": (ANIMALS, lambda: Selector(".[0]").pipe(Selector(".pose.y"))),
    "callable": (ANIMALS, lambda: Selector(".[0].dog").pipe(_double)),
    "callable_state": (STATE, lambda: Selector(".[2]").pipe(lambda a: pc.add(a, 1.0))),
    "struct_leaf": (ANIMALS, ".[0].pose"),  # a struct: not a number (rerun decides)
}


@pytest.mark.parametrize("key", [k for k in FALLBACK if k != "struct_leaf"])
def test_fallback_selectors_run_through_rerun(sources, key):
    path, select = FALLBACK[key]
    spec = {key: (path, select, None), "s": (STATE, None, None)}
    assert engine_kinds(sources[0], spec)[key] == ("raw", "")
    outcomes = compare(sources, spec)
    assert all(o[2] is None and len(o[1]) > 10 for o in outcomes)
    assert any(v is not None for v in _values(outcomes, key))


def test_a_piped_callable_runs(sources):
    """Twice ``.[0].dog`` of the same samples (rerun-sdk's values, compared in the test above)."""
    native = compare(sources, {"dog": (ANIMALS, ".[0].dog", None)}, modes=[("map", {})])
    doubled = compare(sources, {"dog": (ANIMALS, FALLBACK["callable"][1], None)}, modes=[("map", {})])
    pairs = list(zip(_values(native, "dog"), _values(doubled, "dog"), strict=True))
    assert any(a is not None for a, _ in pairs)
    for a, b in pairs:
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(2 * np.frombuffer(a[2]), np.frombuffer(b[2]))


@pytest.mark.parametrize("window", [None, (-1, 0)], ids=["nowin", "win"])
def test_fallback_selectors_in_windows_match_rerun(sources, window):
    spec = {k: (p, s, window) for k, (p, s) in FALLBACK.items() if k in ("try", "piped", "callable")}
    outcomes = compare(sources, spec, modes=MODES[:1] + MODES[2:])
    assert all(o[2] is None and o[1] for o in outcomes)


# --------------------------------------------------------------------------------------------------
# Errors


ERRORS = {
    # selector, a word rerun-sdk's error names (rrloader's is the same), what rrloader's note adds
    "field_of_list": (ANIMALS, ".dog", ".dog", "picks a field of the row's list of instances"),
    "index_fixed_size": (
        ANIMALS,
        ".[0].f[1]",
        "[1]",
        "step '[1]' (after '[0].f'): an index into fixed_size_list",
    ),
    "index_struct": (ANIMALS, ".[0][0]", "[0]", "step '[0]' (after '[0]'): needs a list, found struct"),
    "no_such_field": (
        ANIMALS,
        ".[0].horse",
        "Selector returned",
        "the struct has no field 'horse' (fields: dog, cat",
    ),
    "iterate": (ANIMALS, ".[].dog", "Selector returned", 'select=Selector("[].dog")'),
    "string_leaf": (ANIMALS, ".[0].name", "numpy.object_", "it selects string values"),
    "point_coordinate": (POINTS, ".[0][1]", "[1]", "an index into fixed_size_list"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_selectors_fail_like_rerun(sources, case):
    path, select, word, note = ERRORS[case]
    spec = {"x": (path, select, None), "s": (STATE, None, None)}
    assert engine_kinds(sources[0], spec)["x"] == ("raw", "")
    outcomes = compare(sources, spec, modes=MODES[:1] + MODES[2:])  # the same exception type and message
    for o in outcomes:
        assert o[2] is not None, f"{select!r}: no error"
        assert word in o[2][1], o[2]
    # rrloader adds a note naming the field, its selector and (where it can tell) the step.
    ds = rrl.RerunMapDataset(sources[0], "frame", _fields(rrl, spec))
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is rerun-sdk's, compared above
        ds.__getitems__(list(range(len(ds))))
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert f"field 'x' (column {path!r})" in notes and note in notes, notes


def test_a_string_is_not_a_selector(sources):
    with pytest.raises(TypeError, match=r"rerun\.chunk\.Selector.*'\.\[0\]\.dog'"):
        rrl.Field(ANIMALS, decode=rrl.NumericDecoder(), select=".[0].dog")
    # rerun-sdk 0.41 takes it, and fails at the first decode.
    ds = ref.RerunMapDataset(
        sources[1], "frame", {"x": ref.Field(ANIMALS, decode=ref.NumericDecoder(), select=".[0].dog")}
    )
    with pytest.raises(AttributeError, match="execute"):
        ds[0]
