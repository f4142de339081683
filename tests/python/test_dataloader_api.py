"""Acceptance tests of the seed dataloader API (rrloader.dataloader), issue 3 — without DataLoader
workers/DDP (see test_dataloader_torch.py for those).

Recordings are tiny and written once per module with rerun-sdk (tests/python/dlutil.py). Numeric
samples are compared with rerun-sdk's own query (`DatasetEntry.reader(index, using_index_values=...,
fill_latest_at=True)`) served by one reference server in a child process (test_differential's RefWorker).
"""

from __future__ import annotations

import gc
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dlutil  # noqa: E402
from rrloader import LocalDataset  # noqa: E402
from rrloader.dataloader import (  # noqa: E402
    ColumnDecoder,
    DataSource,
    Field,
    FixedRateSampling,
    ImageDecoder,
    NumericDecoder,
    RerunIterableDataset,
    RerunMapDataset,
    SampleIndex,
    SegmentMetadata,
    Selector,
    collate_samples,
)
from rrloader.errors import RrloaderError  # noqa: E402

FRAME_SEGS = {"seg_a": (0, 11), "seg_b": (5, 9), "seg_c": (3, 3)}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return dlutil.write_api_datasets(tmp_path_factory.mktemp("dlapi"))


@pytest.fixture(scope="module")
def num_ds(data_dir):
    return LocalDataset(str(data_dir / "num"))


@pytest.fixture(scope="module")
def img_ds(data_dir):
    return LocalDataset(str(data_dir / "img"))


@pytest.fixture(scope="module")
def misc_ds(data_dir):
    return LocalDataset(str(data_dir / "misc"))


@pytest.fixture(scope="module")
def ref(data_dir, tmp_path_factory):
    """rerun-sdk's catalog server (child process) serving the numeric dataset as "num"."""
    from test_differential import RefWorker

    worker = RefWorker(tmp_path_factory.mktemp("dlapi_ref"), timeout_s=120)
    loaded = worker.load("dl", {"num": sorted((data_dir / "num").glob("*.rrd"))})
    assert sorted(loaded["num"]) == sorted(dlutil.NUM_FRAMES)
    yield worker
    worker.close()


def num_field(name, window=None, **kw):
    return Field(dlutil.NUM_COLUMNS[name], NumericDecoder(), window=window, **kw)


def as_int(v) -> int:
    if isinstance(v, np.datetime64 | np.timedelta64):
        return int(v.astype(f"{v.dtype.kind}8[ns]").view(np.int64))
    assert isinstance(v, int | np.integer)
    return int(v)


def slot_values(si: SampleIndex, v, window) -> list[int]:
    """The index values of a field's slots at sample value `v` (ascending)."""
    v = as_int(v)
    if window is None:
        return [v]
    return sorted(si.indices_in_range(v + window[0], v + window[1]))


# ------------------------------------------------------------------------------------------------ 1. sample index
def time_bounds(seg: str, fn) -> tuple[int, int]:
    lo, hi = FRAME_SEGS[seg]
    vals = [fn(seg, f) for f in range(lo, hi + 1)]
    return min(vals), max(vals)


def test_integer_index_steps_by_one_at_segment_edges(num_ds):
    si = SampleIndex.build(DataSource(num_ds), "frame", {"x": num_field("state")})
    assert [s.segment_id for s in si.segments] == ["seg_a", "seg_b", "seg_c"]
    assert [(s.index_start, s.index_end, s.num_samples) for s in si.segments] == [
        (0, 11, 12),
        (5, 9, 5),
        (3, 3, 1),
    ]
    assert si.total_samples == 18
    assert si.ns_per_sample is None and not si.is_timestamp
    expected = [("seg_a", f) for f in range(12)] + [("seg_b", f) for f in range(5, 10)] + [("seg_c", 3)]
    got = []
    for i in range(si.total_samples):
        seg, v = si.global_to_local(i)
        assert isinstance(seg, SegmentMetadata)
        assert type(v) is int
        got.append((seg.segment_id, v))
    assert got == expected
    # edges: last of a, first of b, last of b, the 1-sample segment
    assert si.global_to_local(11)[1] == 11 and si.global_to_local(11)[0].segment_id == "seg_a"
    assert si.global_to_local(12) == (si.segments[1], 5)
    assert si.global_to_local(16) == (si.segments[1], 9)
    assert si.global_to_local(17) == (si.segments[2], 3)
    for bad in (-1, 18, 1000):
        with pytest.raises(IndexError):
            si.global_to_local(bad)
    assert si.resolve_local_index(si.segments[1], 0) == 5
    assert si.resolve_local_index(si.segments[1], 4) == 9
    assert si.indices_in_range(3, 6) == [3, 4, 5, 6]
    assert si.indices_in_range(4, 4) == [4]
    assert si.indices_in_range(5, 4) == []


@pytest.mark.parametrize(
    "index,rate,step,fn,dtype",
    [
        ("time", 100.0, 10_000_000, dlutil.num_time_ns, "datetime64[ns]"),
        ("dur", 50.0, 20_000_000, dlutil.num_dur_ns, "timedelta64[ns]"),
    ],
)
def test_time_index_on_fixed_rate_grid(num_ds, index, rate, step, fn, dtype):
    si = SampleIndex.build(
        DataSource(num_ds), index, {"x": num_field("state")}, timeline_sampling=FixedRateSampling(rate)
    )
    assert si.ns_per_sample == step
    assert si.is_timestamp == (index == "time")
    total = 0
    for seg in si.segments:
        lo, hi = time_bounds(seg.segment_id, fn)
        n = (hi - lo) // step + 1
        assert (seg.index_start, seg.num_samples) == (lo, n), seg
        assert seg.index_end == lo + (n - 1) * step <= hi
        first = si.resolve_local_index(seg, 0)
        last = si.resolve_local_index(seg, n - 1)
        assert first.dtype == np.dtype(dtype) and last.dtype == np.dtype(dtype)
        assert as_int(first) == lo and as_int(last) == lo + (n - 1) * step
        # global <-> local at the segment's edges
        s0, v0 = si.global_to_local(total)
        s1, v1 = si.global_to_local(total + n - 1)
        assert s0.segment_id == s1.segment_id == seg.segment_id
        assert as_int(v0) == lo and as_int(v1) == lo + (n - 1) * step
        assert isinstance(v0, np.datetime64 if index == "time" else np.timedelta64)
        total += n
    assert [s.segment_id for s in si.segments] == ["seg_a", "seg_b", "seg_c"]
    assert si.segments[2].num_samples == 1
    assert si.total_samples == total
    with pytest.raises(IndexError):
        si.global_to_local(total)
    # the grid walks down from hi
    assert si.indices_in_range(0, 3 * step + 5) == [3 * step + 5, 2 * step + 5, step + 5, 5]
    assert si.indices_in_range(0, 3 * step) == [3 * step, 2 * step, step, 0]
    assert si.indices_in_range(10, 9) == []


