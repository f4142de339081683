"""rerun-sdk 0.41's video-codec integration checks, run against both import prefixes (issue 12).

Mirrors ``rerun_py/tests/integration/test_dataloader_video_codecs.py`` of rerun-io/rerun, in the
version whose API is rerun-sdk 0.41's (the one built from ``31fc6d1``, branch
prepare-release-0.41.0): ``VideoFrameDecoder(codec=...)`` with no ``keyframe_interval``,
``DecodeRequest(sample_position, segment_id, index_value, decode_row_indices,
output_row_indices, starts_at_keyframe)``, ``is_keyframe`` logged "sparse" or "dense", and the
three tests ``test_decode_matrix``, ``test_fixed_rate_sampling_sparse_frames_decode_correctly``
and ``test_off_grid_capture_rate_decodes_correctly``. (The stored versions at 2ae02d8 and 132284c
are older: they pass ``keyframe_interval=`` and call ``decode(column, index, segment)`` or
``DecodeRequest(rows=...)``, which 0.41 does not accept.) The code here is our own; the checks
are rerun's, each run once with ``rerun.experimental.dataloader`` (the reference, through
rerun041's torchvision stand-in) and once with ``rrloader.experimental.dataloader``, the module
being the only difference. Recordings are served by rerun-sdk's in-process ``rr.server.Server``
in both cases, as upstream does (rrloader reads the ``DatasetEntry`` through its own remote path).

Stronger than upstream (it checks shapes only in the matrix): every decoded frame of the matrix
must also equal PyAV's sequential decode of the same packets (``to_ndarray("rgb24")``), with
either module.

Skips, only where rerun's test itself skips: the AV1 cells of the matrix (6 per module), because
rerun encodes AV1 with ``libaom-av1`` and this PyAV 18 build has no libaom encoder
(``_encoder_available("libaom-av1")`` is False; ffmpeg's CLI has one, PyAV's bundled libav does
not). H.264 (libx264) and H.265 (libx265) are available and run. As an addition that upstream
does not have, AV1 is also run with PyAV's ``libsvtav1`` (ids ``av1_svt``), so AV1 is covered.

Upstream sets the multiprocessing start method to "spawn" at import to silence 0.41's "fork"
warning; this module filters the warning instead, so it changes nothing for other test modules.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
import rerun as rr
import rrloader.experimental.dataloader as ours
import torch
from av.bitstream import BitStreamFilterContext
from rerun041 import ref

pytestmark = pytest.mark.filterwarnings("ignore:The default multiprocessing start method is 'fork'")

MODULES = {"rerun": ref, "rrloader": ours}
PREFIXES = pytest.mark.parametrize("prefix", list(MODULES))

WIDTH, HEIGHT = 64, 128
NUM_FRAMES = 96
GOP_SIZES = (1, 8, 24)


@dataclass(frozen=True)
class Codec:
    encoder: str  # PyAV encoder
    annex_b: str | None  # bitstream filter turning demuxed MP4 samples into Annex B
    logged: rr.VideoCodec  # the VideoStream:codec component
    name: str  # VideoFrameDecoder(codec=...)
    pyav_decoder: str  # the independent reference decode
    no_b_frames: bool = False


CODECS = {
    "h264": Codec("libx264", "h264_mp4toannexb", rr.VideoCodec.H264, "h264", "h264", no_b_frames=True),
    "h265": Codec("libx265", "hevc_mp4toannexb", rr.VideoCodec.H265, "h265", "hevc", no_b_frames=True),
    "av1": Codec("libaom-av1", None, rr.VideoCodec.AV1, "av1", "libdav1d"),
    # Not in rerun's test: the AV1 encoder this PyAV build has.
    "av1_svt": Codec("libsvtav1", None, rr.VideoCodec.AV1, "av1", "libdav1d"),
}


def can_encode(encoder: str) -> bool:
    try:
        av.codec.Codec(encoder, "w")
    except Exception:  # noqa: BLE001 - PyAV raises several types for an unknown codec
        return False
    return True


def picture(i: int) -> av.VideoFrame:
    """Upstream's synthetic frame: horizontal and vertical ramps that move with i, a flat blue."""
    rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb[..., 0] = ((np.arange(WIDTH) + i) % 256)[None, :]
    rgb[..., 1] = ((np.arange(HEIGHT) + i) % 256)[:, None]
    rgb[..., 2] = (i * 7) % 256
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


