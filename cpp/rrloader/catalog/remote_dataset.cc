#include "rrloader/catalog/remote_dataset.h"

#include <arrow/util/key_value_metadata.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_set>

#include "rrloader/chunk/entity_path.h"

namespace rrl::catalog {

namespace {

std::string Meta(const std::shared_ptr<const arrow::KeyValueMetadata>& md, const char* key) {
  if (!md) return "";
  auto v = md->Get(key);
  return v.ok() ? *v : "";
}

std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// RunAll: fn(0), ..., fn(n - 1) on up to `threads` threads (the caller's among them; the
// others live only for this call, so nothing survives it to be inherited by a fork). Once
// a task fails no further task starts: each call has its own deadline, so starting more
// would only add theirs to the time to the error. `started[i]` says whether task i ran;
// the first failure in task order is returned.
Status RunAll(size_t n, int threads, const std::function<Status(size_t)>& fn, std::vector<char>* started) {
  started->assign(n, 0);
  std::vector<Status> results(n);
  std::atomic<bool> failed{false};
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next++; k < n && !failed; k = next++) {
      (*started)[k] = 1;
      results[k] = fn(k);
      if (!results[k].ok()) failed = true;
    }
  };
  const size_t t = std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), n);
  if (t <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(t - 1);
    for (size_t i = 1; i < t; ++i) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
  }
  for (size_t k = 0; k < n; ++k) {
    if ((*started)[k] && !results[k].ok()) return results[k];
  }
  return Status::OK();
}

}  // namespace

// RemoteChunkLoader: fetches chunks by id, keeps them in the chunk cache, and answers the
// remote segments' LoadChunk. Thread-safe: the in-flight table, the table of fetched chunks
// still held by a block, the refreshed keys and the counters share one mutex, never held
// while calling the transport.
class RemoteChunkLoader final : public store::ChunkLoader {
 public:
  RemoteChunkLoader(RpcFn rpc, RpcManyFn rpc_many, RemoteOptions options)
      : rpc_(std::move(rpc)),
        rpc_many_(std::move(rpc_many)),
        options_(std::move(options)),
        cache_(options_.cache_bytes) {}

  bool HasRpcMany() const { return static_cast<bool>(rpc_many_); }

  using Wanted = std::pair<const store::Segment*, size_t>;

  Result<std::shared_ptr<const chunk::Chunk>> Load(const store::Segment& segment, size_t i,
                                                   store::ChunkCache& /*cache*/) const override {
    // The common case (the block prefetched it, or an earlier epoch did): one cache lookup.
    if (i < segment.chunks().size()) {
      if (auto hit = cache_.Get(segment.chunks()[i].cache_key)) return hit;
    }
    std::vector<std::shared_ptr<const chunk::Chunk>> got;
    RRL_RETURN_IF_ERROR(FetchInto({{&segment, i}}, &got, /*on_demand=*/true));
    if (got.empty()) {
      return Status::Internal(options_.description + ": chunk " + std::to_string(i) + " of segment '" + segment.id() +
                              "' was not loaded");
    }
    return got.front();
  }

  // FetchInto: every wanted chunk appended to `out` (cached, held elsewhere, fetched by
  // another thread now, or fetched here in batches).
  Status FetchInto(const std::vector<Wanted>& wanted, std::vector<std::shared_ptr<const chunk::Chunk>>* out,
                   bool on_demand) const;

  // FetchManifest: one GetRrdManifest call, decoded (the caller prefixes errors).
  Result<redap::RemoteManifest> FetchManifest(const std::string& segment_id) const {
    return DecodeManifest(rpc_(redap::kGetRrdManifest, redap::EncodeGetRrdManifestRequest(segment_id)));
  }
  // FetchManifests: GetRrdManifest of each segment through rpc_many_ (HasRpcMany), up to
  // `in_flight` at once; decoded, in order.
  std::vector<Result<redap::RemoteManifest>> FetchManifests(const std::vector<std::string>& segment_ids,
                                                            int in_flight) const {
    std::vector<std::string> requests;
    requests.reserve(segment_ids.size());
    for (const auto& id : segment_ids) requests.push_back(redap::EncodeGetRrdManifestRequest(id));
    auto answers = rpc_many_(redap::kGetRrdManifest, requests, in_flight);
    std::vector<Result<redap::RemoteManifest>> out;
    out.reserve(segment_ids.size());
    for (size_t k = 0; k < segment_ids.size(); ++k) {
      out.push_back(k < answers.size() ? DecodeManifest(std::move(answers[k]))
                                       : Status::Internal("the transport left a manifest call unanswered"));
    }
    return out;
  }

