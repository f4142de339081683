// rrloader/catalog/dataset.h — what the engine needs from a dataset, wherever its chunks
// live: the dataset's columns and timelines, and, per (segment, entity), a Segment that
// holds every chunk of that entity in that segment.
//
// LocalDataset (local .rrd files) answers from the files' footers; RemoteDataset (a
// Rerun catalog server) fetches an entity's chunks on first use. The engine never asks
// for more than one entity's chunks at a time, so a remote dataset never has to fetch a
// whole recording to answer a query about one camera; it asks for all the (segment,
// entity) pairs of a block at once (EntitySegments), so those fetches can overlap.
//
// Thread safety: implementations must be safe to call from several threads at once.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/rrd/reader.h"
#include "rrloader/store/chunk_cache.h"
#include "rrloader/store/segment.h"

namespace rrl::catalog {

// DatasetColumn: a component column of the dataset (the union over its segments).
struct DatasetColumn {
  std::string name;  // "/entity:Arch:field" or "property:Arch:field"
  store::ColumnInfo info;
  bool is_static_everywhere = false;
};

// EntityKey: (segment id, entity path).
using EntityKey = std::pair<std::string, std::string>;

class Dataset {
 public:
  virtual ~Dataset() = default;

  // Component columns, sorted as the reader orders them.
  virtual const std::vector<DatasetColumn>& columns() const = 0;
  // Timelines of the dataset with their kinds, sorted by name.
  virtual const std::map<std::string, rrd::TimeKind>& timelines() const = 0;
  // SegmentIds: every segment, sorted by id.
  virtual std::vector<std::string> SegmentIds() const = 0;

  // EntitySegment: a Segment of `segment_id` whose chunk index holds (at least) every
  // chunk of `entity_path`; its LoadChunk goes through cache(). kNotFound naming the
  // segment when the dataset has no such segment (or no longer has it).
  [[nodiscard]] virtual Result<std::shared_ptr<const store::Segment>> EntitySegment(
      const std::string& segment_id, const std::string& entity_path) const = 0;

  // EntitySegments: EntitySegment of every key, in the keys' order; the first failure (in
  // key order) is returned. A remote dataset fetches the missing keys concurrently; this
  // default asks one after the other.
  [[nodiscard]] virtual Result<std::vector<std::shared_ptr<const store::Segment>>> EntitySegments(
      const std::vector<EntityKey>& keys) const {
    std::vector<std::shared_ptr<const store::Segment>> out;
    out.reserve(keys.size());
    for (const auto& [segment_id, entity_path] : keys) {
      auto seg = EntitySegment(segment_id, entity_path);
      if (!seg.ok()) return seg.status();
      out.push_back(std::move(seg).value());
    }
    return out;
  }

  // cache: the byte-bounded cache of decoded chunks shared by every segment.
  virtual store::ChunkCache& cache() const = 0;
};

}  // namespace rrl::catalog
