"""The 0.41 decoder contract (``ColumnDecoder``, ``FieldBatch``, ``DecodeRequest``) of
``rrloader.experimental.dataloader`` against rerun-sdk 0.41 on the same recordings (issue 12,
item 1: "a user ``decode(batch, requests)`` decoder gives 0.41's values").

The data: two segments written with rerun-sdk on a ``frame`` timeline (with gaps) and a
``time`` timeline: ``Scalars`` of 3 values, ``Scalars`` with a ``Clear``, ``Scalars`` of varying width
(1-3 values, and non-null empty lists), JPEG blobs (sparse, one undecodable blob in one segment
and a run of them in the other) and an H.264 ``VideoStream`` with its ``is_keyframe`` column.
The reference is rerun-sdk 0.41's ``RerunIterableDataset`` / ``RerunMapDataset`` in this process
over ``rr.server.Server`` serving the ``.rrd`` files rrloader reads as a ``LocalDataset``.

* User decoders written once against either module (a numeric sum, a Pillow JPEG decoder, a
  keyframe-anchored one with ``prior_keyframe_path``, an exact-rows one with
  ``fill_latest_at = False``): the same samples, and the same calls: once per field per fetch
  block, with the same batch length, ``is_windowed``, requests (every field) and rows.
  Also on the served dataset (rrloader's remote path). A ``Clear`` reaches a user decoder as
  rerun-sdk's empty list (the engine turns a Clear into an empty one-row list under 0.41's rules).
* Calls come from the iterating thread; a blob column reaches the decoder without a copy (the
  blob buffer a later block hands over is the one an earlier block handed over).
* ``FieldBatch`` (one array or chunks; selectors, repeats, a row-count-changing selector, a
  column that is not a list) and ``DecodeRequest`` / ``ColumnDecoder`` behave as rerun-sdk's.
* A wrong number of results is rerun-sdk's error, naming the field.
* The built-in decoders called directly (``decode(batch, requests)`` from a user decoder) give
  the engine's values, and rerun-sdk's.
* 0.41's per-decoder edge cases, against rerun-sdk: a numeric window of varying widths is
  ``None``; a non-null empty list a ``[0]`` tensor; an undecodable image ``None``, counted as a
  skipped sample, with the consecutive-skip limit's error. The seed front end still raises on
  the first two.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import Any

import diff041util as u
import numpy as np
import pyarrow as pa
import pytest
import rerun as rr
import rrloader.experimental.dataloader as rrl
import torch
from rerun041 import ref
from rrloader import LocalDataset

APP_ID = "rrloader_decoders041"
SEGMENTS = {"sa": [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 14], "sb": [2, 3, 4, 5, 7, 8, 10, 11, 12, 13]}
T0_NS = 1_714_000_000_000_000_000
PERIOD_NS = 50_000_000

STATE = "/state:Scalars:scalars"
CLEARED = "/cleared:Scalars:scalars"  # a Clear mid-segment
VAR = "/var:Scalars:scalars"
JPEG = "/jpeg:EncodedImage:blob"
VIDEO = "/cam:VideoStream:sample"
CORRUPT = {"sa": {6}, "sb": {5, 7, 8}}  # frames whose JPEG blob is not an image


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:8, 0:12]
    arr = np.stack([(x * 20 + y * 7 + 40 * c) % 256 for c in range(3)], -1)
    arr = np.clip(arr + rng.integers(0, 40, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_dataset(folder: Path) -> Path:
    """One ``.rrd`` per segment (recording id = segment id), see the module docstring."""
    import videoutil

    folder.mkdir(parents=True, exist_ok=True)
    for s, (seg, frames) in enumerate(sorted(SEGMENTS.items())):
        fr = np.asarray(frames, dtype=np.int64)
        with rr.RecordingStream(APP_ID, recording_id=seg, send_properties=False) as rec:
            rec.save(folder / f"{seg}.rrd")
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)

            def indexes(at: list[int]) -> list[Any]:
                ns = T0_NS + np.asarray(at, dtype=np.int64) * PERIOD_NS
                return [
                    rr.TimeColumn("frame", sequence=at),
                    rr.TimeColumn("time", timestamp=ns.astype("datetime64[ns]")),
                ]

            def at_frame(f: int) -> None:
                rec.reset_time()
                rec.set_time("frame", sequence=f)
                rec.set_time("time", timestamp=np.datetime64(T0_NS + f * PERIOD_NS, "ns"))

            state = np.stack([s * 100 + fr + 0.25 * j for j in range(3)], axis=1).astype(np.float64)
            rec.send_columns("/state", indexes=indexes(frames), columns=rr.Scalars.columns(scalars=state))
            rec.send_columns(
                "/cleared", indexes=indexes(frames), columns=rr.Scalars.columns(scalars=state[:, :1])
            )
            at_frame(frames[len(frames) // 2])
            rec.log("/cleared", rr.Clear(recursive=False))

            # Widths 2 mostly, 1 or 3 sometimes, 0 (a non-null empty list) on every fourth frame.
            widths = [
                0 if k % 4 == 3 else (1 if k % 5 == 1 else (3 if k % 7 == 2 else 2)) for k in range(len(fr))
            ]
            flat = np.arange(sum(widths), dtype=np.float64) + 1000 * s
            rec.send_columns(
                "/var", indexes=indexes(frames), columns=rr.Scalars.columns(scalars=flat).partition(widths)
            )

            img_frames = [f for k, f in enumerate(frames) if k % 3 != 2 or f in CORRUPT[seg]]
            blobs = [b"\xff\xd8 not a jpeg" if f in CORRUPT[seg] else _jpeg(97 * s + f) for f in img_frames]
            rec.send_columns(
                "/jpeg",
                indexes=indexes(img_frames),
                columns=rr.EncodedImage.columns(blob=blobs, media_type=["image/jpeg"] * len(blobs)),
            )

            packets, keyframes = videoutil.encode("h264", 32, 24, len(frames), 4, seed=5 + s)
            rec.log("/cam", rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
            rec.send_columns(
                "/cam",
                indexes=indexes(frames),
                columns=rr.VideoStream.columns(sample=packets, is_keyframe=keyframes),
            )
    return folder


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fork warnings, skipped-sample warnings (compared where it matters)
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("decoders041") / "ds")


@pytest.fixture(scope="module")
def sources(folder):
    server = rr.server.Server(host="127.0.0.1", datasets={"ds": str(folder)})
    try:
        client = server.client()
        # rrloader reads the files (LocalDataset), and the served dataset through its own remote path.
        yield (
            rrl.DataSource(LocalDataset(str(folder))),
            ref.DataSource(client.get_dataset("ds")),
            rrl.DataSource(client.get_dataset("ds")),
        )
    finally:
        server.shutdown()


# --------------------------------------------------------------------------------------------------
# User decoders, written once against either module's ColumnDecoder


def _request(r: Any) -> tuple:
    iv = r.index_value
    return (
        r.sample_position,
        r.segment_id,
        type(iv).__name__,
        str(iv),
        tuple(r.decode_row_indices),
        tuple(r.output_row_indices),
        r.starts_at_keyframe,
    )


def _blob(values: pa.Array) -> bytes:
    """The first blob of a cell's values (``binary`` or ``list<uint8>``)."""
    v = values[0].as_py()
    return v if isinstance(v, bytes) else bytes(v)


