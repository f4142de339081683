"""The `rrloader` command line.

    rrloader inspect PATH... [--index NAME] [--json] [--count-rows] [--quiet]

`inspect` opens a folder of `.rrd` files (or the files given) and prints what a training
script needs to know before it asks for samples: the segments (recording ids), the
timelines with their kind and per-segment ranges, the component columns (name, Arrow type,
static or temporal) and, with --count-rows, the number of rows `reader(index)` returns per
segment and timeline.

Without --count-rows only the footers are read (cheap even for thousands of files); with it
every chunk of every segment is read once. A progress bar goes to stderr while opening and
counting, unless stderr is not a terminal or --quiet is given.

Errors (a broken or missing file, an unknown timeline) print one line to stderr and exit
with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 2

SEGMENT_ID_COLUMN = "rerun_segment_id"


class CliError(Exception):
    """A user-facing error with a one-line message (bad argument, unknown timeline)."""


# --- progress -----------------------------------------------------------------------------


class Progress:
    """A tqdm bar on stderr, or nothing (not a tty, --quiet, or tqdm not installed).

    `spin()` covers one long native call without progress callbacks: the bar shows the
    elapsed time, refreshed from a helper thread (the engine releases the GIL while it
    works). `steps()` wraps an iterable with a counting bar.
    """

    def __init__(self, enabled: bool):
        self._tqdm = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            self._tqdm = tqdm

    @contextlib.contextmanager
    def spin(self, desc: str) -> Iterator[None]:
        if self._tqdm is None:
            yield
            return
        bar = self._tqdm(total=None, desc=desc, file=sys.stderr, leave=False, bar_format="{desc}: {elapsed}")
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(0.25):
                bar.refresh()

        thread = threading.Thread(target=refresh, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            bar.close()

    def steps(self, iterable, *, total: int, desc: str, unit: str):
        if self._tqdm is None:
            return iterable
        return self._tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)


# --- gathering ------------------------------------------------------------------------------


def dataset_target(paths: Sequence[str | os.PathLike]) -> str | list[str]:
    """What LocalDataset takes: a single folder as is, otherwise the list of files."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return str(paths[0])
    return [str(p) for p in paths]


def count_rrd_files(target: str | list[str]) -> int:
    if isinstance(target, list):
        return len(target)
    try:
        with os.scandir(target) as it:
            return sum(1 for e in it if e.name.endswith(".rrd") and e.is_file())
    except OSError:
        return 0


def open_dataset(paths: Sequence[str | os.PathLike], progress: Progress):
    """`rrloader.LocalDataset` over `paths`, with a progress bar while it opens."""
    import rrloader

    target = dataset_target(paths)
    n = count_rrd_files(target)
    desc = f"opening {n} file{'s' if n != 1 else ''}"
    with progress.spin(desc):
        return rrloader.LocalDataset(target)


def _meta(field, key: str) -> str | None:
    md = field.metadata or {}
    value = md.get(key.encode())
    return None if value is None else value.decode(errors="replace")


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("false", "no", "0", "")


def _to_int(value) -> int | None:
    """An index value as int64 (ns for timestamps/durations), from a pyarrow scalar."""
    if value is None or not value.is_valid:
        return None
    import pyarrow as pa

    return value.cast(pa.int64()).as_py()