  store::ChunkCache& cache() const { return cache_; }

  RemoteStats Stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    RemoteStats s = stats_;
    s.capacity_bytes = cache_.capacity_bytes();
    s.size_bytes = cache_.size_bytes();
    s.hits = cache_.hits();
    s.misses = cache_.misses();
    return s;
  }

 private:
  struct Batch {
    std::vector<Wanted> chunks;
    std::vector<std::string> keys;  // cache keys
    std::promise<Status> done;
  };

  std::string FetchKey(const std::string& cache_key, const store::ChunkInfo& info) const {
    // Called with mu_ held.
    auto it = refreshed_keys_.find(cache_key);
    return it != refreshed_keys_.end() ? it->second : info.chunk_key;
  }
  // FetchBatch: one FetchChunks call for `batch` (once more after refreshing stale keys).
  Status FetchBatch(const std::vector<Wanted>& batch, std::vector<std::shared_ptr<const chunk::Chunk>>* got) const;
  // CheckGone: after a NotFound answer, each segment of `batch` asked for its manifest
  // again: kNotFound naming a segment (or chunk) the server no longer has; true when chunk
  // keys changed and were refreshed (call again); false when nothing explains the answer.
  Result<bool> CheckGone(const std::vector<Wanted>& batch) const;
  std::string Where(const std::vector<Wanted>& batch) const;
  void SweepAlive() const;  // with mu_ held

  Result<redap::RemoteManifest> DecodeManifest(Result<std::vector<std::shared_ptr<arrow::Buffer>>> answer) const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.manifest_fetches;
      if (!answer.ok()) {
        ++stats_.fetch_errors;
        return answer.status();
      }
      if (answer->size() != 1) {
        return Status::Corrupt("GetRrdManifest answered " + std::to_string(answer->size()) + " messages");
      }
      stats_.manifest_bytes += (*answer)[0]->size();
    }
    return redap::DecodeGetRrdManifestResponse((*answer)[0]);
  }

  RpcFn rpc_;
  RpcManyFn rpc_many_;  // may be empty
  RemoteOptions options_;
  mutable store::ChunkCache cache_;
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, std::shared_future<Status>> inflight_;
  // alive_: chunks fetched lately, while some block still holds them: a block whose
  // prefetched chunks were already evicted from a small cache finds them here.
  mutable std::unordered_map<std::string, std::weak_ptr<const chunk::Chunk>> alive_;
  mutable size_t next_sweep_ = 4096;
  mutable std::unordered_map<std::string, std::string> refreshed_keys_;  // cache key -> chunk key
  mutable RemoteStats stats_;
};

std::string RemoteChunkLoader::Where(const std::vector<Wanted>& batch) const {
  std::vector<std::pair<std::string, std::string>> pairs;  // (segment, entity), first seen first
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& [seg, i] : batch) {
    std::pair<std::string, std::string> p{seg->id(), seg->chunks()[i].entity_path};
    if (seen.insert(p).second) pairs.push_back(std::move(p));
  }
  std::string out = options_.description + ": chunks of ";
  for (size_t k = 0; k < pairs.size() && k < 3; ++k) {
    out += (k == 0 ? "" : ", ") + std::string("entity '") + pairs[k].second + "' of segment '" + pairs[k].first + "'";
  }
  if (pairs.size() > 3) out += " and " + std::to_string(pairs.size() - 3) + " more";
  return out;
}

