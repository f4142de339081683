// rrloader/rrd/reader.h — opening an .rrd stream: which recordings it holds and where
// their chunks are.
//
// A file with a footer is opened by reading the 12-byte header, the 32-byte trailer and
// the footer (a manifest table per recording); chunk payloads are read later, when a
// query needs them. A file without a footer is scanned message by message. Blueprint
// stores are skipped.
#pragma once

#include <arrow/buffer.h>
#include <arrow/type.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/io/file.h"
#include "rrloader/rrd/messages.h"

namespace rrl::rrd {

// TimeKind: how a timeline's int64 values are meant. Timestamps are ns since the Unix
// epoch, durations ns.
enum class TimeKind : uint8_t { kSequence = 0, kTimestamp = 1, kDuration = 2 };
// TimeKindFromArrow: the kind of an index column's Arrow type, or nullopt if the type
// is not an index type (Int64, Timestamp(ns), Duration(ns)).
std::optional<TimeKind> TimeKindFromArrow(const arrow::DataType& type);
std::shared_ptr<arrow::DataType> ArrowTypeOf(TimeKind kind);

// TimeRange: min and max of one timeline over some rows, both inclusive.
struct TimeRange {
  std::string timeline;
  TimeKind kind = TimeKind::kSequence;
  int64_t min = 0;
  int64_t max = 0;
};

// ChunkLocation: where one ArrowMsg lives: `offset` is the absolute file offset of its
// protobuf payload (just after the 16-byte message header), `size` its length.
struct ChunkLocation {
  uint64_t offset = 0;
  uint64_t size = 0;
};

// ComponentStats: one component of a temporal chunk on one timeline: how many of its cells
// are non-null and the inclusive range of their index values. Lets a reader tell, without
// decoding a chunk, whether it can hold a cell of a column at or before some value.
struct ComponentStats {
  std::string timeline;
  std::string component;  // e.g. "VideoStream:sample" (the column's rerun:component)
  int64_t min = 0;        // valid when num_rows > 0
  int64_t max = 0;
  uint64_t num_rows = 0;
};

// ChunkSummary: what a manifest (a file's footer, or a catalog server's GetRrdManifest) says
// about a chunk; absent for scanned files.
struct ChunkSummary {
  std::string entity_path;
  bool is_static = false;
  uint64_t num_rows = 0;
  std::vector<TimeRange> ranges;  // one per timeline of the chunk
  // components: the (timeline, component) pairs with num_rows > 0, when the manifest has
  // per-component columns (`has_component_stats`); a pair not listed then has no cell.
  std::vector<ComponentStats> components;
  bool has_component_stats = false;
  std::string chunk_id;                 // 16 bytes (the TUID, big-endian), empty when absent
  std::string chunk_key;                // catalog manifests: the server's opaque fetch key
  uint64_t byte_size_uncompressed = 0;  // the IPC stream's size (0 when absent)
};

// StoreContents: one recording of the file.
struct StoreContents {
  StoreId id;
  std::vector<ChunkLocation> chunks;
  std::vector<ChunkSummary> summaries;           // parallel to `chunks` when from a footer, else empty
  std::shared_ptr<arrow::Schema> sorbet_schema;  // the footer's store-wide schema, or null
};

// RrdIndex: the result of opening a stream. Immutable; safe to share across threads.
struct RrdIndex {
  std::shared_ptr<io::ByteSource> source;
  StreamHeader header;
  bool from_footer = false;
  std::vector<StoreContents> recordings;
};

// DecodeManifestTable: the chunks of one manifest table (RrdManifest.data, decoded from its
// IPC stream) with their byte locations (relative to the file; meaningless for catalog
// manifests). Columns are found by name (the fixed ones) and by field metadata (ranges).
// kCorrupt for a missing or mistyped fixed column or a null in one.
[[nodiscard]] Result<std::vector<ChunkSummary>> DecodeManifestTable(const arrow::RecordBatch& batch,
                                                                    std::vector<ChunkLocation>* locations);

// OpenRrd: read the stream header and either the footer or (without footer) every
// message frame. Errors name the source and the byte offset.
[[nodiscard]] Result<RrdIndex> OpenRrd(const std::shared_ptr<io::ByteSource>& source);

// ReadChunkIpc: read the ArrowMsg at `loc`, check its frame header, decompress, and
// return its Arrow IPC bytes. `store` receives the message's store id when non-null.
[[nodiscard]] Result<std::shared_ptr<arrow::Buffer>> ReadChunkIpc(const io::ByteSource& source,
                                                                  const ChunkLocation& loc, StoreId* store = nullptr);

}  // namespace rrl::rrd
