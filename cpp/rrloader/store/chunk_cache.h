// rrloader/store/chunk_cache.h — a byte-bounded LRU cache of decoded chunks.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "rrloader/chunk/chunk.h"

namespace rrl::store {

// kDefaultChunkCacheBytes: 512 MiB of decoded chunks per dataset unless told otherwise.
inline constexpr int64_t kDefaultChunkCacheBytes = int64_t{512} << 20;

// ChunkCache: maps a chunk's location (source name + byte offset) to its decoded form,
// evicting least-recently-used chunks past `capacity_bytes`. A chunk larger than the
// whole capacity is returned to the caller but not kept. Thread-safe (one mutex; the
// critical sections only touch the map).
class ChunkCache {
 public:
  explicit ChunkCache(int64_t capacity_bytes = kDefaultChunkCacheBytes) : capacity_bytes_(capacity_bytes) {}

  std::shared_ptr<const chunk::Chunk> Get(const std::string& key);
  void Put(const std::string& key, std::shared_ptr<const chunk::Chunk> value);

  int64_t capacity_bytes() const { return capacity_bytes_; }
  int64_t size_bytes() const;
  int64_t hits() const;
  int64_t misses() const;

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const chunk::Chunk> value;
  };
  const int64_t capacity_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // front = most recent
  std::unordered_map<std::string, std::list<Entry>::iterator> map_;
  int64_t size_bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace rrl::store