def test_time_index_without_sampling_is_type_error(num_ds):
    for index, word in (("time", "timestamp"), ("dur", "duration")):
        with pytest.raises(TypeError, match=word):
            SampleIndex.build(DataSource(num_ds), index, {"x": num_field("state")})
        with pytest.raises(TypeError):
            RerunMapDataset(DataSource(num_ds), index, {"x": num_field("state")})


def test_sampling_on_integer_index_warns(num_ds):
    with pytest.warns(UserWarning, match="ignored"):
        si = SampleIndex.build(
            DataSource(num_ds), "frame", {"x": num_field("state")}, timeline_sampling=FixedRateSampling(30)
        )
    assert si.total_samples == 18 and si.ns_per_sample is None


def test_window_trims_segment_ends(num_ds):
    src = DataSource(num_ds)
    # negative offsets trim the start, positive the end; seg_b (5..9) and seg_c (3) become empty
    si = SampleIndex.build(src, "frame", {"w": num_field("state", window=(-2, 3))})
    assert [(s.segment_id, s.index_start, s.index_end, s.num_samples) for s in si.segments] == [
        ("seg_a", 2, 8, 7)
    ]
    si = SampleIndex.build(src, "frame", {"w": num_field("state", window=(-2, 0))})
    assert [(s.segment_id, s.index_start, s.num_samples) for s in si.segments] == [
        ("seg_a", 2, 10),
        ("seg_b", 7, 3),
    ]
    si = SampleIndex.build(src, "frame", {"w": num_field("state", window=(1, 4))})  # positive only
    assert [(s.segment_id, s.index_start, s.index_end) for s in si.segments] == [
        ("seg_a", 0, 7),
        ("seg_b", 5, 5),
    ]
    # the most negative / most positive over all fields
    si = SampleIndex.build(
        src, "frame", {"a": num_field("state", window=(-1, 0)), "b": num_field("state", window=(0, 2))}
    )
    assert [(s.segment_id, s.index_start, s.index_end) for s in si.segments] == [
        ("seg_a", 1, 9),
        ("seg_b", 6, 7),
    ]
    # on a timestamp grid: offsets in ns
    step = dlutil.FRAME_NS
    si = SampleIndex.build(
        src,
        "time",
        {"w": num_field("state", window=(-2 * step, step))},
        timeline_sampling=FixedRateSampling(100),
    )
    lo, hi = time_bounds("seg_a", dlutil.num_time_ns)
    seg = si.segments[0]
    assert seg.segment_id == "seg_a"
    assert seg.index_start == lo + 2 * step
    assert seg.num_samples == (hi - step - (lo + 2 * step)) // step + 1
    assert "seg_c" not in [s.segment_id for s in si.segments]


def test_build_reads_index_ranges_only(num_ds):
    """The sample index comes from the per-segment ranges: a view that only has ranges works."""

    class RangesOnly:
        def segment_ids(self):
            return ["s1", "s2"]

        def timelines(self):
            return {"frame": "sequence"}

        def filter_segments(self, ids):
            assert list(ids) == ["s1", "s2"]
            return self

        def get_index_ranges(self, index=None):
            return pa.table(
                {
                    "rerun_segment_id": ["s1", "s2"],
                    "frame:start": pa.array([10, 0], pa.int64()),
                    "frame:end": pa.array([12, 0], pa.int64()),
                }
            )

        def reader(self, *a, **k):  # pragma: no cover - must not be called
            raise AssertionError("SampleIndex.build read data")

    si = SampleIndex.build(DataSource(RangesOnly()), "frame", {"x": num_field("state")})
    assert [(s.segment_id, s.index_start, s.num_samples) for s in si.segments] == [
        ("s1", 10, 3),
        ("s2", 0, 1),
    ]


def test_filter_segments_semantics(num_ds):
    src = DataSource(num_ds)
    f = {"x": num_field("state")}
    si = SampleIndex.build(src.filter_segments(["seg_c", "seg_a", "nope"]), "frame", f)
    assert [s.segment_id for s in si.segments] == ["seg_a", "seg_c"]  # dataset order, unknown ignored
    assert si.total_samples == 13
    empty = src.filter_segments([])
    assert SampleIndex.build(empty, "frame", f).total_samples == 0
    assert len(RerunMapDataset(empty, "frame", f)) == 0
    assert src.segments is None  # immutable
    ds = RerunMapDataset(src.filter_segments(["seg_b"]), "frame", f)
    assert len(ds) == 5
    assert ds[0]["x"].tolist() == dlutil.state_value("seg_b", 5).tolist()


# ------------------------------------------------------------------------------------------------ 2. vs rerun-sdk
def ref_rows(ref, index, kind, values_by_seg):
    params = {
        "case_no": -1,
        "seed": -1,
        "index": index,
        "index_kind": kind,
        "fill_latest_at": True,
        "uiv_mode": "dict",
        "uiv": {s: sorted(set(v)) for s, v in values_by_seg.items()},
        "uiv_as_arrow": False,
        "index_range": None,
        "include_tombstone_columns": False,
        "include_semantically_empty_columns": False,
        "segments": None,
        "contents": None,
    }
    table = ref.query("dl", "num", params)
    segs = table.column("rerun_segment_id").to_pylist()
    idx = table.column(index)
    if not pa.types.is_integer(idx.type):
        idx = idx.cast(pa.int64())
    rows = {}
    for r, (s, v) in enumerate(zip(segs, idx.to_pylist(), strict=True)):
        rows[(s, v)] = r
    return table, rows


def leaf_type(t: pa.DataType) -> pa.DataType:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return t


def flatten_cell(cell):
    """Our documented rule on the reference's cell: None when absent, empty or holding a null."""
    if cell is None:
        return None
    out = []

    def walk(x):
        if x is None:
            return False
        if isinstance(x, list):
            return all(walk(y) for y in x)
        out.append(x)
        return True

    if not walk(cell) or not out:
        return None
    return out


def expected_sample(table, rows, field: Field, seg, slots):
    col = table.column(field.path)
    dtype = leaf_type(col.type).to_pandas_dtype()
    cells = []
    for v in slots:
        r = rows[(seg, v)]
        flat = flatten_cell(col[r].as_py())
        if flat is None:
            return None
        cells.append(np.asarray(flat, dtype=dtype))
    if field.window is None:
        return cells[0]
    return np.stack(cells)