def blob_address(values: pa.Array) -> int:
    """The address of the buffer holding a cell's blob bytes."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values.flatten().buffers()[1].address
    return values.buffers()[2].address


def decoders(m: Any) -> dict[str, type]:
    """The user decoder classes, subclassing ``m.ColumnDecoder``."""

    class Recording(m.ColumnDecoder[torch.Tensor]):
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []
            self.threads: set[int] = set()

        def record(self, batch: Any, requests: Any, **extra: Any) -> None:
            self.threads.add(threading.get_ident())
            self.calls.append(
                {
                    "rows": len(batch.column),
                    "is_windowed": batch.is_windowed,
                    "requests": [_request(r) for r in requests],
                    "output": [batch.take_output_rows(r).to_pylist() for r in requests],
                    "decode": [batch.take_decode_rows(r).to_pylist() for r in requests],
                    **extra,
                }
            )

    class SumRows(Recording):
        """The sum of each output row (a ``[T]`` / ``[1]`` float64 tensor), None for a null row."""

        def decode(self, batch, requests):
            self.record(batch, requests)
            out = []
            for r in requests:
                cells = batch.take_output_rows(r).to_pylist()
                out.append(
                    None if any(c is None for c in cells) else torch.tensor([float(sum(c)) for c in cells])
                )
            return out

    class ExactSum(SumRows):
        @property
        def fill_latest_at(self) -> bool:
            return False

    class PillowJpeg(Recording):
        """rerun's ImageDecoder, written by a user: Pillow per row; the blobs' buffers are kept."""

        def __init__(self) -> None:
            super().__init__()
            self.blobs: list[list[pa.Array]] = []  # per call, each output row's blob values (alive)

        def decode(self, batch, requests):
            from PIL import Image

            blobs = []
            out = []
            for r in requests:
                frames = []
                for row in r.output_row_indices:
                    cell = batch.rows(row, row + 1)  # zero-copy within a chunk, on both sides
                    values = cell.flatten()
                    blobs.append(values)
                    if not cell[0].is_valid or len(values) == 0:
                        frames.append(None)
                        continue
                    try:
                        with Image.open(io.BytesIO(_blob(values))) as im:
                            rgb = np.array(im.convert("RGB"))
                        frames.append(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
                    except OSError:
                        frames.append(None)
                if any(f is None for f in frames):
                    out.append(None)
                else:
                    out.append(torch.stack(frames) if batch.is_windowed else frames[0])
            self.blobs.append(blobs)
            self.record(batch, requests)
            return out

    class KeyframeSpan(Recording):
        """rerun's video decoder's query, by a user: ``[starts_at_keyframe, decode rows, bytes of
        the decode rows, position of each output row in them]``."""

        def prior_keyframe_path(self, field_path: str) -> str | None:
            prefix, sep, _ = field_path.rpartition(":")
            return f"{prefix}:is_keyframe" if sep else None

        def decode(self, batch, requests):
            self.record(batch, requests)
            out = []
            for r in requests:
                if not r.starts_at_keyframe:
                    out.append(None)
                    continue
                cells = batch.take_decode_rows(r).to_pylist()
                size = sum(len(b) for c in cells if c for b in c)
                first = r.decode_row_indices[0]
                out.append(
                    torch.tensor(
                        [1, len(cells), size, *(o - first for o in r.output_row_indices)], dtype=torch.int64
                    )
                )
            return out

    class Delegate(Recording):
        """A user decoder that calls a built-in one directly (``decode(batch, requests)``)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def prior_keyframe_path(self, field_path: str) -> str | None:
            return self.inner.prior_keyframe_path(field_path)

        @property
        def fill_latest_at(self) -> bool:
            return self.inner.fill_latest_at

        def decode(self, batch, requests):
            self.record(batch, requests)
            return self.inner.decode(batch, requests)

    class Short(m.ColumnDecoder[torch.Tensor]):
        """One result too few."""

        def decode(self, batch, requests):
            return [torch.zeros(1) for _ in requests][1:]

    return {
        "SumRows": SumRows,
        "ExactSum": ExactSum,
        "PillowJpeg": PillowJpeg,
        "KeyframeSpan": KeyframeSpan,
        "Delegate": Delegate,
        "Short": Short,
    }


