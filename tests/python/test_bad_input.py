"""Bad `.rrd` input: every broken file fails with the right exception, naming file and offset.

The recordings are written by rerun-sdk at test time and then broken by byte surgery
(tests/python/rrdbytes.py). Each test writes one broken file into its own folder and
opens that folder; the error may surface at `LocalDataset(...)` (files are opened by
reading the footer, or scanned when they have none) or at the first `reader(...)` call
(chunk payloads of footer-bearing files are read lazily), never later and never as a
different type.

The contract pinned here, where the spec leaves room (shared/spec/rrd-format.md):

* RrdTruncatedError — the file ends before a structure it is reading is complete: fewer
  than 12 bytes that are a valid start of a stream header (the empty file included). A
  caller may retry a truncated file that is still being written.
* A stream whose last message (or footer trailer) is cut short is RrdTruncatedError, with or
  without a footer: the spec's reference decoder treats a cut final message as end of data,
  but rrloader never silently serves a shortened recording (the issue asks for an exception,
  and a training set missing its tail is a silently wrong sample set). A footer-bearing file
  cut anywhere loses its trailer, is scanned, and fails the same way.
* An intact trailer whose footer range, or a manifest whose chunk range, points past EOF
  is RrdCorruptError, not truncated: the trailer is written last, so the writer finished;
  the file contradicts its own index, and waiting for more bytes cannot help.
* RrdCorruptError — bytes present but invalid: bad magic (also in a file shorter than 12
  bytes: "hello" will never become an .rrd), protobuf, LZ4, Arrow IPC (also an IPC stream
  cut short *inside* a complete message: the file is whole, the payload is broken), footer
  checksum.
* RrdUnsupportedError — RRF0/RRF1, version < 0.23, serializer/compression/encoding values
  we do not know (with a valid magic and version, an unknown value most likely comes from
  a newer writer, and newer versions are otherwise accepted).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rrdbytes as rb

ROWS_PER_CHUNK = 10
N_CHUNKS = 3  # three /x chunks: frames 0-9, 10-19, 20-29


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rrl():
    import rrloader

    return rrloader


def _write_recording(path: Path, *, write_footer: bool) -> bytes:
    import rerun as rr

    with rr.RecordingStream("bad_input", recording_id="r") as rec:
        rec.save(path, write_footer=write_footer)
        for k in range(N_CHUNKS):
            frames = np.arange(k * ROWS_PER_CHUNK, (k + 1) * ROWS_PER_CHUNK)
            rec.send_columns(
                "/x",
                indexes=[rr.TimeColumn("frame", sequence=frames)],
                columns=rr.Scalars.columns(scalars=frames.astype(np.float64)),
            )
    return path.read_bytes()


@dataclass(frozen=True)
class Recordings:
    footer: bytes  # as rerun-sdk writes it by default
    no_footer: bytes  # write_footer=False

    def base(self, with_footer: bool) -> bytes:
        return self.footer if with_footer else self.no_footer


@pytest.fixture(scope="module")
def recs(tmp_path_factory) -> Recordings:
    d = tmp_path_factory.mktemp("good")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        footer = _write_recording(d / "footer.rrd", write_footer=True)
        no_footer = _write_recording(d / "no_footer.rrd", write_footer=False)
    layout = rb.parse(footer)
    assert layout.has_footer and rb.footer_crc_ok(footer)
    assert len(rb.find_arrow_msgs(footer, "/x")) == N_CHUNKS
    assert not rb.parse(no_footer).has_footer
    assert len(rb.find_arrow_msgs(no_footer, "/x")) == N_CHUNKS
    return Recordings(footer=footer, no_footer=no_footer)


def _place(tmp_path: Path, data: bytes, name: str = "broken.rrd") -> Path:
    folder = tmp_path / "ds"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def _open_and_read(rrl, target):
    """What a user does first: open, then one reader() call that needs every /x chunk."""
    ds = rrl.LocalDataset(target)
    return ds, ds.reader("frame")


def _names(msg: str, path: Path) -> bool:
    return str(path) in msg or os.path.realpath(path) in msg


def expect_error(rrl, path: Path, exc_type: type, *, offset: bool = True, target=None) -> BaseException:
    """Open the folder holding `path` (or `target`) and require `exc_type` naming `path`."""
    target = path.parent if target is None else target
    with pytest.raises(exc_type) as info:
        _open_and_read(rrl, target)
    msg = str(info.value)
    assert _names(msg, path), f"message does not name {path}: {msg!r}"
    if offset:
        assert re.search(r"offset \d+", msg), f"message has no byte offset: {msg!r}"
    return info.value


def expect_rows(rrl, path: Path, frames: list[int]):
    """The file opens and reader('frame') returns exactly these frames."""
    _, table = _open_and_read(rrl, path.parent)
    assert sorted(table.column("frame").to_pylist()) == frames


ALL_FRAMES = list(range(N_CHUNKS * ROWS_PER_CHUNK))
FIRST_TWO_CHUNKS = list(range(2 * ROWS_PER_CHUNK))


def _last_x_chunk(data: bytes) -> rb.Message:
    return rb.find_arrow_msgs(data, "/x")[-1]


# --- the helpers themselves, against real files ------------------------------------------


def test_rrdbytes_understands_real_files(recs):
    for data in (recs.footer, recs.no_footer):
        layout = rb.parse(data)
        assert layout.header[:4] == b"RRF2"
        assert layout.messages[0].kind == rb.KIND_SET_STORE_INFO
        for m in layout.arrow_msgs:
            msg = rb.decode_arrow_msg(m.payload(data))
            assert msg.encoding == rb.ENCODING_ARROW_IPC
            assert msg.compression == rb.COMPRESSION_LZ4
            ipc = msg.ipc_bytes()  # pure-Python LZ4 gives exactly uncompressed_size bytes...
            assert pa.ipc.open_stream(ipc).read_all().num_rows >= 1  # ...that Arrow reads
            assert rb.lz4_block_decompress(rb.lz4_block_compress_literals(ipc), len(ipc)) == ipc
    # The footer manifest indexes exactly the ArrowMsg payloads we found by scanning.
    (table,) = rb.manifest_tables(recs.footer)
    spans = [(m.payload_offset, m.length) for m in rb.parse(recs.footer).arrow_msgs]
    assert (
        list(zip(table["chunk_byte_offset"].to_pylist(), table["chunk_byte_size"].to_pylist(), strict=True))
        == spans
    )
    # Rewriting the manifest keeps a file rerun-sdk itself still reads.
    assert rb.footer_crc_ok(rb.replace_manifest_tables(recs.footer, [table]))
    assert rb.strip_footer(recs.footer) != recs.footer
    assert not rb.parse(rb.strip_footer(recs.footer)).has_footer


def test_rrdbytes_xxh32_reference_values():
    assert rb.xxh32(b"", 0) == 0x02CC5D05
    assert rb.xxh32(b"abc", 0) == 0x32D153FF
    assert rb.xxh32(b"Nobody inspects the spammish repetition", 0) == 0xE2293B2F


def test_good_files_open(rrl, recs, tmp_path):
    expect_rows(rrl, _place(tmp_path, recs.footer, "a.rrd"), ALL_FRAMES)
    expect_rows(rrl, _place(tmp_path / "nf", recs.no_footer, "b.rrd"), ALL_FRAMES)


# --- truncation --------------------------------------------------------------------------


def test_empty_file_is_truncated(rrl, tmp_path):
    expect_error(rrl, _place(tmp_path, b""), rrl.RrdTruncatedError)


def test_five_byte_header_prefix_is_truncated(rrl, recs, tmp_path):
    # The 5 bytes that are there are a valid start of a stream header: the file ends early.
    expect_error(rrl, _place(tmp_path, recs.footer[:5]), rrl.RrdTruncatedError)


def test_five_byte_garbage_is_corrupt(rrl, tmp_path):
    # Fewer than 12 bytes, but the magic is already visibly wrong: not an rrd at all.
    expect_error(rrl, _place(tmp_path, b"hello"), rrl.RrdCorruptError)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_footerless_cut_in_last_message_is_truncated(rrl, recs, tmp_path, where):
    # A crash while writing leaves the last message incomplete. rrloader reports it (never a
    # silently shortened recording); the message names the file and the byte offset.
    last = _last_x_chunk(recs.no_footer)
    cut = last.middle_offset if where == "payload" else last.header_offset + 7
    expect_error(rrl, _place(tmp_path, rb.truncate(recs.no_footer, cut)), rrl.RrdTruncatedError)


@pytest.mark.parametrize("where", ["last_chunk", "footer_payload", "trailer"])
def test_footer_file_cut_is_truncated(rrl, recs, tmp_path, where):
    # The trailer lives in the last 32 bytes, so any cut removes it: the file is scanned
    # and the scan meets the incomplete message (or the incomplete trailer).
    layout = rb.parse(recs.footer)
    if where == "last_chunk":
        cut = _last_x_chunk(recs.footer).middle_offset
    elif where == "footer_payload":
        cut = layout.end_message.middle_offset
    else:
        cut = layout.file_size - 5
    expect_error(rrl, _place(tmp_path, rb.truncate(recs.footer, cut)), rrl.RrdTruncatedError)


def test_footer_range_past_eof_is_corrupt(rrl, recs, tmp_path):
    # The trailer survives but the footer payload it indexes is cut short (bytes lost from
    # the middle of the file, e.g. a bad copy): §2.5 step 4 (start + len > file size).
    # Corrupt rather than truncated: the trailer is written last, so this file is finished
    # and contradicts its own index.
    layout = rb.parse(recs.footer)
    data = recs.footer[: layout.end_message.middle_offset] + recs.footer[layout.trailer.offset :]
    assert rb.parse_trailer(data) is not None
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_manifest_chunk_past_eof_is_corrupt(rrl, recs, tmp_path):
    # A valid footer (checksum fixed) whose manifest says the last /x chunk is 1 GB long:
    # at open (if the engine validates the manifest) or at the first reader() call that
    # needs the chunk. Corrupt for the same reason as above.
    (table,) = rb.manifest_tables(recs.footer)
    sizes = table["chunk_byte_size"].to_pylist()
    sizes[-1] = 1 << 30
    i = table.schema.get_field_index("chunk_byte_size")
    table = table.set_column(i, table.schema.field(i), pa.array(sizes, pa.uint64()))
    data = rb.replace_manifest_tables(recs.footer, [table])
    assert rb.footer_crc_ok(data)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


# --- stream header -------------------------------------------------------------------------


@pytest.mark.parametrize("magic", [b"RRX2", b"PK\x03\x04", b"\x00\x00\x00\x00", b"rrf2"])
def test_wrong_magic_is_corrupt(rrl, recs, tmp_path, magic):
    exc = expect_error(rrl, _place(tmp_path, rb.replace_bytes(recs.footer, 0, magic)), rrl.RrdCorruptError)
    assert "offset 0" in str(exc)


def test_text_file_named_rrd_is_corrupt(rrl, tmp_path):
    expect_error(rrl, _place(tmp_path, b"this is not a recording\n" * 10), rrl.RrdCorruptError)


@pytest.mark.parametrize("magic", [b"RRF0", b"RRF1"])
def test_old_fourcc_is_unsupported(rrl, recs, tmp_path, magic):
    data = rb.replace_bytes(recs.footer, 0, magic)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdUnsupportedError)


@pytest.mark.parametrize("version", [(0, 22, 9, 0), (0, 0, 0, 0), (0, 15, 1, 0x41)])
def test_version_before_0_23_is_unsupported(rrl, recs, tmp_path, version):
    # 00 00 00 00 means 0.2.0 (files before 2023-02-27); major 0, minor < 23 is refused.
    data = rb.replace_bytes(recs.footer, 4, bytes(version))
    expect_error(rrl, _place(tmp_path, data), rrl.RrdUnsupportedError)


@pytest.mark.parametrize("version", [(0, 23, 0, 0), (0, 99, 0, 0xC1), (1, 2, 3, 0)])
def test_version_0_23_and_newer_is_accepted(rrl, recs, tmp_path, version):
    # Newer than the reader: accepted (the reference reader only warns).
    data = rb.replace_bytes(recs.footer, 4, bytes(version))
    expect_rows(rrl, _place(tmp_path, data), ALL_FRAMES)


@pytest.mark.parametrize("serializer", [0, 1, 3, 255])
def test_unknown_serializer_is_unsupported(rrl, recs, tmp_path, serializer):
    # 1 = the removed MsgPack serializer; only 2 (Protobuf) is read.
    data = rb.replace_bytes(recs.footer, 9, bytes([serializer]))
    expect_error(rrl, _place(tmp_path, data), rrl.RrdUnsupportedError)


@pytest.mark.parametrize("compression", [2, 7, 255])
def test_unknown_header_compression_is_unsupported(rrl, recs, tmp_path, compression):
    data = rb.replace_bytes(recs.footer, 8, bytes([compression]))
    expect_error(rrl, _place(tmp_path, data), rrl.RrdUnsupportedError)


def test_header_compression_byte_is_advisory(rrl, recs, tmp_path):
    # Byte 8 says "off" but the messages are LZ4: each ArrowMsg's own field decides (§2.1).
    data = rb.replace_bytes(recs.footer, 8, b"\x00")
    expect_rows(rrl, _place(tmp_path, data), ALL_FRAMES)


def test_reserved_header_bytes_nonzero_is_an_error(rrl, recs, tmp_path):
    # Spec §2.1: "must both be 0; non-zero is an error" without saying which kind, so any
    # RrdFormatError is accepted here.
    data = rb.replace_bytes(recs.footer, 10, b"\x01\x00")
    expect_error(rrl, _place(tmp_path, data), rrl.RrdFormatError)


# --- protobuf --------------------------------------------------------------------------------


def _overrunning_field() -> bytes:
    # Field 1 (store_id), length-delimited, claiming 2**31 bytes: runs past any payload.
    return rb.encode_varint(1 << 3 | rb.WIRE_LEN) + rb.encode_varint(1 << 31)


@pytest.mark.parametrize("with_footer", [False, True], ids=["no_footer", "footer"])
def test_corrupt_arrow_msg_protobuf(rrl, recs, tmp_path, with_footer):
    base = recs.base(with_footer)
    last = _last_x_chunk(base)
    data = rb.replace_bytes(base, last.payload_offset, _overrunning_field())  # same length
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_corrupt_arrow_msg_protobuf_bad_wire_type(rrl, recs, tmp_path):
    # Wire types 6 and 7 do not exist.
    last = _last_x_chunk(recs.no_footer)
    data = rb.replace_bytes(recs.no_footer, last.payload_offset, bytes([1 << 3 | 7]))
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_corrupt_set_store_info_protobuf(rrl, recs, tmp_path):
    first = rb.parse(recs.no_footer).messages[0]
    assert first.kind == rb.KIND_SET_STORE_INFO
    data = rb.replace_bytes(recs.no_footer, first.payload_offset, _overrunning_field())
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_corrupt_footer_protobuf_with_valid_checksum(rrl, recs, tmp_path):
    data = rb.replace_footer(recs.footer, _overrunning_field() + b"\x00" * 16)
    assert rb.footer_crc_ok(data)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


# --- LZ4 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_footer", [False, True], ids=["no_footer", "footer"])
def test_corrupt_lz4_payload(rrl, recs, tmp_path, with_footer):
    # 0xFF everywhere: the first token's literal length grows with every 255 byte and runs
    # past the input, so no LZ4 decoder can accept it (checked with our own below).
    base = recs.base(with_footer)
    last = _last_x_chunk(base)
    msg = rb.decode_arrow_msg(last.payload(base))
    junk = b"\xff" * len(msg.payload)
    with pytest.raises(ValueError):
        rb.lz4_block_decompress(junk, msg.uncompressed_size)
    data = rb.replace_bytes(base, last.payload_offset + msg.payload_start, junk)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


@pytest.mark.parametrize("delta", [+100, -1])
def test_lz4_uncompressed_size_mismatch(rrl, recs, tmp_path, delta):
    # Spec §3.8: decompression must yield exactly `uncompressed_size` bytes.
    last = _last_x_chunk(recs.no_footer)
    pb = last.payload(recs.no_footer)
    size = rb.decode_arrow_msg(pb).uncompressed_size
    pb = rb.set_field(pb, rb.ARROW_MSG_UNCOMPRESSED_SIZE, size + delta)
    data = rb.replace_payload(recs.no_footer, last, pb)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


# --- Arrow payload ---------------------------------------------------------------------------


def _with_last_chunk_ipc(base: bytes, ipc: bytes, compression: int = rb.COMPRESSION_NONE) -> bytes:
    last = _last_x_chunk(base)
    pb = rb.arrow_msg_with_ipc(last.payload(base), ipc, compression=compression)
    return rb.replace_payload(base, last, pb)


@pytest.mark.parametrize("compression", [rb.COMPRESSION_NONE, rb.COMPRESSION_LZ4], ids=["none", "lz4"])
def test_garbage_arrow_ipc_is_corrupt(rrl, recs, tmp_path, compression):
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8))
    data = _with_last_chunk_ipc(recs.no_footer, garbage, compression)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_arrow_ipc_cut_short_inside_message_is_corrupt(rrl, recs, tmp_path):
    # The file is complete; the payload inside a complete message is not -> corrupt.
    ipc = rb.decode_arrow_msg(_last_x_chunk(recs.no_footer).payload(recs.no_footer)).ipc_bytes()
    data = _with_last_chunk_ipc(recs.no_footer, ipc[: len(ipc) * 2 // 3])
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_arrow_ipc_without_record_batch_is_corrupt(rrl, recs, tmp_path):
    # Spec §3.7 step 4: zero record batches is an error.
    msg = rb.decode_arrow_msg(_last_x_chunk(recs.no_footer).payload(recs.no_footer))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.chunk_schema(msg)):
        pass
    data = _with_last_chunk_ipc(recs.no_footer, sink.getvalue().to_pybytes())
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


@pytest.mark.parametrize(
    "compression", [rb.COMPRESSION_NONE, rb.COMPRESSION_UNSPECIFIED], ids=["none", "unspecified"]
)
def test_uncompressed_arrow_msg_is_read(rrl, recs, tmp_path, compression):
    # Positive control for the tests above: the same IPC bytes stored uncompressed (which
    # the Python SDK cannot write) are read, whatever the stream header's byte 8 says.
    last = _last_x_chunk(recs.no_footer)
    pb = rb.arrow_msg_uncompressed(last.payload(recs.no_footer))
    pb = rb.set_field(pb, rb.ARROW_MSG_COMPRESSION, compression)
    data = rb.replace_payload(recs.no_footer, last, pb)
    expect_rows(rrl, _place(tmp_path, data), ALL_FRAMES)


def test_unknown_encoding_is_unsupported(rrl, recs, tmp_path):
    last = _last_x_chunk(recs.no_footer)
    pb = rb.set_field(last.payload(recs.no_footer), rb.ARROW_MSG_ENCODING, 2)
    data = rb.replace_payload(recs.no_footer, last, pb)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdUnsupportedError)


def test_unknown_arrow_msg_compression_is_unsupported(rrl, recs, tmp_path):
    last = _last_x_chunk(recs.no_footer)
    pb = rb.set_field(last.payload(recs.no_footer), rb.ARROW_MSG_COMPRESSION, 9)
    data = rb.replace_payload(recs.no_footer, last, pb)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdUnsupportedError)


# --- footer checksum -----------------------------------------------------------------------------


def test_footer_checksum_mismatch_payload_byte(rrl, recs, tmp_path):
    end = rb.parse(recs.footer).end_message
    data = rb.flip_byte(recs.footer, end.middle_offset)
    assert not rb.footer_crc_ok(data)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


def test_footer_checksum_mismatch_crc_field(rrl, recs, tmp_path):
    trailer = rb.parse(recs.footer).trailer
    data = rb.flip_byte(recs.footer, trailer.offset + 16, 0x01)
    assert not rb.footer_crc_ok(data)
    expect_error(rrl, _place(tmp_path, data), rrl.RrdCorruptError)


# --- paths ----------------------------------------------------------------------------------------


def test_directory_without_rrd(rrl, recs, tmp_path):
    folder = tmp_path / "no_rrd"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing here")
    (folder / "x.rrd.bak").write_bytes(recs.footer)
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.rrd").write_bytes(recs.footer)  # not found: the scan is not recursive
    with pytest.raises(rrl.NoRecordingsError) as info:
        rrl.LocalDataset(folder)
    assert _names(str(info.value), folder)


def test_empty_directory(rrl, tmp_path):
    with pytest.raises(rrl.NoRecordingsError) as info:
        rrl.LocalDataset(tmp_path)
    assert _names(str(info.value), tmp_path)


def test_nonexistent_path(rrl, tmp_path):
    # Not an .rrd problem: the OS one (FileNotFoundError) or our own base class.
    missing = tmp_path / "does-not-exist"
    with pytest.raises((FileNotFoundError, rrl.RrloaderError)) as info:
        rrl.LocalDataset(missing)
    assert _names(str(info.value), missing)


def test_nonexistent_file_in_list(rrl, recs, tmp_path):
    good = _place(tmp_path, recs.footer, "good.rrd")
    missing = tmp_path / "missing.rrd"
    with pytest.raises((FileNotFoundError, rrl.RrloaderError)) as info:
        rrl.LocalDataset([good, missing])
    assert _names(str(info.value), missing)


def test_error_names_the_bad_file_among_good_ones(rrl, recs, tmp_path):
    _place(tmp_path, recs.footer, "a_good.rrd")
    bad = _place(tmp_path, rb.replace_bytes(recs.footer, 0, b"XXXX"), "b_bad.rrd")
    exc = expect_error(rrl, bad, rrl.RrdCorruptError)
    assert "a_good.rrd" not in str(exc)


def test_list_of_paths_error_names_the_file(rrl, recs, tmp_path):
    bad = _place(tmp_path, rb.replace_bytes(recs.footer, 0, b"RRF1"))
    expect_error(rrl, bad, rrl.RrdUnsupportedError, target=[bad])


def test_errors_share_one_base_class(rrl):
    for cls in (rrl.RrdTruncatedError, rrl.RrdCorruptError, rrl.RrdUnsupportedError):
        assert issubclass(cls, rrl.RrdFormatError)
    for cls in (rrl.RrdFormatError, rrl.NoRecordingsError):
        assert issubclass(cls, rrl.RrloaderError)
    assert rrl.errors.RrdCorruptError is rrl.RrdCorruptError