def assert_sample_equal(got, want, what):
    if want is None:
        assert got is None, f"{what}: expected None, got {got}"
        return
    assert got is not None, f"{what}: expected {want}, got None"
    g = got.numpy()
    assert g.dtype == want.dtype, f"{what}: dtype {g.dtype} != {want.dtype}"
    assert g.shape == want.shape, f"{what}: shape {g.shape} != {want.shape}"
    np.testing.assert_array_equal(g, want, err_msg=what)


NUM_FIELD_SETS = {
    "frame": (
        None,
        {
            "state": num_field("state"),
            "scalar": num_field("scalar"),
            "vec3": num_field("vec3"),
            "i32": num_field("i32"),
            "i64": num_field("i64"),
            "nested": num_field("nested"),
            "static": num_field("static"),
            "cleared": num_field("cleared"),
            "nully": num_field("nully"),
            "state_w": num_field("state", window=(-2, 1)),
            "scalar_w": num_field("scalar", window=(-1, 0)),
            "vec3_w": num_field("vec3", window=(0, 1)),
        },
    ),
    "time": (
        FixedRateSampling(100),
        {
            "state": num_field("state"),
            "scalar": num_field("scalar"),
            "i32": num_field("i32"),
            "cleared": num_field("cleared"),
            "static": num_field("static"),
            "state_w": num_field("state", window=(-3 * dlutil.FRAME_NS, 0)),
            "scalar_w": num_field("scalar", window=(-dlutil.FRAME_NS - 5_000_000, dlutil.FRAME_NS)),
        },
    ),
    "dur": (
        FixedRateSampling(50),
        {
            "state": num_field("state"),
            "nested": num_field("nested"),
            "nully": num_field("nully"),
            "state_w": num_field("state", window=(-dlutil.DUR_FRAME_NS, dlutil.DUR_FRAME_NS)),
        },
    ),
}
KINDS = {"frame": "sequence", "time": "timestamp", "dur": "duration"}


@pytest.fixture(scope="module", params=sorted(NUM_FIELD_SETS))
def num_case(request, num_ds, ref):
    """(index, map dataset, {global i: expected sample}) with expectations from rerun-sdk's query."""
    index = request.param
    sampling, fields = NUM_FIELD_SETS[index]
    ds = RerunMapDataset(DataSource(num_ds), index, fields, sampling)
    si = ds.sample_index
    assert si.total_samples > 0
    plan = {}
    wanted: dict[str, list[int]] = {}
    for i in range(len(ds)):
        seg, v = si.global_to_local(i)
        plan[i] = (seg.segment_id, v, {k: slot_values(si, v, f.window) for k, f in fields.items()})
        for slots in plan[i][2].values():
            wanted.setdefault(seg.segment_id, []).extend(slots)
    table, rows = ref_rows(ref, index, KINDS[index], wanted)
    expected = {
        i: {k: expected_sample(table, rows, fields[k], seg, slots[k]) for k in fields}
        for i, (seg, _, slots) in plan.items()
    }
    return index, ds, expected, plan


def test_map_samples_equal_reference(num_case):
    index, ds, expected, plan = num_case
    n_none = 0
    for i in range(len(ds)):
        sample = ds[i]
        assert set(sample) == set(expected[i])
        for k, want in expected[i].items():
            n_none += want is None
            assert_sample_equal(sample[k], want, f"index={index} sample {i} {plan[i][:2]} field {k}")
    assert n_none > 0  # the missing-value rule is exercised


def test_iterable_samples_equal_reference(num_case):
    index, map_ds, expected, _ = num_case
    ds = RerunIterableDataset(
        map_ds._source, index, map_ds._fields, map_ds._timeline_sampling, fetch_size=4, shuffle=False
    )
    samples = list(ds)
    assert len(samples) == len(expected)
    for i, sample in enumerate(samples):
        for k, want in expected[i].items():
            assert_sample_equal(sample[k], want, f"index={index} iterable sample {i} field {k}")


def test_missing_value_rule_cases(num_ds):
    """Spot checks of the documented rule (independent of the reference)."""
    fields = {k: num_field(k) for k in ("scalar", "cleared", "nully", "static", "i32")}
    ds = RerunMapDataset(DataSource(num_ds), "frame", fields)
    by_frame = {f: ds[f] for f in range(12)}  # seg_a: global == frame
    assert by_frame[0]["scalar"] is None and by_frame[1]["scalar"] is None  # nothing at/before
    assert by_frame[2]["scalar"].tolist() == [2.5]
    assert by_frame[9]["scalar"].tolist() == [9.5]
    assert by_frame[8]["scalar"].tolist() == [5.5]  # logged out of order: latest-at by time
    assert by_frame[0]["cleared"] is None
    assert by_frame[1]["cleared"].tolist() == [1.0]
    assert by_frame[4]["cleared"] is None  # cleared at 4
    assert by_frame[10]["cleared"] is None and by_frame[11]["cleared"] is None  # empty batch
    assert by_frame[8]["cleared"].tolist() == [2.0]
    assert by_frame[2]["nully"].tolist() == [5.0, 6.0]
    assert by_frame[6]["nully"] is None and by_frame[11]["nully"] is None  # holds a null
    assert all(by_frame[f]["static"].tolist() == [42.0, 43.0] for f in range(12))
    assert by_frame[5]["i32"].dtype == torch.int32 and by_frame[5]["i32"].tolist() == [3, -3, 7]
    seg_c = ds[17]
    assert seg_c["scalar"] is None  # never logged in seg_c
    assert seg_c["static"].tolist() == [42.0, 43.0]


# ------------------------------------------------------------------------------------------------ 3. getitems / iterable
def assert_samples_same(a, b, what=""):
    assert set(a) == set(b), what
    for k in a:
        if a[k] is None or b[k] is None:
            assert a[k] is None and b[k] is None, f"{what} {k}"
        else:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what} {k}"
            assert torch.equal(a[k], b[k]), f"{what} {k}"


def test_getitems_equals_getitem(num_ds):
    fields = NUM_FIELD_SETS["frame"][1]
    ds = RerunMapDataset(DataSource(num_ds), "frame", fields)
    assert len(ds) == 11  # seg_a 2..10, seg_b 7..8
    ids = [10, 3, 3, 0, 9, 8, 10, 5, 1, 8]
    batch = ds.__getitems__(ids)
    assert len(batch) == len(ids)
    for i, s in zip(ids, batch, strict=True):
        assert_samples_same(s, ds[i], f"id {i}")
    assert ds.__getitems__([]) == []
    with pytest.raises(IndexError):
        ds.__getitems__([0, len(ds)])
    with pytest.raises(IndexError):
        ds[-1]