# --------------------------------------------------------------------------------------------------
# Running both sides


def _fields(m: Any, spec: dict[str, tuple]) -> dict[str, Any]:
    """``{key: (path, decoder maker, window)}``: the maker gets ``(m, decoders(m))``."""
    classes = decoders(m)
    return {
        key: m.Field(path, decode=make(m, classes), window=window)
        for key, (path, make, window) in spec.items()
    }


def run(m: Any, source: Any, spec: dict, mode: str, index: str = "frame", **kwargs: Any) -> dict[str, Any]:
    """One configuration: ``len``, the encoded samples, the error (type, message) that ended it,
    the skipped-sample warnings and each field's decoder."""
    fields = _fields(m, spec)
    samples: list = []
    out: dict[str, Any] = {"len": None, "error": None, "decoders": {k: f.decode for k, f in fields.items()}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if index == "time":
                kwargs = {**kwargs, "timeline_sampling": m.FixedRateSampling(rate_hz=20.0)}
            if mode == "map":
                ds = m.RerunMapDataset(source, index, fields, **kwargs)
                out["len"] = len(ds)
                for batch in u.map_batches(len(ds), 3):
                    samples.extend(u.encode_sample(s) for s in ds.__getitems__(batch))
            else:
                strategy = getattr(m, kwargs.pop("strategy", "NoShuffle"))()
                ds = m.RerunIterableDataset(source, index, fields, shuffle_strategy=strategy, **kwargs)
                out["len"] = len(ds)
                samples.extend(u.encode_sample(s) for s in ds)
        except Exception as e:  # noqa: BLE001 - compared
            out["error"] = (type(e).__name__, str(e))
    out["samples"] = samples
    out["warnings"] = [
        str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "kip" in str(w.message)
    ]
    return out


MODES = [("iter", {"fetch_block_size": 3}), ("iter", {"fetch_block_size": 128}), ("map", {})]


def compare(
    sources, spec: dict, modes=MODES, *, calls: bool = True, index: str = "frame", served: bool = False
) -> list[tuple]:
    """Runs ``spec`` on both sides in every mode; asserts the same outcome and (``calls``) the
    same decode calls of every user decoder; returns ``(rrloader, rerun-sdk)`` runs per mode.
    ``served``: rrloader reads the served dataset (else the files)."""
    out = []
    for mode, kwargs in modes:
        ours = run(rrl, sources[2 if served else 0], spec, mode, index=index, **kwargs)
        theirs = run(ref, sources[1], spec, mode, index=index, **kwargs)
        label = f"{mode} {kwargs}"
        assert ours["len"] == theirs["len"], (
            f"{label}: len rrloader {ours['len']} vs rerun-sdk {theirs['len']}"
        )
        assert ours["error"] == theirs["error"], (
            f"{label}: error rrloader {ours['error']} vs rerun-sdk {theirs['error']}"
        )
        assert len(ours["samples"]) == len(theirs["samples"]), f"{label}: sample counts"
        for i, (a, b) in enumerate(zip(ours["samples"], theirs["samples"], strict=True)):
            why = u.sample_diff(a, b)
            assert why is None, f"{label}: sample #{i}: {why}"
        assert ours["warnings"] == theirs["warnings"], (
            f"{label}: warnings {ours['warnings']} vs {theirs['warnings']}"
        )
        if calls:
            for key in spec:
                a, b = ours["decoders"][key], theirs["decoders"][key]
                if not hasattr(b, "calls"):
                    continue
                assert len(a.calls) == len(b.calls), (
                    f"{label} {key}: {len(a.calls)} decode calls vs {len(b.calls)}"
                )
                for n, (ca, cb) in enumerate(zip(a.calls, b.calls, strict=True)):
                    for what in ("rows", "is_windowed", "requests", "output", "decode"):
                        assert ca[what] == cb[what], (
                            f"{label} {key}: call #{n}: {what}: rrloader {ca[what]} vs rerun-sdk {cb[what]}"
                        )
        out.append((ours, theirs))
    return out


# --------------------------------------------------------------------------------------------------
# User decoders: values and calls


def test_user_numeric_decoder_matches_rerun(sources):
    spec = {
        "sum": (STATE, lambda m, d: d["SumRows"](), None),
        "var": (VAR, lambda m, d: d["SumRows"](), None),
        "sumw": (STATE, lambda m, d: d["SumRows"](), (-2, 0, 0, 1)),
        "sum1": (STATE, lambda m, d: d["SumRows"](), (0,)),  # windowed, one offset
        "sumu": (VAR, lambda m, d: d["SumRows"](), (1, -2)),  # unsorted
    }
    runs = compare(sources, spec)  # the same calls as rerun-sdk's, field by field
    for (mode, kwargs), (ours, _) in zip(MODES, runs, strict=True):
        n_calls = len(ours["decoders"]["sum"].calls)
        if mode == "map":
            assert n_calls == len(u.map_batches(ours["len"], 3))  # one per __getitems__
        else:
            assert n_calls >= -(-ours["len"] // kwargs["fetch_block_size"]), (mode, kwargs, n_calls)
            if kwargs["fetch_block_size"] > ours["len"]:
                assert n_calls <= 2, n_calls  # the whole epoch in one fetch block (per segment at most)
        assert all(len(d.calls) == n_calls for d in ours["decoders"].values())
    # Values came through: some samples of every field are tensors.
    ours = runs[0][0]
    for key in spec:
        assert any(dict(s)[key] is not None for s in ours["samples"]), key


@pytest.mark.parametrize("strategy", ["SampleShuffle", "BlockShuffle"])
def test_user_decoders_under_a_shuffle(sources, strategy):
    """Blocks mixing segments in a shuffled order: requests grouped by segment in order of first
    appearance, ascending inside one, ``sample_position`` the place in the shuffled block."""
    spec = {
        "sum": (STATE, lambda m, d: d["SumRows"](), (-1, 0)),
        "img": (JPEG, lambda m, d: d["PillowJpeg"](), None),
        "span": (VIDEO, lambda m, d: d["KeyframeSpan"](), None),
    }
    runs = compare(sources, spec, modes=[("iter", {"fetch_block_size": 5, "strategy": strategy})])
    calls = runs[0][0]["decoders"]["sum"].calls
    assert any(len({r[1] for r in c["requests"]}) == 2 for c in calls)  # some block spans both segments


def test_user_decoder_on_a_timestamp_timeline(sources):
    spec = {
        "sum": (STATE, lambda m, d: d["SumRows"](), None),
        "sumw": (STATE, lambda m, d: d["SumRows"](), (-0.05, 0.0)),
    }
    runs = compare(sources, spec, modes=[("iter", {"fetch_block_size": 4}), ("map", {})], index="time")
    ours = runs[0][0]["decoders"]["sum"].calls
    assert ours and all(r[2] == "datetime64" for c in ours for r in c["requests"])


def test_user_exact_rows_decoder_matches_rerun(sources):
    spec = {
        "exact": (VAR, lambda m, d: d["ExactSum"](), None),
        "exactw": (VAR, lambda m, d: d["ExactSum"](), (-1, 0)),
        "state": (STATE, lambda m, d: d["SumRows"](), None),
    }
    runs = compare(sources, spec)
    ours = runs[-1][0]
    # Without the fill, frames where nothing was logged are not read.
    assert any(dict(s)["exact"] is None for s in ours["samples"])
    assert any(dict(s)["exact"] is not None for s in ours["samples"])


def test_user_image_decoder_matches_rerun(sources):
    spec = {
        "img": (JPEG, lambda m, d: d["PillowJpeg"](), None),
        "imgw": (JPEG, lambda m, d: d["PillowJpeg"](), (-1, 0)),
    }
    runs = compare(sources, spec)
    ours = runs[-1][0]
    values = [dict(s)["img"] for s in ours["samples"]]
    assert any(v is None for v in values) and any(v is not None for v in values)


def test_user_keyframe_decoder_matches_rerun(sources):
    spec = {
        "span": (VIDEO, lambda m, d: d["KeyframeSpan"](), None),
        "spanw": (VIDEO, lambda m, d: d["KeyframeSpan"](), (-2, 0)),
        "state": (STATE, lambda m, d: d["SumRows"](), None),
    }
    runs = compare(sources, spec)
    calls = runs[0][0]["decoders"]["span"].calls
    assert any(r[6] for c in calls for r in c["requests"])  # starts_at_keyframe seen
    assert any(len(r[4]) > 1 for c in calls for r in c["requests"])  # decode rows before the output


def test_user_decoder_reads_a_clear_as_rerun(sources):
    spec = {
        "c": (CLEARED, lambda m, d: d["SumRows"](), None),
        "cw": (CLEARED, lambda m, d: d["SumRows"](), (-1, 0)),
    }
    runs = compare(sources, spec, modes=[("iter", {"fetch_block_size": 4}), ("map", {})])
    values = [dict(s)["c"] for s in runs[-1][0]["samples"]]
    assert (
        "torch.float32",
        (1,),
        np.zeros(1, np.float32).tobytes(),
    ) in values  # the Clear's empty list, summed


def test_user_decoders_on_the_served_dataset(sources):
    spec = {
        "sum": (STATE, lambda m, d: d["SumRows"](), (-1, 0)),
        "img": (JPEG, lambda m, d: d["PillowJpeg"](), None),
        "span": (VIDEO, lambda m, d: d["KeyframeSpan"](), None),
        "exact": (VAR, lambda m, d: d["ExactSum"](), None),
    }
    compare(sources, spec, modes=[("iter", {"fetch_block_size": 4}), ("map", {})], served=True)


def test_decode_is_called_from_the_iterating_thread(sources):
    spec = {
        "sum": (STATE, lambda m, d: d["SumRows"](), None),
        "img": (JPEG, lambda m, d: d["PillowJpeg"](), None),
    }
    for mode, kwargs in MODES:
        ours = run(rrl, sources[0], spec, mode, **kwargs)
        assert ours["error"] is None
        for dec in ours["decoders"].values():
            assert dec.calls and dec.threads == {threading.get_ident()}, (mode, dec.threads)


def test_blob_column_is_handed_over_without_a_copy(sources):
    """Two fetch blocks reading the same logged chunk hand over the same blob buffer (every
    handed-over blob is kept alive, so an address cannot be reused by a new allocation)."""
    ours = run(
        rrl, sources[0], {"img": (JPEG, lambda m, d: d["PillowJpeg"](), None)}, "iter", fetch_block_size=2
    )
    dec = ours["decoders"]["img"]
    assert ours["error"] is None and len(dec.blobs) > 4
    seen: dict[int, int] = {}  # blob data buffer address -> first call that handed it over
    shared = 0
    for n, blobs in enumerate(dec.blobs):
        for values in blobs:
            if len(values) == 0:
                continue
            address = blob_address(values)
            first = seen.setdefault(address, n)
            shared += first != n
    assert shared > 0, (
        f"every call got its own copy of the blobs ({len(seen)} buffers for {len(dec.blobs)} calls)"
    )
    assert len(seen) <= 4, f"{len(seen)} blob buffers for 2 logged chunks"


def test_a_wrong_result_count_names_the_field(sources):
    spec = {
        "ok": (STATE, lambda m, d: d["SumRows"](), None),
        "short_one": (VAR, lambda m, d: d["Short"](), None),
    }
    runs = compare(sources, spec, modes=[("iter", {"fetch_block_size": 4}), ("map", {})], calls=False)
    for ours, _ in runs:
        assert ours["error"] is not None and ours["error"][0] == "RuntimeError"
        assert "'short_one'" in ours["error"][1] and "Short.decode returned" in ours["error"][1]


# --------------------------------------------------------------------------------------------------
# Built-in decoders called directly


BUILTINS = {
    "num": (STATE, lambda m: m.NumericDecoder(), None),
    "numw": (VAR, lambda m: m.NumericDecoder(), (-1, 0, 0)),
    "img": (JPEG, lambda m: m.ImageDecoder(), None),
    "imgw": (JPEG, lambda m: m.ImageDecoder(), (-1, 0)),
    "vid": (VIDEO, lambda m: m.VideoFrameDecoder(), None),
    "vidw": (VIDEO, lambda m: m.VideoFrameDecoder(), (-2, 0)),
}


@pytest.mark.parametrize("key", list(BUILTINS))
def test_builtin_direct_decode_matches_the_engine_and_rerun(sources, key):
    path, make, window = BUILTINS[key]
    direct = {key: (path, lambda m, d: d["Delegate"](make(m)), window)}
    # called directly from a user decoder: rrloader's values (and calls) equal rerun-sdk's
    runs = compare(sources, direct)
    # and equal the engine's own (the built-in decoder in the field)
    for (mode, kwargs), (ours_direct, _) in zip(MODES, runs, strict=True):
        engine = run(rrl, sources[0], {key: (path, lambda m, d: make(m), window)}, mode, **kwargs)
        assert engine["len"] == ours_direct["len"] and engine["error"] == ours_direct["error"]
        assert len(engine["samples"]) == len(ours_direct["samples"]), (mode, kwargs)
        for i, (a, b) in enumerate(zip(engine["samples"], ours_direct["samples"], strict=True)):
            assert u.sample_diff(a, b) is None, (
                f"{mode} {kwargs} sample #{i}: engine vs direct: {u.sample_diff(a, b)}"
            )
        assert any(dict(s)[key] is not None for s in engine["samples"]), key


def test_builtins_run_natively(sources):
    from rrloader.experimental.dataloader._prepare import prepare

    fields = {k: rrl.Field(p, decode=make(rrl), window=w) for k, (p, make, w) in BUILTINS.items()}
    _, _, engine_fields, _ = prepare(sources[0], "frame", fields, None)
    assert {f.key: f.kind for f in engine_fields} == {
        "num": "numeric",
        "numw": "numeric",
        "img": "image",
        "imgw": "image",
        "vid": "video",
        "vidw": "video",
    }


# --------------------------------------------------------------------------------------------------
# 0.41's per-decoder edge cases


def test_numeric_window_of_varying_widths_is_none(sources):
    spec = {"w": (VAR, lambda m, d: m.NumericDecoder(), (-1, 0))}
    runs = compare(sources, spec)
    values = [dict(s)["w"] for o, _ in runs[-1:] for s in o["samples"]]
    # the map dataset keeps incomplete samples: some windows mix widths (None), others do not
    assert any(v is None for v in values) and any(v is not None and v[1] == (2, 2) for v in values)


def test_numeric_non_null_empty_list_is_an_empty_tensor(sources):
    spec = {"v": (VAR, lambda m, d: m.NumericDecoder(), None)}
    runs = compare(sources, spec)
    values = [dict(s)["v"] for s in runs[0][0]["samples"]]
    assert ("torch.float64", (0,), b"") in values


def test_corrupt_image_is_none_and_counted(sources):
    spec = {
        "img": (JPEG, lambda m, d: m.ImageDecoder(), None),
        "state": (STATE, lambda m, d: m.NumericDecoder(), None),
    }
    runs = compare(sources, spec)
    ours_iter, ours_map = runs[0][0], runs[-1][0]
    assert len(ours_iter["samples"]) < ours_iter["len"]  # skipped
    assert any("'img'" in w for w in ours_iter["warnings"])
    assert any(dict(s)["img"] is None for s in ours_map["samples"])


@pytest.mark.parametrize("limit", [0, 1, 4, 5])
def test_corrupt_images_and_the_consecutive_skip_limit(sources, limit):
    spec = {"img": (JPEG, lambda m, d: m.ImageDecoder(), None)}
    modes = [("iter", {"fetch_block_size": 4, "max_consecutive_skipped_samples": limit})]
    runs = compare(sources, modes=modes, spec=spec)
    ours = runs[0][0]
    if limit < 5:  # a run of 5 samples without an image in "sb" (frames 5-9)
        assert ours["error"] is not None and ours["error"][0] == "RuntimeError"
        assert f"max_consecutive_skipped_samples={limit}" in ours["error"][1]
    else:
        assert ours["error"] is None


def test_the_seed_front_end_keeps_raising(folder):
    """Where the seed front end (``rrloader.dataloader``) raises, it still does: a window of
    mixed widths and an undecodable image are errors there (``None`` in the 0.41 front end)."""
    import rrloader.dataloader as seed
    from rrloader.errors import RrloaderError

    src = seed.DataSource(LocalDataset(str(folder)))
    mixed = seed.RerunMapDataset(src, "frame", {"w": seed.Field(VAR, seed.NumericDecoder(), window=(-1, 0))})
    with pytest.raises(RrloaderError, match="'w'"):
        mixed.__getitems__(list(range(len(mixed))))
    corrupt = seed.RerunMapDataset(src, "frame", {"im": seed.Field(JPEG, seed.ImageDecoder())})
    with pytest.raises(RrloaderError):
        corrupt.__getitems__(list(range(len(corrupt))))


# --------------------------------------------------------------------------------------------------
# The types themselves


def test_contract_types_match_rerun():
    import dataclasses

    assert [f.name for f in dataclasses.fields(rrl.DecodeRequest)] == [
        f.name for f in dataclasses.fields(ref.DecodeRequest)
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rrl.DecodeRequest(0, "s", 1, (0,), (0,), False).sample_position = 1
    for name in ("column", "rows", "take_decode_rows", "take_output_rows", "select", "is_windowed"):
        assert hasattr(rrl.FieldBatch, name) or name in rrl.FieldBatch.__slots__, name
    assert rrl.ColumnDecoder[torch.Tensor] is not None  # generic, subscriptable
    with pytest.raises(TypeError):
        rrl.ColumnDecoder()  # abstract: decode is required

    class Plain(rrl.ColumnDecoder[torch.Tensor]):
        def decode(self, batch, requests):
            return []

    class PlainRef(ref.ColumnDecoder[torch.Tensor]):
        def decode(self, batch, requests):
            return []

    for d in (Plain(), PlainRef()):
        assert d.prior_keyframe_path("/cam:VideoStream:sample") is None and d.fill_latest_at is True
    assert repr(Plain()) == "Plain()" and repr(PlainRef()) == "PlainRef()"
    assert rrl.VideoFrameDecoder().prior_keyframe_path(VIDEO) == ref.VideoFrameDecoder().prior_keyframe_path(
        VIDEO
    )


def _batch_outcome(m: Any, column: Any, select: Any, request: tuple, windowed: bool) -> list:
    out = []
    try:
        batch = m.FieldBatch(column=column, select=select, is_windowed=windowed)
    except Exception as e:  # noqa: BLE001 - compared
        return [(type(e).__name__, str(e))]
    req = m.DecodeRequest(0, "s", 3, *request, False)
    for what in (
        lambda: batch.column,
        lambda: batch.rows(1, 4),
        lambda: batch.rows(0, 2),
        lambda: batch.take_decode_rows(req),
        lambda: batch.take_output_rows(req),
    ):
        try:
            out.append(what().to_pylist())
        except Exception as e:  # noqa: BLE001 - compared
            out.append((type(e).__name__, str(e)))
    return out


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(
    "select, request_rows",
    [
        (None, ((0, 1, 2, 3), (3, 3, 1))),
        (".[0]", ((4, 2), (2,))),
        ("[]", ((0, 1), (0, 1))),  # changes the number of rows: take_output_rows refuses
        (None, ((), (0,))),
    ],
)
def test_field_batch_matches_rerun(chunked, select, request_rows):
    from rerun.chunk import Selector

    rows = [[1.0, 2.0], None, [3.0], [], [4.0, 5.0, 6.0]]
    column = pa.array(rows, type=pa.list_(pa.float64()))
    if chunked:
        column = pa.chunked_array([column.slice(0, 2), column.slice(2, 1), column.slice(3, 2)])
    ours = _batch_outcome(rrl, column, None if select is None else Selector(select), request_rows, True)
    theirs = _batch_outcome(ref, column, None if select is None else Selector(select), request_rows, True)
    assert ours == theirs
    assert _batch_outcome(rrl, pa.array([1.0]), None, request_rows, False) == _batch_outcome(
        ref, pa.array([1.0]), None, request_rows, False
    )  # not a component column: the same TypeError


def test_cell_views_are_slices_of_the_chunks():
    """The batch of a latest-at field is built of views of the engine's chunks (internal helper):
    the same rows as a take, without copying the blobs."""
    from rrloader._loader._decoders import _cell_views

    blobs = pa.array([[b"a" * 10], [b"bb"], None, [b"ccc", b"d"], []], type=pa.list_(pa.binary()))
    col = pa.chunked_array([blobs.slice(0, 2), blobs.slice(2, 3), pa.array([[b"z"]], type=blobs.type)])
    rows = np.array([0, 1, 1, -1, -1, 3, 4, 5, 2, -1, 0], dtype=np.int64)
    views = _cell_views(col, rows)
    assert views.to_pylist() == col.take(pa.array(rows, mask=rows < 0, type=pa.int64())).to_pylist()
    # runs: [0, 1], [1], nulls, [3, 4], [5], [2], null, [0]
    assert [len(c) for c in views.chunks] == [2, 1, 2, 2, 1, 1, 1, 1]
    data = {c.buffers()[4].address for c in col.chunks}
    assert {c.buffers()[4].address for c in views.chunks if c.null_count < len(c)} <= data
    assert len(_cell_views(col, np.array([], dtype=np.int64))) == 0
