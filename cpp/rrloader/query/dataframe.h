// rrloader/query/dataframe.h — Rerun's dataframe query over one segment.
//
// Semantics follow rerun-sdk 0.41's `DatasetEntry.reader(...)` exactly (docs/query-semantics.md
// lists every rule and how it was established). Like the reference, everything is decided on the
// chunks the reference would fetch for the segment (see Fetched in dataframe.cc):
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

// DataframeQuery: a value type describing one query; cheap to copy.
struct DataframeQuery {
  std::optional<std::string> index;        // nullopt: static data only, one row
  std::vector<IndexColumn> index_columns;  // output order
  std::vector<ViewColumn> columns;         // output order
  bool fill_latest_at = false;
  // Whether columns whose cells (in the chunks the reference fetches for a segment) are all empty lists
  // stay in the view; the reference decides this per segment in some queries (docs/query-semantics.md).
  bool include_semantically_empty_columns = false;
  // Entities whose recursive clears reach their descendants' columns (the entities whose chunks the
  // reference fetches); an entity's own clears always apply to its own (present) columns.
  std::set<std::string> clear_sources;
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

}  // namespace rrl::query
