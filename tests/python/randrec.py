"""Seeded random Rerun recordings for the differential tests.

A recording is first *planned* (a pure-data list of logging events, fully determined by the seed), then
*written* by replaying the plan through ``rr.RecordingStream``. The plan is kept separate so that

* the tests know the timelines, entities and time values of a dataset without reading it back,
* a failing case can print the exact logging calls that produced its files (``format_plan``),
* a failing case can be shrunk by dropping events and re-writing (``write_plan``).

Entry point: ``write_random_recordings(out_dir, seed, n_segments=None) -> list[Path]``.

Everything about a recording is a function of ``seed`` (and ``n_segments``), except row ids (both sides of
a comparison read the same files, so that does not matter). ``log_time`` is not rerun's wall clock: segments
that "enable" it get a deterministic ``log_time`` timestamp timeline on every temporal ``rec.log`` call (see
``_write_segment``), so a dataset is the same from one run to the next.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Timeline name -> kind. ``log_tick`` is added by rr.log itself when enabled; ``log_time`` is set explicitly
# (deterministic stand-in for rerun's wall-clock log_time) on the temporal rr.log calls of segments with
# ``log_time=True``.
TIMELINES: dict[str, str] = {
    "frame": "sequence",
    "step": "sequence",
    "t": "timestamp",
    "dur": "duration",
}
AUTO_TIMELINES: dict[str, str] = {"log_time": "timestamp", "log_tick": "sequence"}

T_BASE_NS = 1_700_000_000_000_000_000  # timestamps start here (2023-11-14)
T_TICK_NS = 1_000_000  # 1 ms per tick on "t"
DUR_TICK_NS = 10_000_000  # 10 ms per tick on "dur"

# Entity pool: path -> kind. Parents come before children. "/world" and "/sensors" carry no data of their
# own (only clears may be logged on them), which exercises recursive clears on data-less ancestors.
ENTITY_POOL: list[tuple[str, str]] = [
    ("/robot", "transform"),
    ("/robot/arm", "scalars_var"),
    ("/robot/arm/joint0", "scalar"),
    ("/robot/arm/joint1", "scalar"),
    ("/robot/cam", "blob"),
    ("/robot/cam/depth", "image"),
    ("/robot/points", "points"),
    ("/world/notes", "text"),
    ("/world/cloud", "points"),
    ("/world/cloud/labels", "text"),
    ("/sensors/imu", "scalars_var"),
    ("/sensors/imu/temp", "scalar"),
    ("/sensors/cam2", "blob"),
    ("/config", "text"),
    ("/empty", "scalar"),
    ("/odd/joint 2", "scalar"),  # needs escaping: column "/odd/joint\ 2:Scalars:scalars"
]
DATALESS_PARENTS = ["/world", "/sensors", "/odd"]

KIND_ARCHETYPE = {
    "scalar": "Scalars",
    "scalars_var": "Scalars",
    "points": "Points3D",
    "text": "TextDocument",
    "blob": "EncodedImage",
    "transform": "Transform3D",
    "image": "Image",
}


@dataclass
class EntityPlan:
    path: str
    kind: str
    mode: str  # "temporal" | "static_only" | "static_and_temporal" | "empty_only" | "timeless"
    timelines: list[str]


@dataclass
class SegmentPlan:
    segment_id: str
    app_id: str
    file_name: str
    write_footer: bool
    log_time: bool
    log_tick: bool
    send_properties: bool
    recording_name: str | None
    batcher: dict[str, int] | None  # ChunkBatcherConfig kwargs, None = default config
    entities: list[EntityPlan]
    events: list[dict[str, Any]] = field(default_factory=list)

    def timelines(self) -> set[str]:
        out: set[str] = set()
        for ev in self.events:
            if ev["op"] == "log" and not ev.get("static"):
                out.update(ev["times"])
            elif ev["op"] == "columns":
                out.update(ev["times"])
        if self.log_tick and any(ev["op"] == "log" and not ev.get("static") for ev in self.events):
            out.add("log_tick")
        if self.log_time and any(ev["op"] == "log" and not ev.get("static") for ev in self.events):
            out.add("log_time")
        return out

    def time_values(self, timeline: str) -> list[int]:
        vals: list[int] = []
        for ev in self.events:
            if ev["op"] in ("log", "columns") and timeline in ev.get("times", {}):
                v = ev["times"][timeline]
                vals.extend(v if isinstance(v, list) else [v])
        return vals

    def entity_paths(self) -> set[str]:
        return {ev["entity"] for ev in self.events if "entity" in ev}


@dataclass
class DatasetPlan:
    seed: int
    segments: list[SegmentPlan]
    # Files: each is a list of segment indices written (byte-concatenated) into that one file.
    files: list[list[int]]

    def segment_ids(self) -> list[str]:
        return [s.segment_id for s in self.segments]

    def timelines(self) -> dict[str, str]:
        names: set[str] = set()
        for s in self.segments:
            names |= s.timelines()
        kinds = {**TIMELINES, **AUTO_TIMELINES}
        return {n: kinds[n] for n in sorted(names)}

    def time_values(self, timeline: str) -> dict[str, list[int]]:
        return {s.segment_id: s.time_values(timeline) for s in self.segments}

    def entity_paths(self) -> list[str]:
        out: set[str] = set()
        for s in self.segments:
            out |= s.entity_paths()
        return sorted(out)


# ----------------------------------------------------------------------------------------------------------
# Planning


def _rand_float(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.03:
        return float("nan")
    if r < 0.05:
        return float(rng.choice([-0.0, 1e300, -1e-300, float("inf")]))
    return rng.randint(-400, 400) / 4.0


def _payload(rng: random.Random, kind: str, *, empty: bool = False, full: bool = False) -> dict[str, Any]:
    """Random archetype payload. ``full``: always the same set of components (used for static data).

    Static (and timeless: temporal without any timeline) logs of one entity always use one component set, so
    they land in one batcher bucket and their chunks are written in row-id order. With several component
    sets, the batcher's final flush writes the buckets in a random order, and rerun-sdk 0.41 resolves static
    data by chunk order rather than by row id in some query paths (docs/query-semantics.md, item 8): the
    same logging calls would then give different reference answers from one write to the next.
    """
    if kind == "scalar":
        return {"kind": "scalars", "values": [] if empty else [_rand_float(rng)]}
    if kind == "scalars_var":
        n = 0 if empty else rng.choice([0, 1, 1, 2, 3, 5])
        return {"kind": "scalars", "values": [_rand_float(rng) for _ in range(n)]}
    if kind == "points":
        n = 0 if empty else rng.choice([1, 2, 3, 4])
        p: dict[str, Any] = {"kind": "points", "clear_unset": False}
        p["positions"] = [[rng.randint(-8, 8) / 2.0 for _ in range(3)] for _ in range(n)]
        if empty:
            if full:
                p["colors"], p["radii"] = [], []
            return p
        if full:
            p["colors"] = [rng.getrandbits(32) for _ in range(n)]
            p["radii"] = [rng.randint(1, 9) / 8.0 for _ in range(n)]
            return p
        r = rng.random()
        if r < 0.15:  # partial update: only radii, maybe clearing the other components
            del p["positions"]
            p["radii"] = [rng.randint(1, 9) / 8.0 for _ in range(rng.choice([1, n]))]
            p["clear_unset"] = rng.random() < 0.5
            return p
        if rng.random() < 0.6:
            p["colors"] = [rng.getrandbits(32) for _ in range(rng.choice([1, n]))]
        if rng.random() < 0.6:
            p["radii"] = [rng.randint(1, 9) / 8.0 for _ in range(n)]
        return p
    if kind == "text":
        words = ["alpha", "beta", "gamma", "δέλτα", "", "x" * 40, "line\nbreak", "tab\there"]
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 3)))
        mt = rng.choice(
            ["text/plain", "text/markdown"] if full else [None, None, "text/plain", "text/markdown"]
        )
        return {"kind": "text", "text": text, "media_type": mt}
    if kind == "blob":
        n = rng.choice([0, 1, 4, 16, 33])
        return {
            "kind": "blob",
            "contents": bytes(rng.getrandbits(8) for _ in range(n)),
            "media_type": rng.choice(["image/jpeg", "image/jpeg", "image/png"]),
        }
    if kind == "transform":
        p = {"kind": "transform"}
        if full or rng.random() < 0.8:
            p["axis"] = [float(rng.randint(-2, 2)) for _ in range(2)] + [1.0]
            p["angle"] = rng.randint(-31, 31) / 10.0
        if full or rng.random() < 0.5 or "axis" not in p:
            p["translation"] = [rng.randint(-5, 5) / 2.0 for _ in range(3)]
        return p
    if kind == "image":
        h, w = rng.randint(1, 3), rng.randint(1, 4)
        channels = rng.choice([None, 3])
        shape = (h, w) if channels is None else (h, w, channels)
        data = [rng.getrandbits(8) for _ in range(int(np.prod(shape)))]
        return {"kind": "image", "shape": list(shape), "data": data}
    raise ValueError(kind)


class _Clock:
    """Per-timeline time cursor: mostly forward, sometimes the same tick (ties) or backwards."""

    def __init__(self, rng: random.Random, name: str):
        self.rng = rng
        self.name = name
        self.tick = rng.randint(-3, 3) if name == "step" else rng.randint(0, 5)

    def next(self) -> int:
        r = self.rng.random()
        if r < 0.15:
            pass  # same time again -> row-id tie-break
        elif r < 0.27:
            self.tick -= self.rng.randint(1, 6)  # out of order
        else:
            self.tick += self.rng.choice([1, 1, 1, 2, 3, 7])
        if self.name != "step":
            self.tick = max(self.tick, 0)
        return self.value(self.tick)

    def value(self, tick: int) -> int:
        return tick_to_value(self.name, tick)


def tick_to_value(timeline: str, tick: int) -> int:
    if timeline == "t":
        return T_BASE_NS + tick * T_TICK_NS
    if timeline == "dur":
        return tick * DUR_TICK_NS
    return tick


def _plan_segment(rng: random.Random, seed: int, k: int, pool: list[tuple[str, str]], timelines: list[str]):
    seg_id = f"seg_{seed}_{k}"
    n_ent = rng.randint(2, min(8, len(pool)))
    chosen = sorted(rng.sample(pool, n_ent))
    entities: list[EntityPlan] = []
    for path, kind in chosen:
        r = rng.random()
        if path == "/empty":
            mode = "empty_only"
        elif path == "/config" or r < 0.1:
            mode = "static_only"
        elif r < 0.25:
            mode = "static_and_temporal"
        elif r < 0.28:
            mode = "timeless"
        else:
            mode = "temporal"
        n_tl = rng.choice([1, 1, 2, 2, 3, len(timelines)])
        tls = sorted(rng.sample(timelines, min(n_tl, len(timelines))))
        entities.append(EntityPlan(path, kind, mode, tls))

    batcher = rng.choice(
        [
            # (no time-based flushes: the chunking must not depend on how fast the generator runs)
            {"flush_tick_s": 3600, "flush_num_rows": 1},
            {"flush_tick_s": 3600, "flush_num_rows": 4},
            {"flush_tick_s": 3600, "flush_num_rows": 1 << 30},
            {"flush_tick_s": 3600, "flush_num_rows": 1 << 30, "chunk_max_rows_if_unsorted": 3},
        ]
    )
    seg = SegmentPlan(
        segment_id=seg_id,
        app_id=f"rrapp_{seed}",
        file_name=f"{seg_id}.rrd",
        write_footer=rng.random() > 0.2,
        log_time=rng.random() < 0.08,
        log_tick=rng.random() < 0.1,
        send_properties=rng.random() > 0.2,
        recording_name=rng.choice([None, None, f"rec {seed}/{k}"]),
        batcher=batcher,
        entities=entities,
    )
    clocks = {tl: _Clock(rng, tl) for tl in timelines}
    parents = sorted({p for p, _ in pool} | set(DATALESS_PARENTS))
    ev_list = seg.events

    def times_for(ent: EntityPlan) -> dict[str, int]:
        if ent.mode == "timeless":
            return {}
        return {tl: clocks[tl].next() for tl in ent.timelines}

    # static data first for static entities (sometimes again later: latest static row wins)
    for ent in entities:
        if ent.mode in ("static_only", "static_and_temporal"):
            ev_list.append(
                {
                    "op": "log",
                    "entity": ent.path,
                    "static": True,
                    "times": {},
                    "arch": _payload(rng, ent.kind, full=True),
                }
            )

    n_events = rng.randint(8, 45)
    for _ in range(n_events):
        ent = rng.choice(entities)
        r = rng.random()
        if ent.mode == "static_only":
            if r < 0.3:
                ev_list.append(
                    {
                        "op": "log",
                        "entity": ent.path,
                        "static": True,
                        "times": {},
                        "arch": _payload(rng, ent.kind, full=True),
                    }
                )
            continue
        if ent.mode == "empty_only":
            ev_list.append(
                {
                    "op": "log",
                    "entity": ent.path,
                    "static": False,
                    "times": times_for(ent),
                    "arch": _payload(rng, ent.kind, empty=True, full=ent.mode == "timeless"),
                }
            )
            continue
        if r < 0.62:
            ev_list.append(
                {
                    "op": "log",
                    "entity": ent.path,
                    "static": False,
                    "times": times_for(ent),
                    "arch": _payload(rng, ent.kind, full=ent.mode == "timeless"),
                }
            )
        elif r < 0.68:
            ev_list.append(
                {
                    "op": "log",
                    "entity": ent.path,
                    "static": False,
                    "times": times_for(ent),
                    "arch": _payload(rng, ent.kind, empty=True, full=ent.mode == "timeless"),
                }
            )
        elif r < 0.80 and ent.kind in ("scalar", "scalars_var", "points", "text", "blob"):
            n = rng.randint(2, 6)
            # send_columns needs at least one timeline
            tls = ent.timelines or [rng.choice(timelines)]
            times: dict[str, list[int]] = {}
            for tl in tls:
                if rng.random() < 0.5:
                    vals = [clocks[tl].next() for _ in range(n)]
                else:  # a sorted run, possibly with duplicates
                    start = clocks[tl].next()
                    vals = [start]
                    for _ in range(n - 1):
                        vals.append(
                            vals[-1] + tick_to_value(tl, rng.choice([0, 1, 1, 2])) - tick_to_value(tl, 0)
                        )
                    clocks[tl].tick += n
                times[tl] = vals
            rows = [_payload(rng, ent.kind, empty=rng.random() < 0.1) for _ in range(n)]
            ev_list.append(
                {"op": "columns", "entity": ent.path, "times": times, "kind": ent.kind, "rows": rows}
            )
        elif r < 0.95:
            # Clear: on the entity itself, on one of its ancestors, or (rarely) on the root
            ancestors = [p for p in parents if ent.path.startswith(p + "/")]
            target = ent.path
            rr_ = rng.random()
            if ancestors and rr_ < 0.5:
                target = rng.choice(ancestors)
            elif rr_ < 0.55:
                target = "/"
            recursive = rng.random() < 0.6
            static = rng.random() < 0.05
            tl_src = next((e for e in entities if e.path == target), ent)
            times = {} if static else times_for(tl_src)
            if not static and not times:  # no timeless clears (see _payload's docstring)
                tl = rng.choice(timelines)
                times = {tl: clocks[tl].next()}
            ev_list.append(
                {
                    "op": "log",
                    "entity": target,
                    "static": static,
                    "times": times,
                    "arch": {"kind": "clear", "recursive": recursive},
                }
            )
        elif ent.mode == "static_and_temporal":
            ev_list.append(
                {
                    "op": "log",
                    "entity": ent.path,
                    "static": True,
                    "times": {},
                    "arch": _payload(rng, ent.kind, full=True),
                }
            )
        else:
            ev_list.append(
                {
                    "op": "log",
                    "entity": ent.path,
                    "static": False,
                    "times": times_for(ent),
                    "arch": _payload(rng, ent.kind, full=ent.mode == "timeless"),
                }
            )
    return seg


def plan_recordings(seed: int, n_segments: int | None = None) -> DatasetPlan:
    rng = random.Random(f"randrec-{seed}")
    if n_segments is None:
        n_segments = rng.choice([1, 2, 2, 3, 3])
    # Timelines of this dataset: always "frame", others at random. Segments may use subsets.
    timelines = ["frame"] + [tl for tl in ("step", "t", "dur") if rng.random() < 0.55]
    # Entity pool for this dataset (same path => same archetype in every segment).
    pool = [e for e in ENTITY_POOL if rng.random() < 0.7 or e[0] in ("/robot", "/robot/arm/joint0")]
    segments = []
    for k in range(n_segments):
        seg_tls = [tl for tl in timelines if tl == "frame" or rng.random() < 0.8]
        segments.append(_plan_segment(rng, seed, k, pool, seg_tls))
    files = [[k] for k in range(n_segments)]
    # Occasionally one file holding two recordings (byte-concatenated complete streams).
    # Only footer-less streams: the reference fails to load a concatenation of footer-bearing files
    # ("CRC check failed": it takes the last stream's footer for the whole file).
    if n_segments >= 2 and rng.random() < 0.15:
        files = [[0, 1]] + [[k] for k in range(2, n_segments)]
        segments[0].write_footer = segments[1].write_footer = False
    return DatasetPlan(seed=seed, segments=segments, files=files)


# ----------------------------------------------------------------------------------------------------------
# Writing


def log_time_value(event_index: int) -> int:
    """The ``log_time`` of the ``event_index``-th event of a segment with ``log_time=True``: increasing, like a
    wall clock, but the same on every write."""
    return T_BASE_NS + 3_600_000_000_000 + event_index * 1_000_003


def _set_time(rec, timeline: str, value: int) -> None:
    kind = TIMELINES[timeline]
    if kind == "sequence":
        rec.set_time(timeline, sequence=int(value))
    elif kind == "timestamp":
        rec.set_time(timeline, timestamp=np.datetime64(int(value), "ns"))
    else:
        rec.set_time(timeline, duration=np.timedelta64(int(value), "ns"))


def _time_column(rr, timeline: str, values: list[int]):
    kind = TIMELINES[timeline]
    if kind == "sequence":
        return rr.TimeColumn(timeline, sequence=np.asarray(values, dtype=np.int64))
    if kind == "timestamp":
        return rr.TimeColumn(timeline, timestamp=np.asarray(values, dtype=np.int64).astype("datetime64[ns]"))
    return rr.TimeColumn(timeline, duration=np.asarray(values, dtype=np.int64).astype("timedelta64[ns]"))


def _archetype(rr, p: dict[str, Any]):
    k = p["kind"]
    if k == "scalars":
        return rr.Scalars(np.asarray(p["values"], dtype=np.float64))
    if k == "points":
        fields = {}
        if "positions" in p:
            fields["positions"] = np.asarray(p["positions"], dtype=np.float32).reshape(-1, 3)
        if "colors" in p:
            fields["colors"] = np.asarray(p["colors"], dtype=np.uint32)
        if "radii" in p:
            fields["radii"] = np.asarray(p["radii"], dtype=np.float32)
        if "positions" in p and not p.get("clear_unset"):
            pos = fields.pop("positions")
            return rr.Points3D(pos, **fields)
        return rr.Points3D.from_fields(clear_unset=p.get("clear_unset", False), **fields)
    if k == "text":
        return rr.TextDocument(p["text"], media_type=p["media_type"])
    if k == "blob":
        return rr.EncodedImage(contents=p["contents"], media_type=p["media_type"])
    if k == "transform":
        kw = {}
        if "axis" in p:
            kw["rotation_axis_angle"] = rr.RotationAxisAngle(axis=p["axis"], radians=p["angle"])
        if "translation" in p:
            kw["translation"] = p["translation"]
        return rr.Transform3D(**kw)
    if k == "image":
        return rr.Image(np.asarray(p["data"], dtype=np.uint8).reshape(p["shape"]))
    if k == "clear":
        return rr.Clear(recursive=p["recursive"])
    raise ValueError(k)


def _columns(rr, kind: str, rows: list[dict[str, Any]]):
    if kind in ("scalar", "scalars_var"):
        flat = [v for r in rows for v in r["values"]]
        return rr.Scalars.columns(scalars=np.asarray(flat, dtype=np.float64)).partition(
            [len(r["values"]) for r in rows]
        )
    if kind == "points":
        flat = [v for r in rows for v in r.get("positions", [])]
        lens = [len(r.get("positions", [])) for r in rows]
        return rr.Points3D.columns(positions=np.asarray(flat, dtype=np.float32).reshape(-1, 3)).partition(
            lens
        )
    if kind == "text":
        return rr.TextDocument.columns(text=[r["text"] for r in rows])
    if kind == "blob":
        return rr.EncodedImage.columns(
            blob=[r["contents"] for r in rows], media_type=[r["media_type"] for r in rows]
        )
    raise ValueError(kind)


def _write_segment(seg: SegmentPlan, path: Path) -> None:
    import rerun as rr

    batcher = None
    if seg.batcher is not None:
        kw = dict(seg.batcher)
        tick = kw.pop("flush_tick_s", None)
        if tick is not None:
            kw["flush_tick"] = float(tick)
        batcher = rr.ChunkBatcherConfig(**kw)
    with rr.RecordingStream(
        seg.app_id, recording_id=seg.segment_id, send_properties=seg.send_properties, batcher_config=batcher
    ) as rec:
        rec.save(path, write_footer=seg.write_footer)
        rec.set_log_time_enabled(False)  # wall clock: replaced by a deterministic log_time below
        rec.set_log_tick_enabled(seg.log_tick)
        if seg.recording_name is not None:
            rec.send_recording_name(seg.recording_name)
        for i, ev in enumerate(seg.events):
            if ev["op"] == "log":
                rec.reset_time()
                for tl, v in ev["times"].items():
                    _set_time(rec, tl, v)
                if seg.log_time and not ev["static"]:
                    rec.set_time("log_time", timestamp=np.datetime64(log_time_value(i), "ns"))
                rec.log(ev["entity"], _archetype(rr, ev["arch"]), static=ev["static"])
            elif ev["op"] == "columns":
                rec.send_columns(
                    ev["entity"],
                    indexes=[_time_column(rr, tl, vals) for tl, vals in ev["times"].items()],
                    columns=_columns(rr, ev["kind"], ev["rows"]),
                )
            else:
                raise ValueError(ev["op"])


def write_plan(plan: DatasetPlan, out_dir: str | Path) -> list[Path]:
    """Write the recordings of ``plan`` into ``out_dir`` (created if needed); return the file paths."""
    import logging

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for file_segs in plan.files:
        segs = [plan.segments[i] for i in file_segs]
        final = out_dir / segs[0].file_name
        if len(segs) == 1:
            _write_segment(segs[0], final)
        else:
            parts = []
            for seg in segs:
                part = out_dir / (seg.file_name + ".part")
                _write_segment(seg, part)
                parts.append(part)
            final = out_dir / ("multi_" + segs[0].file_name)
            with open(final, "wb") as f:
                for part in parts:
                    f.write(part.read_bytes())
            for part in parts:
                part.unlink()
        paths.append(final)
    logging.getLogger(__name__).debug("wrote %d files for seed %d", len(paths), plan.seed)
    return paths


def write_random_recordings(out_dir: str | Path, seed: int, n_segments: int | None = None) -> list[Path]:
    """Plan and write the recordings of ``seed`` (1-3 segments, ids ``seg_{seed}_{k}``) into ``out_dir``."""
    return write_plan(plan_recordings(seed, n_segments), out_dir)


# ----------------------------------------------------------------------------------------------------------
# Printing / shrinking helpers


def _r(v) -> str:
    """repr that stays runnable for nan/inf (``float('nan')``)."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return f"float({str(v)!r})"
    if isinstance(v, list):
        return "[" + ", ".join(_r(x) for x in v) + "]"
    return repr(v)