@pytest.mark.parametrize("shuffle", [False, True])
def test_iterable_matches_map(num_ds, shuffle):
    sampling, fields = NUM_FIELD_SETS["time"]
    src = DataSource(num_ds)
    mds = RerunMapDataset(src, "time", fields, sampling)
    ids = RerunIterableDataset(src, "time", fields, sampling, fetch_size=3, shuffle=shuffle, seed=7)
    order = ids.shard_order()
    assert sorted(order.tolist()) == list(range(len(mds)))
    if not shuffle:
        assert order.tolist() == list(range(len(mds)))
    else:
        assert order.tolist() != list(range(len(mds)))
    samples = list(ids)
    assert len(samples) == len(mds) == len(ids)
    for g, s in zip(order.tolist(), samples, strict=True):
        assert_samples_same(s, mds[g], f"global {g}")


# ------------------------------------------------------------------------------------------------ 4. windows
def test_window_shapes_integer(num_ds):
    fields = {"w": num_field("state", window=(-3, 2)), "s": num_field("scalar", window=(0, 0))}
    ds = RerunMapDataset(DataSource(num_ds), "frame", fields)
    assert len(ds) == 12 - 5  # seg_a 3..9; seg_b 5..9 is too short; seg_c too
    s = ds[0]
    assert s["w"].shape == (6, 7)
    assert s["w"].dtype == torch.float64
    np.testing.assert_array_equal(
        s["w"].numpy(), np.stack([dlutil.state_value("seg_a", f) for f in range(0, 6)])
    )
    assert s["s"].shape == (1, 1) and s["s"].tolist() == [[2.5]]


def test_window_on_timestamp_grid_walks_down(num_ds):
    step = dlutil.FRAME_NS
    w = (-2 * step - 3_000_000, step)  # 3 ms off grid: T = (end - start) // step + 1 = 4
    ds = RerunMapDataset(
        DataSource(num_ds),
        "time",
        {"w": num_field("state", window=w)},
        timeline_sampling=FixedRateSampling(100),
    )
    si = ds.sample_index
    T = (w[1] - w[0]) // step + 1
    assert T == 4
    for i in (0, len(ds) - 1):
        seg, v = si.global_to_local(i)
        vals = si.indices_in_range(as_int(v) + w[0], as_int(v) + w[1])
        assert vals[0] == as_int(v) + w[1] and len(vals) == T
        assert all(a - b == step for a, b in zip(vals, vals[1:], strict=False))
        got = ds[i]["w"]
        assert got.shape == (T, 7)
        # latest-at of each slot (ascending): the state row of the last frame at or before the slot
        frames = range(FRAME_SEGS[seg.segment_id][0], FRAME_SEGS[seg.segment_id][1] + 1)
        want = []
        for x in sorted(vals):
            f = max(f for f in frames if dlutil.num_time_ns(seg.segment_id, f) <= x)
            want.append(dlutil.state_value(seg.segment_id, f))
        np.testing.assert_array_equal(got.numpy(), np.stack(want))


def test_window_varying_widths_is_error(misc_ds):
    ds = RerunMapDataset(
        DataSource(misc_ds), "frame", {"v": Field("/var:Scalars:scalars", NumericDecoder(), window=(-1, 0))}
    )
    assert ds[0]["v"].shape == (2, 1)  # frames 0, 1: one value each
    assert ds[3]["v"].shape == (2, 2)  # frames 3, 4: two values each
    assert ds[3]["v"].tolist() == [[3.0, 4.0], [4.0, 5.0]]
    with pytest.raises(RrloaderError, match="width") as e:
        ds[2]  # frames 2 (1 value) and 3 (2 values)
    assert "misc_seg" in str(e.value)


def test_window_images(img_ds):
    ds = RerunMapDataset(
        DataSource(img_ds),
        "frame",
        {
            "cam": Field("/jpeg:EncodedImage:blob", ImageDecoder(), window=(-2, 0)),
            "png": Field("/png_rgb:EncodedImage:blob", ImageDecoder(), window=(-1, 0)),
        },
    )
    assert len(ds) == 2
    blobs = dlutil.image_blobs()
    s = ds[1]  # frame 3
    assert s["cam"].shape == (3, 3, 16, 24) and s["cam"].dtype == torch.uint8
    for t, k in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(s["cam"][t].numpy(), dlutil.pillow_chw(blobs["/jpeg"][k]))
    assert s["png"].shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(s["png"][0].numpy(), dlutil.pillow_chw(blobs["/png_rgb"][2]))


def test_window_start_after_end_is_error():
    with pytest.raises(ValueError, match="start"):
        Field("/state:Scalars:scalars", NumericDecoder(), window=(2, 1))


# ------------------------------------------------------------------------------------------------ 5. images
@pytest.mark.parametrize(
    "entity", ["/jpeg", "/jpeg_gray", "/png_rgb", "/png_rgba", "/png_gray", "/png_palette"]
)
def test_encoded_images_equal_pillow(img_ds, entity):
    ds = RerunMapDataset(
        DataSource(img_ds), "frame", {"im": Field(f"{entity}:EncodedImage:blob", ImageDecoder())}
    )
    blobs = dlutil.image_blobs()[entity]
    assert len(ds) == 4
    for k, s in enumerate(ds.__getitems__([0, 1, 2, 3])):
        want = dlutil.pillow_chw(blobs[k])
        got = s["im"]
        assert got.dtype == torch.uint8 and tuple(got.shape) == want.shape, entity
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{entity} frame {k}")
    if entity == "/png_palette":
        assert ds[0]["im"].shape[0] == 3


@pytest.mark.parametrize("entity", ["/raw_l", "/raw_rgb", "/raw_rgba", "/raw_bgr"])
def test_raw_images_equal_logged_array(img_ds, entity):
    arr, model = dlutil.raw_images()[entity]
    ds = RerunMapDataset(DataSource(img_ds), "frame", {"im": Field(f"{entity}:Image:buffer", ImageDecoder())})
    for k in range(4):
        a = (arr.astype(np.int32) + k).astype(np.uint8)
        if a.ndim == 2:
            a = a[:, :, None]
        if model == "BGR":
            a = a[:, :, ::-1]
        want = np.ascontiguousarray(a.transpose(2, 0, 1))
        got = ds[k]["im"]
        assert got.dtype == torch.uint8
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{entity} frame {k}")


# ------------------------------------------------------------------------------------------------ 6. selectors
ANIMALS = "/agent:ListOfStructs:animals"


