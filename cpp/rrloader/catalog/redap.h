// rrloader/catalog/redap.h — the two calls of a Rerun catalog server's gRPC API
// (`rerun.cloud.v1alpha1.RerunCloudService`, "redap") that chunk-granular reading needs,
// encoded and decoded here; the transport (HTTP/2 gRPC, deadlines, retries) is the caller's.
//
// Verified against rerun-sdk 0.41.0's server (`rr.server.Server`, build 31fc6d1d, 2026-10-28;
// tests/python/test_remote.py runs these against it) and rerun's .proto files:
//
//   GetRrdManifest (unary)
//     request  GetRrdManifestRequest{1: rerun.common.v1alpha1.SegmentId segment_id{1: string id}}
//     response GetRrdManifestResponse{1: rerun.log_msg.v1alpha1.RrdManifest rrd_manifest}
//              (the RrdManifest of a file footer: store id, store-wide schema, the chunk
//              table with `chunk_key`, LZ4-compressed)
//   FetchChunks (server streaming)
//     request  FetchChunksRequest{1: repeated rerun.common.v1alpha1.DataframePart chunk_infos}
//              DataframePart{1: encoder_version = 1, 2: payload (an Arrow IPC stream),
//              3: compression, 4: uncompressed_size}; the rows name the chunks with the
//              columns QueryDataset returns them with: chunk_id (FixedSizeBinary(16)),
//              chunk_segment_id (utf8), rerun_segment_layer (utf8), chunk_key (binary).
//              (The OSS server reads only chunk_key; the others are sent for servers that
//              route by them.)
//     response a stream of FetchChunksResponse{1: repeated rerun.log_msg.v1alpha1.ArrowMsg
//              chunks}; the OSS server sends one chunk per message, uncompressed, with the
//              ArrowMsg's chunk_id (field 6, a Tuid{1: fixed64 time_ns, 2: fixed64 inc}).
//   Both need the dataset's header: `x-rerun-entry-name-bin` (the name) or `x-rerun-entry-id`.
//   An unknown segment is NOT_FOUND ("Segment 'x' not found in dataset ..."); so is a chunk
//   key of a segment unregistered since its manifest was read ("Invalid chunk key: store id
//   ... not found").
//
// Thread safety: stateless functions.
#pragma once

#include <arrow/buffer.h>
#include <arrow/type.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/rrd/messages.h"
#include "rrloader/rrd/reader.h"

namespace rrl::catalog::redap {

inline constexpr const char* kGetRrdManifest = "GetRrdManifest";
inline constexpr const char* kFetchChunks = "FetchChunks";
// kDefaultLayer: the layer segments are registered to unless told otherwise.
inline constexpr const char* kDefaultLayer = "base";

// EncodeGetRrdManifestRequest: the request for one segment's manifest.
std::string EncodeGetRrdManifestRequest(const std::string& segment_id);

// RemoteManifest: a decoded GetRrdManifest answer.
struct RemoteManifest {
  rrd::StoreId store_id;
  std::vector<rrd::ChunkSummary> chunks;         // with chunk_id and chunk_key
  std::shared_ptr<arrow::Schema> sorbet_schema;  // store-wide schema, or null
};
// DecodeGetRrdManifestResponse: kCorrupt for a malformed answer (or one without a manifest),
// kUnsupported for an unknown encoding.
[[nodiscard]] Result<RemoteManifest> DecodeGetRrdManifestResponse(const std::shared_ptr<arrow::Buffer>& response);

// ChunkRef: one chunk a FetchChunks request asks for.
struct ChunkRef {
  std::string chunk_id;  // 16 bytes
  std::string segment_id;
  std::string layer = kDefaultLayer;
  std::string chunk_key;
};
// EncodeFetchChunksRequest: one DataframePart holding every ref. kInvalidArgument for a
// chunk id that is not 16 bytes.
[[nodiscard]] Result<std::string> EncodeFetchChunksRequest(const std::vector<ChunkRef>& refs);

// FetchedChunk: one ArrowMsg of a FetchChunks answer.
struct FetchedChunk {
  std::string chunk_id;                // 16 bytes from ArrowMsg.chunk_id; empty when the server left it out
  std::shared_ptr<arrow::Buffer> ipc;  // the chunk's Arrow IPC stream, decompressed, owned
  std::string recording_id;            // ArrowMsg.store_id
};
// DecodeFetchChunksResponse: the chunks of one response message, appended to `out`. A
// message of one uncompressed chunk (what the OSS server sends) is sliced, not copied, when
// it starts 8-byte aligned (the chunk then keeps its message alive: a few bytes more); other
// uncompressed chunks (misaligned, or of a message of several) are
// copied out (or decompressed) into buffers of their own, so a cached chunk never keeps
// other chunks alive. kCorrupt / kUnsupported as ParseArrowMsg.
[[nodiscard]] Status DecodeFetchChunksResponse(const std::shared_ptr<arrow::Buffer>& message,
                                               std::vector<FetchedChunk>* out);

// TuidBytes: a Tuid message's 16 bytes (time_ns then inc, big-endian), as a manifest's
// chunk_id column holds them. kCorrupt when either field is missing.
[[nodiscard]] Result<std::string> TuidBytes(std::string_view tuid_message);

}  // namespace rrl::catalog::redap
