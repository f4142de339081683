"""Writes the seed corpus of fuzz/fuzz_rrd_reader.cc with rerun-sdk (run: python tools/make_fuzz_corpus.py DIR).

Seeds: a recording with clears and same-time rows (footer), one with static data and two
timelines (footer), and one written without a footer so the scanning path is reached.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rerun as rr


def main(out: str) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    with rr.RecordingStream("fuzz", recording_id="clears") as rec:
        rec.save(str(d / "clears.rrd"))
        rec.set_log_time_enabled(False)
        rec.log("/p/st", rr.Scalars([42.0]), static=True)
        for i in [0, 3, 1, 3]:
            rec.set_time("frame", sequence=i)
            rec.log("/p/q", rr.Scalars([float(i), 2.0 * i]))
        rec.set_time("frame", sequence=2)
        rec.log("/p", rr.Clear(recursive=True))
    with rr.RecordingStream("fuzz", recording_id="static") as rec:
        rec.save(str(d / "static.rrd"))
        rec.set_log_time_enabled(False)
        rec.log("/s", rr.TextDocument("hello"), static=True)
        rec.send_columns(
            "/pts",
            indexes=[rr.TimeColumn("t", timestamp=np.array([1, 2], dtype="datetime64[s]"))],
            columns=rr.Points3D.columns(positions=np.arange(12, dtype=np.float32).reshape(4, 3)).partition([2, 2]),
        )
    with rr.RecordingStream("fuzz", recording_id="nofooter") as rec:
        rec.save(str(d / "nofooter.rrd"), write_footer=False)
        rec.set_log_time_enabled(False)
        for i in range(3):
            rec.set_time("frame", sequence=i)
            rec.log("/x", rr.Scalars([float(i)]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/fuzz-corpus")
