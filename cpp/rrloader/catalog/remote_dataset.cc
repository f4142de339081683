#include "rrloader/catalog/remote_dataset.h"

#include <arrow/util/key_value_metadata.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <tuple>

namespace rrl::catalog {

namespace {

std::string Meta(const std::shared_ptr<const arrow::KeyValueMetadata>& md, const char* key) {
  if (!md) return "";
  auto v = md->Get(key);
  return v.ok() ? *v : "";
}

// PathParts: an entity path's parts, so that columns sort as LocalDataset sorts them
// ("/a/b" after "/a", before "/a_").
std::vector<std::string> PathParts(const std::string& p) {
  std::vector<std::string> parts;
  size_t start = 1;
  while (start <= p.size()) {
    size_t slash = p.find('/', start);
    if (slash == std::string::npos) slash = p.size();
    if (slash > start) parts.push_back(p.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

// CacheKey: one string per (segment, entity); '\0' cannot occur in either.
std::string CacheKey(const EntityKey& key) {
  return key.first + std::string(1, '\0') + key.second;
}

std::string Where(const std::string& description, const EntityKey& key) {
  return description + ": entity '" + key.second + "' of segment '" + key.first + "'";
}

}  // namespace

Result<std::shared_ptr<RemoteDataset>> RemoteDataset::Make(std::vector<std::string> segment_ids,
                                                           const arrow::Schema& schema, FetchEntityFn fetch,
                                                           RemoteOptions options) {
  if (!fetch) return Status::InvalidArgument(options.description + ": no fetch function");
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
    return std::make_tuple(PathParts(a.info.entity_path), a.info.component) <
           std::make_tuple(PathParts(b.info.entity_path), b.info.component);
  });
  ds->fetch_ = std::move(fetch);
  options.fetch_concurrency = std::max(1, options.fetch_concurrency);
  options.cache_bytes = std::max<int64_t>(0, options.cache_bytes);
  ds->options_ = std::move(options);
  ds->stats_.capacity_bytes = ds->options_.cache_bytes;
  ds->unused_cache_ = std::make_unique<store::ChunkCache>(0);
  return ds;
}

RemoteCacheStats RemoteDataset::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::shared_ptr<const store::Segment> RemoteDataset::Resident(const std::string& cache_key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(cache_key);
  if (it == map_.end()) return nullptr;
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->segment;
}

void RemoteDataset::Insert(const std::string& cache_key, const std::shared_ptr<const store::Segment>& seg) const {
  // Called with mu_ held. A segment larger than the whole cache is handed to its caller but
  // not kept (the next block that needs it fetches it again).
  const int64_t bytes = seg->ResidentBytes();
  if (bytes > options_.cache_bytes || map_.count(cache_key)) return;
  lru_.push_front(Entry{cache_key, seg, bytes});
  map_[cache_key] = lru_.begin();
  stats_.size_bytes += bytes;
  while (stats_.size_bytes > options_.cache_bytes && !lru_.empty()) {
    stats_.size_bytes -= lru_.back().bytes;
    map_.erase(lru_.back().key);
    lru_.pop_back();
  }
  stats_.entries = static_cast<int64_t>(map_.size());
}

Result<std::shared_ptr<const store::Segment>> RemoteDataset::FetchAndBuild(const EntityKey& key) const {
  const std::string where = Where(options_.description, key);
  Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> batches = Status::Internal("not fetched");
  try {
    batches = fetch_(key.first, key.second);
  } catch (const std::exception& e) {  // a fetch function must not throw; never leave waiters hanging
    batches = Status::Internal(std::string("fetch function threw: ") + e.what());
  } catch (...) {
    batches = Status::Internal("fetch function threw");
  }
  if (!batches.ok()) return batches.status().WithPrefix(where);
  std::vector<std::shared_ptr<const chunk::Chunk>> chunks;
  chunks.reserve(batches->size());
  for (size_t i = 0; i < batches->size(); ++i) {
    auto c = chunk::Chunk::FromRecordBatch((*batches)[i], where + ", fetched chunk " + std::to_string(i));
    if (!c.ok()) return c.status();
    // Other entities' chunks (a broader filter on the server) are not this entry's.
    if ((*c)->entity_path() != key.second) continue;
    chunks.push_back(std::move(*c));
  }
  auto seg = store::Segment::FromChunks(key.first, "", std::move(chunks), where);
  if (!seg.ok()) return seg.status();
  return std::shared_ptr<const store::Segment>(std::move(*seg));
}

Result<std::shared_ptr<const store::Segment>> RemoteDataset::Load(const EntityKey& key) const {
  const std::string cache_key = CacheKey(key);
  std::promise<SegmentResult> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = map_.find(cache_key); it != map_.end()) {
      ++stats_.hits;
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->segment;
    }
    if (auto it = inflight_.find(cache_key); it != inflight_.end()) {
      ++stats_.shared_waits;
      std::shared_future<SegmentResult> pending = it->second;
      lock.unlock();
      return pending.get();
    }
    ++stats_.misses;
    inflight_.emplace(cache_key, promise.get_future().share());
  }
  SegmentResult result = FetchAndBuild(key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.fetches;
    if (result.ok()) {
      stats_.fetched_bytes += (*result)->ResidentBytes();
      Insert(cache_key, *result);
    } else {
      ++stats_.fetch_errors;  // errors are not cached: the next block asks again
    }
    inflight_.erase(cache_key);
  }
  promise.set_value(result);
  return result;
}

