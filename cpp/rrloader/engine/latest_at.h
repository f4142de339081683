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

}  // namespace rrl::engine
