#include "rrloader/query/dataframe.h"

#include <arrow/array/concatenate.h>
#include <arrow/builder.h>
#include <arrow/util/key_value_metadata.h>

#include <algorithm>
#include <limits>
#include <map>

namespace rrl::query {

namespace {

using chunk::Chunk;
using chunk::RowId;

// Cell: one non-null cell of a column at a time on the queried timeline.
struct Cell {
  int64_t time = 0;
  RowId row_id;
  const Chunk* chunk = nullptr;
  const arrow::ListArray* list = nullptr;  // null for tombstones (they read as [])
  int64_t row = 0;
};

bool ByTimeThenRowId(const Cell& a, const Cell& b) {
  return a.time != b.time ? a.time < b.time : a.row_id < b.row_id;
}

// Source: where an output cell comes from.
struct Source {
  enum Kind : uint8_t { kNull, kEmpty, kRow } kind = kNull;
  const arrow::ListArray* list = nullptr;
  int64_t row = 0;
};

// ParentPaths: "/a/b/c" -> {"/a/b", "/a", "/"} (strict ancestors).
std::vector<std::string> StrictAncestors(const std::string& path) {
  std::vector<std::string> out;
  std::string p = path;
  while (p.size() > 1) {
    auto slash = p.rfind('/');
    if (slash == std::string::npos) break;
    p = slash == 0 ? "/" : p.substr(0, slash);
    out.push_back(p);
  }
  return out;
}

bool ClearIsRecursive(const arrow::ListArray& list, int64_t row) {
  if (list.IsNull(row) || list.value_length(row) == 0) return false;
  const auto& values = static_cast<const arrow::BooleanArray&>(*list.values());
  const int64_t at = list.value_offset(row);
  return !values.IsNull(at) && values.Value(at);
}

// ColumnBuilder: turns per-row Sources into a ChunkedArray of slices (or one compact array).
class ColumnBuilder {
 public:
  ColumnBuilder(std::shared_ptr<arrow::DataType> type, int64_t compact_below)
      : type_(std::move(type)), compact_below_(compact_below) {}

  void Append(const Source& s) {
    if (!runs_.empty()) {
      Run& last = runs_.back();
      if (last.kind == s.kind && (s.kind != Source::kRow || (last.list == s.list && last.row + last.length == s.row))) {
        ++last.length;
        return;
      }
    }
    runs_.push_back(Run{s.kind, s.list, s.row, 1});
  }

  Result<std::shared_ptr<arrow::ChunkedArray>> Finish(int64_t total_rows, QueryStats* stats) {
    arrow::ArrayVector pieces;
    pieces.reserve(runs_.size());
    for (const Run& r : runs_) {
      switch (r.kind) {
        case Source::kRow: pieces.push_back(r.list->Slice(r.row, r.length)); break;
        case Source::kNull: {
          auto nulls = arrow::MakeArrayOfNull(type_, r.length);
          if (!nulls.ok()) return Status::Internal(nulls.status().ToString());
          pieces.push_back(*nulls);
          break;
        }
        case Source::kEmpty: {
          RRL_ASSIGN_OR_RETURN(auto empties, EmptyLists(r.length));
          pieces.push_back(empties);
          break;
        }
      }
    }
    if (stats) stats->slices += static_cast<int64_t>(pieces.size());
    if (pieces.size() > 1 && compact_below_ > 0 && total_rows < compact_below_ * static_cast<int64_t>(pieces.size())) {
      auto joined = arrow::Concatenate(pieces);
      if (!joined.ok()) return Status::Internal(joined.status().ToString());
      if (stats) ++stats->compacted_columns;
      return std::make_shared<arrow::ChunkedArray>(arrow::ArrayVector{*joined}, type_);
    }
    auto chunked = arrow::ChunkedArray::Make(std::move(pieces), type_);
    if (!chunked.ok()) return Status::Internal(chunked.status().ToString());
    return *chunked;
  }