void RemoteChunkLoader::SweepAlive() const {
  if (alive_.size() < next_sweep_) return;
  for (auto it = alive_.begin(); it != alive_.end();) it = it->second.expired() ? alive_.erase(it) : std::next(it);
  next_sweep_ = std::max<size_t>(4096, 2 * alive_.size());
}

Result<bool> RemoteChunkLoader::CheckGone(const std::vector<Wanted>& batch) const {
  std::map<const store::Segment*, std::vector<size_t>> by_segment;
  for (const auto& [seg, i] : batch) by_segment[seg].push_back(i);
  bool refreshed = false;
  for (const auto& [seg, chunks] : by_segment) {
    auto manifest = FetchManifest(seg->id());
    if (!manifest.ok()) {
      if (manifest.status().code() == StatusCode::kNotFound) {
        return Status::NotFound(
            options_.description + ": segment '" + seg->id() +
            "' is no longer in the dataset (removed after the epoch was planned?): " + manifest.status().message());
      }
      return false;
    }
    std::unordered_map<std::string, std::string> keys;  // chunk id -> key
    for (const auto& c : manifest->chunks) keys[c.chunk_id] = c.chunk_key;
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i : chunks) {
      const auto& info = seg->chunks()[i];
      auto it = keys.find(info.chunk_id);
      if (it == keys.end()) {
        return Status::NotFound(options_.description + ": chunk " + Hex(info.chunk_id) + " of entity '" +
                                info.entity_path + "' of segment '" + seg->id() +
                                "' is no longer on the server (the segment was registered again with other data?)");
      }
      const std::string& cache_key = info.cache_key;  // (segment, chunk id), made by Segment::FromManifest
      if (FetchKey(cache_key, info) != it->second) {
        refreshed_keys_[cache_key] = it->second;
        refreshed = true;
      }
    }
    if (refreshed) ++stats_.key_refreshes;
  }
  return refreshed;
}

Status RemoteChunkLoader::FetchBatch(const std::vector<Wanted>& batch,
                                     std::vector<std::shared_ptr<const chunk::Chunk>>* got) const {
  const std::string where = Where(batch);
  Result<std::vector<std::shared_ptr<arrow::Buffer>>> answer = Status::Internal("not fetched");
  for (int attempt = 0;; ++attempt) {
    std::vector<redap::ChunkRef> refs;
    refs.reserve(batch.size());
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [seg, i] : batch) {
        const auto& info = seg->chunks()[i];
        refs.push_back({info.chunk_id, seg->id(), options_.layer, FetchKey(info.cache_key, info)});
      }
    }
    auto request = redap::EncodeFetchChunksRequest(refs);
    if (!request.ok()) return request.status().WithPrefix(where);
    answer = rpc_(redap::kFetchChunks, *request);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.fetches;
      if (!answer.ok()) ++stats_.fetch_errors;
    }
    if (answer.ok()) break;
    if (answer.status().code() != StatusCode::kNotFound || attempt > 0) return answer.status().WithPrefix(where);
    auto refreshed = CheckGone(batch);
    if (!refreshed.ok()) return refreshed.status();  // a segment or chunk that is gone, named
    if (!*refreshed) return answer.status().WithPrefix(where);
  }
  std::vector<redap::FetchedChunk> fetched;
  for (const auto& message : *answer) {
    RRL_RETURN_IF_ERROR(redap::DecodeFetchChunksResponse(message, &fetched).WithPrefix(where));
  }
  // Answers are matched to requests by chunk id (the ArrowMsg's), else in request order.
  std::unordered_map<std::string, size_t> by_id;
  for (size_t k = 0; k < batch.size(); ++k) by_id.emplace(batch[k].first->chunks()[batch[k].second].chunk_id, k);
  std::vector<std::shared_ptr<const chunk::Chunk>> decoded(batch.size());
  size_t next_unnamed = 0;
  int64_t bytes = 0;
  for (auto& f : fetched) {
    size_t k = batch.size();
    if (!f.chunk_id.empty()) {
      auto it = by_id.find(f.chunk_id);
      if (it == by_id.end()) {
        return Status::Corrupt(where + ": the server sent chunk " + Hex(f.chunk_id) + ", which was not asked for");
      }
      k = it->second;
    } else {
      while (next_unnamed < batch.size() && decoded[next_unnamed] != nullptr) ++next_unnamed;
      k = next_unnamed;
      if (k == batch.size()) return Status::Corrupt(where + ": the server sent more chunks than were asked for");
    }
    const auto& [seg, i] = batch[k];
    const auto& info = seg->chunks()[i];
    const std::string chunk_where = options_.description + ": chunk " + Hex(info.chunk_id) + " of entity '" +
                                    info.entity_path + "' of segment '" + seg->id() + "'";
    RRL_ASSIGN_OR_RETURN(auto chunk, chunk::Chunk::Decode(f.ipc, chunk_where));
    if (chunk->entity_path() != info.entity_path) {
      return Status::Corrupt(chunk_where + " is for entity '" + chunk->entity_path() + "' but the manifest says '" +
                             info.entity_path + "'");
    }
    bytes += f.ipc->size();
    decoded[k] = std::move(chunk);
  }
  for (size_t k = 0; k < batch.size(); ++k) {
    if (decoded[k] == nullptr) {
      const auto& info = batch[k].first->chunks()[batch[k].second];
      return Status::Corrupt(where + ": the server did not send chunk " + Hex(info.chunk_id) + " of entity '" +
                             info.entity_path + "'");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.chunks_fetched += static_cast<int64_t>(batch.size());
    stats_.fetched_bytes += bytes;
  }
  *got = std::move(decoded);
  return Status::OK();
}

