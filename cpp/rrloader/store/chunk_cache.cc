#include "rrloader/store/chunk_cache.h"

#include <algorithm>

namespace rrl::store {

std::shared_ptr<const TimeIndex> BuildTimeIndex(const chunk::Chunk& chunk, const std::string& timeline,
                                                const std::string& component) {
  auto out = std::make_shared<TimeIndex>();
  const auto* tl = chunk.FindTimeline(timeline);
  const auto* comp = chunk.FindComponent(component);
  if (tl == nullptr || comp == nullptr) return out;
  const arrow::ListArray& list = *comp->list;
  const int64_t n = chunk.num_rows();
  out->cells.reserve(static_cast<size_t>(list.null_count() == 0 ? n : n - list.null_count()));
  for (int64_t r = 0; r < n; ++r) {
    if (!list.IsNull(r)) out->cells.push_back({tl->values[r], r});
  }
  auto less = [&chunk](const TimeIndex::Cell& a, const TimeIndex::Cell& b) {
    return a.time != b.time ? a.time < b.time : chunk.row_id(a.row) < chunk.row_id(b.row);
  };
  // Chunks are usually logged in time order: check before sorting.
  if (!std::is_sorted(out->cells.begin(), out->cells.end(), less)) {
    std::sort(out->cells.begin(), out->cells.end(), less);
  }
  out->cells.shrink_to_fit();
  return out;
}

std::shared_ptr<const chunk::Chunk> ChunkCache::Get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->value;
}

bool ChunkCache::Contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.count(key) != 0;
}

void ChunkCache::Touch(const std::vector<const chunk::Chunk*>& chunks) {
  if (chunks.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const chunk::Chunk* c : chunks) {
    ++hits_;
    if (auto it = by_chunk_.find(c); it != by_chunk_.end()) lru_.splice(lru_.begin(), lru_, it->second);
  }
}

int64_t ChunkCache::capacity_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capacity_bytes_;
}

void ChunkCache::SetCapacity(int64_t capacity_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  capacity_bytes_ = std::max<int64_t>(capacity_bytes, 0);
  EvictLocked();
}

void ChunkCache::Put(const std::string& key, std::shared_ptr<const chunk::Chunk> value) {
  const int64_t bytes = value->ByteSize();
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes > capacity_bytes_) return;
  if (map_.count(key)) return;
  const chunk::Chunk* address = value.get();
  lru_.push_front(Entry{key, std::move(value), {}, bytes});
  map_[key] = lru_.begin();
  by_chunk_.emplace(address, lru_.begin());  // the same chunk under two keys: the first entry has its indexes
  size_bytes_ += bytes;
  EvictLocked();
}

void ChunkCache::EvictLocked() {
  while (size_bytes_ > capacity_bytes_ && !lru_.empty()) {
    auto victim = std::prev(lru_.end());
    size_bytes_ -= victim->bytes;
    map_.erase(victim->key);
    if (auto it = by_chunk_.find(victim->value.get()); it != by_chunk_.end() && it->second == victim) {
      by_chunk_.erase(it);
    }
    lru_.erase(victim);
  }
}

std::shared_ptr<const TimeIndex> ChunkCache::Index(const std::shared_ptr<const chunk::Chunk>& chunk,
                                                   const std::string& timeline, const std::string& component) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = by_chunk_.find(chunk.get()); it != by_chunk_.end()) {
      for (const auto& slot : it->second->indexes) {
        if (slot.component == component && slot.timeline == timeline) return slot.index;
      }
    }
  }
  std::shared_ptr<const TimeIndex> built = BuildTimeIndex(*chunk, timeline, component);
  std::lock_guard<std::mutex> lock(mu_);
  ++index_builds_;
  auto it = by_chunk_.find(chunk.get());
  if (it == by_chunk_.end()) return built;  // not cached (too large, or evicted): not kept either
  Entry& entry = *it->second;
  for (const auto& slot : entry.indexes) {
    if (slot.component == component && slot.timeline == timeline) return slot.index;  // another thread's
  }
  const int64_t bytes =
      built->ByteSize() + static_cast<int64_t>(sizeof(IndexSlot) + timeline.capacity() + component.capacity());
  entry.indexes.push_back(IndexSlot{timeline, component, built});
  entry.bytes += bytes;
  size_bytes_ += bytes;
  EvictLocked();
  return built;
}

int64_t ChunkCache::size_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_bytes_;
}
int64_t ChunkCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}
int64_t ChunkCache::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}
int64_t ChunkCache::index_builds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_builds_;
}

}  // namespace rrl::store
