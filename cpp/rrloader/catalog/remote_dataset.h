// rrloader/catalog/remote_dataset.h — a dataset served by a Rerun catalog server, read
// chunk by chunk.
//
// The catalog tells us the segments and the schema up front (the Python layer asks
// rerun-sdk's DatasetEntry). Everything after that speaks the catalog's gRPC API through a
// caller-supplied transport (RpcFn; the Python layer uses grpcio): per segment, on first
// use, its manifest (GetRrdManifest: the footer of the segment's .rrd, one row per chunk
// with entity, rows, per-timeline and per-component ranges and the server's fetch key),
// which becomes a remote store::Segment; and chunks by id (FetchChunks), batched: the engine
// hands Prefetch the chunks a block can need, the missing ones are fetched in at most
// `fetch_concurrency` concurrent calls of at least `fetch_batch_bytes` each. A chunk the
// engine loads that was not prefetched is fetched alone (counted in on_demand_chunks).
//
// Fetched chunks live in a ChunkCache bounded in bytes (`cache_bytes`), keyed by (segment,
// chunk id), so a later epoch reads them without the server; manifests in an LRU of their
// own (`manifest_cache_bytes`). The engine's latest-at and video code read these segments
// exactly as they read local ones, so remote and local samples are the same by
// construction.
//
// Errors name the dataset (its description holds the server's URL), the segment and the
// entity. A NotFound answer to FetchChunks is checked against the segments' manifests: a
// segment that is gone is a kNotFound naming it; one whose chunk keys changed (the server
// was restarted) has its keys refreshed and the call is made once more.
#pragma once

#include <arrow/buffer.h>
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
#include "rrloader/catalog/redap.h"

namespace rrl::catalog {

// kDefaultRemoteCacheBytes: 1 GiB of fetched chunks per remote dataset unless told
// otherwise (twice the local chunk cache: a chunk that falls out is a round trip, not a
// file read).
inline constexpr int64_t kDefaultRemoteCacheBytes = int64_t{1} << 30;
// kDefaultManifestCacheBytes: 64 MiB of segment manifests (a segment of 1,000 chunks is
// about 0.5 MiB of chunk index; a manifest that falls out is fetched again).
inline constexpr int64_t kDefaultManifestCacheBytes = int64_t{64} << 20;
// kDefaultRemoteFetchConcurrency: calls one Prefetch (or EntitySegments) runs at once. The
// work is network waits and the server's reads, so a few in flight hide most of the round
// trips without flooding the server.
inline constexpr int kDefaultRemoteFetchConcurrency = 4;
// kDefaultFetchBatchBytes: a Prefetch is split into more calls (up to fetch_concurrency)
// only when each gets at least this many bytes of chunks; smaller blocks are one call.
inline constexpr int64_t kDefaultFetchBatchBytes = int64_t{4} << 20;

// RpcFn: one call of the catalog's gRPC service: `method` (redap::kGetRrdManifest,
// redap::kFetchChunks) with the encoded request; the answer's messages in order (one for a
// unary call). The transport owns deadlines and retries. A failure's message should say
// what failed and where (the server's URL); kNotFound when the server answered NOT_FOUND.
// Called from engine threads, several at once: must be thread-safe.
using RpcFn = std::function<Result<std::vector<std::shared_ptr<arrow::Buffer>>>(const std::string& method,
                                                                                const std::string& request)>;

// RpcManyFn: many calls of one method at once (the transport runs up to `in_flight` of
// them concurrently, from the calling thread); one answer per request, in order. Optional:
// without one, a block's missing manifests are fetched by fetch_concurrency threads, one
// RpcFn call each.
using RpcManyFn = std::function<std::vector<Result<std::vector<std::shared_ptr<arrow::Buffer>>>>(
    const std::string& method, const std::vector<std::string>& requests, int in_flight)>;

// kDefaultManifestsInFlight: GetRrdManifest calls on the wire at once through RpcManyFn. A
// manifest is a few KiB and the server answers from its footer index: latency, not
// bandwidth, is their cost, so many overlap well.
inline constexpr int kDefaultManifestsInFlight = 64;

struct RemoteOptions {
  int64_t cache_bytes = kDefaultRemoteCacheBytes;
  int64_t manifest_cache_bytes = kDefaultManifestCacheBytes;
  int fetch_concurrency = kDefaultRemoteFetchConcurrency;  // < 1 is taken as 1
  int64_t fetch_batch_bytes = kDefaultFetchBatchBytes;
  int manifests_in_flight = kDefaultManifestsInFlight;  // through RpcManyFn; < 1 is taken as 1
  std::string layer = redap::kDefaultLayer;             // the segment layer sent with FetchChunks
  std::string description = "remote dataset";           // names the dataset in messages
};

// RemoteStats: counters since Make (size/entries/manifests_cached: now).
struct RemoteStats {
  int64_t capacity_bytes = 0;    // of the chunk cache
  int64_t size_bytes = 0;        // chunks cached now
  int64_t hits = 0;              // chunk cache lookups that hit
  int64_t misses = 0;            // ... that missed
  int64_t fetches = 0;           // FetchChunks calls
  int64_t chunks_fetched = 0;    // chunks received
  int64_t fetched_bytes = 0;     // their Arrow IPC bytes (what crossed the wire, less framing)
  int64_t on_demand_chunks = 0;  // of chunks_fetched: fetched alone, when first loaded
  int64_t fetch_errors = 0;      // failed calls (FetchChunks and GetRrdManifest)
  int64_t shared_waits = 0;      // loads that waited for another thread's fetch of the chunk
  int64_t manifest_fetches = 0;  // GetRrdManifest calls
  int64_t manifest_bytes = 0;    // their answers' bytes
  int64_t manifests_cached = 0;
  int64_t manifest_cache_bytes = 0;
  int64_t key_refreshes = 0;  // segments whose chunk keys were re-read (server restarted)
};

class RemoteChunkLoader;  // remote_dataset.cc: fetching, the chunk cache, in-flight table

// RemoteDataset: thread-safe. Columns, timelines and segment ids are immutable after Make;
// the manifest cache has its own mutex, never held while fetching; the chunk loader (shared
// with every remote Segment it made, so a Segment outlives its dataset safely) has its own.
// Owns no threads between calls (concurrent fetches use threads started and joined within
// the call), so it survives fork, although the transport behind it may not (the Python
// layer refuses to use it in a forked child).
class RemoteDataset final : public Dataset {
 public:
  // Make: `segment_ids` (any order; sorted here), `schema` in the catalog's form (fields
  // with rerun:kind = index / data / control and the rerun:* metadata of
  // DatasetEntry.schema()), and the transport. kInvalidArgument when a data field lacks its
  // entity path or component, or an index field's type is not a timeline type.
  // `rpc_many` (optional) fetches a block's missing manifests in one round of concurrent calls.
  [[nodiscard]] static Result<std::shared_ptr<RemoteDataset>> Make(std::vector<std::string> segment_ids,
                                                                   const arrow::Schema& schema, RpcFn rpc,
                                                                   RemoteOptions options, RpcManyFn rpc_many = nullptr);