Status RemoteChunkLoader::FetchInto(const std::vector<Wanted>& wanted,
                                    std::vector<std::shared_ptr<const chunk::Chunk>>* out, bool on_demand) const {
  std::vector<std::shared_ptr<Batch>> batches;
  struct Wait {
    Wanted wanted;
    std::string key;
    std::shared_future<Status> done;
  };
  std::vector<Wait> waits;  // chunks another thread is fetching
  {
    std::vector<std::pair<Wanted, std::string>> missing;
    // Keys are (segment, chunk id) strings of the segments' chunk indexes, which outlive
    // this call: views of them dedupe without copying.
    std::unordered_set<std::string_view> listed;
    listed.reserve(wanted.size());
    for (const auto& w : wanted) {
      const std::string& key = w.first->chunks()[w.second].cache_key;
      if (!listed.insert(key).second) continue;
      if (auto hit = cache_.Get(key)) {
        out->push_back(std::move(hit));
        continue;
      }
      missing.emplace_back(w, key);
    }
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::pair<Wanted, std::string>> to_fetch;
    for (auto& [w, key] : missing) {
      if (auto it = alive_.find(key); it != alive_.end()) {
        if (auto chunk = it->second.lock()) {
          cache_.Put(key, chunk);
          out->push_back(std::move(chunk));
          continue;
        }
      }
      if (auto it = inflight_.find(key); it != inflight_.end()) {
        ++stats_.shared_waits;
        waits.push_back({w, key, it->second});
        continue;
      }
      to_fetch.emplace_back(w, std::move(key));
    }
    if (!to_fetch.empty()) {
      // Batches: in request order (segments together), cut so that each holds about the
      // same bytes, as many as fetch_concurrency allows with fetch_batch_bytes each.
      int64_t total = 0;
      for (const auto& [w, key] : to_fetch) {
        total += static_cast<int64_t>(std::max<uint64_t>(1, w.first->chunks()[w.second].byte_size));
      }
      const int64_t per = std::max<int64_t>(1, options_.fetch_batch_bytes);
      const int64_t n = std::clamp<int64_t>((total + per - 1) / per, 1, std::max(1, options_.fetch_concurrency));
      const int64_t target = (total + n - 1) / n;
      int64_t in_batch = 0;
      for (auto& [w, key] : to_fetch) {
        if (batches.empty() || (in_batch >= target && static_cast<int64_t>(batches.size()) < n)) {
          batches.push_back(std::make_shared<Batch>());
          in_batch = 0;
        }
        in_batch += static_cast<int64_t>(std::max<uint64_t>(1, w.first->chunks()[w.second].byte_size));
        batches.back()->chunks.push_back(w);
        batches.back()->keys.push_back(key);
      }
      for (const auto& b : batches) {
        std::shared_future<Status> f = b->done.get_future().share();
        for (const auto& key : b->keys) inflight_.emplace(key, f);
      }
      if (on_demand) stats_.on_demand_chunks += static_cast<int64_t>(to_fetch.size());
    }
  }
  std::mutex out_mu;
  std::vector<char> started;
  Status status = RunAll(
      batches.size(), options_.fetch_concurrency,
      [&](size_t b) -> Status {
        Batch& batch = *batches[b];
        std::vector<std::shared_ptr<const chunk::Chunk>> got;
        Status st;
        try {
          st = FetchBatch(batch.chunks, &got);
        } catch (const std::exception& e) {  // the transport must not throw; never leave waiters hanging
          st = Status::Internal(std::string("fetching chunks threw: ") + e.what());
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          for (size_t k = 0; k < batch.keys.size(); ++k) {
            if (st.ok()) {
              cache_.Put(batch.keys[k], got[k]);
              alive_[batch.keys[k]] = got[k];
            }
            inflight_.erase(batch.keys[k]);
          }
          SweepAlive();
        }
        batch.done.set_value(st);
        if (st.ok()) {
          std::lock_guard<std::mutex> lock(out_mu);
          out->insert(out->end(), got.begin(), got.end());
        }
        return st;
      },
      &started);
  // Batches never started (a call failed first) still answer whoever waits for them.
  for (size_t b = 0; b < batches.size(); ++b) {
    if (started[b]) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& key : batches[b]->keys) inflight_.erase(key);
    }
    batches[b]->done.set_value(Status::Internal("not fetched: an earlier fetch of the same block failed"));
  }
  if (!status.ok()) return status;
  // Others' fetches: their chunks, once done; one released again before this thread got it
  // (a cache too small to keep it, and its block already gone) is fetched here after all.
  std::vector<Wanted> again;
  for (auto& w : waits) {
    RRL_RETURN_IF_ERROR(w.done.get());
    std::shared_ptr<const chunk::Chunk> chunk = cache_.Get(w.key);
    if (chunk == nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = alive_.find(w.key); it != alive_.end()) chunk = it->second.lock();
    }
    if (chunk != nullptr) {
      out->push_back(std::move(chunk));
    } else {
      again.push_back(w.wanted);
    }
  }
  if (!again.empty()) return FetchInto(again, out, on_demand);
  return Status::OK();
}

