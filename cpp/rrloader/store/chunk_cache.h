// rrloader/store/chunk_cache.h — a byte-bounded LRU cache of decoded chunks, and of the
// time indexes of their columns.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "rrloader/chunk/chunk.h"

namespace rrl::store {

// kDefaultChunkCacheBytes: 256 MiB of decoded chunks per dataset unless told otherwise. A
// local dataset's file bytes are in the OS page cache anyway, so a miss costs a read and a
// decompression, not I/O: measured on two shuffled 640x480 JPEG cameras over a 596 MB
// dataset, 128 MiB gave 3% fewer samples/s than 512 MiB, and 384 MB less memory.
inline constexpr int64_t kDefaultChunkCacheBytes = int64_t{256} << 20;

// TimeIndex: the rows of a chunk holding a non-null cell of one component, sorted by
// (time on one timeline, row id) — what a latest-at lookup binary-searches. Immutable.
struct TimeIndex {
  struct Cell {
    int64_t time = 0;
    int64_t row = 0;  // into the chunk; its row id is chunk.row_id(row)
  };
  std::vector<Cell> cells;
  int64_t ByteSize() const { return static_cast<int64_t>(sizeof(TimeIndex) + cells.capacity() * sizeof(Cell)); }
};

// BuildTimeIndex: the TimeIndex of `component` on `timeline` in `chunk`; empty when the chunk
// has neither (or no non-null cell).
std::shared_ptr<const TimeIndex> BuildTimeIndex(const chunk::Chunk& chunk, const std::string& timeline,
                                                const std::string& component);

// ChunkCache: maps a chunk's key (a file segment's: source name + byte offset; a remote
// segment's: segment id + chunk id; see ChunkInfo::cache_key) to its decoded form,
// evicting least-recently-used chunks past `capacity_bytes`. A chunk larger than the whole
// capacity is returned to the caller but not kept.
//
// A cached chunk also keeps the TimeIndexes built for it (Index): a column's cells sorted by
// time are worked out once per chunk load, not once per lookup, which is what makes a
// shuffled block over thousands of small segments cheap (each of its samples is in another
// segment, so every lookup would otherwise sort a chunk's column for one value). They are
// counted in the chunk's bytes (16 bytes per cell), so `capacity_bytes` bounds both, and
// dropped with it.
//
// Thread-safe (one mutex; the critical sections only touch the maps; indexes are built
// outside it, two threads may build the same one once each, harmlessly).
class ChunkCache {
 public:
  explicit ChunkCache(int64_t capacity_bytes = kDefaultChunkCacheBytes) : capacity_bytes_(capacity_bytes) {}

  std::shared_ptr<const chunk::Chunk> Get(const std::string& key);
  // Contains: whether `key` is cached now, without counting a hit or a miss or refreshing its
  // place (a caller deciding what to load ahead; the answer can be stale by the time it acts).
  bool Contains(const std::string& key) const;
  // Touch: each of `chunks` that is cached counts as a hit and becomes the most recently
  // used, as if just Get (for chunks found through a caller's own weak references, e.g. a
  // LatestAtMemo's: one lock for a block's worth instead of one lookup by key each).
  void Touch(const std::vector<const chunk::Chunk*>& chunks);
  void Put(const std::string& key, std::shared_ptr<const chunk::Chunk> value);

  // Index: the TimeIndex of (timeline, component) of `chunk`: the one kept with the chunk's
  // cache entry, else built now (and kept there when the chunk is cached). Never null.
  std::shared_ptr<const TimeIndex> Index(const std::shared_ptr<const chunk::Chunk>& chunk, const std::string& timeline,
                                         const std::string& component);

  int64_t capacity_bytes() const;
  // SetCapacity: a new bound (a DataLoader worker's share of the dataset's), evicting now
  // what exceeds it.
  void SetCapacity(int64_t capacity_bytes);
  int64_t size_bytes() const;  // chunks and their indexes
  int64_t hits() const;
  int64_t misses() const;
  int64_t index_builds() const;  // TimeIndexes built (kept or not)

 private:
  struct IndexSlot {
    std::string timeline, component;
    std::shared_ptr<const TimeIndex> index;
  };
  struct Entry {
    std::string key;
    std::shared_ptr<const chunk::Chunk> value;
    std::vector<IndexSlot> indexes;
    int64_t bytes = 0;  // the chunk's and its indexes'
  };
  using Lru = std::list<Entry>;
  void EvictLocked();  // with mu_ held: drops least-recently-used entries until under capacity

  mutable std::mutex mu_;
  int64_t capacity_bytes_;  // guarded by mu_
  Lru lru_;                 // front = most recent
  std::unordered_map<std::string, Lru::iterator> map_;
  // The entry of each cached chunk by address: an entry holds its chunk, so an address
  // found here is that very chunk (no other live object can have it).
  std::unordered_map<const chunk::Chunk*, Lru::iterator> by_chunk_;
  int64_t size_bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0, index_builds_ = 0;
};

}  // namespace rrl::store