def format_index_value(value: int | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "timestamp":
        import numpy as np

        return str(np.datetime64(value, "ns"))
    if kind == "duration":
        return f"{value / 1e9:.9g}s"
    return str(value)


def inspect_dataset(
    ds,
    *,
    indexes: Sequence[str] | None = None,
    count_rows: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Everything `rrloader inspect` prints, as plain JSON-able data (index values as int64)."""
    progress = progress or Progress(False)
    schema = ds.schema()
    ranges = ds.get_index_ranges()
    all_kinds = ds.timelines()  # name -> sequence / timestamp / duration
    kinds = dict(sorted(all_kinds.items()))
    if indexes:
        unknown = [i for i in indexes if i not in kinds]
        if unknown:
            have = ", ".join(kinds) or "none"
            raise CliError(f"unknown timeline {', '.join(map(repr, unknown))} (the dataset has: {have})")
        kinds = {name: kinds[name] for name in indexes}
    timelines = [{"name": name, "kind": kind} for name, kind in kinds.items()]

    by_segment: dict[str, dict[str, dict[str, int | None]]] = {}
    if SEGMENT_ID_COLUMN in ranges.column_names:
        seg_col = ranges.column(SEGMENT_ID_COLUMN).to_pylist()
        for row, seg in enumerate(seg_col):
            seg_ranges = by_segment.setdefault(seg, {})
            for name in kinds:
                if f"{name}:start" not in ranges.column_names:
                    continue
                start = _to_int(ranges.column(f"{name}:start")[row])
                end = _to_int(ranges.column(f"{name}:end")[row])
                if start is not None or end is not None:
                    seg_ranges[name] = {"start": start, "end": end}

    chunk_rows = ds.chunk_row_counts()
    segments = [
        {"id": seg, "chunk_rows": chunk_rows.get(seg), "ranges": by_segment.get(seg, {})}
        for seg in ds.segment_ids()
    ]
    for tl in timelines:
        present = [s["ranges"][tl["name"]] for s in segments if tl["name"] in s["ranges"]]
        starts = [r["start"] for r in present if r["start"] is not None]
        ends = [r["end"] for r in present if r["end"] is not None]
        tl["segments"] = len(present)
        tl["start"] = min(starts) if starts else None
        tl["end"] = max(ends) if ends else None

    if count_rows:
        work = [(s, tl["name"]) for s in segments for tl in timelines if tl["name"] in s["ranges"]]
        for seg, name in progress.steps(work, total=len(work), desc="counting rows", unit="query"):
            seg.setdefault("rows", {})[name] = ds.reader(name, segments=[seg["id"]]).num_rows
        for tl in timelines:
            tl["rows"] = sum(s.get("rows", {}).get(tl["name"], 0) for s in segments)

    columns = []
    for field in schema:
        kind = _meta(field, "rerun:kind")
        if field.name in all_kinds or field.name == SEGMENT_ID_COLUMN or kind in ("index", "control"):
            continue
        columns.append(
            {
                "name": field.name,
                "type": str(field.type),
                "static": _is_true(_meta(field, "rerun:is_static")),
                "entity_path": _meta(field, "rerun:entity_path"),
                "component": _meta(field, "rerun:component"),
            }
        )

    return {
        "segments": segments,
        "timelines": timelines,
        "columns": columns,
    }


# --- printing ---------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = indent + "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip(), indent + "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*row).rstrip() for row in rows]
    return lines


def format_text(info: dict[str, Any], source: str) -> str:
    segments, timelines, columns = info["segments"], info["timelines"], info["columns"]
    kinds = {tl["name"]: tl["kind"] for tl in timelines}
    n_static = sum(c["static"] for c in columns)
    n_chunk_rows = sum(s["chunk_rows"] or 0 for s in segments)
    out = [
        f"dataset: {source}",
        f"{len(segments)} segment(s), {len(timelines)} timeline(s), "
        f"{len(columns)} column(s) ({n_static} static), {n_chunk_rows} chunk rows",
        "",
        "timelines",
    ]
    counted = any("rows" in tl for tl in timelines)
    headers = ["name", "kind", "segments", "min", "max"] + (["rows"] if counted else [])
    rows = []
    for tl in timelines:
        row = [
            tl["name"],
            tl["kind"],
            str(tl["segments"]),
            format_index_value(tl["start"], tl["kind"]),
            format_index_value(tl["end"], tl["kind"]),
        ]
        rows.append(row + ([str(tl.get("rows", "-"))] if counted else []))
    out += _table(headers, rows) if timelines else ["  (none)"]

    out += ["", "segments"]
    headers = ["segment", "chunk rows"]
    for tl in timelines:
        headers += [f"{tl['name']} start", f"{tl['name']} end"] + ([f"{tl['name']} rows"] if counted else [])
    rows = []
    for seg in segments:
        row = [seg["id"], "-" if seg["chunk_rows"] is None else str(seg["chunk_rows"])]
        for tl in timelines:
            r = seg["ranges"].get(tl["name"], {})
            row += [format_index_value(r.get("start"), kinds[tl["name"]])]
            row += [format_index_value(r.get("end"), kinds[tl["name"]])]
            if counted:
                n = seg.get("rows", {}).get(tl["name"])
                row.append("-" if n is None else str(n))
        rows.append(row)
    out += _table(headers, rows) if segments else ["  (none)"]

    out += ["", "columns"]
    rows = [[c["name"], c["type"], "static" if c["static"] else "temporal"] for c in columns]
    out += _table(["name", "arrow type", "kind"], rows) if columns else ["  (none)"]
    return "\n".join(out) + "\n"


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrloader", description="Inspect Rerun .rrd datasets with rrloader."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "inspect",
        help="print segments, timelines, columns and row counts of a dataset",
        description="Print segments, timelines (kind, per-segment ranges), columns (Arrow type, "
        "static or temporal) and, with --count-rows, dataframe row counts.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a folder of .rrd files, or .rrd files")
    p.add_argument(
        "--index",
        action="append",
        metavar="NAME",
        help="show only this timeline (repeatable); default: all",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--count-rows",
        action="store_true",
        help="count the rows reader(index) returns per segment and timeline (reads every chunk)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def run_inspect(args: argparse.Namespace) -> int:
    progress = Progress(not args.quiet)
    ds = open_dataset(args.paths, progress)
    info = inspect_dataset(ds, indexes=args.index, count_rows=args.count_rows, progress=progress)
    source = args.paths[0] if len(args.paths) == 1 else f"{len(args.paths)} files"
    if args.json:
        info = {"source": [str(p) for p in args.paths], **info}
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        sys.stdout.write(format_text(info, str(source)))
    sys.stdout.flush()
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _handled_errors() -> tuple[type[BaseException], ...]:
    """The exceptions reported as one line: ours, the OS's, and a missing engine build."""
    errors: tuple[type[BaseException], ...] = (CliError, OSError, ImportError)
    with contextlib.suppress(ImportError):
        from rrloader.errors import RrloaderError

        errors += (RrloaderError,)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handled = _handled_errors()
    try:
        if args.command == "inspect":
            return run_inspect(args)
        raise CliError(f"unknown command {args.command!r}")
    except BrokenPipeError:  # `rrloader inspect ... | head`
        _silence_stdout()
        return EXIT_OK
    except handled as exc:
        print(f"rrloader: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    # After a broken pipe, Python would complain again when it flushes stdout at exit.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