Result<std::shared_ptr<RemoteDataset>> RemoteDataset::Make(std::vector<std::string> segment_ids,
                                                           const arrow::Schema& schema, RpcFn rpc,
                                                           RemoteOptions options, RpcManyFn rpc_many) {
  if (!rpc) return Status::InvalidArgument(options.description + ": no transport");
  auto ds = std::shared_ptr<RemoteDataset>(new RemoteDataset());
  std::sort(segment_ids.begin(), segment_ids.end());
  segment_ids.erase(std::unique(segment_ids.begin(), segment_ids.end()), segment_ids.end());
  ds->segment_ids_ = std::move(segment_ids);
  for (const auto& field : schema.fields()) {
    const auto& md = field->metadata();
    const std::string kind = Meta(md, "rerun:kind");
    if (kind == "index") {
      std::string name = Meta(md, "rerun:index_name");
      if (name.empty()) name = field->name();
      auto tk = rrd::TimeKindFromArrow(*field->type());
      if (!tk) {
        return Status::InvalidArgument(options.description + ": index column '" + field->name() + "' has type " +
                                       field->type()->ToString() + " (expected int64, timestamp[ns] or duration[ns])");
      }
      ds->timelines_[name] = *tk;
    } else if (kind == "data") {
      DatasetColumn c;
      c.name = field->name();
      c.info.entity_path = Meta(md, "rerun:entity_path");
      c.info.component = Meta(md, "rerun:component");
      if (c.info.entity_path.empty() || c.info.component.empty()) {
        return Status::InvalidArgument(options.description + ": schema column '" + field->name() +
                                       "' lacks rerun:entity_path or rerun:component");
      }
      c.info.archetype = Meta(md, "rerun:archetype");
      c.info.component_type = Meta(md, "rerun:component_type");
      c.info.type = field->type();
      c.info.is_static = Meta(md, "rerun:is_static") == "true";
      c.info.semantically_empty = Meta(md, "rerun:is_semantically_empty") == "true";
      // The catalog's schema is a union over segments and does not say whether a column is
      // static in every one of them; only LocalDataset's reader uses that.
      c.is_static_everywhere = c.info.is_static;
      ds->columns_.push_back(std::move(c));
    }
    // "control" (the row id) and anything else: not a column of the dataset.
  }
  std::sort(ds->columns_.begin(), ds->columns_.end(), [](const DatasetColumn& a, const DatasetColumn& b) {
    return std::make_tuple(chunk::EntityPathParts(a.info.entity_path), a.info.component) <
           std::make_tuple(chunk::EntityPathParts(b.info.entity_path), b.info.component);
  });
  options.fetch_concurrency = std::max(1, options.fetch_concurrency);
  options.cache_bytes = std::max<int64_t>(0, options.cache_bytes);
  options.manifest_cache_bytes = std::max<int64_t>(0, options.manifest_cache_bytes);
  options.fetch_batch_bytes = std::max<int64_t>(1, options.fetch_batch_bytes);
  options.manifests_in_flight = std::max(1, options.manifests_in_flight);
  ds->options_ = options;
  ds->loader_ = std::make_shared<RemoteChunkLoader>(std::move(rpc), std::move(rpc_many), std::move(options));
  return ds;
}