def test_selector_chains(misc_ds):
    fields = {
        "first_dog": Field(ANIMALS, NumericDecoder(), select=Selector(".[0].dog")),
        "second_cat": Field(ANIMALS, NumericDecoder(), select=".[1].cat"),
        "dogs": Field(ANIMALS, NumericDecoder(), select=Selector(".dog")),
        "last": Field(ANIMALS, NumericDecoder(), select=Selector(".[-1].cat")),
    }
    ds = RerunMapDataset(DataSource(misc_ds), "frame", fields)
    for f in range(6):
        s = ds[f]
        animals = dlutil.animals_at(f)
        assert s["first_dog"].tolist() == [animals[0]["dog"]]
        assert s["first_dog"].dtype == torch.float64
        if len(animals) > 1:
            assert s["second_cat"].tolist() == [animals[1]["cat"]] and s["second_cat"].dtype == torch.int32
        else:
            assert s["second_cat"] is None  # index past the end of this cell
        assert s["dogs"].tolist() == [a["dog"] for a in animals]
        assert s["last"].tolist() == [animals[-1]["cat"]]


def test_selector_bad_path_is_error_at_construction(misc_ds):
    with pytest.raises(RrloaderError) as e:
        RerunMapDataset(
            DataSource(misc_ds),
            "frame",
            {"x": Field(ANIMALS, NumericDecoder(), select=Selector(".[0].horse"))},
        )
    msg = str(e.value)
    assert "horse" in msg and "dog" in msg and "cat" in msg, msg
    with pytest.raises(RrloaderError, match=r"\.cat|cat"):
        RerunMapDataset(
            DataSource(misc_ds),
            "frame",
            {"x": Field(ANIMALS, NumericDecoder(), select=Selector(".[0].cat.x"))},
        )


# ------------------------------------------------------------------------------------------------ 7. instance join
def test_instance_join_clamps(misc_ds):
    ds = RerunMapDataset(
        DataSource(misc_ds),
        "frame",
        {"pts": Field("/pts:Points3D:positions", NumericDecoder(), join=("colors", "radii"))},
    )
    assert ds[0]["pts"] is None and ds[1]["pts"] is None  # no positions yet
    for f in (2, 3, 4, 5):
        got = ds[f]["pts"]
        pos = dlutil.PTS_POSITIONS[2 if f < 4 else 4]
        n = len(pos)
        colors = [dlutil.PTS_COLORS[min(i, len(dlutil.PTS_COLORS) - 1)] for i in range(n)]
        radii = [dlutil.PTS_RADII[min(i, len(dlutil.PTS_RADII) - 1)] for i in range(n)]
        want = np.array([[*p, c, r] for p, c, r in zip(pos, colors, radii, strict=True)], dtype=np.float64)
        assert tuple(got.shape) == (n, 5), f
        assert got.dtype == torch.float64  # float32 + uint32 promote to float64
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"frame {f}")


# ------------------------------------------------------------------------------------------------ 8. decoders, collate
class RecordingDecoder(ColumnDecoder):
    def __init__(self):
        self.calls = []

    def decode(self, raw, index_value, segment_id):
        self.calls.append((raw, index_value, segment_id))
        cells = raw.to_pylist()
        if index_value % 2 == 1 or any(c is None for c in cells):
            return None
        return torch.tensor([float(sum(sum(c) for c in cells))])


def test_python_decoder(num_ds):
    dec = RecordingDecoder()
    ds = RerunMapDataset(
        DataSource(num_ds).filter_segments(["seg_a"]),
        "frame",
        {
            "py": Field("/scalar:Scalars:scalars", dec),
            "pyw": Field("/state:Scalars:scalars", RecordingDecoder(), window=(-1, 0)),
        },
    )
    out = ds.__getitems__([1, 2, 3, 5])  # frames 2, 3, 4, 6 (the window trims seg_a to 1..11)
    assert len(dec.calls) == 4
    raw, v, seg = dec.calls[0]
    assert isinstance(raw, pa.ChunkedArray) and len(raw) == 1
    assert raw.to_pylist() == [[2.5]]
    assert type(v) is int and v == 2 and seg == "seg_a"
    assert [c[1] for c in dec.calls] == [2, 3, 4, 6]
    assert out[0]["py"].tolist() == [2.5]
    assert out[1]["py"] is None  # odd index -> the decoder returned None
    assert out[2]["py"].tolist() == [2.5]
    assert out[3]["py"].tolist() == [5.5]
    wdec = ds._fields["pyw"].decode
    raw, v, seg = wdec.calls[0]
    assert len(raw) == 2 and raw.to_pylist() == [
        dlutil.state_value("seg_a", 1).tolist(),
        dlutil.state_value("seg_a", 2).tolist(),
    ]


class ContextDecoder(ColumnDecoder):
    """Asks for the three index values before the target (a video-style context range)."""

    def __init__(self):
        self.calls = []

    def context_range(self, index_value):
        return (index_value - 3, index_value)

    def decode(self, raw, index_value, segment_id):
        self.calls.append((raw.to_pylist(), index_value, segment_id))
        return torch.tensor(float(len(raw)))


def test_python_decoder_context_range(num_ds):
    dec = ContextDecoder()
    ds = RerunMapDataset(
        DataSource(num_ds).filter_segments(["seg_a"]), "frame", {"ctx": Field("/state:Scalars:scalars", dec)}
    )
    si = ds.sample_index
    first, last = si.segments[0].index_start, si.segments[0].index_end
    out = ds.__getitems__([0, 4, si.total_samples - 1])
    # Every value of [v - 3, v] is a row (latest-at filled; before the first value: null).
    assert [o["ctx"].item() for o in out] == [4.0, 4.0, 4.0]
    for (rows, v, seg), want_v in zip(dec.calls, [first, first + 4, last], strict=True):
        assert seg == "seg_a" and v == want_v
        for k, row in enumerate(rows):
            frame = v - 3 + k
            if row is not None:
                assert row == dlutil.state_value("seg_a", frame).tolist(), (frame, row)
        assert rows[-1] == dlutil.state_value("seg_a", v).tolist()


def test_python_decoder_gets_nothing_logged_as_missing(num_ds):
    dec = RecordingDecoder()
    ds = RerunMapDataset(DataSource(num_ds), "frame", {"py": Field("/scalar:Scalars:scalars", dec)})
    assert ds[0]["py"] is None
    raw, v, seg = dec.calls[0]
    assert (v, seg) == (0, "seg_a")
    assert raw.to_pylist() in ([None], [])


