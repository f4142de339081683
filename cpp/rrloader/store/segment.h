// rrloader/store/segment.h — one recording (a catalog "segment"): its chunk index by
// entity, per-timeline index ranges, its columns, and lazy chunk loading.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "rrloader/chunk/chunk.h"
#include "rrloader/rrd/reader.h"
#include "rrloader/store/chunk_cache.h"

namespace rrl::store {

// ChunkInfo: what is known about a chunk without decoding it.
struct ChunkInfo {
  rrd::ChunkLocation location;
  std::string entity_path;
  bool is_static = false;
  uint64_t num_rows = 0;
  std::vector<rrd::TimeRange> ranges;
};

// ColumnInfo: one (entity, component) column of a segment.
struct ColumnInfo {
  std::string entity_path;
  std::string component;
  std::string archetype;
  std::string component_type;
  std::shared_ptr<arrow::DataType> type;  // List<T>
  bool is_static = false;                 // some static chunk holds it
  bool semantically_empty = true;         // every cell is null or []
};

// Segment: immutable after construction, thread-safe to query (loads go through the
// thread-safe ChunkCache; two threads may decode the same chunk once each, harmlessly).
class Segment {
 public:
  const std::string& id() const { return id_; }
  const std::string& application_id() const { return application_id_; }
  const std::string& source_name() const { return source_->Name(); }
  const std::vector<ChunkInfo>& chunks() const { return chunks_; }
  // Timelines: name -> kind and inclusive [min, max] over all chunks.
  const std::map<std::string, rrd::TimeRange>& index_ranges() const { return index_ranges_; }
  // Columns, keyed by (entity path, component).
  const std::map<std::pair<std::string, std::string>, ColumnInfo>& columns() const { return columns_; }
  std::vector<std::string> EntityPaths() const;

  // LoadEntity: every chunk of `entity_path` (duplicates by chunk id dropped), decoded.
  [[nodiscard]] Result<std::vector<std::shared_ptr<const chunk::Chunk>>> LoadEntity(const std::string& entity_path,
                                                                                    ChunkCache& cache) const;
  [[nodiscard]] Result<std::shared_ptr<const chunk::Chunk>> LoadChunk(size_t i, ChunkCache& cache) const;

  // FromRrd: the segments of one opened file. Files without a footer have every chunk
  // decoded here (to learn entity and timelines); the decoded chunks go to `cache`.
  [[nodiscard]] static Result<std::vector<std::shared_ptr<Segment>>> FromRrd(const rrd::RrdIndex& index,
                                                                             ChunkCache& cache);

 private:
  void AddColumnsFromChunk(const chunk::Chunk& c);
  Status AddColumnsFromSorbetSchema(const arrow::Schema& schema);

  std::string id_;
  std::string application_id_;
  std::shared_ptr<io::ByteSource> source_;
  std::vector<ChunkInfo> chunks_;
  std::map<std::string, std::vector<size_t>> by_entity_;
  std::map<std::string, rrd::TimeRange> index_ranges_;
  std::map<std::pair<std::string, std::string>, ColumnInfo> columns_;
};

}  // namespace rrl::store
