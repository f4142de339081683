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

bool HasRelevantChunk(const DataframeQuery& q,
                      const std::map<std::string, std::vector<std::shared_ptr<const Chunk>>>& chunks_by_entity) {
  std::map<std::string, std::vector<const std::string*>> components_by_entity;
  for (const auto& c : q.columns) components_by_entity[c.entity_path].push_back(&c.component);
  for (const auto& [entity, components] : components_by_entity) {
    auto it = chunks_by_entity.find(entity);
    if (it == chunks_by_entity.end()) continue;
    for (const auto& ch : it->second) {
      bool has_view_component = false;
      for (const auto* comp : components) has_view_component = has_view_component || ch->FindComponent(*comp);
      if (!has_view_component) continue;
      if (ch->is_static()) return true;
      if (!q.index || !q.using_index_values || q.using_index_values->empty()) continue;
      const auto* tl = ch->FindTimeline(*q.index);
      if (!tl) continue;
      const auto& values = *q.using_index_values;  // sorted
      if (q.fill_latest_at) {
        if (tl->min <= values.back()) return true;
      } else {
        auto lo = std::lower_bound(values.begin(), values.end(), tl->min);
        if (lo != values.end() && *lo <= tl->max) return true;
      }
    }
  }
  return false;
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
  // 1. Load the chunks of every entity the view (and its clears) touches.
  std::map<std::string, std::vector<std::shared_ptr<const Chunk>>> chunks_by_entity;
  auto load = [&](const std::string& entity) -> Status {
    if (chunks_by_entity.count(entity)) return Status::OK();
    auto loaded = segment.LoadEntity(entity, cache);
    if (!loaded.ok()) return loaded.status();
    if (stats) stats->chunks_loaded += static_cast<int64_t>(loaded->size());
    chunks_by_entity[entity] = std::move(*loaded);
    return Status::OK();
  };
  for (const auto& c : q.columns) RRL_RETURN_IF_ERROR(load(c.entity_path));
  for (const auto& e : q.clear_sources) RRL_RETURN_IF_ERROR(load(e));

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

  // 3. Gather every view column's cells.
  std::vector<ColumnCells> cells(q.columns.size());
  for (size_t ci = 0; ci < q.columns.size(); ++ci) {
    const ViewColumn& vc = q.columns[ci];
    ColumnCells& cc = cells[ci];
    const auto& expected_type = vc.field->type();
    for (const auto& ch : chunks_by_entity[vc.entity_path]) {
      const auto* comp = ch->FindComponent(vc.component);
      if (!comp) continue;
      if (!comp->list->type()->Equals(*expected_type)) {
        return Status::Unsupported(where + ": column '" + vc.field->name() + "' has type " +
                                   comp->list->type()->ToString() + " in chunk " + ch->chunk_id() + " but " +
                                   expected_type->ToString() + " elsewhere");
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
      if (!q.index) continue;
      const auto* tl = ch->FindTimeline(*q.index);
      if (!tl) continue;
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (comp->list->IsNull(r)) continue;
        cc.data.push_back(Cell{tl->values[r], ch->row_id(r), ch.get(), comp->list.get(), r});
      }
    }
    if (cc.static_cell) {
      cc.data.clear();
      continue;
    }
    std::sort(cc.data.begin(), cc.data.end(), ByTimeThenRowId);
    if (!q.index) continue;
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
  if (!q.index || q.using_index_values) {
    // Requested rows exist only in a segment where the reference's chunk query finds a
    // chunk of the view: a static one, or a temporal one on the index that overlaps a
    // requested value (fill_latest_at: that starts at or before the last one).
    if (!HasRelevantChunk(q, chunks_by_entity)) return arrow::Table::MakeEmpty(OutputSchema(q)).ValueOrDie();
    if (!q.index) {
      rows.push_back(0);  // one static row; its index values are null
    } else {
      rows = *q.using_index_values;
    }
  } else {
    for (const auto& cc : cells) {
      for (const auto& c : cc.data) rows.push_back(c.time);
      for (const auto& c : cc.tombstones) rows.push_back(c.time);
    }
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  }
  if (q.index && q.index_range) {
    const int64_t lo = q.index_range->first, hi = q.index_range->second;
    rows.erase(std::remove_if(rows.begin(), rows.end(), [&](int64_t v) { return v < lo || v > hi; }), rows.end());
  }
  const size_t n = rows.size();
  if (stats) stats->rows += static_cast<int64_t>(n);

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
      if (cc.static_cell) {
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
        acc[k].valid[ri] = 1;
      }
    }
    RRL_ASSIGN_OR_RETURN(auto arr, MakeIndexArray(q.index_columns[k].kind, acc[k]));
    out_columns.push_back(std::make_shared<arrow::ChunkedArray>(arr));
  }
  for (auto& a : component_arrays) out_columns.push_back(std::move(a));
  return arrow::Table::Make(OutputSchema(q), std::move(out_columns), static_cast<int64_t>(n));
}

}  // namespace rrl::query
