// rrloader/catalog/remote_dataset.h — a dataset served by a Rerun catalog server.
//
// The catalog tells us the segments and the schema up front (the Python layer asks
// rerun-sdk's DatasetEntry); chunks are fetched per (segment, entity) on first use by a
// caller-supplied function (the Python layer wraps rerun-sdk's
// `segment_store(segment).stream().filter(content=entity).to_chunks()`), then kept as a
// resident store::Segment in an LRU bounded in bytes. The engine's latest-at code reads
// those segments exactly as it reads local ones, so remote and local samples are the same
// by construction.
//
// Why per (segment, entity): the engine resolves one column of one segment at a time, and
// rerun-sdk's chunk stream can be narrowed to one entity on the server (chunks of other
// entities are never transferred) but not to a time range. A block of samples asks for
// all of its (segment, entity) pairs at once (EntitySegments); the missing ones are
// fetched concurrently, and two threads missing the same pair wait for one fetch.
#pragma once

#include <arrow/record_batch.h>
#include <arrow/type.h>

#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "rrloader/catalog/dataset.h"

namespace rrl::catalog {

// kDefaultRemoteCacheBytes: 1 GiB of fetched chunks per remote dataset unless told
// otherwise. Larger than the local chunk cache's 512 MiB because a remote entry is a whole
// (segment, entity): a shuffled epoch revisits every pair, and a pair that does not fit is
// fetched again for every block that needs it.
inline constexpr int64_t kDefaultRemoteCacheBytes = int64_t{1} << 30;
// kDefaultRemoteFetchConcurrency: (segment, entity) fetches one EntitySegments call runs
// at once. The work is network waits and rerun-sdk's decoding (outside the GIL), so a few
// in flight hide most of the round trips without flooding the server.
inline constexpr int kDefaultRemoteFetchConcurrency = 4;

// FetchEntityFn: every chunk of `entity_path` in `segment_id`, as record batches in
// Rerun's chunk schema (extra chunks of other entities are ignored). A failure's message
// should say what failed and where (the server's URL); RemoteDataset adds the segment and
// entity. Called from engine threads, several at once for different keys: must be
// thread-safe.
using FetchEntityFn = std::function<Result<std::vector<std::shared_ptr<arrow::RecordBatch>>>(
    const std::string& segment_id, const std::string& entity_path)>;

struct RemoteOptions {
  int64_t cache_bytes = kDefaultRemoteCacheBytes;
  int fetch_concurrency = kDefaultRemoteFetchConcurrency;  // < 1 is taken as 1
  std::string description = "remote dataset";              // names the dataset in messages
};

// RemoteCacheStats: counters since Make. `fetches` counts calls of the fetch function,
// `shared_waits` lookups that waited for another thread's fetch of the same key.
struct RemoteCacheStats {
  int64_t capacity_bytes = 0;
  int64_t size_bytes = 0;
  int64_t entries = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t fetches = 0;
  int64_t fetch_errors = 0;
  int64_t fetched_bytes = 0;
  int64_t shared_waits = 0;
};

// RemoteDataset: thread-safe. Columns, timelines and segment ids are immutable after Make;
// the cache and the in-flight table are guarded by one mutex, never held while fetching.
// Owns no threads between calls (EntitySegments starts and joins its fetch threads), so it
// survives fork, although the fetch function behind it may not (rerun-sdk's client is not
// fork-safe: the Python layer refuses to use it in a forked child).
class RemoteDataset final : public Dataset {
 public:
  // Make: `segment_ids` (any order; sorted here), `schema` in the catalog's form (fields
  // with rerun:kind = index / data / control and the rerun:* metadata of
  // DatasetEntry.schema()), and the fetch function. kInvalidArgument when a data field
  // lacks its entity path or component, or an index field's type is not a timeline type.
  [[nodiscard]] static Result<std::shared_ptr<RemoteDataset>> Make(std::vector<std::string> segment_ids,
                                                                   const arrow::Schema& schema, FetchEntityFn fetch,
                                                                   RemoteOptions options);

  const std::vector<DatasetColumn>& columns() const override { return columns_; }
  const std::map<std::string, rrd::TimeKind>& timelines() const override { return timelines_; }
  std::vector<std::string> SegmentIds() const override { return segment_ids_; }

  // EntitySegment: the resident segment of (segment, entity), fetched now on a miss.
  // kNotFound for a segment that was not in the catalog at Make; a fetch failure's status
  // (the fetch function's code) prefixed with the dataset, segment and entity.
  [[nodiscard]] Result<std::shared_ptr<const store::Segment>> EntitySegment(
      const std::string& segment_id, const std::string& entity_path) const override;
  // EntitySegments: as EntitySegment for each key; misses are fetched up to
  // fetch_concurrency at a time (each fetched once, even if listed twice). An unknown
  // segment fails the call before anything is fetched; once a fetch fails, no further key
  // is started (so the call fails within about one fetch's deadline) and the first failed
  // fetch in key order is returned.
  [[nodiscard]] Result<std::vector<std::shared_ptr<const store::Segment>>> EntitySegments(
      const std::vector<EntityKey>& keys) const override;

  // cache: unused by the resident segments (their LoadChunk never consults it); a
  // zero-capacity cache so that nothing is ever stored twice.
  store::ChunkCache& cache() const override { return *unused_cache_; }

  RemoteCacheStats Stats() const;
  const std::string& description() const { return options_.description; }

 private:
  RemoteDataset() = default;
  // Resident: the cached segment of `key`, or null (counts a hit or a miss).
  std::shared_ptr<const store::Segment> Resident(const std::string& cache_key) const;
  // Load: the cached segment, or the result of this thread's fetch, or of another
  // thread's fetch of the same key in flight.
  [[nodiscard]] Result<std::shared_ptr<const store::Segment>> Load(const EntityKey& key) const;
  [[nodiscard]] Result<std::shared_ptr<const store::Segment>> FetchAndBuild(const EntityKey& key) const;
  void Insert(const std::string& cache_key, const std::shared_ptr<const store::Segment>& seg) const;

  using SegmentResult = Result<std::shared_ptr<const store::Segment>>;
  struct Entry {
    std::string key;
    std::shared_ptr<const store::Segment> segment;
    int64_t bytes = 0;
  };

  std::vector<std::string> segment_ids_;  // sorted
  std::vector<DatasetColumn> columns_;
  std::map<std::string, rrd::TimeKind> timelines_;
  FetchEntityFn fetch_;
  RemoteOptions options_;
  std::unique_ptr<store::ChunkCache> unused_cache_;

  mutable std::mutex mu_;
  mutable std::list<Entry> lru_;  // front = most recent
  mutable std::unordered_map<std::string, std::list<Entry>::iterator> map_;
  mutable std::unordered_map<std::string, std::shared_future<SegmentResult>> inflight_;
  mutable RemoteCacheStats stats_;
};

}  // namespace rrl::catalog