def _fmt_time(tl: str, v) -> str:
    kind = TIMELINES.get(tl, "sequence")
    if isinstance(v, list):
        if kind == "sequence":
            return f"rr.TimeColumn({tl!r}, sequence={_r(v)})"
        dt = "datetime64[ns]" if kind == "timestamp" else "timedelta64[ns]"
        return f"rr.TimeColumn({tl!r}, {kind}=np.array({_r(v)}, dtype=np.int64).astype({dt!r}))"
    if kind == "sequence":
        return f"rec.set_time({tl!r}, sequence={v})"
    if kind == "timestamp":
        return f"rec.set_time({tl!r}, timestamp=np.datetime64({v}, 'ns'))"
    return f"rec.set_time({tl!r}, duration=np.timedelta64({v}, 'ns'))"


def _fmt_payload(p: dict[str, Any]) -> str:
    k = p["kind"]
    if k == "scalars":
        return f"rr.Scalars(np.array({_r(p['values'])}, dtype=np.float64))"
    if k == "points":
        args = {key: p[key] for key in ("positions", "colors", "radii") if key in p}
        if "positions" in p and not p.get("clear_unset"):
            pos = args.pop("positions")
            rest = "".join(f", {a}={_r(v)}" for a, v in args.items())
            return f"rr.Points3D(np.array({_r(pos)}, dtype=np.float32).reshape(-1, 3){rest})"
        inner = ", ".join(f"{a}={_r(v)}" for a, v in args.items())
        return f"rr.Points3D.from_fields(clear_unset={p.get('clear_unset', False)}, {inner})"
    if k == "text":
        return f"rr.TextDocument({p['text']!r}, media_type={p['media_type']!r})"
    if k == "blob":
        return f"rr.EncodedImage(contents={p['contents']!r}, media_type={p['media_type']!r})"
    if k == "transform":
        kw = []
        if "axis" in p:
            kw.append(f"rotation_axis_angle=rr.RotationAxisAngle(axis={p['axis']!r}, radians={p['angle']!r})")
        if "translation" in p:
            kw.append(f"translation={p['translation']!r}")
        return f"rr.Transform3D({', '.join(kw)})"
    if k == "image":
        return f"rr.Image(np.array({p['data']!r}, dtype=np.uint8).reshape({p['shape']!r}))"
    if k == "clear":
        return f"rr.Clear(recursive={p['recursive']})"
    return repr(p)


