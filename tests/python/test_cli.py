"""`rrloader inspect` (rrloader.cli), `python -m rrloader` and the demo dataset (rrloader.demo).

The dataset is the demo's own (written with rerun-sdk at test time, 2 episodes of 2 s), so
the expected figures follow from its definition: 50 Hz joints on `frame`/`time`, a 15 Hz
camera, a 30 fps wrist video (with sparse keyframe marks), static `/robot` text, camera
intrinsics and the video's codec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

N_EPISODES = 2
SECONDS = 2


@pytest.fixture(scope="module")
def rrl():
    import rrloader

    return rrloader


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, rrl) -> Path:
    from rrloader import demo

    out = tmp_path_factory.mktemp("demo")
    paths = demo.write_demo_dataset(out, n_episodes=N_EPISODES, seconds=SECONDS, progress=False)
    assert [p.name for p in paths] == ["episode_0000.rrd", "episode_0001.rrd"]
    return out


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    from rrloader.cli import main

    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _inspect_json(capsys, *argv: str) -> dict:
    rc, out, err = _run(capsys, "inspect", *argv, "--json", "--quiet")
    assert rc == 0, err
    assert err == ""
    return json.loads(out)


def _expected_rows_per_segment() -> dict[str, int]:
    """Rows of reader(index) for one demo episode: the union of tick and camera index values."""
    from rrloader import demo

    n = SECONDS * demo.JOINT_HZ
    k = np.arange(int(SECONDS * demo.CAMERA_HZ))
    cam_frames = (k * demo.JOINT_HZ) // demo.CAMERA_HZ
    cam_ns = (k * 1_000_000_000) // demo.CAMERA_HZ
    w = np.arange(int(SECONDS * demo.WRIST_HZ))
    wrist_frames = (w * demo.JOINT_HZ) // demo.WRIST_HZ
    wrist_ns = (w * 1_000_000_000) // demo.WRIST_HZ
    tick_ns = np.arange(n) * (1_000_000_000 // demo.JOINT_HZ)
    return {
        "frame": len(np.union1d(np.union1d(np.arange(n), cam_frames), wrist_frames)),
        "time": len(np.union1d(np.union1d(tick_ns, cam_ns), wrist_ns)),
    }


def test_inspect_json(capsys, demo_dir):
    from rrloader import demo

    info = _inspect_json(capsys, str(demo_dir))
    assert [s["id"] for s in info["segments"]] == ["episode_0000", "episode_0001"]
    assert info["timelines"] == [
        {"name": "frame", "kind": "sequence", "segments": 2, "start": 0, "end": SECONDS * 50 - 1},
        {
            "name": "time",
            "kind": "timestamp",
            "segments": 2,
            "start": demo.START_TIME_NS,
            "end": demo.START_TIME_NS + demo.EPISODE_SPACING_NS + (SECONDS * 50 - 1) * 20_000_000,
        },
    ]
    for i, seg in enumerate(info["segments"]):
        start = demo.START_TIME_NS + i * demo.EPISODE_SPACING_NS
        assert seg["ranges"]["frame"] == {"start": 0, "end": SECONDS * 50 - 1}
        assert seg["ranges"]["time"] == {"start": start, "end": start + (SECONDS * 50 - 1) * 20_000_000}
        assert seg["chunk_rows"] >= SECONDS * (50 + 50 + 15 + 30)
        assert "rows" not in seg  # only with --count-rows
    columns = {c["name"]: c for c in info["columns"]}
    assert set(columns) == {
        "/robot/joint_state:Scalars:scalars",
        "/robot/action:Scalars:scalars",
        "/camera/front:EncodedImage:blob",
        "/camera/front:EncodedImage:media_type",
        "/camera/front:Pinhole:image_from_camera",
        "/camera/front:Pinhole:resolution",
        "/camera/wrist:VideoStream:codec",
        "/camera/wrist:VideoStream:is_keyframe",
        "/camera/wrist:VideoStream:sample",
        "/robot:TextDocument:text",
    }
    static = {name for name, c in columns.items() if c["static"]}
    assert static == {
        "/camera/front:Pinhole:image_from_camera",
        "/camera/front:Pinhole:resolution",
        "/camera/wrist:VideoStream:codec",
        "/robot:TextDocument:text",
    }
    assert columns["/robot/joint_state:Scalars:scalars"]["type"] == "list<item: double>"
    assert columns["/robot/joint_state:Scalars:scalars"]["entity_path"] == "/robot/joint_state"
    assert columns["/robot/joint_state:Scalars:scalars"]["component"] == "Scalars:scalars"


def test_inspect_json_agrees_with_the_dataset(capsys, demo_dir, rrl):
    info = _inspect_json(capsys, str(demo_dir))
    ds = rrl.LocalDataset(demo_dir)
    ranges = ds.get_index_ranges().to_pylist()
    by_id = {s["id"]: s for s in info["segments"]}
    assert set(by_id) == set(ds.segment_ids())
    for row in ranges:
        seg = by_id[row["rerun_segment_id"]]
        assert seg["ranges"]["frame"] == {"start": row["frame:start"], "end": row["frame:end"]}
    assert {s["id"]: s["chunk_rows"] for s in info["segments"]} == ds.chunk_row_counts()


def test_count_rows(capsys, demo_dir, rrl):
    info = _inspect_json(capsys, str(demo_dir), "--count-rows")
    expected = _expected_rows_per_segment()
    ds = rrl.LocalDataset(demo_dir)
    for seg in info["segments"]:
        assert seg["rows"] == expected
        for name, n in seg["rows"].items():
            assert ds.reader(name, segments=[seg["id"]]).num_rows == n
    assert {tl["name"]: tl["rows"] for tl in info["timelines"]} == {
        name: n * N_EPISODES for name, n in expected.items()
    }


def test_inspect_text(capsys, demo_dir):
    rc, out, err = _run(capsys, "inspect", str(demo_dir), "--quiet", "--count-rows")
    assert rc == 0 and err == ""
    assert f"dataset: {demo_dir}" in out
    assert "2 segment(s), 2 timeline(s), 10 column(s) (4 static)" in out
    for text in (
        "episode_0000",
        "episode_0001",
        "sequence",
        "timestamp",
        "2024-01-01T00:00:00.000000000",
        "/camera/front:EncodedImage:blob",
        "list<item: double>",
        "static",
        "temporal",
    ):
        assert text in out, text
    rows = _expected_rows_per_segment()
    line = next(line for line in out.splitlines() if line.strip().startswith("episode_0000"))
    assert str(rows["frame"]) in line.split() and str(rows["time"]) in line.split()


def test_index_option(capsys, demo_dir):
    info = _inspect_json(capsys, str(demo_dir), "--index", "time")
    assert [tl["name"] for tl in info["timelines"]] == ["time"]
    assert all(set(s["ranges"]) == {"time"} for s in info["segments"])
    # The other timeline is still not listed as a component column.
    assert "frame" not in {c["name"] for c in info["columns"]}


def test_unknown_index_is_a_one_line_error(capsys, demo_dir):
    rc, out, err = _run(capsys, "inspect", str(demo_dir), "--index", "nope", "--quiet")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "'nope'" in err and "frame, time" in err


def test_list_of_files(capsys, demo_dir):
    files = sorted(str(p) for p in demo_dir.glob("*.rrd"))
    info = _inspect_json(capsys, *files)
    assert [s["id"] for s in info["segments"]] == ["episode_0000", "episode_0001"]
    assert info["source"] == files


def test_broken_file_is_a_one_line_error(capsys, tmp_path):
    bad = tmp_path / "bad.rrd"
    bad.write_bytes(b"XXXX" + b"\x00" * 60)
    rc, out, err = _run(capsys, "inspect", str(tmp_path), "--quiet")
    assert rc == 2 and out == ""
    assert err.startswith("rrloader: error: ") and err.count("\n") == 1
    assert str(bad) in err


@pytest.mark.parametrize("kind", ["missing", "no_rrd"])
def test_missing_input_is_a_one_line_error(capsys, tmp_path, kind):
    target = tmp_path / "missing" if kind == "missing" else tmp_path
    rc, out, err = _run(capsys, "inspect", str(target), "--quiet")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and str(target) in err


def test_usage_error_exits_2(capsys):
    from rrloader.cli import main

    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2


def _python(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, **kw)


def test_python_m_rrloader(demo_dir):
    # Not a terminal: no progress bar, so stderr stays empty.
    proc = _python("-m", "rrloader", "inspect", str(demo_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert [s["id"] for s in json.loads(proc.stdout)["segments"]] == ["episode_0000", "episode_0001"]


def test_python_m_rrloader_error_has_no_traceback(tmp_path):
    (tmp_path / "bad.rrd").write_bytes(b"")
    proc = _python("-m", "rrloader", "inspect", str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rrloader: error: ") and str(tmp_path / "bad.rrd") in proc.stderr


def test_demo_module_does_not_import_rerun_at_import_time():
    proc = _python("-c", "import sys, rrloader.demo; assert 'rerun' not in sys.modules, 'rerun imported'")
    assert proc.returncode == 0, proc.stderr


def test_demo_main_writes_once_then_reuses(tmp_path):
    out = tmp_path / "demo"
    args = ["-m", "rrloader.demo", "--out", str(out), "--episodes", "1", "--seconds", "1", "--quiet"]
    first = _python(*args)
    assert first.returncode == 0, first.stderr
    assert "wrote 1 episodes" in first.stderr
    assert "episode_0000" in first.stdout and "/robot/joint_state:Scalars:scalars" in first.stdout
    mtime = (out / "episode_0000.rrd").stat().st_mtime_ns
    second = _python(*args)
    assert second.returncode == 0, second.stderr
    assert "using the existing dataset" in second.stderr
    assert (out / "episode_0000.rrd").stat().st_mtime_ns == mtime
    assert second.stdout == first.stdout


def test_demo_dataset_is_deterministic(tmp_path):
    from rrloader import demo

    a = demo.write_demo_dataset(tmp_path / "a", n_episodes=1, seconds=1, progress=False)
    b = demo.write_demo_dataset(tmp_path / "b", n_episodes=1, seconds=1, progress=False)
    assert demo.existing_dataset(tmp_path / "a", n_episodes=1, seconds=1) == a
    assert demo.existing_dataset(tmp_path / "a", n_episodes=2, seconds=1) is None
    # Row ids and chunk ids differ per run, the data does not: compare query results.
    import rrloader

    ta = rrloader.LocalDataset(a).reader("frame")
    tb = rrloader.LocalDataset(b).reader("frame")
    assert ta.equals(tb)
