"""Writes the seed corpus of fuzz/fuzz_redap.cc: real answers of rerun-sdk's catalog server
(run: python tools/make_redap_fuzz_corpus.py DIR).

A small recording (a temporal and a static entity, two timelines) is served by an in-process
``rr.server.Server`` on 127.0.0.1; the seeds are its GetRrdManifest answer and each
FetchChunks message for the recording's chunks, fetched over gRPC with grpcio exactly as
rrloader's remote dataset asks (the requests are encoded here by hand: the protocol is
described in cpp/rrloader/catalog/redap.h).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import rerun as rr

SERVICE = "/rerun.cloud.v1alpha1.RerunCloudService/"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def main(out: str) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with rr.RecordingStream("fuzz", recording_id="seg") as rec:
            rec.save(str(Path(tmp) / "seg.rrd"))
            rec.log("/static", rr.Scalars([1.0]), static=True)
            for lo in range(0, 30, 10):
                frames = np.arange(lo, lo + 10)
                rec.send_columns(
                    "/state",
                    indexes=[rr.TimeColumn("frame", sequence=frames), rr.TimeColumn("t", duration=frames * 0.1)],
                    columns=rr.Scalars.columns(scalars=frames.astype(np.float64)),
                )
        server = rr.server.Server(host="127.0.0.1", datasets={"ds": tmp})
        try:
            channel = grpc.insecure_channel(server.url().split("//", 1)[1])
            metadata = (("x-rerun-entry-name-bin", b"ds"),)
            manifest = channel.unary_unary(SERVICE + "GetRrdManifest")(
                _field(1, _field(1, b"seg")), timeout=30, metadata=metadata
            )
            (d / "manifest.bin").write_bytes(manifest)
            # Every chunk of the manifest, asked for by its key (decoded here independently of
            # rrloader, so the seeds do not depend on the code they exercise).
            table = _manifest_table(manifest)
            ids = table["chunk_id"]
            request_table = pa.table(
                {
                    "chunk_id": ids,
                    "chunk_segment_id": pa.array(["seg"] * len(ids)),
                    "rerun_segment_layer": pa.array(["base"] * len(ids)),
                    "chunk_key": table["chunk_key"],
                }
            )
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, request_table.schema) as w:
                w.write_table(request_table)
            ipc = sink.getvalue().to_pybytes()
            part = _varint(1 << 3) + _varint(1) + _field(2, ipc)
            for k, message in enumerate(
                channel.unary_stream(SERVICE + "FetchChunks")(_field(1, part), timeout=30, metadata=metadata)
            ):
                (d / f"chunk_{k}.bin").write_bytes(message)
            channel.close()
        finally:
            server.shutdown()


def _manifest_table(answer: bytes) -> pa.Table:
    """The chunk table of a GetRrdManifest answer (protobuf walked by hand, LZ4 block via pyarrow)."""

    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            tag, i = _read_varint(buf, i)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                value, i = _read_varint(buf, i)
                yield number, value
            elif wire == 2:
                n, i = _read_varint(buf, i)
                yield number, buf[i : i + n]
                i += n
            elif wire == 1:
                yield number, buf[i : i + 8]
                i += 8
            else:
                yield number, buf[i : i + 4]
                i += 4

    manifest = dict(fields(answer))[1]
    part = dict(fields(dict(fields(manifest))[4]))
    payload = part[2]
    if part.get(3) == 2:  # COMPRESSION_LZ4 (a raw LZ4 block)
        payload = pa.decompress(payload, decompressed_size=part[4], codec="lz4_raw", asbytes=True)
    return pa.ipc.open_stream(payload).read_all()


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


if __name__ == "__main__":
    main(sys.argv[1])
