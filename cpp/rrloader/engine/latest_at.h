// rrloader/engine/latest_at.h — the cells a sample reads: one component column of one
// segment at given index values, with the semantics of rerun's dataloader query.
//
// The reference dataloader asks `reader(index, using_index_values=..., fill_latest_at=True)`
// with the contents narrowed to the field's entity (`entity/**`). For one column that reads:
//  * a static cell of the column (the latest by row id; static clears ignored) wins everywhere;
//  * else the cell logged exactly at v with the largest row id — data, or a tombstone when a
//    Clear of the entity itself is that cell (ancestors' clears never apply: they are outside
//    the contents);
//  * else the latest data cell at or before v (largest (time, row id)), clears ignored;
//  * else nothing.
// (docs/query-semantics.md establishes each rule against rerun-sdk; tests/python compares
// dataloader samples with rerun-sdk's reader.) Unlike a dataframe query, only the chunks
// that can hold the answer are loaded: those whose index range contains v, then earlier ones
// in order of decreasing end until none can beat the best cell found — so a random sample
// costs about one chunk per column, not the whole recording.
//
// Thread safety: the functions are stateless (chunks come from the thread-safe ChunkCache);
// a LatestAtMemo belongs to one thread.
#pragma once

#include <arrow/array.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rrloader/chunk/chunk.h"
#include "rrloader/store/segment.h"

namespace rrl::engine {

// CellRef: a cell inside a loaded chunk; `list == nullptr` when there is none. The chunk
// that owns `list` is kept alive by the caller's keep-alive list.
struct CellRef {
  const arrow::ListArray* list = nullptr;
  int64_t row = 0;
  bool tombstone = false;  // cleared at exactly this value (reads as an empty batch)
};

// ColumnRef: a component column of an entity.
struct ColumnRef {
  std::string entity_path;
  std::string component;  // e.g. "Scalars:scalars"
};

// kDefaultLatestAtMemoBytes: what a LatestAtMemo may hold before it starts over (about
// 200 bytes per (segment, column) with one chunk: 10,000 segments x 3 columns take 6 MiB).
inline constexpr int64_t kDefaultLatestAtMemoBytes = int64_t{32} << 20;

// LatestAtMemo: what ResolveLatestAt works out for a (segment, column) before it looks at a
// single value — the column's temporal chunks in order of decreasing end and, for each one
// loaded so far, its chunk, cell list and TimeIndexes — kept for the next lookup of the same
// pair. A shuffled block over thousands of segments makes about one lookup per sample and
// this setup (the entity's chunk list, a cache lookup by string key per chunk, an index
// lookup per component) was most of a lookup's cost (issue 16: 2,000 segments).
//
// Holds nothing alive: segments, chunks and indexes are weak references, so the chunk
// cache's byte bound is what it was, and a chunk the cache has dropped since is loaded
// again through the cache (a chunk still alive elsewhere is the same immutable chunk, and is
// used as is). Chunks found here skip the cache's LRU bookkeeping: TakeTouched() hands them
// over so that the caller refreshes them in one ChunkCache::Touch per block. Bounded: past
// `capacity_bytes` it starts over empty (it refills from the cache on the next lookups).
// Segments with static chunks of the column's entity are not memoized (they answer every
// value with one cell).
//
// Thread safety: none; one per fetching thread (a Pipeline's fetch thread has one per
// iteration).
class LatestAtMemo {
 public:
  explicit LatestAtMemo(int64_t capacity_bytes = kDefaultLatestAtMemoBytes) : capacity_bytes_(capacity_bytes) {}

  int64_t size_bytes() const { return size_bytes_; }
  size_t num_plans() const { return plans_.size(); }
  // TakeTouched: the chunks used from the memo since the last call (once per use).
  std::vector<const chunk::Chunk*> TakeTouched() { return std::exchange(touched_, {}); }
  // HoldAll: whether every temporal chunk of (segment, column) is known here and still
  // alive; if so they are appended to `keep_alive` (alive until the caller's block is done),
  // so ResolveLatestAt of that pair loads nothing: a remote fetch asks for none of them.
  // `keep_alive` may be null: only the answer (the chunks may go before they are used; a
  // local fetch then loads them again, which only costs time).
  bool HoldAll(const std::shared_ptr<const store::Segment>& segment, const ColumnRef& column,
               std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const;

  // Internal to latest_at.cc.
  struct Temporal {
    size_t index = 0;  // into segment.chunks()
    int64_t min = 0, max = 0;
  };
  struct Slot {  // a chunk of the plan once loaded (chunk expired or never set: not loaded)
    std::weak_ptr<const chunk::Chunk> chunk;
    const arrow::ListArray* list = nullptr;
    std::weak_ptr<const store::TimeIndex> data, clears;
    bool has_data = false, has_clears = false;
  };
  struct Plan {
    std::weak_ptr<const store::Segment> segment;
    std::vector<Temporal> temporal;  // decreasing end
    std::vector<Slot> slots;         // parallel to temporal
  };
  // Find: the plan of (segment, column), empty and new when there was none (or it was of a
  // segment since dropped); nullptr when the memo is full (it starts over on the next call).
  Plan* Find(const std::shared_ptr<const store::Segment>& segment, const ColumnRef& column);
  void Filled(const Plan& plan);  // counts a new plan's bytes
  void Used(const chunk::Chunk* chunk) { touched_.push_back(chunk); }

 private:
  struct KeyHash {
    size_t operator()(const std::pair<const void*, const void*>& k) const {
      return std::hash<const void*>()(k.first) * 31 + std::hash<const void*>()(k.second);
    }
  };
  int64_t capacity_bytes_;
  int64_t size_bytes_ = 0;
  // Keyed by the segment's and the ColumnRef's addresses: a ColumnRef outlives the memo (the
  // engine's), a segment is checked through the plan's weak reference.
  std::unordered_map<std::pair<const void*, const void*>, Plan, KeyHash> plans_;
  std::vector<const chunk::Chunk*> touched_;
};

// ResolveLatestAt: one CellRef per entry of `values` (any order; repeats allowed).
// `chunks_loaded` counts cache lookups (a memo's included).
[[nodiscard]] Status ResolveLatestAt(const store::Segment& segment, store::ChunkCache& cache, const std::string& index,
                                     const ColumnRef& column, const std::vector<int64_t>& values,
                                     std::vector<CellRef>* out,
                                     std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive,
                                     int64_t* chunks_loaded);
// The same with the setup of (segment, column) kept in `memo` (nullptr: none).
[[nodiscard]] Status ResolveLatestAt(const std::shared_ptr<const store::Segment>& segment, store::ChunkCache& cache,
                                     const std::string& index, const ColumnRef& column,
                                     const std::vector<int64_t>& values, std::vector<CellRef>* out,
                                     std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive,
                                     int64_t* chunks_loaded, LatestAtMemo* memo);

// LatestAtChunks: the chunk numbers ResolveLatestAt(segment, cache, index, column, values)
// can load, from the chunk index alone (no chunk is read): every static chunk of the
// entity; every temporal one whose range on `index` holds a value; and, walking back from
// each value through the chunks that end before it in order of decreasing end, as
// ResolveLatestAt does, each one until the chunks seen so far are known (from their
// per-component stats) to hold a cell of the column at or before the value that the rest
// cannot beat. A superset of what ResolveLatestAt loads (it stops as soon as it sees the
// cells themselves; without stats the walk goes all the way back). Sorted, unique.
std::vector<size_t> LatestAtChunks(const store::Segment& segment, const std::string& index, const ColumnRef& column,
                                   const std::vector<int64_t>& values);

}  // namespace rrl::engine