store::ChunkCache& RemoteDataset::cache() const {
  return loader_->cache();
}

RemoteStats RemoteDataset::Stats() const {
  RemoteStats s = loader_->Stats();
  std::lock_guard<std::mutex> lock(mu_);
  s.manifests_cached = static_cast<int64_t>(map_.size());
  s.manifest_cache_bytes = manifest_bytes_cached_;
  return s;
}

bool RemoteDataset::Known(const std::string& segment_id) const {
  return std::binary_search(segment_ids_.begin(), segment_ids_.end(), segment_id);
}

RemoteDataset::SegmentResult RemoteDataset::ManifestResult(const std::string& segment_id,
                                                           Result<redap::RemoteManifest> manifest) const {
  const std::string where = options_.description + ": segment '" + segment_id + "'";
  SegmentResult result = Status::Internal("not fetched");
  try {
    if (!manifest.ok()) {
      result = manifest.status().code() == StatusCode::kNotFound
                   ? Status::NotFound(options_.description + ": segment '" + segment_id +
                                      "' is no longer in the dataset (removed after the epoch was planned?): " +
                                      manifest.status().message())
                   : manifest.status().WithPrefix(where + ", fetching its manifest");
    } else {
      auto seg =
          store::Segment::FromManifest(segment_id, manifest->store_id.application_id, std::move(manifest->chunks),
                                       manifest->sorbet_schema, loader_, options_.description);
      if (seg.ok()) {
        result = std::shared_ptr<const store::Segment>(std::move(*seg));
      } else {
        result = seg.status();
      }
    }
  } catch (const std::exception& e) {  // never leave waiters hanging
    result = Status::Internal(where + ": reading the manifest threw: " + e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  inflight_.erase(segment_id);
  if (result.ok()) {
    const int64_t bytes = (*result)->IndexBytes();
    // A manifest larger than the whole cache is handed out but not kept.
    if (bytes <= options_.manifest_cache_bytes && !map_.count(segment_id)) {
      lru_.push_front(Entry{segment_id, *result, bytes});
      map_[segment_id] = lru_.begin();
      manifest_bytes_cached_ += bytes;
      while (manifest_bytes_cached_ > options_.manifest_cache_bytes && !lru_.empty()) {
        manifest_bytes_cached_ -= lru_.back().bytes;
        map_.erase(lru_.back().segment_id);
        lru_.pop_back();
      }
    }
  }
  return result;
}

RemoteDataset::SegmentResult RemoteDataset::LoadManifest(const std::string& segment_id) const {
  std::promise<SegmentResult> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = map_.find(segment_id); it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->segment;
    }
    if (auto it = inflight_.find(segment_id); it != inflight_.end()) {
      std::shared_future<SegmentResult> pending = it->second;
      lock.unlock();
      return pending.get();
    }
    inflight_.emplace(segment_id, promise.get_future().share());
  }
  Result<redap::RemoteManifest> manifest = Status::Internal("not fetched");
  try {
    manifest = loader_->FetchManifest(segment_id);
  } catch (const std::exception& e) {  // never leave waiters hanging
    manifest = Status::Internal(std::string("fetching the manifest threw: ") + e.what());
  }
  SegmentResult result = ManifestResult(segment_id, std::move(manifest));
  promise.set_value(result);
  return result;
}