  const std::vector<DatasetColumn>& columns() const override { return columns_; }
  const std::map<std::string, rrd::TimeKind>& timelines() const override { return timelines_; }
  std::vector<std::string> SegmentIds() const override { return segment_ids_; }

  // EntitySegment: the remote segment of `segment_id` (its whole manifest: every entity),
  // its manifest fetched now on a miss. kNotFound for a segment that was not in the catalog
  // at Make, or that the server no longer has (naming it); a fetch failure's status
  // prefixed with the dataset and segment.
  [[nodiscard]] Result<std::shared_ptr<const store::Segment>> EntitySegment(
      const std::string& segment_id, const std::string& entity_path) const override;
  // EntitySegments: as EntitySegment for each key; the cached manifests are looked up under
  // one lock, the missing ones fetched (each once) in one RpcManyFn round of up to
  // manifests_in_flight concurrent calls, or without it up to fetch_concurrency at a time
  // (then, once a fetch fails no further one starts). An unknown segment fails the call
  // before anything is fetched; the first failure in key order is returned.
  [[nodiscard]] Result<std::vector<std::shared_ptr<const store::Segment>>> EntitySegments(
      const std::vector<EntityKey>& keys) const override;

  // PrefetchSegments: the manifests of the leading `segment_ids` that are neither cached nor
  // in flight, fetched in one round as EntitySegments does, as many as keep the manifest
  // cache within half its bytes (at the mean size of the manifests cached so far), so that
  // manifests fetched ahead do not push out the ones in use. The first failed fetch's status.
  [[nodiscard]] Status PrefetchSegments(const std::vector<std::string>& segment_ids) const override;

  bool WantsPrefetch() const override { return true; }
  // Prefetch: the wanted chunks that are neither cached nor in flight are fetched (see the
  // file comment); every wanted chunk is appended to `keep_alive`. The first failed call's
  // status, naming the dataset and the first (segment, entity) pairs of its batch.
  [[nodiscard]] Status Prefetch(const std::vector<ChunkWant>& wants,
                                std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const override;

  store::ChunkCache& cache() const override;

  RemoteStats Stats() const;
  const std::string& description() const { return options_.description; }

 private:
  RemoteDataset() = default;
  using SegmentResult = Result<std::shared_ptr<const store::Segment>>;
  [[nodiscard]] SegmentResult LoadManifest(const std::string& segment_id) const;
  // LoadManifests: LoadManifest of each id (distinct, none cached when asked), the ones no
  // other thread is fetching in one RpcManyFn round.
  std::vector<SegmentResult> LoadManifests(const std::vector<std::string>& segment_ids) const;
  // ManifestResult: the segment (or the error, named) from a GetRrdManifest answer, which is
  // then cached; the in-flight entry of the segment is removed (mu_ not held).
  SegmentResult ManifestResult(const std::string& segment_id, Result<redap::RemoteManifest> manifest) const;
  bool Known(const std::string& segment_id) const;

  struct Entry {
    std::string segment_id;
    std::shared_ptr<const store::Segment> segment;
    int64_t bytes = 0;
  };

  std::vector<std::string> segment_ids_;  // sorted
  std::vector<DatasetColumn> columns_;
  std::map<std::string, rrd::TimeKind> timelines_;
  RemoteOptions options_;
  std::shared_ptr<RemoteChunkLoader> loader_;

  mutable std::mutex mu_;         // the manifest cache
  mutable std::list<Entry> lru_;  // front = most recent
  mutable std::unordered_map<std::string, std::list<Entry>::iterator> map_;
  mutable std::unordered_map<std::string, std::shared_future<SegmentResult>> inflight_;
  mutable int64_t manifest_bytes_cached_ = 0;
};

}  // namespace rrl::catalog