@functools.cache
def stream(codec: str, gop: int, n: int = NUM_FRAMES) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
    """Upstream's clip: encoded into an MP4 at a fixed keyframe cadence (g = keyint_min = gop), then
    demuxed back to one sample per frame (Annex B for H.264/H.265). Returns (samples, keyframe
    positions)."""
    c = CODECS[codec]
    work = Path(tempfile.mkdtemp(prefix="rrl_codecs041_"))
    try:
        mp4 = str(work / "clip.mp4")
        with av.open(mp4, "w") as out:
            s = out.add_stream(c.encoder, rate=30)
            s.width, s.height, s.pix_fmt, s.gop_size = WIDTH, HEIGHT, "yuv420p", gop
            if c.no_b_frames:
                s.max_b_frames = 0
            s.codec_context.options = {"g": str(gop), "keyint_min": str(gop)}
            for i in range(n):
                out.mux(s.encode(picture(i)))
            out.mux(s.encode(None))
        samples: list[bytes] = []
        keys: list[int] = []
        with av.open(mp4) as inp:
            vs = inp.streams.video[0]
            bsf = BitStreamFilterContext(c.annex_b, vs) if c.annex_b else None
            for pkt in inp.demux(vs):
                for p in bsf.filter(pkt) if bsf else [pkt]:
                    if p.pts is None or p.size == 0:
                        continue
                    if p.is_keyframe:
                        keys.append(len(samples))
                    samples.append(bytes(p))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert keys and keys[0] == 0, "the clip must start with a keyframe"
    return tuple(samples), tuple(keys)


@functools.cache
def pyav_frames(codec: str, gop: int) -> tuple[np.ndarray, ...]:
    """PyAV's sequential decode of stream(codec, gop): one [3, H, W] RGB frame per sample."""
    samples, _ = stream(codec, gop)
    dec = av.CodecContext.create(CODECS[codec].pyav_decoder, "r")
    if CODECS[codec].pyav_decoder == "libdav1d":
        dec.options = {"max_frame_delay": "1"}
    got: dict[int, np.ndarray] = {}
    for i, data in enumerate([*samples, None]):
        pkt = None if data is None else av.Packet(data)
        if pkt is not None:
            pkt.pts = i
        for f in dec.decode(pkt):
            got[int(f.pts)] = np.ascontiguousarray(f.to_ndarray(format="rgb24").transpose(2, 0, 1))
    assert sorted(got) == list(range(len(samples)))
    return tuple(got[i] for i in range(len(samples)))


def _frame_timeline(name: str, kind: str, values) -> rr.TimeColumn:
    if kind == "sequence":
        return rr.TimeColumn(name, sequence=list(values))
    if kind == "timestamp":
        return rr.TimeColumn(name, timestamp=np.asarray(values, dtype="datetime64[ns]"))
    return rr.TimeColumn(name, duration=np.asarray(values, dtype="timedelta64[ns]"))


