"""rrdbytes — byte-level helpers for taking `.rrd` files apart and breaking them on purpose.

Used by tests (tests/python/test_bad_input.py) and to make fuzz seeds. Everything here is
written from the format description in shared/spec/rrd-format.md (§2 framing, §3 protobuf,
§3.8 LZ4, §5 footer manifest) and depends only on the standard library plus pyarrow (for
the few helpers that look inside Arrow IPC payloads). No rerun-sdk, lz4 or xxhash import:
the LZ4 block decoder and XXH32 below are small pure-Python versions, good enough for
test-sized files.

Vocabulary:
  * offsets are byte offsets from the start of the file;
  * a "message" is a 16-byte header (u64 kind, u64 len) followed by `len` payload bytes;
  * the "trailer" is the fixed 32-byte StreamFooter at EOF (start u64, len u64, crc u32,
    "RRF2", "FOOT", u32 count);
  * the "footer payload" is the RrdFooter protobuf, i.e. the End message's payload.

`parse()` is strict: it is meant for well-formed files written by rerun-sdk, and raises
ValueError on anything it does not understand, so a test never silently breaks the wrong
bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# --- framing constants (spec §2) -----------------------------------------------------

STREAM_HEADER_LEN = 12
MESSAGE_HEADER_LEN = 16
TRAILER_LEN = 32
FOURCC = b"RRF2"
FOOTER_ID = b"FOOT"

KIND_END = 0
KIND_SET_STORE_INFO = 1
KIND_ARROW_MSG = 2
KIND_BLUEPRINT_ACTIVATION = 3

XXH32_SEED_RERUN = 7850921  # "RERUN" read as a base-26 number (spec §2.4)

# ArrowMsg protobuf field numbers (spec §3.5)
ARROW_MSG_STORE_ID = 1
ARROW_MSG_COMPRESSION = 2
ARROW_MSG_UNCOMPRESSED_SIZE = 3
ARROW_MSG_ENCODING = 4
ARROW_MSG_PAYLOAD = 5
ARROW_MSG_CHUNK_ID = 6
ARROW_MSG_IS_STATIC = 7

COMPRESSION_UNSPECIFIED = 0
COMPRESSION_NONE = 1
COMPRESSION_LZ4 = 2
ENCODING_ARROW_IPC = 1

# RrdFooter / RrdManifest / DataframePart field numbers (spec §3.1, §3.6)
FOOTER_MANIFESTS = 1
MANIFEST_STORE_ID = 1
MANIFEST_DATA = 4
DATAFRAME_PART_ENCODER_VERSION = 1
DATAFRAME_PART_PAYLOAD = 2
DATAFRAME_PART_COMPRESSION = 3
DATAFRAME_PART_UNCOMPRESSED_SIZE = 4


# --- framing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One framed message: `header_offset` is where its 16-byte header starts."""

    index: int
    kind: int
    header_offset: int
    length: int

    @property
    def payload_offset(self) -> int:
        return self.header_offset + MESSAGE_HEADER_LEN

    @property
    def end_offset(self) -> int:
        """One past the last payload byte."""
        return self.payload_offset + self.length

    @property
    def middle_offset(self) -> int:
        """A byte offset strictly inside the payload (needs length >= 2)."""
        return self.payload_offset + self.length // 2

    def payload(self, data: bytes) -> bytes:
        return bytes(data[self.payload_offset : self.end_offset])


@dataclass(frozen=True)
class Trailer:
    """The 32-byte StreamFooter at EOF; `offset` is where it starts (= file size - 32)."""

    offset: int
    start: int
    length: int
    crc: int
    count: int


@dataclass(frozen=True)
class Layout:
    """The framing of a single-stream `.rrd` file."""

    file_size: int
    header: bytes
    messages: tuple[Message, ...]
    trailer: Trailer | None

    @property
    def arrow_msgs(self) -> list[Message]:
        return [m for m in self.messages if m.kind == KIND_ARROW_MSG]

    @property
    def end_message(self) -> Message | None:
        ends = [m for m in self.messages if m.kind == KIND_END]
        return ends[-1] if ends else None

    @property
    def has_footer(self) -> bool:
        return self.trailer is not None


def parse_trailer(data: bytes) -> Trailer | None:
    """The StreamFooter trailer if the last 32 bytes look like one (spec §2.5), else None."""
    if len(data) < STREAM_HEADER_LEN + TRAILER_LEN:
        return None
    off = len(data) - TRAILER_LEN
    start, length, crc = struct.unpack_from("<QQI", data, off)
    if data[off + 20 : off + 24] != FOURCC or data[off + 24 : off + 28] != FOOTER_ID:
        return None
    (count,) = struct.unpack_from("<I", data, off + 28)
    return Trailer(offset=off, start=start, length=length, crc=crc, count=count)