std::vector<RemoteDataset::SegmentResult> RemoteDataset::LoadManifests(
    const std::vector<std::string>& segment_ids) const {
  std::vector<SegmentResult> results(segment_ids.size(), Status::Internal("not loaded"));
  std::vector<size_t> mine;  // fetched here
  std::vector<std::promise<SegmentResult>> promises;
  std::vector<std::pair<size_t, std::shared_future<SegmentResult>>> theirs;  // another thread's fetch
  {
    std::lock_guard<std::mutex> lock(mu_);
    promises.reserve(segment_ids.size());
    for (size_t k = 0; k < segment_ids.size(); ++k) {
      if (auto it = map_.find(segment_ids[k]); it != map_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        results[k] = it->second->segment;
      } else if (auto in = inflight_.find(segment_ids[k]); in != inflight_.end()) {
        theirs.emplace_back(k, in->second);
      } else {
        promises.emplace_back();
        inflight_.emplace(segment_ids[k], promises.back().get_future().share());
        mine.push_back(k);
      }
    }
  }
  if (!mine.empty()) {
    std::vector<std::string> ids;
    ids.reserve(mine.size());
    for (size_t k : mine) ids.push_back(segment_ids[k]);
    std::vector<Result<redap::RemoteManifest>> manifests;
    try {
      manifests = loader_->FetchManifests(ids, std::max(1, options_.manifests_in_flight));
    } catch (const std::exception& e) {  // never leave waiters hanging
      manifests.assign(ids.size(), Status::Internal(std::string("fetching manifests threw: ") + e.what()));
    }
    for (size_t m = 0; m < mine.size(); ++m) {
      results[mine[m]] = ManifestResult(ids[m], std::move(manifests[m]));
      promises[m].set_value(results[mine[m]]);
    }
  }
  for (auto& [k, pending] : theirs) results[k] = pending.get();
  return results;
}

Status RemoteDataset::PrefetchSegments(const std::vector<std::string>& segment_ids) const {
  if (!loader_->HasRpcMany()) return Status::OK();  // one call per manifest: not worth doing ahead
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Room: half the cache, less what it holds; manifests counted at the mean size so far
    // (none cached yet: a guess, 4 KiB, for a first round of at most 128 that tells it).
    const int64_t room = options_.manifest_cache_bytes / 2 - manifest_bytes_cached_;
    const int64_t mean =
        map_.empty() ? 4096 : std::max<int64_t>(1, manifest_bytes_cached_ / static_cast<int64_t>(map_.size()));
    int64_t most = room > 0 ? room / mean : 0;
    if (map_.empty()) most = std::min<int64_t>(most, 128);
    for (const auto& id : segment_ids) {
      if (static_cast<int64_t>(ids.size()) >= most) break;
      if (!Known(id) || map_.count(id) != 0 || inflight_.count(id) != 0) continue;
      ids.push_back(id);
    }
  }
  if (ids.empty()) return Status::OK();
  for (const SegmentResult& r : LoadManifests(ids)) {
    if (!r.ok()) return r.status();  // also reported by the lookups that need the segment
  }
  return Status::OK();
}