 private:
  struct Run {
    Source::Kind kind;
    const arrow::ListArray* list;
    int64_t row;
    int64_t length;
  };
  // EmptyLists: `n` cells that are each [] (offsets all zero, no values).
  Result<std::shared_ptr<arrow::Array>> EmptyLists(int64_t n) {
    const auto& list_type = static_cast<const arrow::ListType&>(*type_);
    auto values = arrow::MakeEmptyArray(list_type.value_type());
    auto offsets = arrow::AllocateBuffer((n + 1) * static_cast<int64_t>(sizeof(int32_t)));
    if (!values.ok() || !offsets.ok()) return Status::Internal("cannot allocate empty lists");
    std::shared_ptr<arrow::Buffer> off = std::move(offsets).ValueUnsafe();
    std::fill_n(reinterpret_cast<int32_t*>(off->mutable_data()), n + 1, 0);
    return std::static_pointer_cast<arrow::Array>(std::make_shared<arrow::ListArray>(type_, n, off, *values));
  }

  std::shared_ptr<arrow::DataType> type_;
  int64_t compact_below_;
  std::vector<Run> runs_;
};

// IndexAccumulator: the per-row maximum of one timeline's values over the row's cells.
struct IndexAccumulator {
  std::vector<int64_t> value;
  std::vector<uint8_t> valid;
  void Offer(size_t row, int64_t v) {
    if (!valid[row] || v > value[row]) {
      value[row] = v;
      valid[row] = 1;
    }
  }
};

Result<std::shared_ptr<arrow::Array>> MakeIndexArray(rrd::TimeKind kind, const IndexAccumulator& acc) {
  const int64_t n = static_cast<int64_t>(acc.value.size());
  auto type = rrd::ArrowTypeOf(kind);
  // Int64, Timestamp and Duration builders share the int64 physical layout; build
  // through ArrayData directly to avoid three code paths.
  auto values = arrow::AllocateBuffer(n * static_cast<int64_t>(sizeof(int64_t)));
  auto bitmap = arrow::AllocateEmptyBitmap(n);
  if (!values.ok() || !bitmap.ok()) return Status::Internal("cannot allocate index column");
  std::shared_ptr<arrow::Buffer> vbuf = std::move(values).ValueUnsafe();
  std::shared_ptr<arrow::Buffer> bbuf = std::move(bitmap).ValueUnsafe();
  auto* v = reinterpret_cast<int64_t*>(vbuf->mutable_data());
  int64_t nulls = 0;
  for (int64_t i = 0; i < n; ++i) {
    v[i] = acc.valid[static_cast<size_t>(i)] ? acc.value[static_cast<size_t>(i)] : 0;
    if (acc.valid[static_cast<size_t>(i)]) {
      arrow::bit_util::SetBit(bbuf->mutable_data(), i);
    } else {
      ++nulls;
    }
  }
  auto data = arrow::ArrayData::Make(type, n, {nulls ? bbuf : nullptr, vbuf}, nulls);
  return arrow::MakeArray(data);
}

// ColumnCells: everything the row loop needs about one view column.
struct ColumnCells {
  std::optional<Cell> static_cell;  // static data wins everywhere
  std::vector<Cell> data;           // temporal non-null cells on the index, sorted
  std::vector<Cell> tombstones;     // injected clears (read as []), sorted
};

// Fetched: whether the reference hands `ch` to its per-segment query. rerun-sdk's catalog client first asks
// the server for the chunks relevant to the query (static chunks always; temporal chunks that carry the index
// timeline and overlap the pushed-down index range, or that hold one of the requested index values; with
// fill_latest_at also every earlier chunk, for the latest-at look-back), builds a store of only those chunks,
// and runs the dataframe query on it. Everything below (which columns exist, where clears apply, which rows
// exist) is decided on that store, not on the whole segment (docs/query-semantics.md, "fetched chunks").
bool Fetched(const Chunk& ch, const DataframeQuery& q) {
  if (ch.is_static()) return true;
  if (!q.index) return false;
  const auto* tl = ch.FindTimeline(*q.index);
  // An unrestricted query (no index values, no range) fetches every chunk, also those without the index
  // timeline: they make their columns exist in the per-segment store (so clears reach them) but give no
  // cells on the index. A restricted query filters chunks on their range on the index.
  if (!tl) return !q.using_index_values && !q.index_range;
  if (ch.num_rows() == 0) return false;
  if (q.using_index_values) {
    const auto& values = *q.using_index_values;  // sorted
    if (values.empty()) return false;
    if (q.fill_latest_at) {
      if (tl->min > values.back()) return false;
    } else {
      auto lo = std::lower_bound(values.begin(), values.end(), tl->min);
      if (lo == values.end() || *lo > tl->max) return false;
    }
  }
  if (q.index_range) {
    if (tl->min > q.index_range->second) return false;
    if (!q.fill_latest_at && tl->max < q.index_range->first) return false;
  }
  return true;
}

// Bundle: one chunk of a view column as the reference's streaming join sees it: the chunk's cells of that
// column (or its clear rows) inside the queried range, sorted by (time, row id), with a cursor.
struct Bundle {
  std::vector<int64_t> times;
  int64_t time_min = 0, time_max = 0;
  bool disjoint = false, times_unique = false;
  std::optional<std::pair<size_t, size_t>> dense_span;  // [start, end) in the row values
  size_t cursor = 0;
  bool exhausted = false;
};

// BulkEmittedRows: which rows the reference emits through its bulk fast path
// (`QueryHandle::try_bulk_emit_run` in re_dataframe). That path slices runs of at least 4 rows straight
// out of chunks whose rows line up 1:1 with the output rows, and does not apply static values: a static
// column reads null there (or the [] of a clear of its entity that lines up the same way). The emulation
// replays the reference's per-column chunk cursors, since whether a run qualifies depends on them.
// `columns[c]` holds the bundles of view column c (cells inside the queried range only).
std::vector<uint8_t> BulkEmittedRows(std::vector<std::vector<Bundle>>& columns, const std::vector<int64_t>& rows,
                                     bool has_other_timeline) {
  constexpr size_t kBulkMinRun = 4;
  const size_t n = rows.size();
  std::vector<uint8_t> bulk(n, 0);
  for (auto& bundles : columns) {
    std::stable_sort(bundles.begin(), bundles.end(),
                     [](const Bundle& a, const Bundle& b) { return a.time_min < b.time_min; });
    int64_t max_prev_time_max = std::numeric_limits<int64_t>::min();
    for (size_t i = 0; i < bundles.size(); ++i) {
      Bundle& b = bundles[i];
      const bool prev_ok = max_prev_time_max < b.time_min;
      const bool next_ok = i + 1 == bundles.size() || b.time_max < bundles[i + 1].time_min;
      b.disjoint = prev_ok && next_ok;
      max_prev_time_max = std::max(max_prev_time_max, b.time_max);
      b.times_unique =
          std::adjacent_find(b.times.begin(), b.times.end(), std::greater_equal<int64_t>()) == b.times.end();
      const size_t start = static_cast<size_t>(std::lower_bound(rows.begin(), rows.end(), b.times[0]) - rows.begin());
      const size_t end = start + b.times.size();
      if (end <= n && std::equal(b.times.begin(), b.times.end(), rows.begin() + static_cast<std::ptrdiff_t>(start))) {
        b.dense_span = std::make_pair(start, end);
      }
    }
  }
  enum class Class : uint8_t { kNone, kNull, kSlice };
  size_t cur = 0;
  while (cur < n) {
    // Try a bulk run at `cur`.
    const int64_t v = rows[cur];
    size_t min_len = n - cur;
    size_t slices = 0;
    bool bail = false;
    std::vector<std::pair<Class, std::pair<size_t, size_t>>> classes(columns.size());  // (class, (bundle, len))
    for (size_t c = 0; c < columns.size() && !bail; ++c) {
      auto& bundles = columns[c];
      if (bundles.empty()) continue;
      Class cls = Class::kNull;
      size_t len = n - cur, which = 0;
      for (size_t bi = 0; bi < bundles.size(); ++bi) {
        Bundle& b = bundles[bi];
        if (b.exhausted) continue;
        if (!b.dense_span) {
          if (b.time_max < v) {
            b.exhausted = true;
            continue;
          }
          bail = true;
          break;
        }
        if (b.dense_span->second <= cur) {
          b.exhausted = true;
          continue;
        }
        if (cur < b.dense_span->first) {
          len = b.dense_span->first - cur;
          break;
        }
        if (!b.disjoint || !b.times_unique || b.cursor != cur - b.dense_span->first) {
          bail = true;
          break;
        }
        cls = Class::kSlice;
        which = bi;
        len = b.dense_span->second - cur;
        break;
      }
      if (bail) break;
      if (cls == Class::kSlice) ++slices;
      min_len = std::min(min_len, len);
      classes[c] = {cls, {which, len}};
    }
    if (!bail && slices > 0 && min_len >= kBulkMinRun && !(slices > 1 && has_other_timeline)) {
      for (size_t c = 0; c < columns.size(); ++c) {
        if (classes[c].first != Class::kSlice) continue;
        Bundle& b = columns[c][classes[c].second.first];
        b.cursor += min_len;
        if (b.cursor >= b.times.size()) b.exhausted = true;
      }
      std::fill_n(bulk.begin() + static_cast<std::ptrdiff_t>(cur), min_len, 1);
      cur += min_len;
      continue;
    }
    // One row through the per-row streaming join, which moves the cursors as the reference does.
    for (auto& bundles : columns) {
      for (Bundle& b : bundles) {
        if (b.exhausted) continue;
        if (v < b.time_min) break;
        if (v > b.time_max) {
          b.exhausted = true;
          continue;
        }
        while (true) {
          if (b.cursor >= b.times.size()) {
            b.exhausted = true;
            break;
          }
          const int64_t t = b.times[b.cursor];
          if (t == v) {
            while (b.cursor + 1 < b.times.size() && b.times[b.cursor + 1] == v) ++b.cursor;
            break;
          }
          if (t > v) break;
          ++b.cursor;
        }
      }
    }
    ++cur;
  }
  return bulk;
}

}  // namespace

std::shared_ptr<arrow::Schema> OutputSchema(const DataframeQuery& q) {
  arrow::FieldVector fields;
  fields.push_back(arrow::field("rerun_segment_id", arrow::utf8(), /*nullable=*/false));
  for (const auto& ic : q.index_columns) {
    auto md = arrow::key_value_metadata({"rerun:kind", "rerun:index_name"}, {"index", ic.name});
    fields.push_back(arrow::field(ic.name, rrd::ArrowTypeOf(ic.kind), true, md));
  }
  for (const auto& c : q.columns) fields.push_back(c.field);
  return arrow::schema(fields);
}

Result<std::shared_ptr<arrow::Table>> RunDataframeQuery(const store::Segment& segment, store::ChunkCache& cache,
                                                        const DataframeQuery& q, QueryStats* stats) {
  const std::string where = segment.source_name() + ": segment '" + segment.id() + "'";
  // 1. Load the chunks of every entity the view (and its clears) touches, keeping only the ones the
  //    reference would fetch for this query (see Fetched).
  std::map<std::string, std::vector<std::shared_ptr<const Chunk>>> chunks_by_entity;
  bool any_fetched = false;        // the reference's per-segment store is not empty
  bool any_fetched_index = false;  // ... and holds the index timeline (else the index column is null)
  auto load = [&](const std::string& entity) -> Status {
    if (chunks_by_entity.count(entity)) return Status::OK();
    auto loaded = segment.LoadEntity(entity, cache);
    if (!loaded.ok()) return loaded.status();
    if (stats) stats->chunks_loaded += static_cast<int64_t>(loaded->size());
    // The reference's chunk query returns, per component, either its static chunks or (when it has no
    // static data) its temporal ones: a temporal chunk whose every component has static data in this
    // segment is never fetched.
    std::set<std::string> static_components;
    for (const auto& ch : *loaded) {
      if (!ch->is_static()) continue;
      for (const auto& comp : ch->components()) static_components.insert(comp.component);
    }
    auto& kept = chunks_by_entity[entity];
    for (auto& ch : *loaded) {
      if (!Fetched(*ch, q)) continue;
      if (!ch->is_static()) {
        bool has_temporal_component = false;
        for (const auto& comp : ch->components()) {
          has_temporal_component = has_temporal_component || !static_components.count(comp.component);
        }
        if (!has_temporal_component) continue;
      }
      any_fetched = true;
      any_fetched_index = any_fetched_index || (q.index && ch->FindTimeline(*q.index));
      kept.push_back(std::move(ch));
    }
    return Status::OK();
  };
  for (const auto& c : q.columns) RRL_RETURN_IF_ERROR(load(c.entity_path));
  for (const auto& e : q.clear_sources) RRL_RETURN_IF_ERROR(load(e));

  // The reference's chunk query over a range only returns rows inside it: rows (and the clears that make
  // rows) come from [range_lo, range_hi] only; the fill look-back still sees every fetched chunk.
  int64_t range_lo = std::numeric_limits<int64_t>::min(), range_hi = std::numeric_limits<int64_t>::max();
  if (q.using_index_values && !q.using_index_values->empty()) {
    range_lo = q.using_index_values->front();
    range_hi = q.using_index_values->back();
  } else if (q.index_range) {
    range_lo = q.index_range->first;
    range_hi = q.index_range->second;
  }

  // 2. Per-entity clear cells on the index: own clears (any value) and recursive clears
  //    of ancestors that are clear sources. Static clears never apply.
  std::map<std::string, std::vector<Cell>> tombstones_by_entity;  // entity -> from itself
  std::map<std::string, std::vector<Cell>> recursive_by_entity;   // entity -> its recursive clears
  auto clear_cells = [&](const std::string& entity, bool recursive_only) {
    std::vector<Cell> out;
    if (!q.index) return out;
    auto it = chunks_by_entity.find(entity);
    if (it == chunks_by_entity.end()) return out;
    for (const auto& ch : it->second) {
      const auto* tl = ch->FindTimeline(*q.index);
      const auto* comp = ch->FindComponent(kClearComponent);
      if (!tl || !comp) continue;
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (comp->list->IsNull(r)) continue;
        if (recursive_only && !ClearIsRecursive(*comp->list, r)) continue;
        out.push_back(Cell{tl->values[r], ch->row_id(r), ch.get(), nullptr, r});
      }
    }
    return out;
  };