Result<std::shared_ptr<const store::Segment>> RemoteDataset::EntitySegment(const std::string& segment_id,
                                                                           const std::string& entity_path) const {
  if (!std::binary_search(segment_ids_.begin(), segment_ids_.end(), segment_id)) {
    return Status::NotFound("no segment '" + segment_id + "' in the dataset (" + options_.description + ")");
  }
  return Load({segment_id, entity_path});
}

Result<std::vector<std::shared_ptr<const store::Segment>>> RemoteDataset::EntitySegments(
    const std::vector<EntityKey>& keys) const {
  std::vector<SegmentResult> results(keys.size(), Status::Internal("not loaded"));
  std::vector<size_t> missing;
  std::unordered_map<std::string, size_t> first_of;  // a key listed twice is fetched once
  std::vector<std::pair<size_t, size_t>> repeats;    // (index, index of its first occurrence)
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!std::binary_search(segment_ids_.begin(), segment_ids_.end(), keys[i].first)) {
      return Status::NotFound("no segment '" + keys[i].first + "' in the dataset (" + options_.description + ")");
    }
    const std::string ck = CacheKey(keys[i]);
    auto [it, inserted] = first_of.emplace(ck, i);
    if (!inserted) {
      repeats.emplace_back(i, it->second);
      continue;
    }
    if (auto seg = Resident(ck)) {
      results[i] = std::move(seg);
    } else {
      missing.push_back(i);
    }
  }
  // Once a fetch fails the block fails: no further key is started (each fetch has its own
  // deadline, so starting more would only add their deadlines to the time to the error).
  std::atomic<bool> failed{false};
  std::vector<char> attempted(keys.size(), 0);
  auto load = [&](size_t i) {
    attempted[i] = 1;
    results[i] = Load(keys[i]);
    if (!results[i].ok()) failed = true;
  };
  const size_t threads = std::min<size_t>(static_cast<size_t>(options_.fetch_concurrency), missing.size());
  if (threads <= 1) {
    for (size_t i : missing) {
      if (failed) break;
      load(i);
    }
  } else {
    // Threads live only for this call: nothing survives it to be inherited by a fork.
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t k = next++; k < missing.size() && !failed; k = next++) load(missing[k]);
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  if (failed) {
    for (size_t i : missing) {
      if (attempted[i] && !results[i].ok()) return results[i].status();  // the first failure in key order
    }
  }
  for (const auto& [i, first] : repeats) results[i] = results[first];
  std::vector<std::shared_ptr<const store::Segment>> out;
  out.reserve(keys.size());
  for (auto& r : results) {
    if (!r.ok()) return r.status();
    out.push_back(std::move(r).value());
  }
  return out;
}

}  // namespace rrl::catalog
