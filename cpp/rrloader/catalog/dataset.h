// rrloader/catalog/dataset.h — what the engine needs from a dataset, wherever its chunks
// live: the dataset's columns and timelines, per (segment, entity) a Segment whose chunk
// index lists every chunk of that entity, and a way to load the chunks a block will read
// together (Prefetch).
//
// LocalDataset (local .rrd files) answers from the files' footers and reads chunks on
// first use. RemoteDataset (a Rerun catalog server) asks the server for each segment's
// manifest (its footer) and fetches chunks by id: the engine works out, from the chunk
// index alone, which chunks a block's samples can need and hands them to Prefetch, which
// fetches the missing ones in a few batched calls; a chunk still missing when the engine
// reads it is fetched on its own (correct, slower). So a block transfers the chunks its
// samples need, never whole streams.
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

// ChunkWant: chunks of one segment (numbers into segment->chunks()) a block will load.
struct ChunkWant {
  std::shared_ptr<const store::Segment> segment;
  std::vector<size_t> chunks;
};

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
  // key order) is returned. A remote dataset fetches the missing manifests concurrently;
  // this default asks one after the other.
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

  // WantsPrefetch: whether Prefetch does anything (the engine skips working out the chunks
  // a block needs when it does not).
  virtual bool WantsPrefetch() const { return false; }
  // Prefetch: make the `wants` loadable without a round trip each, and append the chunks
  // it loaded to `keep_alive` (the caller holds them while it reads them, so they are not
  // fetched twice however small the cache). Segments must come from this dataset. The
  // default does nothing (local chunks are read when first loaded).
  [[nodiscard]] virtual Status Prefetch(const std::vector<ChunkWant>& wants,
                                        std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const {
    (void)wants;
    (void)keep_alive;
    return Status::OK();
  }

  // PrefetchSegments: make the segments of `segment_ids` (in order of first use) quick to
  // look up later, as far as the dataset's own bounds allow. A hint: the lookups that need
  // the segments report failures with their fields; the status returned (the first failure)
  // tells the caller to stop asking ahead. The default does nothing (a local segment is
  // indexed when the dataset opens).
  [[nodiscard]] virtual Status PrefetchSegments(const std::vector<std::string>& segment_ids) const {
    (void)segment_ids;
    return Status::OK();
  }

  // cache: the byte-bounded cache of decoded chunks shared by every segment.
  virtual store::ChunkCache& cache() const = 0;
};

}  // namespace rrl::catalog