def _fmt_columns(kind: str, rows: list[dict[str, Any]]) -> str:
    if kind in ("scalar", "scalars_var"):
        flat = [v for r in rows for v in r["values"]]
        lens = [len(r["values"]) for r in rows]
        return f"rr.Scalars.columns(scalars=np.array({_r(flat)}, dtype=np.float64)).partition({lens})"
    if kind == "points":
        flat = [v for r in rows for v in r.get("positions", [])]
        lens = [len(r.get("positions", [])) for r in rows]
        return (
            f"rr.Points3D.columns(positions=np.array({_r(flat)}, dtype=np.float32).reshape(-1, 3))"
            f".partition({lens})"
        )
    if kind == "text":
        return f"rr.TextDocument.columns(text={[r['text'] for r in rows]!r})"
    if kind == "blob":
        return (
            f"rr.EncodedImage.columns(blob={[r['contents'] for r in rows]!r}, "
            f"media_type={[r['media_type'] for r in rows]!r})"
        )
    return repr(rows)


def _fmt_batcher(b: dict[str, int] | None) -> str:
    if b is None:
        return "None"
    kw = dict(b)
    if "flush_tick_s" in kw:
        kw["flush_tick"] = float(kw.pop("flush_tick_s"))
    return "rr.ChunkBatcherConfig(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"