  // 3. Gather every view column's cells. A column exists in the reference's per-segment store only if a
  //    fetched chunk of this segment holds it: other columns stay null, get no clears and make no rows.
  std::vector<ColumnCells> cells(q.columns.size());
  std::vector<uint8_t> present(q.columns.size(), 0);
  std::vector<uint8_t> locally_empty(q.columns.size(), 0);
  for (size_t ci = 0; ci < q.columns.size(); ++ci) {
    const ViewColumn& vc = q.columns[ci];
    ColumnCells& cc = cells[ci];
    const auto& expected_type = vc.field->type();
    bool nonempty = false;  // some cell of the per-segment store is a non-empty list
    for (const auto& ch : chunks_by_entity[vc.entity_path]) {
      const auto* comp = ch->FindComponent(vc.component);
      if (!comp) continue;
      if (!comp->list->type()->Equals(*expected_type)) {
        return Status::Unsupported(where + ": column '" + vc.field->name() + "' has type " +
                                   comp->list->type()->ToString() + " in chunk " + ch->chunk_id() + " but " +
                                   expected_type->ToString() + " elsewhere");
      }
      present[ci] = 1;
      if (!ch->is_static()) {
        for (int64_t r = 0; r < ch->num_rows() && !nonempty; ++r) {
          nonempty = !comp->list->IsNull(r) && comp->list->value_length(r) > 0;
        }
      }
      if (ch->is_static()) {
        for (int64_t r = 0; r < ch->num_rows(); ++r) {
          if (comp->list->IsNull(r)) continue;
          if (!cc.static_cell || cc.static_cell->row_id < ch->row_id(r)) {
            cc.static_cell = Cell{0, ch->row_id(r), ch.get(), comp->list.get(), r};
          }
        }
        continue;
      }
      const auto* tl = ch->FindTimeline(*q.index);
      if (!tl) continue;
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (comp->list->IsNull(r)) continue;
        cc.data.push_back(Cell{tl->values[r], ch->row_id(r), ch.get(), comp->list.get(), r});
      }
    }
    // A column whose cells in the fetched chunks (the latest static cell, or else every temporal cell) are
    // all empty lists is semantically empty in the per-segment store. Observed only with using_index_values,
    // and there only with fill_latest_at or in null-index rows: such a column then reads null everywhere.
    if (cc.static_cell) nonempty = cc.static_cell->list->value_length(cc.static_cell->row) > 0;
    locally_empty[ci] = present[ci] && !nonempty && !q.include_semantically_empty_columns;
    if (!present[ci] || !q.index) continue;
    // A static column reads its static value everywhere, but the clears of its entity still make rows
    // (the reference appends clear chunks to every view column, static ones included).
    if (cc.static_cell) cc.data.clear();
    std::sort(cc.data.begin(), cc.data.end(), ByTimeThenRowId);
    // Tombstones: own clears (except on the Clear column itself), ancestors' recursive ones.
    const bool is_clear_column = vc.component == kClearComponent;
    if (!is_clear_column) {
      auto it = tombstones_by_entity.find(vc.entity_path);
      if (it == tombstones_by_entity.end()) {
        it = tombstones_by_entity.emplace(vc.entity_path, clear_cells(vc.entity_path, false)).first;
      }
      cc.tombstones = it->second;
    }
    for (const auto& ancestor : StrictAncestors(vc.entity_path)) {
      if (!q.clear_sources.count(ancestor)) continue;
      auto it = recursive_by_entity.find(ancestor);
      if (it == recursive_by_entity.end())
        it = recursive_by_entity.emplace(ancestor, clear_cells(ancestor, true)).first;
      cc.tombstones.insert(cc.tombstones.end(), it->second.begin(), it->second.end());
    }
    std::sort(cc.tombstones.begin(), cc.tombstones.end(), ByTimeThenRowId);
  }

  // 4. The rows.
  std::vector<int64_t> rows;
  bool index_valid = true;  // whether the queried index column holds the row's value (else null)
  if (!q.index) {
    // One static row, only in a segment with a static cell in the view.
    bool any_static = false;
    for (const auto& cc : cells) any_static = any_static || cc.static_cell.has_value();
    if (!any_static) return arrow::Table::MakeEmpty(OutputSchema(q)).ValueOrDie();
    rows.push_back(0);  // its index values are null
    index_valid = false;
  } else if (q.using_index_values) {
    // Requested rows exist only in a segment where the reference fetched some chunk; if none of them
    // carries the index timeline, the per-segment store has no such index column and it reads null.
    if (!any_fetched) return arrow::Table::MakeEmpty(OutputSchema(q)).ValueOrDie();
    rows = *q.using_index_values;
    index_valid = any_fetched_index;
  } else {
    auto in_range = [&](int64_t t) { return t >= range_lo && t <= range_hi; };
    for (const auto& cc : cells) {
      for (const auto& c : cc.data) {
        if (in_range(c.time)) rows.push_back(c.time);
      }
      for (const auto& c : cc.tombstones) {
        if (in_range(c.time)) rows.push_back(c.time);
      }
    }
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  }
  if (q.index && q.index_range) {
    const int64_t lo = q.index_range->first, hi = q.index_range->second;
    if (!index_valid) {
      rows.clear();  // a null index value never passes the range filter
    }
    rows.erase(std::remove_if(rows.begin(), rows.end(), [&](int64_t v) { return v < lo || v > hi; }), rows.end());
  }
  const size_t n = rows.size();
  if (stats) stats->rows += static_cast<int64_t>(n);
  if (!(q.using_index_values && (q.fill_latest_at || !index_valid))) {
    std::fill(locally_empty.begin(), locally_empty.end(), 0);
  }

  // Rows the reference emits through its bulk path, where static values are not applied (BulkEmittedRows).
  // Only plain queries take that path, and it only changes rows of segments with a static column.
  std::vector<uint8_t> bulk(n, 0);
  bool any_static_column = false;
  for (const auto& cc : cells) any_static_column = any_static_column || cc.static_cell.has_value();
  if (q.index && !q.fill_latest_at && !q.using_index_values && any_static_column && n >= 4) {
    auto in_range = [&](int64_t t) { return t >= range_lo && t <= range_hi; };
    auto add_bundles = [&](std::vector<Bundle>& out, const std::vector<Cell>& cell_list) {
      std::vector<const Chunk*> order;
      std::map<const Chunk*, std::vector<const Cell*>> by_chunk;
      for (const auto& c : cell_list) {
        if (!in_range(c.time)) continue;
        if (!by_chunk.count(c.chunk)) order.push_back(c.chunk);
        by_chunk[c.chunk].push_back(&c);
      }
      for (const Chunk* ch : order) {
        auto& list = by_chunk[ch];
        std::sort(list.begin(), list.end(), [](const Cell* a, const Cell* b) { return ByTimeThenRowId(*a, *b); });
        Bundle b;
        for (const Cell* c : list) b.times.push_back(c->time);
        b.time_min = b.times.front();
        b.time_max = b.times.back();
        out.push_back(std::move(b));
      }
    };
    std::vector<std::vector<Bundle>> columns;
    for (size_t ci = 0; ci < q.columns.size(); ++ci) {
      if (!present[ci]) continue;
      auto& out = columns.emplace_back();
      add_bundles(out, cells[ci].data);
      if (q.columns[ci].component == kClearComponent) {
        // The reference also adds the entity's own clear chunks to its Clear column (as [] cells that
        // never win over the identical data rows, but that overlap them).
        add_bundles(out, clear_cells(q.columns[ci].entity_path, false));
      }
      add_bundles(out, cells[ci].tombstones);
    }
    bool has_other_timeline = false;
    for (const auto& [_, chunks] : chunks_by_entity) {
      for (const auto& ch : chunks) {
        for (const auto& tl : ch->timelines()) has_other_timeline = has_other_timeline || tl.name != *q.index;
      }
    }
    bulk = BulkEmittedRows(columns, rows, has_other_timeline);
  }

  // 5. Resolve each cell; accumulate the other index columns.
  std::vector<IndexAccumulator> acc(q.index_columns.size());
  for (auto& a : acc) {
    a.value.assign(n, 0);
    a.valid.assign(n, 0);
  }
  auto offer = [&](size_t row, const Cell& c) {
    for (size_t k = 0; k < q.index_columns.size(); ++k) {
      if (q.index && q.index_columns[k].name == *q.index) continue;
      if (const auto* tl = c.chunk->FindTimeline(q.index_columns[k].name)) acc[k].Offer(row, tl->values[c.row]);
    }
  };
  auto time_less = [](int64_t t, const Cell& c) { return t < c.time; };

  arrow::ChunkedArrayVector out_columns;
  out_columns.reserve(1 + q.index_columns.size() + q.columns.size());
  std::vector<std::shared_ptr<arrow::ChunkedArray>> component_arrays;
  for (size_t ci = 0; ci < q.columns.size(); ++ci) {
    const ColumnCells& cc = cells[ci];
    ColumnBuilder builder(q.columns[ci].field->type(), q.compact_below_run_length);
    for (size_t ri = 0; ri < n; ++ri) {
      if (locally_empty[ci]) {
        builder.Append(Source{});
        continue;
      }
      if (cc.static_cell && !bulk[ri]) {
        builder.Append(Source{Source::kRow, cc.static_cell->list, cc.static_cell->row});
        continue;
      }
      if (!q.index) {
        builder.Append(Source{});
        continue;
      }
      const int64_t v = rows[ri];
      const Cell* exact = nullptr;
      auto d_hi = std::upper_bound(cc.data.begin(), cc.data.end(), v, time_less);
      if (d_hi != cc.data.begin() && std::prev(d_hi)->time == v) exact = &*std::prev(d_hi);
      auto t_hi = std::upper_bound(cc.tombstones.begin(), cc.tombstones.end(), v, time_less);
      if (t_hi != cc.tombstones.begin() && std::prev(t_hi)->time == v) {
        const Cell* tomb = &*std::prev(t_hi);
        if (!exact || exact->row_id < tomb->row_id) exact = tomb;
      }
      const Cell* chosen = exact;
      if (!chosen && q.fill_latest_at && d_hi != cc.data.begin()) chosen = &*std::prev(d_hi);
      if (!chosen) {
        builder.Append(Source{});
        continue;
      }
      offer(ri, *chosen);
      if (chosen->list) {
        builder.Append(Source{Source::kRow, chosen->list, chosen->row});
      } else {
        builder.Append(Source{Source::kEmpty, nullptr, 0});
      }
    }
    RRL_ASSIGN_OR_RETURN(auto arr, builder.Finish(static_cast<int64_t>(n), stats));
    component_arrays.push_back(std::move(arr));
  }

  // 6. Assemble: segment id, index columns, component columns.
  {
    arrow::StringBuilder sb;
    auto st = sb.Reserve(static_cast<int64_t>(n));
    for (size_t i = 0; i < n && st.ok(); ++i) st = sb.Append(segment.id());
    std::shared_ptr<arrow::Array> ids;
    if (st.ok()) st = sb.Finish(&ids);
    if (!st.ok()) return Status::Internal(st.ToString());
    out_columns.push_back(std::make_shared<arrow::ChunkedArray>(ids));
  }
  for (size_t k = 0; k < q.index_columns.size(); ++k) {
    if (q.index && q.index_columns[k].name == *q.index) {
      for (size_t ri = 0; ri < n; ++ri) {
        acc[k].value[ri] = rows[ri];
        acc[k].valid[ri] = index_valid ? 1 : 0;
      }
    }
    RRL_ASSIGN_OR_RETURN(auto arr, MakeIndexArray(q.index_columns[k].kind, acc[k]));
    out_columns.push_back(std::make_shared<arrow::ChunkedArray>(arr));
  }
  for (auto& a : component_arrays) out_columns.push_back(std::move(a));
  return arrow::Table::Make(OutputSchema(q), std::move(out_columns), static_cast<int64_t>(n));
}

}  // namespace rrl::query