def test_collate_samples(misc_ds):
    ds = RerunMapDataset(
        DataSource(misc_ds),
        "frame",
        {
            "late": Field("/late:Scalars:scalars", NumericDecoder()),
            "dog": Field(ANIMALS, NumericDecoder(), select=".[0].dog"),
        },
    )
    batch, missing = collate_samples(ds.__getitems__([1, 3, 5, 2]))
    assert batch["late"].shape == (4, 1)
    assert missing["late"].tolist() == [True, False, False, True]
    assert batch["late"][:, 0].tolist() == [0.0, 3.0, 5.0, 0.0]
    assert missing["dog"].tolist() == [False] * 4
    assert batch["dog"][:, 0].tolist() == [1.0, 3.0, 5.0, 2.0]
    batch, missing = collate_samples(ds.__getitems__([0, 1]))
    assert batch["late"] is None and missing["late"].tolist() == [True, True]


def test_collate_samples_views_consecutive_samples_without_copying(misc_ds):
    fields = {"dog": Field(ANIMALS, NumericDecoder(), select=".[0].dog")}
    samples = list(RerunIterableDataset(DataSource(misc_ds), "frame", fields, fetch_size=8, shuffle=False))[:4]
    expected = torch.stack([s["dog"] for s in samples])
    batch, _ = collate_samples(samples)
    assert torch.equal(batch["dog"], expected)
    # consecutive samples of one block: the batch is a view of the block's buffer
    assert batch["dog"].data_ptr() == samples[0]["dog"].data_ptr()
    # out of order: a copy, with the same values torch.stack gives
    shuffled = [samples[2], samples[0], samples[3], samples[1]]
    batch, _ = collate_samples(shuffled)
    assert torch.equal(batch["dog"], torch.stack([s["dog"] for s in shuffled]))
    assert batch["dog"].data_ptr() not in {s["dog"].data_ptr() for s in samples}


def test_skip_incomplete(misc_ds):
    fields = {"late": Field("/late:Scalars:scalars", NumericDecoder())}
    ds = RerunIterableDataset(
        DataSource(misc_ds), "frame", fields, shuffle=False, fetch_size=2, skip_incomplete=True
    )
    got = [s["late"].item() for s in ds]
    assert got == [3.0, 4.0, 5.0]
    ds = RerunIterableDataset(
        DataSource(misc_ds),
        "frame",
        fields,
        shuffle=False,
        fetch_size=2,
        skip_incomplete=True,
        max_consecutive_skips=2,
    )
    with pytest.raises(RrloaderError, match="consecutive"):
        list(ds)
    ds = RerunIterableDataset(DataSource(misc_ds), "frame", fields, shuffle=False, fetch_size=2)
    assert [s["late"] is None for s in ds] == [True, True, True, False, False, False]


# ------------------------------------------------------------------------------------------------ 9. errors
def test_unknown_column_is_error(num_ds):
    with pytest.raises(RrloaderError, match="/nope:Scalars:scalars"):
        RerunMapDataset(DataSource(num_ds), "frame", {"x": Field("/nope:Scalars:scalars", NumericDecoder())})


def test_unknown_index_is_error(num_ds):
    with pytest.raises(RrloaderError, match="no_such_timeline"):
        RerunMapDataset(DataSource(num_ds), "no_such_timeline", {"x": num_field("state")})


def test_non_numeric_column_with_numeric_decoder(img_ds):
    with pytest.raises(RrloaderError, match="media_type"):
        RerunMapDataset(
            DataSource(img_ds), "frame", {"x": Field("/jpeg:EncodedImage:media_type", NumericDecoder())}
        )


def test_non_blob_column_with_image_decoder(img_ds):
    with pytest.raises(RrloaderError, match="blobless"):
        RerunMapDataset(
            DataSource(img_ds), "frame", {"x": Field("/blobless:Scalars:scalars", ImageDecoder())}
        )


def test_corrupt_jpeg_names_field_segment_index(img_ds):
    ds = RerunMapDataset(
        DataSource(img_ds), "frame", {"bad_cam": Field("/bad:EncodedImage:blob", ImageDecoder())}
    )
    assert ds[0]["bad_cam"].shape == (3, 16, 16)
    with pytest.raises(RrloaderError) as e:
        ds[2]
    msg = str(e.value)
    assert "bad_cam" in msg or "/bad:EncodedImage:blob" in msg, msg
    assert "img_seg" in msg, msg
    assert "2" in msg, msg
    it = RerunIterableDataset(DataSource(img_ds), "frame", ds._fields, shuffle=False, fetch_size=1)
    with pytest.raises(RrloaderError, match="img_seg"):
        list(it)


def test_warnings_clean_for_integer_index(num_ds):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RerunMapDataset(DataSource(num_ds), "frame", {"x": num_field("state")})


# ------------------------------------------------------------------------------------------------ more edges
def test_join_in_window_and_width_change(misc_ds):
    field = Field(
        "/pts:Points3D:positions", NumericDecoder(), join=("colors", "/pts:Points3D:radii"), window=(-1, 0)
    )
    ds = RerunMapDataset(DataSource(misc_ds), "frame", {"p": field})
    assert len(ds) == 5  # frames 1..5
    assert ds[0]["p"] is None  # frames 0, 1: no positions yet
    got = ds[2]["p"]  # frames 2, 3: the 3-point batch twice
    assert tuple(got.shape) == (2, 3, 5)
    assert got[1, :, 3].tolist() == [
        float(dlutil.PTS_COLORS[0]),
        float(dlutil.PTS_COLORS[1]),
        float(dlutil.PTS_COLORS[1]),
    ]
    assert got[0, :, 4].tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(RrloaderError, match="width") as e:
        ds[3]  # frames 3 (3 points), 4 (1 point)
    assert "misc_seg" in str(e.value) and "4" in str(e.value)
    assert tuple(ds[4]["p"].shape) == (2, 1, 5)


def test_join_errors(misc_ds):
    with pytest.raises(RrloaderError, match="sizes"):
        RerunMapDataset(
            DataSource(misc_ds),
            "frame",
            {"p": Field("/pts:Points3D:positions", NumericDecoder(), join=("sizes",))},
        )
    with pytest.raises(RrloaderError, match="NumericDecoder"):
        RerunMapDataset(
            DataSource(misc_ds),
            "frame",
            {"p": Field("/pts:Points3D:positions", ImageDecoder(), join=("radii",))},
        )