def write_recording(
    directory: Path,
    codec: str,
    samples,
    keys,
    times,
    *,
    timeline: str = "frame",
    kind: str = "sequence",
    keyframes: str = "sparse",
    state: bool = False,
) -> Path:
    """One .rrd in `directory` (a dataset of one segment): /video's samples at `times`, the codec
    static, `is_keyframe` "sparse" (True at keyframes only) or "dense" (True/False on every row),
    and with `state` a /state Scalars equal to the frame number at every frame."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recording.rrd"
    with rr.RecordingStream("rerun_example_rrloader_codecs041", recording_id="codecs041") as rec:
        rec.save(path)
        rec.log("/video", rr.VideoStream(codec=CODECS[codec].logged), static=True)
        rec.send_columns(
            "/video",
            indexes=[_frame_timeline(timeline, kind, times)],
            columns=rr.VideoStream.columns(sample=list(samples)),
        )
        if state:
            rec.send_columns(
                "/state",
                indexes=[_frame_timeline(timeline, kind, times)],
                columns=rr.Scalars.columns(scalars=[float(i) for i in range(len(samples))]),
            )
        if keyframes == "sparse":
            rec.send_columns(
                "/video",
                indexes=[_frame_timeline(timeline, kind, [times[k] for k in keys])],
                columns=rr.VideoStream.columns(is_keyframe=[True] * len(keys)),
            )
        else:
            flags = [i in set(keys) for i in range(len(samples))]
            rec.send_columns(
                "/video",
                indexes=[_frame_timeline(timeline, kind, times)],
                columns=rr.VideoStream.columns(is_keyframe=flags),
            )
    return path


def decode_clean(dl, decoder, samples) -> torch.Tensor | None:
    """`decoder.decode` called directly on one request over `samples` (first row a keyframe),
    returning the frame of the last row: upstream's ground truth for the served decodes."""
    batch = dl.FieldBatch(column=pa.array([[s] for s in samples], type=pa.list_(pa.binary())))
    last = len(samples) - 1
    request = dl.DecodeRequest(
        sample_position=0,
        segment_id="segment",
        index_value=last,
        decode_row_indices=tuple(range(len(samples))),
        output_row_indices=(last,),
        starts_at_keyframe=True,
    )
    return decoder.decode(batch, [request])[0]


# ----------------------------------------------------------------------------------- the matrix
@PREFIXES
@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("gop", GOP_SIZES)
@pytest.mark.parametrize("keyframes", ["sparse", "dense"], ids=["keyframes_sparse", "keyframes_dense"])
def test_decode_matrix(tmp_path, prefix, codec, gop, keyframes):
    """First frame, last frame and a mid-GOP frame (at least two past the first keyframe, before
    the second) of each (codec, GOP, is_keyframe layout); /state at the same index must be the
    frame number, so the decode window does not leak into the other field."""
    dl = MODULES[prefix]
    if not can_encode(CODECS[codec].encoder):
        pytest.skip(f"PyAV build lacks the {CODECS[codec].encoder} encoder (rerun's test skips too)")
    samples, keys = stream(codec, gop)
    write_recording(
        tmp_path / "rec", codec, samples, keys, range(len(samples)), keyframes=keyframes, state=True
    )

    targets = [0, len(samples) - 1]
    if gop > 1:
        assert len(keys) >= 2
        mid = (keys[0] + keys[1]) // 2
        assert keys[0] + 2 <= mid < keys[1]
        targets.append(mid)

    with rr.server.Server(datasets={"video": tmp_path / "rec"}) as server:
        source = dl.DataSource(server.client().get_dataset("video"))
        fields = {
            "image": dl.Field(
                "/video:VideoStream:sample", decode=dl.VideoFrameDecoder(codec=CODECS[codec].name)
            ),
            "state": dl.Field("/state:Scalars:scalars", decode=dl.NumericDecoder()),
        }
        dataset = dl.RerunMapDataset(source, "frame", fields)
        got = {t: dataset[t] for t in targets}

    expected = pyav_frames(codec, gop)
    for t in targets:
        image, state = got[t]["image"], got[t]["state"]
        assert isinstance(image, torch.Tensor), f"no frame at {t}"
        assert tuple(image.shape) == (3, HEIGHT, WIDTH) and image.dtype == torch.uint8
        assert np.array_equal(image.numpy(), expected[t]), f"frame {t} differs from PyAV's decode"
        assert isinstance(state, torch.Tensor) and float(state[0]) == float(t)


