// rrloader/rrd/codec.h — the byte codecs of .rrd payloads: LZ4 blocks, the footer
// checksum (XXH32) and Arrow IPC streams. The only place LZ4, xxHash and Arrow IPC
// are called from.
#pragma once

#include <arrow/buffer.h>
#include <arrow/record_batch.h>
#include <arrow/type.h>

#include <cstdint>
#include <memory>
#include <string_view>

#include "rrloader/common/status.h"
#include "rrloader/rrd/messages.h"

namespace rrl::rrd {

// kMaxPayloadBytes: the largest decompressed payload we accept (4 GiB, the gRPC message
// limit of Rerun itself). A corrupt size field must not make us allocate terabytes.
inline constexpr uint64_t kMaxPayloadBytes = uint64_t{4} << 30;

// DecompressPayload: the Arrow IPC bytes of a payload. For kLz4 a raw LZ4 block that must
// decode to exactly `uncompressed_size` bytes; otherwise `payload` itself (zero copy:
// the returned buffer is a slice of `owner`, which must hold it: else kInternal).
[[nodiscard]] Result<std::shared_ptr<arrow::Buffer>> DecompressPayload(const std::shared_ptr<arrow::Buffer>& owner,
                                                                       std::string_view payload,
                                                                       Compression compression,
                                                                       uint64_t uncompressed_size);

uint32_t FooterChecksum(std::string_view bytes);

// DecodeIpcRecordBatch: the schema and the first record batch of an Arrow IPC stream.
// kCorrupt if the stream is malformed or holds no batch.
[[nodiscard]] Result<std::shared_ptr<arrow::RecordBatch>> DecodeIpcRecordBatch(
    const std::shared_ptr<arrow::Buffer>& ipc);

// DecodeIpcSchema: the schema of an Arrow IPC stream (which may hold no batch).
[[nodiscard]] Result<std::shared_ptr<arrow::Schema>> DecodeIpcSchema(const std::shared_ptr<arrow::Buffer>& ipc);

// EncodeIpcStream: `batch` as an Arrow IPC stream (schema, the batch, end of stream),
// uncompressed (what a catalog request's DataframePart carries).
[[nodiscard]] Result<std::string> EncodeIpcStream(const arrow::RecordBatch& batch);

}  // namespace rrl::rrd