def test_selector_in_window_and_on_lists(misc_ds, num_ds):
    ds = RerunMapDataset(
        DataSource(misc_ds),
        "frame",
        {
            "cat": Field(ANIMALS, NumericDecoder(), select=".[1].cat", window=(-1, 0)),
            "dog": Field(ANIMALS, NumericDecoder(), select=".[0].dog", window=(-1, 0)),
            "far": Field(ANIMALS, NumericDecoder(), select=".[-3].cat"),
        },
    )
    s = ds[0]  # frames 0, 1
    assert s["cat"].tolist() == [[10 + 10], [10 + 11]] and s["cat"].dtype == torch.int32
    assert s["dog"].tolist() == [[0.0], [1.0]]
    assert s["far"] is None  # past the start of the cell
    assert ds[1]["cat"] is None and ds[2]["cat"] is None  # frame 2 holds one animal
    assert ds[1]["dog"].tolist() == [[1.0], [2.0]]
    assert ds[3]["cat"].tolist() == [[23], [24]]  # frames 3, 4
    nds = RerunMapDataset(
        DataSource(num_ds),
        "frame",
        {
            "v1": Field(dlutil.NUM_COLUMNS["vec3"], NumericDecoder(), select=".[1]"),
            "v12": Field(dlutil.NUM_COLUMNS["vec3"], NumericDecoder(), select=".[1][2]"),
            "n01": Field(dlutil.NUM_COLUMNS["nested"], NumericDecoder(), select=".[0].[1]"),
            "v5": Field(dlutil.NUM_COLUMNS["vec3"], NumericDecoder(), select=".[5]"),
        },
    )
    s = nds[4]  # seg_a frame 4
    assert s["v1"].tolist() == [8.0, 0.25, 1.0] and s["v1"].dtype == torch.float32
    assert s["v12"].tolist() == [1.0]
    assert s["n01"].tolist() == [2.0]
    assert s["v5"] is None


def test_selector_type_errors(misc_ds):
    with pytest.raises(RrloaderError, match=r"\.dog") as e:
        RerunMapDataset(
            DataSource(misc_ds),
            "frame",
            {"x": Field("/var:Scalars:scalars", NumericDecoder(), select=".dog")},
        )
    assert "/var:Scalars:scalars" in str(e.value)
    with pytest.raises(RrloaderError, match="not numeric"):  # a whole struct is not a number
        RerunMapDataset(DataSource(misc_ds), "frame", {"x": Field(ANIMALS, NumericDecoder(), select=".[0]")})
    with pytest.raises(ValueError):
        Selector("")
    with pytest.raises(RrloaderError):
        RerunMapDataset(DataSource(misc_ds), "frame", {"x": Field(ANIMALS, NumericDecoder(), select="[[")})


def test_segment_without_the_index_timeline_is_dropped(data_dir):
    files = sorted(str(p) for p in (data_dir / "num").glob("*.rrd")) + [
        str(data_dir / "misc" / "misc_seg.rrd")
    ]
    src = DataSource(LocalDataset(files))
    f = {"s": num_field("state")}
    si = SampleIndex.build(src, "time", f, timeline_sampling=FixedRateSampling(100))
    assert [s.segment_id for s in si.segments] == ["seg_a", "seg_b", "seg_c"]
    ds = RerunMapDataset(src, "frame", f)
    assert [s.segment_id for s in ds.sample_index.segments] == ["misc_seg", "seg_a", "seg_b", "seg_c"]
    assert ds[0]["s"] is None  # misc_seg has no /state
    assert ds[6]["s"].tolist() == dlutil.state_value("seg_a", 0).tolist()