def format_segment(seg: SegmentPlan, path: str = "out.rrd") -> str:
    """The logging calls that produce ``seg``, as a runnable Python snippet."""
    lines = [
        "import numpy as np, rerun as rr",
        f"with rr.RecordingStream({seg.app_id!r}, recording_id={seg.segment_id!r}, "
        f"send_properties={seg.send_properties}, batcher_config={_fmt_batcher(seg.batcher)}) as rec:",
        f"    rec.save({path!r}, write_footer={seg.write_footer})",
        "    rec.set_log_time_enabled(False)",
        f"    rec.set_log_tick_enabled({seg.log_tick})",
    ]
    if seg.recording_name is not None:
        lines.append(f"    rec.send_recording_name({seg.recording_name!r})")
    for i, ev in enumerate(seg.events):
        if ev["op"] == "log":
            lines.append("    rec.reset_time()")
            for tl, v in ev["times"].items():
                lines.append("    " + _fmt_time(tl, v))
            if seg.log_time and not ev["static"]:
                lines.append(f"    rec.set_time('log_time', timestamp=np.datetime64({log_time_value(i)}, 'ns'))")
            static = ", static=True" if ev["static"] else ""
            lines.append(f"    rec.log({ev['entity']!r}, {_fmt_payload(ev['arch'])}{static})")
        else:
            idx = ", ".join(_fmt_time(tl, v) for tl, v in ev["times"].items())
            cols = _fmt_columns(ev["kind"], ev["rows"])
            lines.append(f"    rec.send_columns({ev['entity']!r}, indexes=[{idx}], columns={cols})")
    return "\n".join(lines)


def format_plan(plan: DatasetPlan) -> str:
    out = [f"# seed {plan.seed}: files {plan.files} (lists of segment indices; >1 = byte-concatenated)"]
    for seg in plan.segments:
        out.append(f"# ---- segment {seg.segment_id} ({len(seg.events)} events)")
        out.append(format_segment(seg, seg.file_name))
    return "\n".join(out)


def copy_plan(plan: DatasetPlan) -> DatasetPlan:
    return copy.deepcopy(plan)