def parse(data: bytes) -> Layout:
    """Split a well-formed, single-stream `.rrd` into header, messages and trailer.

    Raises ValueError for anything unexpected (this is a test helper, not a reader).
    """
    data = bytes(data)
    if len(data) < STREAM_HEADER_LEN or data[:4] != FOURCC:
        raise ValueError("not an RRF2 stream")
    trailer = parse_trailer(data)
    limit = trailer.offset if trailer else len(data)
    messages: list[Message] = []
    off = STREAM_HEADER_LEN
    while off < limit:
        if off + MESSAGE_HEADER_LEN > limit:
            raise ValueError(f"partial message header at {off}")
        kind, length = struct.unpack_from("<QQ", data, off)
        if kind > KIND_BLUEPRINT_ACTIVATION:
            raise ValueError(f"unknown message kind {kind} at {off}")
        msg = Message(index=len(messages), kind=kind, header_offset=off, length=length)
        if msg.end_offset > limit:
            raise ValueError(f"message at {off} runs past the end ({msg.end_offset} > {limit})")
        messages.append(msg)
        off = msg.end_offset
        if kind == KIND_END:
            break
    if off != limit:
        raise ValueError(f"{limit - off} unexpected bytes after the End message at {off}")
    if trailer is not None:
        end = messages[-1] if messages else None
        if end is None or end.kind != KIND_END or end.payload_offset != trailer.start:
            raise ValueError("trailer does not point at the End message payload")
    return Layout(
        file_size=len(data), header=data[:STREAM_HEADER_LEN], messages=tuple(messages), trailer=trailer
    )


def message_header(kind: int, length: int) -> bytes:
    return struct.pack("<QQ", kind, length)


def stream_header(
    fourcc: bytes = FOURCC,
    version: Sequence[int] = (0, 41, 0, 0),
    compression: int = 1,
    serializer: int = 2,
    reserved: Sequence[int] = (0, 0),
) -> bytes:
    """A 12-byte StreamHeader (spec §2.1); every byte can be set to a bad value."""
    assert len(fourcc) == 4 and len(version) == 4 and len(reserved) == 2
    return bytes(fourcc) + bytes(version) + bytes([compression, serializer, *reserved])


def trailer_bytes(start: int, length: int, crc: int, count: int = 1) -> bytes:
    return struct.pack("<QQI", start, length, crc) + FOURCC + FOOTER_ID + struct.pack("<I", count)


# --- byte surgery --------------------------------------------------------------------


def replace_bytes(data: bytes, offset: int, new: bytes) -> bytes:
    """`data` with `len(new)` bytes at `offset` overwritten (length unchanged)."""
    if offset < 0 or offset + len(new) > len(data):
        raise ValueError("replacement out of range")
    return bytes(data[:offset]) + bytes(new) + bytes(data[offset + len(new) :])


