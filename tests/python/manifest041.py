"""Recordings and helpers of the manifest tests (test_manifest041.py): a small multi-modal dataset
(numeric, JPEG, H.264 video, on a sequence and a timestamp timeline), written with rerun-sdk at
test time, and the means to run rerun-sdk 0.41's and rrloader's manifest replays side by side.

Importing it installs rerun041's torchvision stand-in (rerun's ImageDecoder needs it), so spawned
DataLoader workers that unpickle something defined here get it too.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path
from typing import Any

import numpy as np
import rerun as rr
import torch
from dlutil import encode as encode_image
from dlutil import pattern_rgb
from rerun041 import ref  # noqa: F401 - installs the torchvision stand-in; re-exported for the tests
from videoutil import encode as encode_video

APP_ID = "rrloader_manifest_test"
T0_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
FRAME_NS = 20_000_000  # the "time" timeline: 50 Hz, exactly on FixedRateSampling(50)'s grid
GOP = 6

# Per segment: its frames, and the first frame of its video (samples before it have no keyframe).
SEGMENTS: dict[str, tuple[range, int]] = {
    "ep_a": (range(0, 30), 0),
    "ep_b": (range(3, 24), 3),
    "ep_c": (range(0, 12), 4),
}
EXTRA_SEGMENTS = ("ep_a", "ep_c")  # /extra is logged in these only


def time_ns(seg: str, frame: int) -> int:
    return T0_NS + sorted(SEGMENTS).index(seg) * 60_000_000_000 + frame * FRAME_NS


def write_dataset(
    out_dir: str | Path, *, keyframes: bool, images_in: tuple[str, ...] = tuple(SEGMENTS)
) -> Path:
    """One ``.rrd`` per segment (recording id = segment id) on timelines ``frame`` and ``time``:

    * ``/state`` Scalars (3 values) at every frame; ``/sparse`` Scalars at frames divisible by 5;
      ``/extra`` Scalars at every frame of the EXTRA_SEGMENTS only;
    * ``/cam`` JPEG 16x24 at even frames (segments ``images_in`` only);
    * ``/video`` H.264 32x32, one packet per frame from the segment's video start, a keyframe every
      GOP packets, with ``is_keyframe`` marks (true at keyframes, a chunk of their own) when
      ``keyframes``, without any otherwise.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k, (seg, (frames, video_start)) in enumerate(sorted(SEGMENTS.items())):
        fr = np.asarray(frames, dtype=np.int64)

        def indexes(values: np.ndarray, seg: str = seg) -> list[rr.TimeColumn]:
            return [
                rr.TimeColumn("frame", sequence=values),
                rr.TimeColumn(
                    "time",
                    timestamp=np.array([time_ns(seg, int(f)) for f in values]).astype("datetime64[ns]"),
                ),
            ]

        with rr.RecordingStream(APP_ID, recording_id=seg, send_properties=False) as rec:
            rec.save(out / f"{seg}.rrd")
            rec.set_log_time_enabled(False)
            rec.set_log_tick_enabled(False)
            state = np.stack([k * 1000 + fr * 10 + j for j in range(3)], axis=1).astype(np.float64)
            rec.send_columns("/state", indexes=indexes(fr), columns=rr.Scalars.columns(scalars=state))
            sparse = fr[fr % 5 == 0]
            rec.send_columns(
                "/sparse",
                indexes=indexes(sparse),
                columns=rr.Scalars.columns(scalars=sparse.astype(np.float64) + 0.5),
            )
            if seg in EXTRA_SEGMENTS:
                rec.send_columns(
                    "/extra", indexes=indexes(fr), columns=rr.Scalars.columns(scalars=-fr.astype(np.float64))
                )
            if seg in images_in:
                for f in fr[fr % 2 == 0].tolist():
                    rec.reset_time()
                    rec.set_time("frame", sequence=f)
                    rec.set_time("time", timestamp=np.datetime64(time_ns(seg, f), "ns"))
                    blob = encode_image(pattern_rgb(16, 24, f + 3 * k), "JPEG", quality=90)
                    rec.log("/cam", rr.EncodedImage(contents=blob, media_type="image/jpeg"))
            vf = fr[fr >= video_start]
            packets, is_key = encode_video("h264", 32, 32, len(vf), GOP, seed=k)
            rec.log("/video", rr.VideoStream(codec=rr.VideoCodec.H264), static=True)
            for lo in range(0, len(vf), 8):
                rec.send_columns(
                    "/video",
                    indexes=indexes(vf[lo : lo + 8]),
                    columns=rr.VideoStream.columns(sample=packets[lo : lo + 8]),
                )
            if keyframes:
                marks = vf[np.asarray(is_key, dtype=bool)]
                rec.send_columns(
                    "/video",
                    indexes=indexes(marks),
                    columns=rr.VideoStream.columns(is_keyframe=[True] * len(marks)),
                )
    return out


