// rrloader/catalog/redap.cc — catalog requests and answers (see redap.h).
#include "rrloader/catalog/redap.h"

#include <arrow/array.h>
#include <arrow/builder.h>
#include <arrow/record_batch.h>

#include <cstdint>
#include <cstring>

#include "rrloader/rrd/codec.h"
#include "rrloader/rrd/protobuf.h"

namespace rrl::catalog::redap {

namespace {

std::string_view View(const arrow::Buffer& b) {
  return {reinterpret_cast<const char*>(b.data()), static_cast<size_t>(b.size())};
}

Status ExpectLen(const rrd::ProtoField& f, const char* what) {
  if (f.type != rrd::WireType::kLen) return Status::Corrupt(std::string(what) + " is not length-delimited");
  return Status::OK();
}

void PutBigEndian(uint64_t v, char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
}

}  // namespace

std::string EncodeGetRrdManifestRequest(const std::string& segment_id) {
  rrd::ProtoWriter id;
  id.Bytes(1, segment_id);  // SegmentId.id
  rrd::ProtoWriter request;
  request.Bytes(1, id.data());  // GetRrdManifestRequest.segment_id
  return request.Take();
}

Result<RemoteManifest> DecodeGetRrdManifestResponse(const std::shared_ptr<arrow::Buffer>& response) {
  rrd::ProtoReader r(View(*response));
  std::string_view manifest_bytes;
  bool found = false;
  while (!r.done()) {
    rrd::ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    if (f.number != 1) continue;
    RRL_RETURN_IF_ERROR(ExpectLen(f, "GetRrdManifestResponse.rrd_manifest"));
    manifest_bytes = f.bytes;
    found = true;
  }
  if (!found) return Status::Corrupt("GetRrdManifest answered without a manifest");
  RRL_ASSIGN_OR_RETURN(rrd::RrdManifestView m, rrd::ParseRrdManifest(manifest_bytes));
  RemoteManifest out;
  out.store_id = m.store_id;
  auto slice = [&](std::string_view part) {
    return arrow::SliceBuffer(response, reinterpret_cast<const uint8_t*>(part.data()) - response->data(),
                              static_cast<int64_t>(part.size()));
  };
  if (!m.sorbet_schema_ipc.empty()) {
    auto schema = rrd::DecodeIpcSchema(slice(m.sorbet_schema_ipc));
    if (!schema.ok()) return schema.status().WithPrefix("manifest schema");
    out.sorbet_schema = *schema;
  }
  if (m.data_payload.empty()) return out;  // a segment without chunks
  RRL_ASSIGN_OR_RETURN(auto ipc,
                       rrd::DecompressPayload(response, m.data_payload, m.data_compression, m.data_uncompressed_size));
  RRL_ASSIGN_OR_RETURN(auto batch, rrd::DecodeIpcRecordBatch(ipc));
  std::vector<rrd::ChunkLocation> locations;  // byte offsets within the server's files: unused
  RRL_ASSIGN_OR_RETURN(out.chunks, rrd::DecodeManifestTable(*batch, &locations));
  return out;
}

Result<std::string> EncodeFetchChunksRequest(const std::vector<ChunkRef>& refs) {
  arrow::FixedSizeBinaryBuilder ids(arrow::fixed_size_binary(16));
  arrow::StringBuilder segments, layers;
  arrow::BinaryBuilder keys;
  for (const auto& ref : refs) {
    if (ref.chunk_id.size() != 16) {
      return Status::InvalidArgument("chunk id of " + std::to_string(ref.chunk_id.size()) + " bytes (expected 16)");
    }
    if (!ids.Append(ref.chunk_id.data()).ok() || !segments.Append(ref.segment_id).ok() ||
        !layers.Append(ref.layer).ok() || !keys.Append(ref.chunk_key).ok()) {
      return Status::Internal("FetchChunks request: append failed");
    }
  }
  std::shared_ptr<arrow::Array> a_ids, a_segments, a_layers, a_keys;
  if (!ids.Finish(&a_ids).ok() || !segments.Finish(&a_segments).ok() || !layers.Finish(&a_layers).ok() ||
      !keys.Finish(&a_keys).ok()) {
    return Status::Internal("FetchChunks request: finish failed");
  }
  auto schema = arrow::schema({arrow::field("chunk_id", arrow::fixed_size_binary(16), false),
                               arrow::field("chunk_segment_id", arrow::utf8(), false),
                               arrow::field("rerun_segment_layer", arrow::utf8(), false),
                               arrow::field("chunk_key", arrow::binary(), false)});
  auto batch =
      arrow::RecordBatch::Make(schema, static_cast<int64_t>(refs.size()), {a_ids, a_segments, a_layers, a_keys});
  RRL_ASSIGN_OR_RETURN(std::string ipc, rrd::EncodeIpcStream(*batch));
  rrd::ProtoWriter part;
  part.Varint(1, 1);  // encoder_version: ENCODER_VERSION_V0
  part.Bytes(2, ipc);
  part.Varint(3, static_cast<uint64_t>(rrd::Compression::kNone));
  part.Varint(4, ipc.size());
  rrd::ProtoWriter request;
  request.Bytes(1, part.data());  // FetchChunksRequest.chunk_infos
  return request.Take();
}

Result<std::string> TuidBytes(std::string_view tuid_message) {
  rrd::ProtoReader r(tuid_message);
  uint64_t time_ns = 0, inc = 0;
  bool have_time = false, have_inc = false;
  while (!r.done()) {
    rrd::ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    if (f.type != rrd::WireType::kFixed64) continue;
    if (f.number == 1) time_ns = f.value, have_time = true;
    if (f.number == 2) inc = f.value, have_inc = true;
  }
  if (!have_time || !have_inc) return Status::Corrupt("Tuid without time_ns or inc");
  std::string out(16, '\0');
  PutBigEndian(time_ns, out.data());
  PutBigEndian(inc, out.data() + 8);
  return out;
}

Status DecodeFetchChunksResponse(const std::shared_ptr<arrow::Buffer>& message, std::vector<FetchedChunk>* out) {
  const std::string_view bytes = View(*message);
  std::vector<std::pair<rrd::ArrowMsgView, std::string>> msgs;  // (message, chunk id)
  rrd::ProtoReader r(bytes);
  while (!r.done()) {
    rrd::ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    if (f.number != 1) continue;
    RRL_RETURN_IF_ERROR(ExpectLen(f, "FetchChunksResponse.chunks"));
    RRL_ASSIGN_OR_RETURN(rrd::ArrowMsgView msg, rrd::ParseArrowMsg(f.bytes));
    // ArrowMsg.chunk_id (field 6), which ParseArrowMsg leaves to the Arrow metadata.
    std::string chunk_id;
    rrd::ProtoReader m(f.bytes);
    while (!m.done()) {
      rrd::ProtoField g;
      RRL_RETURN_IF_ERROR(m.Next(&g));
      if (g.number == 6 && g.type == rrd::WireType::kLen) {
        RRL_ASSIGN_OR_RETURN(chunk_id, TuidBytes(g.bytes));
      }
    }
    msgs.emplace_back(msg, std::move(chunk_id));
  }
  const bool single = msgs.size() == 1;
  for (auto& [msg, chunk_id] : msgs) {
    FetchedChunk chunk;
    chunk.recording_id = msg.store_id.recording_id;
    chunk.chunk_id = std::move(chunk_id);
    // A slice must start 8-byte aligned (Arrow IPC aligns its buffers relative to the stream
    // start); a misaligned one would be copied buffer by buffer when decoded: copy it whole.
    const bool aligned = reinterpret_cast<uintptr_t>(msg.payload.data()) % 8 == 0;
    if (msg.compression == rrd::Compression::kLz4 || (single && aligned)) {
      // LZ4: decompressed into a buffer of its own; a lone aligned uncompressed chunk: a slice.
      RRL_ASSIGN_OR_RETURN(chunk.ipc,
                           rrd::DecompressPayload(message, msg.payload, msg.compression, msg.uncompressed_size));
    } else {
      auto alloc = arrow::AllocateBuffer(static_cast<int64_t>(msg.payload.size()));
      if (!alloc.ok()) return Status::IoError("cannot allocate " + std::to_string(msg.payload.size()) + " bytes");
      std::shared_ptr<arrow::Buffer> copy = std::move(alloc).ValueUnsafe();
      if (!msg.payload.empty()) std::memcpy(copy->mutable_data(), msg.payload.data(), msg.payload.size());
      chunk.ipc = std::move(copy);
    }
    out->push_back(std::move(chunk));
  }
  return Status::OK();
}

}  // namespace rrl::catalog::redap
