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
// Thread safety: stateless functions; chunks come from the thread-safe ChunkCache.
#pragma once

#include <arrow/array.h>

#include <memory>
#include <string>
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

// ResolveLatestAt: one CellRef per entry of `values` (any order; repeats allowed).
// `chunks_loaded` counts cache lookups.
[[nodiscard]] Status ResolveLatestAt(const store::Segment& segment, store::ChunkCache& cache, const std::string& index,
                                     const ColumnRef& column, const std::vector<int64_t>& values,
                                     std::vector<CellRef>* out,
                                     std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive,
                                     int64_t* chunks_loaded);

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
