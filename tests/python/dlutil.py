"""Small recordings (written with rerun-sdk) for the dataloader tests, and their known contents.

Shared by several test modules: only add functions here, do not change existing ones.

Every writer takes an output folder, writes one ``.rrd`` per segment (the recording id is the
segment id) and returns the paths. Nothing is logged on ``log_time``/``log_tick``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa

APP_ID = "rrloader_dltest"
T0_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
FRAME_NS = 10_000_000  # nominal 100 Hz on the "time" timeline
DUR_FRAME_NS = 20_000_000  # nominal 50 Hz on the "dur" timeline

# --------------------------------------------------------------------------------------------------
# The numeric dataset: three segments on three timelines (frame: sequence, time: timestamp,
# dur: duration). Frames logged per segment (every entity's times come from its frame):
NUM_FRAMES: dict[str, list[int]] = {
    "seg_a": list(range(0, 12)),
    "seg_b": list(range(5, 10)),
    "seg_c": [3],  # one frame: one sample on the frame timeline
}


def num_time_ns(seg: str, frame: int) -> int:
    """The "time" value (ns since epoch) of `frame` in `seg`: off the 100 Hz grid by 0-2 ms."""
    k = sorted(NUM_FRAMES).index(seg)
    return T0_NS + k * 60_000_000_000 + frame * FRAME_NS + (frame % 3) * 1_000_000


def num_dur_ns(seg: str, frame: int) -> int:
    """The "dur" value (ns) of `frame` in `seg`: off the 50 Hz grid by 0 or 3 ms."""
    return frame * DUR_FRAME_NS + (frame % 2) * 3_000_000


def state_value(seg: str, frame: int) -> np.ndarray:
    k = sorted(NUM_FRAMES).index(seg)
    return (k * 1000 + frame * 10 + np.arange(7)).astype(np.float64)


# Sparse single scalars, logged in this (unsorted) order: frame -> value.
SCALAR_LOGS: dict[str, list[tuple[int, float]]] = {
    "seg_a": [(9, 9.5), (2, 2.5), (5, 5.5)],
    "seg_b": [(7, 70.5)],
    "seg_c": [],
}

NUM_COLUMNS = {
    "state": "/state:Scalars:scalars",  # 7 float64 at every frame
    "scalar": "/scalar:Scalars:scalars",  # 1 float64, sparse, out of order
    "vec3": "/vec3:Vec3:v",  # 2 x FixedSizeList<float32, 3>, even frames
    "i32": "/ints:Ints:i32",  # 3 int32, frames % 3 == 0
    "i64": "/ints:Ints:i64",  # 2 int64, frames % 3 == 0
    "nested": "/nested:Nest:v",  # List<List<float64>> [[a, b], [c]], frames 0 and 6
    "static": "/static:Scalars:scalars",  # static [42, 43]
    "cleared": "/cleared:Scalars:scalars",  # seg_a: 1 -> Clear at 4 -> 8 -> empty at 10
    "nully": "/nully:Nully:v",  # seg_a: [5, 6] at 2, [1, null] at 6
}


def _set_times(rec, seg: str, frame: int) -> None:
    rec.reset_time()
    rec.set_time("frame", sequence=frame)
    rec.set_time("time", timestamp=np.datetime64(num_time_ns(seg, frame), "ns"))
    rec.set_time("dur", duration=np.timedelta64(num_dur_ns(seg, frame), "ns"))


def write_numeric_dataset(out_dir: str | Path) -> list[Path]:
    """The numeric dataset described by NUM_FRAMES / SCALAR_LOGS / NUM_COLUMNS."""
    import rerun as rr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seg, frames in NUM_FRAMES.items():
        path = out / f"{seg}.rrd"
        with rr.RecordingStream(APP_ID, recording_id=seg, send_properties=False) as rec:
            rec.save(path)
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            rec.log("/static", rr.Scalars(np.array([42.0, 43.0])), static=True)
            fr = np.asarray(frames, dtype=np.int64)
            rec.send_columns(
                "/state",
                indexes=[
                    rr.TimeColumn("frame", sequence=fr),
                    rr.TimeColumn(
                        "time",
                        timestamp=np.array([num_time_ns(seg, f) for f in frames]).astype("datetime64[ns]"),
                    ),
                    rr.TimeColumn(
                        "dur",
                        duration=np.array([num_dur_ns(seg, f) for f in frames]).astype("timedelta64[ns]"),
                    ),
                ],
                columns=rr.Scalars.columns(scalars=np.stack([state_value(seg, f) for f in frames])),
            )
            for f, v in SCALAR_LOGS[seg]:
                _set_times(rec, seg, f)
                rec.log("/scalar", rr.Scalars(np.array([v])))
            for f in frames:
                if f % 2 == 0:
                    _set_times(rec, seg, f)
                    v = pa.array([[f, f + 0.5, -f], [2 * f, 0.25, 1.0]], type=pa.list_(pa.float32(), 3))
                    rec.log("/vec3", rr.DynamicArchetype("Vec3", components={"v": v}))
                if f % 3 == 0:
                    _set_times(rec, seg, f)
                    comps = {
                        "i32": pa.array([f, -f, 7], type=pa.int32()),
                        "i64": pa.array([2**40 + f, -3], type=pa.int64()),
                    }
                    rec.log("/ints", rr.DynamicArchetype("Ints", components=comps))
                if f in (0, 6):
                    _set_times(rec, seg, f)
                    v = pa.array([[f + 1.0, f + 2.0], [f + 3.0]], type=pa.list_(pa.float64()))
                    rec.log("/nested", rr.DynamicArchetype("Nest", components={"v": v}))
            if seg == "seg_a":
                _set_times(rec, seg, 1)
                rec.log("/cleared", rr.Scalars(np.array([1.0])))
                _set_times(rec, seg, 4)
                rec.log("/cleared", rr.Clear(recursive=False))
                _set_times(rec, seg, 8)
                rec.log("/cleared", rr.Scalars(np.array([2.0])))
                _set_times(rec, seg, 10)
                rec.log("/cleared", rr.Scalars(np.zeros(0)))
                _set_times(rec, seg, 2)
                rec.log("/nully", rr.DynamicArchetype("Nully", components={"v": pa.array([5.0, 6.0])}))
                _set_times(rec, seg, 6)
                rec.log("/nully", rr.DynamicArchetype("Nully", components={"v": pa.array([1.0, None])}))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------
# Images


def pattern_rgb(h: int, w: int, k: int) -> np.ndarray:
    """A deterministic RGB test pattern (varies with k)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [(x * 13 + k * 40) % 256, (y * 29 + k * 7) % 256, ((x + y) * 5 + k * 90) % 256], -1
    ).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pillow_chw(blob: bytes, expand_palette: bool = True) -> np.ndarray:
    """What Pillow decodes from `blob`, as [C, H, W] uint8 (palette images expanded to RGB/RGBA)."""
    from PIL import Image

    img = Image.open(io.BytesIO(blob))
    if expand_palette and img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def image_blobs() -> dict[str, list[bytes]]:
    """Encoded images per entity, one per frame 0..3 (same size within an entity)."""
    frames = range(4)
    gray = [pattern_rgb(6, 10, k)[:, :, 0] for k in frames]
    rgba = [np.dstack([pattern_rgb(5, 7, k), np.full((5, 7), 17 * (k + 1), np.uint8)]) for k in frames]
    return {
        "/jpeg": [encode(pattern_rgb(16, 24, k), "JPEG", quality=90) for k in frames],
        "/jpeg_gray": [encode(g, "JPEG", quality=80) for g in gray],
        "/png_rgb": [encode(pattern_rgb(5, 7, k), "PNG") for k in frames],
        "/png_rgba": [encode(a, "PNG") for a in rgba],
        "/png_gray": [encode(g, "PNG") for g in gray],
        "/png_palette": [encode(pattern_rgb(5, 7, k), "PNG", mode="P") for k in frames],
    }