Result<std::shared_ptr<const store::Segment>> RemoteDataset::EntitySegment(const std::string& segment_id,
                                                                           const std::string& entity_path) const {
  if (!Known(segment_id)) {
    return Status::NotFound("no segment '" + segment_id + "' in the dataset (" + options_.description + ")");
  }
  auto seg = LoadManifest(segment_id);
  if (!seg.ok() && seg.status().code() != StatusCode::kNotFound) {
    return seg.status().WithPrefix("reading entity '" + entity_path + "'");
  }
  return seg;
}

Result<std::vector<std::shared_ptr<const store::Segment>>> RemoteDataset::EntitySegments(
    const std::vector<EntityKey>& keys) const {
  // Views of the keys' strings, which outlive the call.
  std::vector<std::string_view> unique;
  std::vector<const std::string*> entity_of;              // for messages: the first entity asked for
  std::unordered_map<std::string_view, size_t> index_of;  // segment -> index in unique
  std::vector<size_t> key_to_unique;
  key_to_unique.reserve(keys.size());
  for (const auto& [segment_id, entity] : keys) {
    if (!Known(segment_id)) {
      return Status::NotFound("no segment '" + segment_id + "' in the dataset (" + options_.description + ")");
    }
    auto [it, inserted] = index_of.emplace(segment_id, unique.size());
    if (inserted) {
      unique.push_back(segment_id);
      entity_of.push_back(&entity);
    }
    key_to_unique.push_back(it->second);
  }
  std::vector<SegmentResult> results(unique.size(), Status::Internal("not loaded"));
  // The manifests already cached (every one, after a block's first touch of its segments)
  // under one lock; threads only for the missing ones.
  std::vector<size_t> missing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t k = 0; k < unique.size(); ++k) {
      if (auto it = map_.find(std::string(unique[k])); it != map_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        results[k] = it->second->segment;
      } else {
        missing.push_back(k);
      }
    }
  }
  auto named = [&](size_t k) {
    if (!results[k].ok() && results[k].status().code() != StatusCode::kNotFound) {
      results[k] = results[k].status().WithPrefix("reading entity '" + *entity_of[k] + "'");
    }
  };
  if (missing.size() > 1 && loader_->HasRpcMany()) {
    std::vector<std::string> ids;
    ids.reserve(missing.size());
    for (size_t k : missing) ids.emplace_back(unique[k]);
    std::vector<SegmentResult> loaded = LoadManifests(ids);
    for (size_t m = 0; m < missing.size(); ++m) {
      results[missing[m]] = std::move(loaded[m]);
      named(missing[m]);
    }
    for (size_t k : missing) {  // missing is in key order
      if (!results[k].ok()) return results[k].status();
    }
  } else {
    std::vector<char> started;
    Status status = RunAll(
        missing.size(), options_.fetch_concurrency,
        [&](size_t m) -> Status {
          const size_t k = missing[m];
          results[k] = LoadManifest(std::string(unique[k]));
          named(k);
          return results[k].ok() ? Status::OK() : results[k].status();
        },
        &started);
    if (!status.ok()) return status;
  }
  std::vector<std::shared_ptr<const store::Segment>> out;
  out.reserve(keys.size());
  for (size_t u : key_to_unique) out.push_back(*results[u]);
  return out;
}

Status RemoteDataset::Prefetch(const std::vector<ChunkWant>& wants,
                               std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const {
  std::vector<RemoteChunkLoader::Wanted> wanted;
  for (const auto& w : wants) {
    if (w.segment == nullptr) continue;
    if (!w.segment->is_remote()) {
      return Status::Internal(options_.description + ": Prefetch of a segment that is not this dataset's");
    }
    for (size_t i : w.chunks) {
      if (i >= w.segment->chunks().size()) {
        return Status::Internal(options_.description + ": Prefetch of chunk " + std::to_string(i) + " of segment '" +
                                w.segment->id() + "', which has " + std::to_string(w.segment->chunks().size()));
      }
      wanted.emplace_back(w.segment.get(), i);
    }
  }
  if (wanted.empty()) return Status::OK();
  return loader_->FetchInto(wanted, keep_alive, /*on_demand=*/false);
}

}  // namespace rrl::catalog
