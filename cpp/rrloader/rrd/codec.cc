#include "rrloader/rrd/codec.h"

#include <arrow/io/memory.h>
#include <arrow/ipc/reader.h>
#include <arrow/ipc/writer.h>
#include <arrow/memory_pool.h>
#include <lz4.h>
#include <xxhash.h>

#include <limits>

namespace rrl::rrd {

Result<std::shared_ptr<arrow::Buffer>> DecompressPayload(const std::shared_ptr<arrow::Buffer>& owner,
                                                         std::string_view payload, Compression compression,
                                                         uint64_t uncompressed_size) {
  if (compression != Compression::kLz4) {
    // An empty payload may point nowhere (a default string_view: null): its offset in
    // `owner` would be meaningless, and the pointer arithmetic undefined.
    if (payload.empty()) return arrow::SliceBuffer(owner, 0, 0);
    const auto offset = reinterpret_cast<const uint8_t*>(payload.data()) - owner->data();
    if (offset < 0 || offset > owner->size() || static_cast<int64_t>(payload.size()) > owner->size() - offset) {
      return Status::Internal("payload is not inside the buffer it was read from");
    }
    return arrow::SliceBuffer(owner, offset, static_cast<int64_t>(payload.size()));
  }
  // LZ4 expands at most ~255x; a larger claim is a corrupt size field, not data.
  if (uncompressed_size > kMaxPayloadBytes || uncompressed_size / 255 > payload.size() + 16) {
    return Status::Corrupt("LZ4 payload of " + std::to_string(payload.size()) + " bytes claims " +
                           std::to_string(uncompressed_size) + " uncompressed bytes");
  }
  if (payload.size() > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
    return Status::Unsupported("LZ4 block larger than 2 GiB");
  }
  // From glibc's heap, not Arrow's default pool (mimalloc in the pyarrow wheel): mimalloc
  // returns freed pages to the OS after a few milliseconds, so every chunk load would fault
  // in fresh memory (with transparent huge pages, 2 MiB cleared per fault; a quarter of the
  // CPU of the two-camera benchmark), while glibc reuses recently freed blocks of a recurring
  // size (chunks of one stream are about one size).
  auto alloc = arrow::AllocateBuffer(static_cast<int64_t>(uncompressed_size), arrow::system_memory_pool());
  if (!alloc.ok()) return Status::IoError("cannot allocate " + std::to_string(uncompressed_size) + " bytes");
  std::shared_ptr<arrow::Buffer> out = std::move(alloc).ValueUnsafe();
  const int n = LZ4_decompress_safe(payload.data(), reinterpret_cast<char*>(out->mutable_data()),
                                    static_cast<int>(payload.size()), static_cast<int>(uncompressed_size));
  if (n < 0 || static_cast<uint64_t>(n) != uncompressed_size) {
    return Status::Corrupt("LZ4 block does not decode to the declared " + std::to_string(uncompressed_size) +
                           " bytes (LZ4 result " + std::to_string(n) + ")");
  }
  return out;
}

uint32_t FooterChecksum(std::string_view bytes) {
  return XXH32(bytes.data(), bytes.size(), kFooterChecksumSeed);
}

namespace {
Result<std::shared_ptr<arrow::ipc::RecordBatchStreamReader>> OpenIpc(const std::shared_ptr<arrow::Buffer>& ipc) {
  auto input = std::make_shared<arrow::io::BufferReader>(ipc);
  auto opts = arrow::ipc::IpcReadOptions::Defaults();
  opts.use_threads = false;
  // Zero-copy reads keep the buffers where they lie in the payload; an uncompressed payload
  // inside a protobuf message can start at any address, and Arrow's accessors need each
  // buffer aligned to its type. Misaligned buffers are copied (aligned ones are not).
  opts.ensure_alignment = arrow::ipc::Alignment::kDataTypeSpecificAlignment;
  auto reader = arrow::ipc::RecordBatchStreamReader::Open(input, opts);
  if (!reader.ok()) return Status::Corrupt("Arrow IPC stream: " + reader.status().message());
  return *reader;
}
}  // namespace

Result<std::shared_ptr<arrow::RecordBatch>> DecodeIpcRecordBatch(const std::shared_ptr<arrow::Buffer>& ipc) {
  RRL_ASSIGN_OR_RETURN(auto reader, OpenIpc(ipc));
  std::shared_ptr<arrow::RecordBatch> batch;
  auto st = reader->ReadNext(&batch);
  if (!st.ok()) return Status::Corrupt("Arrow IPC record batch: " + st.message());
  if (!batch) return Status::Corrupt("Arrow IPC stream holds no record batch");
  // Validate: IPC readers trust offsets and lengths; a corrupt file must not read out of
  // bounds later in the query engine.
  auto valid = batch->ValidateFull();
  if (!valid.ok()) return Status::Corrupt("Arrow record batch fails validation: " + valid.message());
  return batch;
}

Result<std::shared_ptr<arrow::Schema>> DecodeIpcSchema(const std::shared_ptr<arrow::Buffer>& ipc) {
  RRL_ASSIGN_OR_RETURN(auto reader, OpenIpc(ipc));
  return reader->schema();
}

Result<std::string> EncodeIpcStream(const arrow::RecordBatch& batch) {
  auto sink = arrow::io::BufferOutputStream::Create();
  if (!sink.ok()) return Status::Internal("IPC encode: " + sink.status().ToString());
  auto writer = arrow::ipc::MakeStreamWriter(*sink, batch.schema());
  if (!writer.ok()) return Status::Internal("IPC encode: " + writer.status().ToString());
  auto st = (*writer)->WriteRecordBatch(batch);
  if (st.ok()) st = (*writer)->Close();
  if (!st.ok()) return Status::Internal("IPC encode: " + st.ToString());
  auto buffer = (*sink)->Finish();
  if (!buffer.ok()) return Status::Internal("IPC encode: " + buffer.status().ToString());
  return (*buffer)->ToString();
}

}  // namespace rrl::rrd