def test_non_integral_rate_grid(num_ds):
    ds = RerunMapDataset(DataSource(num_ds), "time", {"s": num_field("state")}, FixedRateSampling(30))
    step = 33_333_333
    assert ds.sample_index.ns_per_sample == step
    expected = []
    for seg in ("seg_a", "seg_b", "seg_c"):
        lo, hi = time_bounds(seg, dlutil.num_time_ns)
        for k in range((hi - lo) // step + 1):
            x = lo + k * step
            frames = range(FRAME_SEGS[seg][0], FRAME_SEGS[seg][1] + 1)
            expected.append(
                dlutil.state_value(seg, max(f for f in frames if dlutil.num_time_ns(seg, f) <= x))
            )
    assert len(ds) == len(expected) == 7
    for i, want in enumerate(expected):
        assert ds[i]["s"].tolist() == want.tolist(), i


def test_shuffle_epochs(num_ds):
    f = {"s": num_field("state")}
    a = RerunIterableDataset(DataSource(num_ds), "frame", f, shuffle=True)
    b = RerunIterableDataset(DataSource(num_ds), "frame", f, shuffle=True)
    o0 = a.shard_order().tolist()
    assert o0 == b.shard_order().tolist()  # deterministic per (seed, epoch)
    a.set_epoch(1)
    o1 = a.shard_order().tolist()
    assert o1 != o0 and sorted(o1) == list(range(18))
    firsts = [s["s"][0].item() for s in a]
    mds = RerunMapDataset(DataSource(num_ds), "frame", f)
    assert firsts == [mds[g]["s"][0].item() for g in o1]


def test_python_subclass_of_builtin_decoders(num_ds, img_ds):
    class MyNumeric(NumericDecoder):
        def decode(self, raw, index_value, segment_id):
            return super().decode(raw, index_value, segment_id)

    class MyImage(ImageDecoder):
        def decode(self, raw, index_value, segment_id):
            return super().decode(raw, index_value, segment_id)

    for fields_py, fields_native, src in (
        (
            {
                "n": Field(dlutil.NUM_COLUMNS["nested"], MyNumeric(), window=(-1, 0)),
                "m": Field(dlutil.NUM_COLUMNS["scalar"], MyNumeric()),
            },
            {"n": num_field("nested", window=(-1, 0)), "m": num_field("scalar")},
            num_ds,
        ),
        (
            {"i": Field("/jpeg:EncodedImage:blob", MyImage(), window=(-1, 0))},
            {"i": Field("/jpeg:EncodedImage:blob", ImageDecoder(), window=(-1, 0))},
            img_ds,
        ),
    ):
        a = RerunMapDataset(DataSource(src), "frame", fields_py)
        b = RerunMapDataset(DataSource(src), "frame", fields_native)
        assert len(a) == len(b)
        for i in range(len(a)):
            assert_samples_same(a[i], b[i], f"sample {i}")


def test_python_decoder_window_cells(num_ds):
    class Cells(ColumnDecoder):
        def decode(self, raw, index_value, segment_id):
            return raw.to_pylist()

    ds = RerunMapDataset(
        DataSource(num_ds), "frame", {"c": Field(dlutil.NUM_COLUMNS["scalar"], Cells(), window=(-1, 0))}
    )
    assert ds[0]["c"] == [None, None]  # frames 0, 1
    assert ds[1]["c"] == [None, [2.5]]  # frames 1, 2: one cell per index value, missing ones null
    assert ds[4]["c"] == [[2.5], [5.5]]  # frames 4, 5


def test_unknown_column_is_not_found(num_ds):
    from rrloader.errors import NotFoundError

    with pytest.raises(NotFoundError) as e:
        RerunMapDataset(
            DataSource(num_ds), "frame", {"key1": Field("/state:Scalars:scalar", NumericDecoder())}
        )
    assert "key1" in str(e.value) and "/state:Scalars:scalar" in str(e.value)


def test_missing_images_and_mixed_fields(data_dir):
    """Images missing in a segment are None (raw and encoded, windowed or not), next to numeric fields."""
    src = DataSource(
        LocalDataset([str(data_dir / "img" / "img_seg.rrd"), str(data_dir / "misc" / "misc_seg.rrd")])
    )
    fields = {
        "im": Field("/jpeg:EncodedImage:blob", ImageDecoder()),
        "imw": Field("/png_rgb:EncodedImage:blob", ImageDecoder(), window=(-1, 0)),
        "raw": Field("/raw_bgr:Image:buffer", ImageDecoder()),
        "late": Field("/late:Scalars:scalars", NumericDecoder(), window=(0, 0)),
    }
    ds = RerunMapDataset(src, "frame", fields)
    assert [(s.segment_id, s.index_start, s.num_samples) for s in ds.sample_index.segments] == [
        ("img_seg", 1, 3),
        ("misc_seg", 1, 5),
    ]
    samples = ds.__getitems__(list(range(8)))
    blobs = dlutil.image_blobs()
    for i in range(3):  # img_seg frames 1..3
        np.testing.assert_array_equal(samples[i]["im"].numpy(), dlutil.pillow_chw(blobs["/jpeg"][i + 1]))
        assert tuple(samples[i]["imw"].shape) == (2, 3, 5, 7)
        assert tuple(samples[i]["raw"].shape) == (3, 3, 5)
        assert samples[i]["late"] is None
    for i in range(3, 8):  # misc_seg frames 1..5
        assert samples[i]["im"] is None and samples[i]["imw"] is None and samples[i]["raw"] is None
        frame = i - 2
        assert (samples[i]["late"] is None) == (frame < 3)
    assert samples[7]["late"].tolist() == [[5.0]]
    it = list(RerunIterableDataset(src, "frame", fields, shuffle=False, fetch_size=2))
    assert len(it) == 8
    for a, b in zip(it, samples, strict=True):
        assert_samples_same(a, b)


def test_builtin_decoders_called_directly():
    """The built-in decoders' Python `decode` (what subclasses reach through super()) gives owned,
    writable tensors: no 'non-writable NumPy array' warning, and writing does not touch the input."""
    raw = pa.chunked_array([pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float64()))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = NumericDecoder().decode(raw, 0, "s")
    assert t.tolist() == [1.0, 2.0, 3.0] and t.dtype == torch.float64
    t += 1
    assert raw.to_pylist() == [[1.0, 2.0, 3.0]]
    w = NumericDecoder().decode(
        pa.chunked_array([pa.array([[1, 2], [3, 4]], pa.list_(pa.int32()))]), np.datetime64(5, "ns"), "s"
    )
    assert w.tolist() == [[1, 2], [3, 4]] and w.dtype == torch.int32
    assert (
        NumericDecoder().decode(pa.chunked_array([pa.array([None, [1.0]], pa.list_(pa.float64()))]), 0, "s")
        is None
    )
    assert NumericDecoder().decode(pa.chunked_array([pa.array([[]], pa.list_(pa.float64()))]), 0, "s") is None
    with pytest.raises(ValueError, match="width"):
        NumericDecoder().decode(
            pa.chunked_array([pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float64()))]), 3, "segX"
        )
    blob = dlutil.image_blobs()["/png_rgb"][1]
    cell = pa.array([[list(blob)]], pa.list_(pa.list_(pa.uint8())))
    img = ImageDecoder().decode(pa.chunked_array([cell]), 0, "s")
    np.testing.assert_array_equal(img.numpy(), dlutil.pillow_chw(blob))


def _thread_nice_values() -> dict[int, int]:
    """tid -> niceness of every thread of this process (Linux /proc; field 19 of stat)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = int(fields[16])  # stat field 19 (nice), counted after the comm field
    return out


def _thread_names() -> dict[int, str]:
    """tid -> name (comm) of every thread of this process (Linux /proc)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            out[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
    return out


def test_engine_threads_are_named_for_profilers(num_ds):
    # top -H, py-spy and perf show these names; without them every thread is "python".
    before = _thread_names()
    ds = RerunIterableDataset(
        DataSource(num_ds), "frame", {"state": num_field("state")}, fetch_size=1, shuffle=False,
        decode_threads=2, prefetch_blocks=1, max_ready_bytes=1,
    )  # fmt: skip
    it = iter(ds)
    next(it)  # the pipeline's threads wait for the consumer now (tiny queues)
    new = sorted(name for tid, name in _thread_names().items() if tid not in before)
    assert new.count("rrl-fetch") == 1 and new.count("rrl-decode") == 1, new
    assert "rrl-pool-1" in new, new  # the decode pool's worker (the decode thread is worker 0)
    assert all(name.startswith("rrl-") for name in new), new
    del it  # the pipeline's threads end with the iterator
    gc.collect()
    left = [name for tid, name in _thread_names().items() if tid not in before]
    assert "rrl-fetch" not in left and "rrl-decode" not in left, left


@pytest.mark.parametrize("thread_nice", [10, 0])
def test_engine_threads_run_below_the_consumer(num_ds, thread_nice):
    import threading

    main_tid = threading.get_native_id()
    before = _thread_nice_values()
    base = before[main_tid]
    # Tiny queues: the pipeline's threads wait for the consumer, so they are alive below.
    ds = RerunIterableDataset(
        DataSource(num_ds), "frame", {"state": num_field("state")}, fetch_size=1, shuffle=False,
        decode_threads=2, thread_nice=thread_nice, prefetch_blocks=1, max_ready_bytes=1,
    )  # fmt: skip
    it = iter(ds)
    next(it)  # the pipeline's fetch and decode threads exist now
    during = _thread_nice_values()
    new = {tid: nice for tid, nice in during.items() if tid not in before}
    assert during[main_tid] == base  # the iterating thread keeps its priority
    # The pool worker and the pipeline's two threads, at the requested increment.
    assert len([t for t, nice in new.items() if nice == min(19, base + thread_nice)]) >= 3, new
    del it
    RerunMapDataset(DataSource(num_ds), "frame", {"state": num_field("state")}, thread_nice=19)
    with pytest.raises(RrloaderError, match="thread_nice"):
        RerunMapDataset(DataSource(num_ds), "frame", {"state": num_field("state")}, thread_nice=-1)
