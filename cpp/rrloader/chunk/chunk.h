// rrloader/chunk/chunk.h — one Rerun chunk: an Arrow record batch plus its parsed Sorbet
// metadata (entity path, chunk id, row ids, timelines, component columns).
#pragma once

#include <arrow/array.h>
#include <arrow/buffer.h>
#include <arrow/record_batch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/rrd/reader.h"

namespace rrl::chunk {

// RowId: a Rerun TUID as an unsigned 128-bit number (time_ns << 64 | inc). Row ids order
// rows logged at the same time: the larger one wins.
struct RowId {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator<(const RowId& a, const RowId& b) { return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo; }
  friend bool operator==(const RowId& a, const RowId& b) { return a.hi == b.hi && a.lo == b.lo; }
};

// TimelineColumn: one index column. `values` has num_rows entries, no nulls.
struct TimelineColumn {
  std::string name;
  rrd::TimeKind kind = rrd::TimeKind::kSequence;
  const int64_t* values = nullptr;  // borrowed from the chunk's batch
  int64_t min = 0, max = 0;         // inclusive
};

// ComponentColumn: one component column, always List<T> with one cell per row
// (null = not logged in that row, [] = logged empty / cleared).
struct ComponentColumn {
  std::string component;       // e.g. "Scalars:scalars"
  std::string archetype;       // e.g. "rerun.archetypes.Scalars" (may be empty)
  std::string component_type;  // e.g. "rerun.components.Scalar" (may be empty)
  std::shared_ptr<arrow::ListArray> list;
};

// Chunk: immutable after Decode / FromRecordBatch; safe to share across threads (held by shared_ptr<const>).
class Chunk {
 public:
  // Decode: parse an Arrow IPC stream holding one chunk. `where` prefixes error messages.
  // ByteSize() is the IPC stream's size.
  [[nodiscard]] static Result<std::shared_ptr<const Chunk>> Decode(const std::shared_ptr<arrow::Buffer>& ipc,
                                                                   const std::string& where);
  // FromRecordBatch: a chunk from a record batch already in Rerun's chunk schema (what
  // Decode finds in the IPC stream; e.g. a batch rerun-sdk fetched from a catalog server
  // and handed over through the Arrow C data interface). The batch's buffers are shared,
  // not copied; ByteSize() is the size of every buffer the batch references. `where`
  // prefixes error messages.
  [[nodiscard]] static Result<std::shared_ptr<const Chunk>> FromRecordBatch(
      const std::shared_ptr<arrow::RecordBatch>& batch, const std::string& where);

  const std::string& entity_path() const { return entity_path_; }
  const std::string& chunk_id() const { return chunk_id_; }
  int64_t num_rows() const { return num_rows_; }
  bool is_static() const { return timelines_.empty(); }
  const RowId& row_id(int64_t row) const { return row_ids_[static_cast<size_t>(row)]; }
  const std::vector<TimelineColumn>& timelines() const { return timelines_; }
  const std::vector<ComponentColumn>& components() const { return components_; }
  // FindTimeline / FindComponent: nullptr when the chunk has none by that name.
  const TimelineColumn* FindTimeline(const std::string& name) const;
  const ComponentColumn* FindComponent(const std::string& component) const;
  // ByteSize: the memory this chunk keeps alive (for the byte-bounded cache).
  int64_t ByteSize() const { return byte_size_; }
  const std::shared_ptr<arrow::RecordBatch>& batch() const { return batch_; }

 private:
  [[nodiscard]] static Result<std::shared_ptr<const Chunk>> Parse(const std::shared_ptr<arrow::RecordBatch>& batch,
                                                                  int64_t byte_size, const std::string& where);

  std::string entity_path_;
  std::string chunk_id_;
  int64_t num_rows_ = 0;
  std::vector<RowId> row_ids_;
  std::vector<TimelineColumn> timelines_;
  std::vector<ComponentColumn> components_;
  std::shared_ptr<arrow::RecordBatch> batch_;
  int64_t byte_size_ = 0;
};

}  // namespace rrl::chunk