def flip_byte(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    """`data` with the byte at `offset` XOR-ed with `mask`."""
    return replace_bytes(data, offset, bytes([data[offset] ^ mask]))


def truncate(data: bytes, size: int) -> bytes:
    return bytes(data[:size])


def strip_footer(data: bytes) -> bytes:
    """The same stream without End message and trailer, i.e. what `write_footer=False` gives."""
    layout = parse(data)
    end = layout.end_message
    if end is None:
        return bytes(data)
    return bytes(data[: end.header_offset])


def replace_payload(data: bytes, message: Message, new_payload: bytes) -> bytes:
    """Swap one message's payload (fixing its header's length).

    Only for footer-less files when the length changes: a footer's byte offsets would
    point at the wrong bytes afterwards, so this refuses rather than produce a file that
    is broken in a second, unintended way.
    """
    layout = parse(data)
    if layout.has_footer and len(new_payload) != message.length:
        raise ValueError("payload length change in a file with footer; strip_footer() first")
    return (
        bytes(data[: message.header_offset])
        + message_header(message.kind, len(new_payload))
        + bytes(new_payload)
        + bytes(data[message.end_offset :])
    )


def append_message(data: bytes, kind: int, payload: bytes) -> bytes:
    """A footer-less stream with one more message at the end."""
    if parse(data).has_footer:
        raise ValueError("append_message on a file with footer; strip_footer() first")
    return bytes(data) + message_header(kind, len(payload)) + bytes(payload)


def footer_payload(data: bytes) -> bytes:
    layout = parse(data)
    if layout.trailer is None:
        raise ValueError("file has no footer")
    t = layout.trailer
    return bytes(data[t.start : t.start + t.length])


def replace_footer(data: bytes, new_footer_payload: bytes, *, fix_crc: bool = True) -> bytes:
    """Swap the RrdFooter protobuf; End header, trailer start/len and (by default) CRC follow."""
    layout = parse(data)
    end = layout.end_message
    if layout.trailer is None or end is None:
        raise ValueError("file has no footer")
    crc = xxh32(new_footer_payload, XXH32_SEED_RERUN) if fix_crc else layout.trailer.crc
    return (
        bytes(data[: end.header_offset])
        + message_header(KIND_END, len(new_footer_payload))
        + bytes(new_footer_payload)
        + trailer_bytes(end.payload_offset, len(new_footer_payload), crc, layout.trailer.count)
    )


# --- protobuf (just enough for the few rerun messages) -----------------------------------

WIRE_VARINT = 0
WIRE_I64 = 1
WIRE_LEN = 2
WIRE_I32 = 5


def encode_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # proto3 int64/enum negatives are 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


@dataclass(frozen=True)
class PbField:
    """One decoded protobuf field. `value` is an int (varint/fixed) or bytes (LEN).

    `start`/`end` span the whole field (tag included); `value_start` is where a LEN field's
    bytes begin (offsets relative to the decoded buffer).
    """

    number: int
    wire_type: int
    value: int | bytes
    start: int
    value_start: int
    end: int


def decode_fields(buf: bytes) -> list[PbField]:
    """Split a protobuf message into its fields (no schema needed; nested messages stay bytes)."""
    buf = bytes(buf)
    fields: list[PbField] = []
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError(f"field number 0 at {start}")
        if wire == WIRE_VARINT:
            value_start = pos
            value, pos = read_varint(buf, pos)
        elif wire == WIRE_I64:
            value_start = pos
            if pos + 8 > len(buf):
                raise ValueError("fixed64 runs past the end")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == WIRE_I32:
            value_start = pos
            if pos + 4 > len(buf):
                raise ValueError("fixed32 runs past the end")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        elif wire == WIRE_LEN:
            n, value_start = read_varint(buf, pos)
            pos = value_start + n
            if pos > len(buf):
                raise ValueError("length-delimited field runs past the end")
            value = buf[value_start:pos]
        else:
            raise ValueError(f"unsupported wire type {wire} at {start}")
        fields.append(PbField(number, wire, value, start, value_start, pos))
    return fields


def encode_field(number: int, value: int | bytes | bool) -> bytes:
    """A varint field for int/bool, a LEN field for bytes."""
    if isinstance(value, bool | int):
        return encode_varint(number << 3 | WIRE_VARINT) + encode_varint(int(value))
    value = bytes(value)
    return encode_varint(number << 3 | WIRE_LEN) + encode_varint(len(value)) + value


def encode_fields(fields: Iterable[tuple[int, int | bytes | bool]]) -> bytes:
    return b"".join(encode_field(n, v) for n, v in fields)


def field_value(fields: Sequence[PbField], number: int, default=None):
    """The last occurrence of a field (protobuf's 'last one wins' for scalars)."""
    found = [f.value for f in fields if f.number == number]
    return found[-1] if found else default


def set_field(buf: bytes, number: int, value: int | bytes | bool | None) -> bytes:
    """Re-encode `buf` with field `number` replaced (appended if absent, dropped if None).

    Other fields are copied byte for byte, in their original order.
    """
    out = bytearray()
    done = False
    for f in decode_fields(buf):
        if f.number != number:
            out += buf[f.start : f.end]
        elif not done and value is not None:
            out += encode_field(number, value)
            done = True
    if not done and value is not None:
        out += encode_field(number, value)
    return bytes(out)


# --- ArrowMsg --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrowMsg:
    """The decoded fields of an ArrowMsg protobuf (spec §3.5)."""

    store_id: bytes
    compression: int
    uncompressed_size: int
    encoding: int
    payload: bytes
    chunk_id: bytes | None
    is_static: bool | None
    # where `payload` starts inside the protobuf bytes (to corrupt it in place)
    payload_start: int

    def ipc_bytes(self) -> bytes:
        """The Arrow IPC stream bytes (LZ4 block decompressed if needed)."""
        if self.compression == COMPRESSION_LZ4:
            return lz4_block_decompress(self.payload, self.uncompressed_size)
        return self.payload


def decode_arrow_msg(pb: bytes) -> ArrowMsg:
    fields = decode_fields(pb)
    payload_fields = [f for f in fields if f.number == ARROW_MSG_PAYLOAD]
    if not payload_fields:
        raise ValueError("ArrowMsg without payload")
    is_static = field_value(fields, ARROW_MSG_IS_STATIC)
    return ArrowMsg(
        store_id=field_value(fields, ARROW_MSG_STORE_ID, b""),
        compression=field_value(fields, ARROW_MSG_COMPRESSION, 0),
        uncompressed_size=field_value(fields, ARROW_MSG_UNCOMPRESSED_SIZE, 0),
        encoding=field_value(fields, ARROW_MSG_ENCODING, 0),
        payload=payload_fields[-1].value,
        chunk_id=field_value(fields, ARROW_MSG_CHUNK_ID),
        is_static=None if is_static is None else bool(is_static),
        payload_start=payload_fields[-1].value_start,
    )


def arrow_msg_uncompressed(pb: bytes) -> bytes:
    """The same ArrowMsg with its payload stored uncompressed (compression = NONE)."""
    msg = decode_arrow_msg(pb)
    ipc = msg.ipc_bytes()
    pb = set_field(pb, ARROW_MSG_COMPRESSION, COMPRESSION_NONE)
    pb = set_field(pb, ARROW_MSG_UNCOMPRESSED_SIZE, len(ipc))
    return set_field(pb, ARROW_MSG_PAYLOAD, ipc)


def arrow_msg_with_ipc(pb: bytes, ipc: bytes, *, compression: int = COMPRESSION_NONE) -> bytes:
    """The same ArrowMsg carrying other IPC bytes (stored uncompressed or literal-only LZ4)."""
    payload = lz4_block_compress_literals(ipc) if compression == COMPRESSION_LZ4 else bytes(ipc)
    pb = set_field(pb, ARROW_MSG_COMPRESSION, compression)
    pb = set_field(pb, ARROW_MSG_UNCOMPRESSED_SIZE, len(ipc))
    return set_field(pb, ARROW_MSG_PAYLOAD, payload)


def chunk_schema(msg: ArrowMsg):
    """The chunk's Arrow schema (pyarrow.Schema), read from the IPC payload."""
    import pyarrow as pa

    return pa.ipc.open_stream(msg.ipc_bytes()).schema


def chunk_entity_path(msg: ArrowMsg) -> str:
    metadata = chunk_schema(msg).metadata or {}
    return metadata.get(b"rerun:entity_path", b"").decode()


def find_arrow_msgs(data: bytes, entity_path: str | None = None) -> list[Message]:
    """The ArrowMsg messages of a file, optionally only those of one entity path."""
    layout = parse(data)
    msgs = layout.arrow_msgs
    if entity_path is None:
        return msgs
    return [m for m in msgs if chunk_entity_path(decode_arrow_msg(m.payload(data))) == entity_path]


# --- footer manifest (spec §3.6, §5) ---------------------------------------------------


def manifest_tables(data: bytes) -> list:
    """The manifest table (pyarrow.Table) of each RrdManifest in the footer, in order."""
    import pyarrow as pa

    tables = []
    for m in decode_fields(footer_payload(data)):
        if m.number != FOOTER_MANIFESTS:
            continue
        part = decode_fields(field_value(decode_fields(m.value), MANIFEST_DATA, b""))
        payload = field_value(part, DATAFRAME_PART_PAYLOAD, b"")
        if field_value(part, DATAFRAME_PART_COMPRESSION, 0) == COMPRESSION_LZ4:
            payload = lz4_block_decompress(payload, field_value(part, DATAFRAME_PART_UNCOMPRESSED_SIZE, 0))
        tables.append(pa.ipc.open_stream(payload).read_all())
    return tables


def replace_manifest_tables(data: bytes, tables: Sequence) -> bytes:
    """The file with each manifest's table replaced (stored uncompressed), footer CRC fixed.

    Everything else in the footer (store ids, sorbet schemas, unknown fields) is kept.
    """
    import pyarrow as pa

    manifests = [f for f in decode_fields(footer_payload(data)) if f.number == FOOTER_MANIFESTS]
    if len(manifests) != len(tables):
        raise ValueError(f"{len(manifests)} manifests, {len(tables)} tables")
    out = bytearray()
    for m, table in zip(manifests, tables, strict=True):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        ipc = sink.getvalue().to_pybytes()
        part = field_value(decode_fields(m.value), MANIFEST_DATA, b"")
        part = set_field(part, DATAFRAME_PART_COMPRESSION, COMPRESSION_NONE)
        part = set_field(part, DATAFRAME_PART_UNCOMPRESSED_SIZE, len(ipc))
        part = set_field(part, DATAFRAME_PART_PAYLOAD, ipc)
        out += encode_field(FOOTER_MANIFESTS, set_field(m.value, MANIFEST_DATA, part))
    return replace_footer(data, bytes(out))


# --- LZ4 block format (spec §3.8) ------------------------------------------------------


def lz4_block_decompress(src: bytes, uncompressed_size: int) -> bytes:
    """Decode a raw LZ4 block; ValueError unless it yields exactly `uncompressed_size` bytes."""
    src = bytes(src)
    out = bytearray()
    pos = 0
    n = len(src)
    while True:
        if pos >= n:
            raise ValueError("LZ4: input ends before a token")
        token = src[pos]
        pos += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if pos >= n:
                    raise ValueError("LZ4: input ends inside a literal length")
                b = src[pos]
                pos += 1
                lit += b
                if b != 255:
                    break
        if pos + lit > n:
            raise ValueError("LZ4: literals run past the input")
        out += src[pos : pos + lit]
        pos += lit
        if pos == n:  # the last sequence has literals only
            break
        if pos + 2 > n:
            raise ValueError("LZ4: input ends inside a match offset")
        offset = src[pos] | src[pos + 1] << 8
        pos += 2
        if offset == 0 or offset > len(out):
            raise ValueError("LZ4: match offset out of range")
        mlen = token & 15
        if mlen == 15:
            while True:
                if pos >= n:
                    raise ValueError("LZ4: input ends inside a match length")
                b = src[pos]
                pos += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        start = len(out) - offset
        if offset >= mlen:
            out += out[start : start + mlen]
        else:  # overlapping copy
            for i in range(mlen):
                out.append(out[start + i])
        if len(out) > uncompressed_size:
            raise ValueError("LZ4: output larger than uncompressed_size")
    if len(out) != uncompressed_size:
        raise ValueError(f"LZ4: {len(out)} bytes decoded, {uncompressed_size} expected")
    return bytes(out)


def lz4_block_compress_literals(data: bytes) -> bytes:
    """A valid LZ4 block holding `data` as one literal run (no matches, no compression)."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + bytes(data)
    rest = n - 15
    ext = b"\xff" * (rest // 255) + bytes([rest % 255])
    return bytes([0xF0]) + ext + bytes(data)


# --- XXH32 (spec §2.4 footer checksum) -------------------------------------------------

_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M32, 13) * _P1) & _M32


def xxh32(data: bytes, seed: int = 0) -> int:
    """32-bit xxHash, as used for the footer checksum (seed XXH32_SEED_RERUN)."""
    data = bytes(data)
    n = len(data)
    pos = 0
    if n >= 16:
        v1 = (seed + _P1 + _P2) & _M32
        v2 = (seed + _P2) & _M32
        v3 = seed & _M32
        v4 = (seed - _P1) & _M32
        lanes = struct.unpack_from(f"<{(n // 16) * 4}I", data)
        for i in range(0, len(lanes), 4):
            v1 = _round(v1, lanes[i])
            v2 = _round(v2, lanes[i + 1])
            v3 = _round(v3, lanes[i + 2])
            v4 = _round(v4, lanes[i + 3])
        pos = (n // 16) * 16
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M32
    else:
        h = (seed + _P5) & _M32
    h = (h + n) & _M32
    while pos + 4 <= n:
        (lane,) = struct.unpack_from("<I", data, pos)
        h = (_rotl((h + lane * _P3) & _M32, 17) * _P4) & _M32
        pos += 4
    while pos < n:
        h = (_rotl((h + data[pos] * _P5) & _M32, 11) * _P1) & _M32
        pos += 1
    h ^= h >> 15
    h = (h * _P2) & _M32
    h ^= h >> 13
    h = (h * _P3) & _M32
    h ^= h >> 16
    return h


def footer_crc_ok(data: bytes) -> bool:
    layout = parse(data)
    if layout.trailer is None:
        raise ValueError("file has no footer")
    return xxh32(footer_payload(data), XXH32_SEED_RERUN) == layout.trailer.crc
