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
  rrd::ChunkLocation location;  // file segments: where the ArrowMsg is
  std::string entity_path;
  bool is_static = false;
  uint64_t num_rows = 0;
  std::vector<rrd::TimeRange> ranges;
  // components: per (timeline, component) with a non-null cell, their count and range;
  // complete when `has_component_stats` (from a manifest's per-component columns or from
  // the decoded chunk), else unknown (every component may have cells anywhere in `ranges`).
  std::vector<rrd::ComponentStats> components;
  bool has_component_stats = false;
  std::string chunk_id;    // 16 bytes, big-endian TUID (manifests; empty when unknown)
  std::string chunk_key;   // remote segments: the catalog server's opaque fetch key
  uint64_t byte_size = 0;  // remote segments: the chunk's IPC size (for batching fetches)
  // cache_key: the chunk's key in a ChunkCache, made once here (a lookup per block and
  // column builds no string): a number given to the file when opened and the chunk's
  // byte offset; a remote
  // segment's id, '\0', and the chunk id. Empty for resident segments (never cached).
  std::string cache_key;

  // Stats: the stats of `component` on `timeline`, or nullptr when it has no cell there
  // (or nothing is known: check has_component_stats).
  const rrd::ComponentStats* Stats(const std::string& timeline, const std::string& component) const;
  // MayHold: whether the chunk can hold a non-null cell of `component` on `timeline`.
  bool MayHold(const std::string& timeline, const std::string& component) const {
    return !has_component_stats || Stats(timeline, component) != nullptr;
  }
};

class Segment;

// ChunkLoader: where the chunks of a remote segment come from (implemented by the catalog
// layer: a catalog server). Thread-safe; shared by every Segment it serves.
class ChunkLoader {
 public:
  virtual ~ChunkLoader() = default;
  // Load: chunk `i` of `segment`, from `cache` or fetched now (and then kept in it).
  [[nodiscard]] virtual Result<std::shared_ptr<const chunk::Chunk>> Load(const Segment& segment, size_t i,
                                                                         ChunkCache& cache) const = 0;
};

// ComponentStatsOf: the stats (ChunkInfo::components) of a decoded chunk.
std::vector<rrd::ComponentStats> ComponentStatsOf(const chunk::Chunk& c);

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
// Three kinds: a segment of an .rrd file (FromRrd: chunks are read from the file on first
// use), a remote segment (FromManifest: its chunk index is a catalog server's manifest and
// chunks are fetched one by one, or in batches ahead of use, through a ChunkLoader) and a
// resident segment (FromChunks: its chunks are already decoded, and LoadChunk hands them
// out without touching the cache).
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
  // EntityChunks: the numbers (into chunks()) of the chunks of `entity_path`, in file order;
  // empty when it has none. Lookups walk these instead of every chunk of the segment.
  const std::vector<size_t>& EntityChunks(const std::string& entity_path) const;

  // LoadEntity: every chunk of `entity_path` (duplicates by chunk id dropped), decoded.
  [[nodiscard]] Result<std::vector<std::shared_ptr<const chunk::Chunk>>> LoadEntity(const std::string& entity_path,
                                                                                    ChunkCache& cache) const;
  [[nodiscard]] Result<std::shared_ptr<const chunk::Chunk>> LoadChunk(size_t i, ChunkCache& cache) const;

  // ResidentBytes: the memory a resident segment's chunks keep alive (0 for file segments).
  int64_t ResidentBytes() const { return resident_bytes_; }
  // IndexBytes: about the memory of the chunk index itself (ChunkInfos, columns): what a
  // cache of remote segments' manifests counts.
  int64_t IndexBytes() const;
  // is_remote: chunks come from a ChunkLoader (FromManifest).
  bool is_remote() const { return loader_ != nullptr; }

  // FromChunks: a resident segment holding `chunks` (in this order), e.g. chunks built in
  // memory. Columns, index ranges and component stats are computed from the chunks;
  // `source_name` describes where they came from in error messages.
  [[nodiscard]] static Result<std::shared_ptr<Segment>> FromChunks(
      std::string id, std::string application_id, std::vector<std::shared_ptr<const chunk::Chunk>> chunks,
      std::string source_name);

  // FromManifest: a remote segment: `chunks` from a catalog server's manifest (their
  // chunk_id and chunk_key set), columns from its store-wide schema (may be null), chunks
  // fetched through `loader`. `source_name` describes the server in messages.
  [[nodiscard]] static Result<std::shared_ptr<Segment>> FromManifest(
      std::string id, std::string application_id, std::vector<rrd::ChunkSummary> chunks,
      const std::shared_ptr<arrow::Schema>& sorbet_schema, std::shared_ptr<const ChunkLoader> loader,
      std::string source_name);

  // FromRrd: the segments of one opened file. Files without a footer have every chunk
  // decoded here (to learn entity and timelines); the decoded chunks go to `cache`.
  [[nodiscard]] static Result<std::vector<std::shared_ptr<Segment>>> FromRrd(const rrd::RrdIndex& index,
                                                                             ChunkCache& cache);

 private:
  void AddColumnsFromChunk(const chunk::Chunk& c);
  Status AddColumnsFromSorbetSchema(const arrow::Schema& schema);
  // AddChunkInfo: appends and indexes a chunk (by entity; its ranges into index_ranges_).
  void AddChunkInfo(ChunkInfo info, bool empty_chunks_have_ranges);

  std::string id_;
  std::string application_id_;
  std::shared_ptr<io::ByteSource> source_;                     // file segments only
  std::shared_ptr<const ChunkLoader> loader_;                  // remote segments only
  std::string source_name_;                                    // resident and remote segments
  std::vector<std::shared_ptr<const chunk::Chunk>> resident_;  // parallel to chunks_ when resident
  int64_t resident_bytes_ = 0;
  std::vector<ChunkInfo> chunks_;
  std::map<std::string, std::vector<size_t>> by_entity_;
  std::map<std::string, rrd::TimeRange> index_ranges_;
  std::map<std::pair<std::string, std::string>, ColumnInfo> columns_;
};

}  // namespace rrl::store
