#include "rrloader/store/chunk_cache.h"

namespace rrl::store {

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

void ChunkCache::Put(const std::string& key, std::shared_ptr<const chunk::Chunk> value) {
  const int64_t bytes = value->ByteSize();
  if (bytes > capacity_bytes_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (map_.count(key)) return;
  lru_.push_front(Entry{key, std::move(value)});
  map_[key] = lru_.begin();
  size_bytes_ += bytes;
  while (size_bytes_ > capacity_bytes_ && !lru_.empty()) {
    auto& victim = lru_.back();
    size_bytes_ -= victim.value->ByteSize();
    map_.erase(victim.key);
    lru_.pop_back();
  }
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

}  // namespace rrl::store
