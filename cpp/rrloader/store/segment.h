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
//
// Two kinds: a segment of an .rrd file (FromRrd: chunks are read from the file on first
// use) and a resident segment (FromChunks: its chunks are already decoded, e.g. fetched
// from a catalog server, and LoadChunk hands them out without touching the cache).
class Segment {
 public:
  const std::string& id() const { return id_; }
  const std::string& application_id() const { return application_id_; }
  // source_name: the file's name, or a resident segment's description (for messages).
  const std::string& source_name() const { return source_ != nullptr ? source_->Name() : source_name_; }
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

  // ResidentBytes: the memory a resident segment's chunks keep alive (0 for file segments).
  int64_t ResidentBytes() const { return resident_bytes_; }

  // FromChunks: a resident segment holding `chunks` (in this order), e.g. every chunk of one
  // entity of a remote segment. Columns and index ranges are computed from the chunks;
  // `source_name` describes where they came from in error messages.
  [[nodiscard]] static Result<std::shared_ptr<Segment>> FromChunks(
      std::string id, std::string application_id, std::vector<std::shared_ptr<const chunk::Chunk>> chunks,
      std::string source_name);

  // FromRrd: the segments of one opened file. Files without a footer have every chunk
  // decoded here (to learn entity and timelines); the decoded chunks go to `cache`.
  [[nodiscard]] static Result<std::vector<std::shared_ptr<Segment>>> FromRrd(const rrd::RrdIndex& index,
                                                                             ChunkCache& cache);

 private:
  void AddColumnsFromChunk(const chunk::Chunk& c);
  Status AddColumnsFromSorbetSchema(const arrow::Schema& schema);

  std::string id_;
  std::string application_id_;
  std::shared_ptr<io::ByteSource> source_;                     // null for resident segments
  std::string source_name_;                                    // resident segments only
  std::vector<std::shared_ptr<const chunk::Chunk>> resident_;  // parallel to chunks_ when resident
  int64_t resident_bytes_ = 0;
  std::vector<ChunkInfo> chunks_;
  std::map<std::string, std::vector<size_t>> by_entity_;
  std::map<std::string, rrd::TimeRange> index_ranges_;
  std::map<std::pair<std::string, std::string>, ColumnInfo> columns_;
};

}  // namespace rrl::store