def raw_images() -> dict[str, tuple[np.ndarray, str]]:
    """Raw images per entity: (array logged at frame k = array + k, color model)."""
    base = pattern_rgb(3, 5, 0)
    return {
        "/raw_l": (base[:, :, 1].copy(), "L"),
        "/raw_rgb": (base, "RGB"),
        "/raw_rgba": (np.dstack([base, base[:, :, :1] // 2]), "RGBA"),
        "/raw_bgr": (base, "BGR"),
    }


def corrupt_jpeg() -> bytes:
    good = encode(pattern_rgb(16, 16, 3), "JPEG", quality=90)
    return good[:200] + bytes(b ^ 0x5A for b in good[200:400]) + good[400:]


def write_image_dataset(out_dir: str | Path, seg: str = "img_seg") -> list[Path]:
    """One segment, frames 0..3: the entities of image_blobs() and raw_images(); `/bad` (corrupt
    JPEG at frame 2, a good one before) and `/blobless` (Scalars, for the wrong-decoder error)."""
    import rerun as rr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{seg}.rrd"
    blobs = image_blobs()
    raws = raw_images()
    with rr.RecordingStream(APP_ID, recording_id=seg, send_properties=False) as rec:
        rec.save(path)
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        for k in range(4):
            rec.set_time("frame", sequence=k)
            for ent, bs in blobs.items():
                mt = "image/jpeg" if "jpeg" in ent else "image/png"
                rec.log(ent, rr.EncodedImage(contents=bs[k], media_type=mt))
            for ent, (arr, model) in raws.items():
                rec.log(ent, rr.Image((arr.astype(np.int32) + k).astype(np.uint8), color_model=model))
            rec.log("/blobless", rr.Scalars(np.array([float(k)])))
        rec.set_time("frame", sequence=0)
        rec.log(
            "/bad", rr.EncodedImage(contents=encode(pattern_rgb(16, 16, 0), "JPEG"), media_type="image/jpeg")
        )
        rec.set_time("frame", sequence=2)
        rec.log("/bad", rr.EncodedImage(contents=corrupt_jpeg(), media_type="image/jpeg"))
    return [path]


# --------------------------------------------------------------------------------------------------
# Structs, instance joins, odd widths

ANIMAL_TYPE = pa.struct([("dog", pa.float64()), ("cat", pa.int32())])


def animals_at(frame: int) -> list[dict]:
    """The instances of /agent:ListOfStructs:animals at `frame` (frame 2 has only one)."""
    n = 1 if frame == 2 else 2
    return [{"dog": float(frame) + 100 * i, "cat": 10 * (i + 1) + frame} for i in range(n)]


PTS_COLORS = [0xFF000011, 0x00FF0022]  # logged once at frame 0
PTS_RADII = [0.5]  # logged at frame 1
PTS_POSITIONS = {2: [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], 4: [[-1.0, -2.0, -3.0]]}


def write_misc_dataset(out_dir: str | Path, seg: str = "misc_seg") -> list[Path]:
    """One segment, frames 0..5.

    * ``/agent:ListOfStructs:animals``: List<Struct<dog: f64, cat: i32>>, animals_at(f) at every frame
    * ``/pts``: Points3D, colors at 0, radii at 1, positions at 2 (3 points) and 4 (1 point)
    * ``/var:Scalars:scalars``: 1 value at frames 0, 1, 2; 2 values at 3, 4, 5
    * ``/late:Scalars:scalars``: only from frame 3 on (value = frame)
    """
    import rerun as rr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{seg}.rrd"
    with rr.RecordingStream(APP_ID, recording_id=seg, send_properties=False) as rec:
        rec.save(path)
        rec.set_log_time_enabled(False)
        rec.set_log_tick_enabled(False)
        for f in range(6):
            rec.set_time("frame", sequence=f)
            animals = pa.array(animals_at(f), type=ANIMAL_TYPE)
            rec.log("/agent", rr.DynamicArchetype("ListOfStructs", components={"animals": animals}))
            rec.log("/var", rr.Scalars(np.arange(1 if f < 3 else 2, dtype=np.float64) + f))
            if f >= 3:
                rec.log("/late", rr.Scalars(np.array([float(f)])))
            if f == 0:
                rec.log("/pts", rr.Points3D.from_fields(colors=np.array(PTS_COLORS, dtype=np.uint32)))
            if f == 1:
                rec.log("/pts", rr.Points3D.from_fields(radii=np.array(PTS_RADII, dtype=np.float32)))
            if f in PTS_POSITIONS:
                rec.log(
                    "/pts", rr.Points3D.from_fields(positions=np.array(PTS_POSITIONS[f], dtype=np.float32))
                )
    return [path]


def write_api_datasets(root: str | Path) -> Path:
    """The numeric, image and misc datasets under ``root/num``, ``root/img`` and ``root/misc``
    (the API tests read them embedded, the remote tests through a catalog server)."""
    root = Path(root)
    write_numeric_dataset(root / "num")
    write_image_dataset(root / "img")
    write_misc_dataset(root / "misc")
    return root
