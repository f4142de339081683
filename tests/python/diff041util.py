"""Shared by the 0.41 front end's acceptance tests (differential, how-to, DDP): seeded random
recordings, one description of a run that either front end executes, and sample comparison.

Nothing here imports ``rerun.experimental.dataloader`` (the reference needs a torchvision
stand-in first; that lives in ``diff041ref.py``), so rrloader's spawned workers stay light.

* ``plan_dataset(seed)`` -> ``DatasetPlan``: pure data, every value of every segment;
  ``write_dataset(plan, folder)`` logs it with rerun-sdk (one ``.rrd`` per segment).
* ``make_case(n)`` -> ``Case``: a random query on dataset ``n // CASES_PER_DATASET``: index,
  sampling, fields (key, entity, decoder, window) in a random key order, fetch block size,
  the strategies' buffer sizes, the map dataset's index batches, the skip-limit probes.
* ``run(m, source, case, config)`` -> ``Outcome``: runs one configuration with module ``m``
  (``rerun.experimental.dataloader`` or ``rrloader.experimental.dataloader``; the same code for
  both, only the import differs) and records the samples (bytes, dtype, shape of every value),
  the ``RuntimeWarning``s about skipped fields and the error that ended it, if any.
* ``Switch``: one persistent spawned-worker ``DataLoader`` that can iterate any of a list of
  datasets at any epoch, so a whole test session spawns its workers once per front end.

Deliberate differences of rrloader (documented in docs/dataloader.md) are kept out of the
generated data: corrupt images (Pillow may conceal the damage where rrloader reports
``None``) and null values inside a numeric cell (0.41 gives NaN, rrloader ``None``). Video
keyframe markers: rerun-sdk requires the ``is_keyframe`` column; rrloader does not, so each
stream is logged twice, ``/cam_k`` with the markers and ``/cam_n`` without, and rrloader reads
``/cam_n`` in most cases while the reference always reads ``/cam_k``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

APP_ID = "rrloader_diff041"
T0_NS = 1_714_000_000_000_000_000
PERIOD_NS = 50_000_000  # frames are logged about 20 Hz apart on "time" and "dur"
CASES_PER_DATASET = max(1, int(os.environ.get("RRLOADER_D41_CASES_PER_DATASET", "2")))

# --------------------------------------------------------------------------------------------------
# Recordings

ENTITIES = {
    # field kind -> (entity, component column suffix)
    "state": ("/state", "Scalars:scalars"),
    "static": ("/static", "Scalars:scalars"),
    "scalar": ("/scalar", "Scalars:scalars"),
    "i32": ("/ints", "Ints:i32"),
    "i64": ("/ints", "Ints:i64"),
    "vec": ("/vec", "Vec:v"),
    "nested": ("/nested", "Nest:v"),
    "jpeg": ("/jpeg", "EncodedImage:blob"),
    "png": ("/png", "EncodedImage:blob"),
    "video": ("/cam_k", "VideoStream:sample"),
}
VIDEO_W, VIDEO_H = 32, 24
IMAGE_W, IMAGE_H = 12, 8


@dataclasses.dataclass
class SegmentPlan:
    segment_id: str
    frames: list[int]  # frames with any data, ascending
    t_ns: dict[int, int]  # frame -> "time" (ns since epoch) and, minus the segment's base, "dur"
    base_ns: int
    logs: dict[str, dict[int, Any]]  # kind -> frame -> value (numpy array, bytes, packet)
    scalar_log_order: list[int]  # the order the sparse scalars are logged in (unsorted)
    video_keyframes: dict[int, bool]
    keyframe_logging: str  # "sparse" | "dense"


@dataclasses.dataclass
class DatasetPlan:
    seed: int
    segments: list[SegmentPlan]

    def segment_ids(self) -> list[str]:
        return [s.segment_id for s in self.segments]


def _image_bytes(rng: np.random.Generator, fmt: str, mode: str) -> bytes:
    from PIL import Image

    h, w = IMAGE_H, IMAGE_W
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 6, (h, w), dtype=np.uint8), mode="P")
        img.putpalette([int(v) for v in rng.integers(0, 256, 6 * 3)])
    else:
        bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 20 + y * 7 + 40 * c) % 256 for c in range(bands)], -1)
        arr = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if bands == 1 else arr, mode=mode)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def _h264(n: int, gop: int, seed: int) -> tuple[list[bytes], list[bool]]:
    import videoutil

    return videoutil.encode("h264", VIDEO_W, VIDEO_H, n, gop, seed=seed)


def plan_dataset(seed: int) -> DatasetPlan:
    """Every value of dataset ``seed`` (1-3 segments, 12-30 frames each with gaps)."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    n_seg = r.choice([1, 2, 2, 3])
    names = [f"ep{r.randrange(100):02d}{chr(97 + k)}" for k in range(n_seg)]  # written in this order
    segments = []
    for k, seg in enumerate(names):
        start = r.randrange(0, 6)
        length = r.randrange(12, 31)
        gap_p = r.choice([0.0, 0.1, 0.25])
        frames = [
            f for f in range(start, start + length) if f in (start, start + length - 1) or r.random() >= gap_p
        ]
        if r.random() < 0.4 and len(frames) > 8:  # a run of missing frames
            a = r.randrange(1, len(frames) - 4)
            del frames[a : a + r.randrange(2, 4)]
        base = T0_NS + k * 3_600_000_000_000 + r.randrange(0, 10**9)
        t_ns = {f: base + f * PERIOD_NS + r.randrange(0, PERIOD_NS // 4) for f in frames}
        logs: dict[str, dict[int, Any]] = {}

        def some(p: float, late: float = 0.0, frames: list[int] = frames) -> list[int]:
            first = frames[min(len(frames) - 1, int(len(frames) * r.random() * late))]
            return [f for f in frames if f >= first and r.random() < p]

        width = r.choice([1, 2, 3])
        logs["state"] = {f: rng.normal(size=width) for f in some(1.0, late=r.choice([0.0, 0.0, 0.3]))}
        # The sparse scalar: a value, sometimes an empty cell ([]), sometimes a Clear (None).
        logs["scalar"] = {
            f: None if x < 0.07 else rng.normal(size=0 if x < 0.14 else 1)
            for f in some(r.choice([0.3, 0.6]), late=0.2)
            for x in [r.random()]
        }
        # Rewrites of logged states at the same frame, logged later (the later row wins).
        logs["state_dup"] = {f: rng.normal(size=width) for f in logs["state"] if r.random() < 0.1}
        logs["static"] = {} if k and r.random() < 0.2 else {0: rng.normal(size=2)}
        ints = some(r.choice([0.5, 0.8]))
        logs["i32"] = {
            f: rng.integers(-(2**31), 2**31 - 1, size=2, dtype=np.int64).astype(np.int32) for f in ints
        }
        logs["i64"] = {f: rng.integers(-(2**62), 2**62, size=1, dtype=np.int64) for f in ints}
        vec_n = r.choice([1, 2])
        logs["vec"] = {
            f: rng.normal(size=(vec_n if r.random() < 0.85 else 3 - vec_n, 3)).astype(np.float32)
            for f in some(0.6)
        }
        logs["nested"] = {
            f: [list(rng.normal(size=r.choice([1, 2]))) for _ in range(r.choice([1, 2]))] for f in some(0.5)
        }
        jpeg_mode = r.choice(["RGB", "RGB", "L"])
        logs["jpeg"] = {f: _image_bytes(rng, "JPEG", jpeg_mode) for f in some(r.choice([0.5, 0.9]), late=0.2)}
        png_modes = r.choice([["RGB"], ["P"], ["L", "RGB"], ["RGBA", "P", "LA"]])
        logs["png"] = {f: _image_bytes(rng, "PNG", r.choice(png_modes)) for f in some(r.choice([0.5, 0.9]))}
        v0 = r.randrange(0, max(1, len(frames) // 3))
        v_frames = frames[v0 : len(frames) - r.randrange(0, 3)]
        packets, keys = _h264(len(v_frames), r.randrange(3, 9), seed * 10 + k)
        logs["video"] = dict(zip(v_frames, packets, strict=True))
        for kind in ("jpeg", "png", "i32", "vec", "nested", "video"):
            if k and r.random() < 0.12:  # not in this segment at all (always in the first one)
                logs[kind] = {}
                if kind == "i32":
                    logs["i64"] = {}
        order = sorted(logs["scalar"])
        r.shuffle(order)
        segments.append(
            SegmentPlan(
                segment_id=seg,
                frames=frames,
                t_ns=t_ns,
                base_ns=base - 500_000_000,
                logs=logs,
                scalar_log_order=order,
                video_keyframes=dict(zip(v_frames, keys, strict=True)),
                keyframe_logging=r.choice(["sparse", "dense"]),
            )
        )
    return DatasetPlan(seed=seed, segments=segments)


def _times(seg: SegmentPlan, frames: Sequence[int]) -> list[Any]:
    import rerun as rr

    fr = np.asarray(frames, dtype=np.int64)
    t = np.asarray([seg.t_ns[f] for f in frames], dtype=np.int64)
    return [
        rr.TimeColumn("frame", sequence=fr),
        rr.TimeColumn("time", timestamp=t.astype("datetime64[ns]")),
        rr.TimeColumn("dur", duration=(t - seg.base_ns).astype("timedelta64[ns]")),
    ]


def _set_time(rec: Any, seg: SegmentPlan, f: int) -> None:
    rec.reset_time()
    rec.set_time("frame", sequence=f)
    rec.set_time("time", timestamp=np.datetime64(seg.t_ns[f], "ns"))
    rec.set_time("dur", duration=np.timedelta64(seg.t_ns[f] - seg.base_ns, "ns"))


def write_dataset(plan: DatasetPlan, out_dir: str | Path) -> list[Path]:
    """One ``.rrd`` per segment of ``plan`` (recording id = segment id)."""
    import pyarrow as pa
    import rerun as rr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seg in plan.segments:
        path = out / f"{seg.segment_id}.rrd"
        with rr.RecordingStream(APP_ID, recording_id=seg.segment_id, send_properties=False) as rec:
            rec.save(path)
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            logs = seg.logs

            def columns(entity: str, frames: list[int], cols: Any, seg: SegmentPlan = seg) -> None:
                if frames:
                    rec.send_columns(entity, indexes=_times(seg, frames), columns=cols)

            st = sorted(logs["state"])
            if st:
                columns("/state", st, rr.Scalars.columns(scalars=np.stack([logs["state"][f] for f in st])))
            for f in seg.scalar_log_order:  # one call per value, out of time order
                _set_time(rec, seg, f)
                v = logs["scalar"][f]
                rec.log("/scalar", rr.Clear(recursive=False) if v is None else rr.Scalars(v))
            for f, v in sorted(logs["state_dup"].items()):
                _set_time(rec, seg, f)
                rec.log("/state", rr.Scalars(v))
            for v in logs["static"].values():
                rec.log("/static", rr.Scalars(v), static=True)
            fi = sorted(logs["i32"])
            if fi:
                i32 = pa.array([logs["i32"][f] for f in fi], type=pa.list_(pa.int32()))
                i64 = pa.array([logs["i64"][f] for f in fi], type=pa.list_(pa.int64()))
                columns("/ints", fi, _dynamic_columns("Ints", {"i32": i32, "i64": i64}))
            fv = sorted(logs["vec"])
            if fv:
                v = pa.array([logs["vec"][f].tolist() for f in fv], type=pa.list_(pa.list_(pa.float32(), 3)))
                columns("/vec", fv, _dynamic_columns("Vec", {"v": v}))
            for f in sorted(logs["nested"]):  # List<List<float64>>: one call per row
                _set_time(rec, seg, f)
                v = pa.array(logs["nested"][f], type=pa.list_(pa.float64()))
                rec.log("/nested", rr.DynamicArchetype("Nest", components={"v": v}))
            for kind, media in (("jpeg", "image/jpeg"), ("png", "image/png")):
                fimg = sorted(logs[kind])
                if fimg:
                    columns(
                        ENTITIES[kind][0],
                        fimg,
                        rr.EncodedImage.columns(
                            blob=[logs[kind][f] for f in fimg], media_type=[media] * len(fimg)
                        ),
                    )
            fvid = sorted(logs["video"])
            if fvid:
                for entity in ("/cam_k", "/cam_n"):
                    rec.log(entity, rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
                    for lo in range(0, len(fvid), 7):  # several chunks per stream
                        part = fvid[lo : lo + 7]
                        kwargs: dict[str, Any] = {"sample": [logs["video"][f] for f in part]}
                        if entity == "/cam_k" and seg.keyframe_logging == "dense":
                            kwargs["is_keyframe"] = [seg.video_keyframes[f] for f in part]
                        columns(entity, part, rr.VideoStream.columns(**kwargs))
                    if entity == "/cam_k" and seg.keyframe_logging == "sparse":
                        marks = [f for f in fvid if seg.video_keyframes[f]]
                        columns(entity, marks, rr.VideoStream.columns(is_keyframe=[True] * len(marks)))
        paths.append(path)
    return paths


def _dynamic_columns(archetype: str, components: dict[str, Any]) -> Any:
    """A ``send_columns`` column list of a dynamic archetype whose components are list arrays (one row each)."""
    import rerun as rr

    cols = rr.DynamicArchetype.columns(
        archetype=archetype, components={k: a.flatten() for k, a in components.items()}
    )
    lengths = {len(a) for a in components.values()}
    assert len(lengths) == 1
    return [c.partition(a.value_lengths().to_numpy()) for c, a in zip(cols, components.values(), strict=True)]


# --------------------------------------------------------------------------------------------------
# Cases: a query on a dataset, run under many configurations

FIELD_KINDS = ["state", "static", "scalar", "i32", "i64", "vec", "nested", "jpeg", "png", "video"]
STRATEGIES = ["default", "sample", "block", "blockbuf", "blockbuf_fill", "none"]
DEFAULT_SKIPS = "default"  # max_consecutive_skipped_samples not passed (0.41's default, 1000)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    key: str
    kind: str
    window: tuple[int | float, ...] | None
    rrl_video_entity: str = "/cam_n"  # what rrloader reads for a video field (the reference: /cam_k)

    def path(self, side: str) -> str:
        """The column ``side`` reads: "rrloader", "reference", or "reference-unmarked" (the
        reference on the video stream without ``is_keyframe``, which rerun-sdk refuses)."""
        entity, component = ENTITIES[self.kind]
        if self.kind == "video" and side == "rrloader":
            entity = self.rrl_video_entity
        if self.kind == "video" and side == "reference-unmarked":
            entity = "/cam_n"
        return f"{entity}:{component}"


@dataclasses.dataclass(frozen=True)
class Case:
    number: int
    dataset_seed: int
    index: str  # "frame" (sequence), "time" (timestamp), "dur" (duration)
    rate_hz: float | None
    fields: tuple[FieldSpec, ...]
    fetch_block_size: int
    buffer_size: int
    min_fill: int
    skip_limits: tuple[int, ...]  # max_consecutive_skipped_samples probes (workers 0)

    def describe(self) -> str:
        fields = ", ".join(
            f"{f.key}={f.path('reference')}"
            + (f" window={f.window}" if f.window is not None else "")
            + (f" (rrloader {f.rrl_video_entity})" if f.kind == "video" else "")
            for f in self.fields
        )
        return (
            f"case {self.number}: dataset {self.dataset_seed}, index {self.index!r}, rate {self.rate_hz}, "
            f"fetch_block_size {self.fetch_block_size}, buffer {self.buffer_size}/min_fill {self.min_fill}; {fields}"
        )


@dataclasses.dataclass(frozen=True)
class Config:
    kind: str  # "iter" | "map"
    strategy: str = "default"
    epoch: int = 0
    workers: int = 0
    max_skips: int | None | str = DEFAULT_SKIPS
    map_seed: int = 0

    def label(self) -> str:
        if self.kind == "map":
            return f"map(seed={self.map_seed})"
        skips = "" if self.max_skips == DEFAULT_SKIPS else f", max_skips={self.max_skips}"
        return f"{self.strategy}, epoch {self.epoch}, workers {self.workers}{skips}"


def _window(r: random.Random, index: str) -> tuple[int | float, ...]:
    n = r.choice([1, 2, 3, 4, 5])
    if index == "frame":
        out = [r.randint(-3, 3) for _ in range(n)]
    else:
        out = [r.choice([-0.1, -0.06, -0.05, -0.033, 0.0, 0.0, 0.02, 0.05, 0.1]) for _ in range(n)]
    if n >= 2 and r.random() < 0.3:
        out[-1] = out[0]  # a repeat
    return tuple(out)


def make_case(number: int, seed_offset: int = 0) -> Case:
    """Case ``number``: a random query on dataset ``number // CASES_PER_DATASET + seed_offset``."""
    r = random.Random(f"case-{number + seed_offset * 100003}")
    index = r.choice(["frame", "frame", "time", "dur"])
    rate = None if index == "frame" else r.choice([20.0, 25.0, 13.0, 30.0])
    kinds = r.sample(FIELD_KINDS, r.randint(1, 4))
    if "video" not in kinds and r.random() < 0.5:
        kinds[r.randrange(len(kinds))] = "video"
    if r.random() < 0.3:
        kinds.append("state")  # the same column twice, under another key (and window)
    fields = []
    for k, kind in enumerate(kinds):
        window = _window(r, index) if r.random() < 0.45 else None
        fields.append(FieldSpec(f"{kind}_{k}", kind, window, r.choice(["/cam_n", "/cam_n", "/cam_k"])))
    buffer_size = r.choice([2, 3, 5, 16])
    return Case(
        number=number,
        dataset_seed=number // CASES_PER_DATASET + seed_offset,
        index=index,
        rate_hz=rate,
        fields=tuple(fields),
        fetch_block_size=r.choice([1, 2, 3, 5, 8, 16, 128]),
        buffer_size=buffer_size,
        min_fill=r.randint(1, buffer_size),
        skip_limits=tuple(sorted(r.sample([0, 1, 2, 3, 5], 2))),
    )


def configs(case: Case, *, workers: Sequence[int] = (0, 2)) -> list[Config]:
    """Every strategy x epoch x workers, the map dataset, and the skip-limit probes of ``case``."""
    out = [Config("iter", s, e, w) for w in workers for s in STRATEGIES for e in (0, 1)]
    out.append(Config("map", map_seed=case.number))
    for limit in case.skip_limits:
        out.append(Config("iter", "none", 0, 0, max_skips=limit))
        out.append(Config("iter", "blockbuf", 1, 0, max_skips=limit))
    return out


# --------------------------------------------------------------------------------------------------
# Running a configuration with either front end


def strategy(m: Any, case: Case, name: str) -> Any:
    return {
        "default": None,
        "sample": lambda: m.SampleShuffle(),
        "block": lambda: m.BlockShuffle(),
        "blockbuf": lambda: m.BlockShuffle(buffer_size=case.buffer_size),
        "blockbuf_fill": lambda: m.BlockShuffle(buffer_size=case.buffer_size, min_fill=case.min_fill),
        "none": lambda: m.NoShuffle(),
    }[name]


def make_fields(m: Any, case: Case, side: str) -> dict[str, Any]:
    decoders = {"jpeg": m.ImageDecoder, "png": m.ImageDecoder, "video": m.VideoFrameDecoder}
    return {
        f.key: m.Field(f.path(side), decode=decoders.get(f.kind, m.NumericDecoder)(), window=f.window)
        for f in case.fields
    }


def make_dataset(m: Any, source: Any, case: Case, side: str, config: Config) -> Any:
    fields = make_fields(m, case, side)
    sampling = {} if case.rate_hz is None else {"timeline_sampling": m.FixedRateSampling(case.rate_hz)}
    if config.kind == "map":
        return m.RerunMapDataset(source, case.index, fields, **sampling)
    kwargs: dict[str, Any] = dict(sampling, fetch_block_size=case.fetch_block_size)
    make = strategy(m, case, config.strategy)
    if make is not None:
        kwargs["shuffle_strategy"] = make()
    if config.max_skips != DEFAULT_SKIPS:
        kwargs["max_consecutive_skipped_samples"] = config.max_skips
    return m.RerunIterableDataset(source, case.index, fields, **kwargs)


Value = tuple[str, tuple[int, ...], bytes] | tuple[str, str] | None


def encode_value(v: Any) -> Value:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        t = v.detach().contiguous()
        return (str(t.dtype), tuple(t.shape), t.numpy().tobytes())
    return (type(v).__name__, repr(v))


def encode_sample(sample: Any) -> list[tuple[str, Value]] | tuple[str, str]:
    if not isinstance(sample, dict):
        return (type(sample).__name__, repr(sample)[:200])
    return [(k, encode_value(v)) for k, v in sample.items()]


@dataclasses.dataclass
class Outcome:
    length: int | None = None  # len(dataset)
    samples: list[Any] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: tuple[str, str] | None = None  # (type name, message) of what ended the run


def _record_error(out: Outcome, e: BaseException, *, in_worker: bool) -> None:
    message = str(e)
    if in_worker:
        # DataLoader re-raises a worker's exception with its traceback in the message: keep
        # the original exception's last line ("RuntimeError: ...").
        lines = [ln for ln in message.strip().splitlines() if ln.strip()]
        message = lines[-1] if lines else message
    out.error = (type(e).__name__, message)


def map_batches(n: int, seed: int) -> list[list[int]]:
    """The index lists a map configuration asks for: every index once in random order, cut into
    batches of 1-9, some with repeats."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).tolist()
    out = []
    while perm:
        k = int(rng.integers(1, 10))
        batch, perm = perm[:k], perm[k:]
        if batch and rng.random() < 0.3:
            batch.append(batch[int(rng.integers(len(batch)))])
        out.append(batch)
    return out


def run(m: Any, source: Any, case: Case, side: str, config: Config) -> Outcome:
    """Run ``config`` of ``case`` in this process with workers 0 (see ``Switch`` for workers > 0)."""
    out = Outcome()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # construction warnings (fork) are not compared
        try:
            ds = make_dataset(m, source, case, side, config)
            out.length = len(ds)
        except Exception as e:  # noqa: BLE001 - the outcome is compared
            _record_error(out, e, in_worker=False)
            return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if config.kind == "map":
                for batch in map_batches(out.length, config.map_seed):
                    out.samples.extend(encode_sample(s) for s in ds.__getitems__(batch))
                if out.length:
                    out.samples.append(encode_sample(ds[out.length - 1]))
                try:
                    ds.__getitems__([out.length])
                    out.samples.append("no IndexError past the end")
                except IndexError:
                    pass
            else:
                ds.set_epoch(config.epoch)
                for s in ds:
                    out.samples.append(encode_sample(s))
        except Exception as e:  # noqa: BLE001
            _record_error(out, e, in_worker=False)
    # rerun-sdk's own numpy casts warn too ("invalid value encountered in cast": it casts a fetched
    # index column holding nulls, the static rows of a range query); those are not its API.
    out.warnings = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, RuntimeWarning) and not str(w.message).startswith("invalid value encountered")
    ]
    return out


class Switch(torch.utils.data.IterableDataset):
    """Iterates ``datasets[i]`` at epoch ``e`` where ``(i, e)`` is set by ``select`` (shared memory):
    one persistent spawned-worker DataLoader serves every (dataset, epoch) of a session."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        super().__init__()
        self.datasets = list(datasets)
        self.selected = torch.zeros(2, dtype=torch.int64).share_memory_()

    def __iter__(self):
        i, epoch = (int(v) for v in self.selected.tolist())
        ds = self.datasets[i]
        ds.set_epoch(epoch)
        return iter(ds)


class WorkerRunner:
    """Runs iterable configurations with 2 spawned DataLoader workers (persistent: spawned once)."""

    def __init__(self, datasets: dict[Any, Any], workers: int = 2, switch_type: type[Switch] | None = None) -> None:
        self.keys = list(datasets)
        self.switch = (switch_type or Switch)([datasets[k] for k in self.keys])
        self.loader = torch.utils.data.DataLoader(
            self.switch,
            batch_size=None,
            num_workers=workers,
            multiprocessing_context="spawn",
            persistent_workers=True,
        )

    def run(self, key: Any, epoch: int, length: int) -> Outcome:
        out = Outcome(length=length)
        self.switch.selected.copy_(torch.tensor([self.keys.index(key), epoch]))
        try:
            for s in self.loader:
                out.samples.append(encode_sample(s))
        except Exception as e:  # noqa: BLE001
            _record_error(out, e, in_worker=True)
        return out

    def close(self) -> None:
        it = getattr(self.loader, "_iterator", None)
        if it is not None:
            it._shutdown_workers()


# --------------------------------------------------------------------------------------------------
# Comparison


def _fmt(v: Value) -> str:
    if v is None:
        return "None"
    if len(v) == 3:
        dtype, shape, data = v
        arr = np.frombuffer(data, dtype=np.dtype(dtype.replace("torch.", "")))
        return f"{dtype}{list(shape)} {np.array2string(arr[:8], precision=6)}{'...' if arr.size > 8 else ''}"
    return f"{v[0]} {v[1]}"


def sample_diff(ours: Any, theirs: Any) -> str | None:
    """Why two encoded samples differ, or None."""
    if ours == theirs:
        return None
    if not isinstance(ours, list) or not isinstance(theirs, list):
        return f"rrloader {ours!r:.200} vs rerun-sdk {theirs!r:.200}"
    ok, tk = [k for k, _ in ours], [k for k, _ in theirs]
    if ok != tk:
        return f"keys: rrloader {ok} vs rerun-sdk {tk}"
    for (k, a), (_, b) in zip(ours, theirs, strict=True):
        if a == b:
            continue
        if a is None or b is None or len(a) != 3 or len(b) != 3:
            return f"{k!r}: rrloader {_fmt(a)} vs rerun-sdk {_fmt(b)}"
        if a[0] != b[0] or a[1] != b[1]:
            return f"{k!r}: rrloader {a[0]}{list(a[1])} vs rerun-sdk {b[0]}{list(b[1])}"
        x = np.frombuffer(a[2], dtype=np.uint8)
        y = np.frombuffer(b[2], dtype=np.uint8)
        bad = np.flatnonzero(x != y)
        return f"{k!r} ({a[0]}{list(a[1])}): bytes differ at {bad.size} of {x.size}: rrloader {_fmt(a)} vs rerun-sdk {_fmt(b)}"
    return "differ"


def sample_ids(samples: Sequence[Any]) -> list[str]:
    """A short fingerprint of each sample (to show where two sequences part)."""
    import hashlib

    return [hashlib.blake2b(repr(s).encode(), digest_size=4).hexdigest() for s in samples]


def outcome_diff(ours: Outcome, theirs: Outcome, *, compare_warnings: bool = True) -> str | None:
    """Why two outcomes differ (the first difference, readable), or None."""
    problems = []
    if ours.length != theirs.length:
        problems.append(f"len(dataset): rrloader {ours.length} vs rerun-sdk {theirs.length}")
    if len(ours.samples) != len(theirs.samples) or ours.samples != theirs.samples:
        n = min(len(ours.samples), len(theirs.samples))
        first = next((i for i in range(n) if ours.samples[i] != theirs.samples[i]), n)
        why = sample_diff(ours.samples[first], theirs.samples[first]) if first < n else "one sequence ended"
        a, b = sample_ids(ours.samples), sample_ids(theirs.samples)
        problems.append(
            f"samples: rrloader {len(ours.samples)} vs rerun-sdk {len(theirs.samples)}; first difference at "
            f"#{first}: {why}\n    rrloader  {' '.join(a[max(0, first - 2) : first + 8])}\n"
            f"    rerun-sdk {' '.join(b[max(0, first - 2) : first + 8])}"
            + (f"\n    (rrloader has it at #{a.index(b[first])})" if first < len(b) and b[first] in a else "")
        )
    if compare_warnings and ours.warnings != theirs.warnings:
        problems.append(f"warnings: rrloader {ours.warnings} vs rerun-sdk {theirs.warnings}")
    if ours.error != theirs.error:
        problems.append(f"error: rrloader {ours.error} vs rerun-sdk {theirs.error}")
    return "; ".join(problems) if problems else None


def format_exception(e: BaseException) -> str:
    return "".join(traceback.format_exception(e))[-3000:]