# ------------------------------------------------------------ fixed-rate sampling, exact queries
@PREFIXES
@pytest.mark.parametrize(("timeline", "kind"), [("real_time", "timestamp"), ("elapsed", "duration")],
                         ids=["timestamp", "duration"])  # fmt: skip
def test_fixed_rate_sampling_sparse_frames_decode_correctly(tmp_path, prefix, timeline, kind):
    """Frames on a 30 Hz grid with the slot before the second P-frame of the second GOP left empty:
    the served frame at that P-frame's slot equals a direct decode of its GOP's packets."""
    dl = MODULES[prefix]
    samples, keys = stream("h264", 5)
    rate = 30.0
    slot_ns = round(1e9 / rate)
    key, target = keys[1], keys[1] + 2
    assert target not in keys and target < keys[2]
    slots = [i + (i >= target) for i in range(len(samples))]  # no frame in the slot before `target`
    write_recording(tmp_path / "rec", "h264", samples, keys, [s * slot_ns for s in slots], timeline=timeline,
                    kind=kind)  # fmt: skip
    latest = [max(k for k, s in enumerate(slots) if s <= g) for g in range(slots[key], slots[target] + 1)]
    assert latest == [key, key + 1, key + 1, target]

    truth = decode_clean(dl, dl.VideoFrameDecoder(codec="h264"), samples[key : target + 1])
    assert truth is not None

    with rr.server.Server(datasets={"video": tmp_path / "rec"}) as server:
        dataset = dl.RerunMapDataset(
            dl.DataSource(server.client().get_dataset("video")),
            timeline,
            {"image": dl.Field("/video:VideoStream:sample", decode=dl.VideoFrameDecoder(codec="h264"))},
            timeline_sampling=dl.FixedRateSampling(rate_hz=rate),
        )
        served = dataset[slots[target]]["image"]
    assert isinstance(served, torch.Tensor)
    assert torch.equal(served, truth)
    assert np.array_equal(truth.numpy(), pyav_frames("h264", 5)[target])


@PREFIXES
def test_off_grid_capture_rate_decodes_correctly(tmp_path, prefix):
    """A 27 fps capture served on a 30 Hz grid (one batched __getitems__): every slot equals a
    direct decode from its latest frame's keyframe to that frame, and some slots repeat a frame."""
    dl = MODULES[prefix]
    samples, keys = stream("h264", 5)
    grid_ns = round(1e9 / 30.0)
    times = [round(i / 27.0 * 1e9) for i in range(len(samples))]
    write_recording(tmp_path / "rec", "h264", samples, keys, times, timeline="real_time", kind="timestamp")

    n_slots = (times[-1] - times[0]) // grid_ns + 1
    latest = [int(np.searchsorted(times, times[0] + s * grid_ns, side="right")) - 1 for s in range(n_slots)]
    key_of = [max(k for k in keys if k <= f) for f in latest]
    assert any(latest[s] == latest[s - 1] for s in range(1, n_slots))

    decoder = dl.VideoFrameDecoder(codec="h264")
    truth = [decode_clean(dl, decoder, samples[key_of[s] : latest[s] + 1]) for s in range(n_slots)]
    assert all(t is not None for t in truth)

    with rr.server.Server(datasets={"video": tmp_path / "rec"}) as server:
        dataset = dl.RerunMapDataset(
            dl.DataSource(server.client().get_dataset("video")),
            "real_time",
            {"image": dl.Field("/video:VideoStream:sample", decode=dl.VideoFrameDecoder(codec="h264"))},
            timeline_sampling=dl.FixedRateSampling(rate_hz=30.0),
        )
        assert len(dataset) == n_slots
        served = dataset.__getitems__(list(range(n_slots)))
    expected = pyav_frames("h264", 5)
    for s in range(n_slots):
        image = served[s]["image"]
        assert isinstance(image, torch.Tensor), s
        assert torch.equal(image, truth[s]), f"slot {s}"
        assert np.array_equal(image.numpy(), expected[latest[s]]), f"slot {s}"