def fields(m: Any, index: str, *, video: bool = True, image: bool = True) -> dict[str, Any]:
    """The fields of the tests, spelled with module ``m`` (rerun-sdk's or rrloader's 0.41 API)."""
    seconds = index == "time"
    step = FRAME_NS / 1e9 if seconds else 1
    out = {
        "state": m.Field("/state:Scalars:scalars", decode=m.NumericDecoder()),
        "action": m.Field("/state:Scalars:scalars", decode=m.NumericDecoder(), window=(0, step, 2 * step)),
        "sparse": m.Field("/sparse:Scalars:scalars", decode=m.NumericDecoder(), max_staleness=2 * step),
        "extra": m.Field("/extra:Scalars:scalars", decode=m.NumericDecoder()),
    }
    if image:
        out["image"] = m.Field("/cam:EncodedImage:blob", decode=m.ImageDecoder())
    if video:
        out["video"] = m.Field(
            "/video:VideoStream:sample", decode=m.VideoFrameDecoder(codec="h264"), window=(-2 * step, 0)
        )
    return out


def sampling(m: Any, index: str) -> Any:
    return m.FixedRateSampling(1e9 / FRAME_NS) if index == "time" else None


def dump(samples: Any) -> list[list[tuple[str, Any]]]:
    """Samples as lists of (key, value) in key order: tensors as (dtype, shape, bytes)."""
    out = []
    for s in samples:
        row = []
        for k, v in s.items():
            if v is None:
                row.append((k, None))
            else:
                t = v.contiguous()
                row.append((k, (str(t.dtype), tuple(t.shape), t.numpy().tobytes())))
        out.append(row)
    return out


@contextlib.contextmanager
def as_worker(dataset: Any, rank: int, world: int, worker: int, workers: int):
    """Iterate ``dataset`` in this process as DataLoader worker ``worker`` of ``workers`` on DDP
    rank ``rank`` of ``world``: the rank as the one captured when a dataset is pickled into a
    spawned worker (both implementations read ``_parent_ddp_topology``), the worker through
    ``torch.utils.data.get_worker_info`` (which both ask)."""
    import torch.utils.data as tud

    info = types.SimpleNamespace(id=worker, num_workers=workers)
    saved_info, saved_topology = tud.get_worker_info, dataset._parent_ddp_topology
    tud.get_worker_info = lambda: info
    dataset._parent_ddp_topology = (rank, world)
    try:
        yield
    finally:
        tud.get_worker_info = saved_info
        dataset._parent_ddp_topology = saved_topology


def replay(dataset: Any, rank: int, world: int, worker: int, workers: int) -> list:
    with as_worker(dataset, rank, world, worker, workers):
        return dump(dataset)


def blob_size_decoder(m: Any) -> Any:
    """A user's decoder of module ``m``'s API (a Python one, which rrloader runs outside its engine):
    per sample, the byte sizes of the blobs of its output rows, as an int64 tensor [T]; None when
    an output row is null."""

    class BlobSize(m.ColumnDecoder):
        def decode(self, batch, requests):
            out = []
            for request in requests:
                cells = batch.take_output_rows(request).to_pylist()
                if any(c is None for c in cells):
                    out.append(None)
                    continue
                out.append(torch.tensor([sum(len(b) for b in c) for c in cells], dtype=torch.int64))
            return out

    return BlobSize()


def interleave(per_worker: list[list]) -> list:
    """What a DataLoader (batch_size=None) yields from iterable-dataset workers: one item of each
    worker in turn, a worker that is done dropping out."""
    out, k = [], 0
    while any(k < len(w) for w in per_worker):
        out.extend(w[k] for w in per_worker if k < len(w))
        k += 1
    return out
