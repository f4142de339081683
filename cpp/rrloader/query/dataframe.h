// rrloader/query/dataframe.h — Rerun's dataframe query over one segment.
//
// Semantics follow rerun-sdk 0.41's `DatasetEntry.reader(...)` exactly (docs/query-semantics.md
// lists every rule and how it was established). The reference answers a query in two steps, and so
// does this code:
//  1. its catalog server hands out, per segment, the chunks of the fetched entities that the query
//     touches (the server's chunk store compacts the chunks of footer-less files as it loads them);
//  2. the client builds a small store of only those chunks and runs its dataframe query on it. Every
//     column of that store (for the fetched entities) is part of the query's view: it makes rows and
//     takes part in the bulk path even when the output does not show it.
// Within that store:
//  * rows: the distinct index values at which a view column has a non-null temporal cell
//    or a clear tombstone, or exactly the requested `using_index_values`;
//  * a cell at index value v is the cell logged exactly at v with the largest row id
//    (data, or an injected [] from a Clear), else with `fill_latest_at` the latest data
//    cell at or before v (largest (time, row id)), else null;
//  * static data wins everywhere; static clears are ignored;
//  * the other index columns of a row hold the maximum of their values over the cells
//    that make up the row.
// Results slice the chunks' Arrow buffers; runs of consecutive source rows become one
// slice. Index ranges and index values here are inclusive int64 (ns for time kinds).
#pragma once

#include <arrow/table.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "rrloader/store/segment.h"

namespace rrl::query {

inline constexpr const char* kClearComponent = "Clear:is_recursive";

// ViewColumn: one output component column.
struct ViewColumn {
  std::string entity_path;
  std::string component;
  std::shared_ptr<arrow::Field> field;  // output name and List<T> type
};

// IndexColumn: one output index column (a timeline of the dataset).
struct IndexColumn {
  std::string name;
  rrd::TimeKind kind = rrd::TimeKind::kSequence;
};

// DataframeQuery: a value type describing one query over one segment; cheap to copy.
struct DataframeQuery {
  std::optional<std::string> index;        // nullopt: static data only, one row
  std::vector<IndexColumn> index_columns;  // output order
  std::vector<ViewColumn> columns;         // the output selection, in output order
  // FetchEntities: the entities whose chunks the reference fetches for the segment. Their columns (all of
  // them, also those the output does not select) form the query's view, and only their clears apply.
  // nullopt: the entities of `columns` (what the reference fetches without fill_latest_at).
  std::optional<std::set<std::string>> fetch_entities;
  bool fill_latest_at = false;
  // Whether columns whose cells (in the chunks the reference fetches for a segment) are all null or empty
  // lists stay in the segment's view; without it such a column reads null and makes no rows there.
  bool include_semantically_empty_columns = false;
  // Whether Clear:is_recursive columns are part of the view (else clears only act as tombstones).
  bool include_tombstone_columns = false;
  // EagerStore: the reference loads this segment into an eager chunk store (its file has no footer), whose
  // insert-time compaction merges chunks (CompactLikeEagerStore); footer files are served chunk by chunk.
  bool eager_store = false;
  std::optional<std::vector<int64_t>> using_index_values;  // sorted, de-duplicated
  std::optional<std::pair<int64_t, int64_t>> index_range;  // inclusive
  // Compact: when a column's result would be made of many short slices (average run
  // below this many rows), copy it into one contiguous array instead. 0 disables.
  int64_t compact_below_run_length = 16;
};

// QueryStats: counters of one query (not thread-safe; one per query).
struct QueryStats {
  int64_t chunks_loaded = 0;
  int64_t rows = 0;
  int64_t slices = 0;
  int64_t compacted_columns = 0;
};

// RunDataframeQuery: the query over one segment, as a table whose first column is
// `rerun_segment_id`, then `q.index_columns`, then `q.columns`.
[[nodiscard]] Result<std::shared_ptr<arrow::Table>> RunDataframeQuery(const store::Segment& segment,
                                                                      store::ChunkCache& cache, const DataframeQuery& q,
                                                                      QueryStats* stats);

// OutputSchema: the schema RunDataframeQuery produces for `q`.
std::shared_ptr<arrow::Schema> OutputSchema(const DataframeQuery& q);

// ---- exposed for tests

// CompactLikeEagerStore: how rerun's chunk store (0.41, default config) merges the temporal chunks of one
// entity, inserted one by one in `chunks`' order (file order): each group lists the indices of the chunks
// that end up as one store chunk (singletons included; static chunks are never merged). A new chunk is
// merged into the existing store chunk with the most "neighbour points" (sharing a component whose time
// range starts right before, right after, or at the same time), provided both have the same timelines,
// agree on the datatypes of their common components and stay below the row (4096, or 1024 if unsorted)
// and byte (384 KiB) limits. `ties` (optional) counts elections the reference decides at random (several
// candidates with the best score; it iterates a randomly seeded hash map).
std::vector<std::vector<size_t>> CompactLikeEagerStore(const std::vector<std::shared_ptr<const chunk::Chunk>>& chunks,
                                                       int64_t* ties = nullptr);

}  // namespace rrl::query
