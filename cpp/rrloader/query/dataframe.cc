#include "rrloader/query/dataframe.h"

#include <arrow/array/concatenate.h>
#include <arrow/builder.h>
#include <arrow/util/key_value_metadata.h>

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "rrloader/chunk/entity_path.h"

namespace rrl::query {

namespace {

using chunk::Chunk;
using chunk::RowId;
using ChunkPtr = std::shared_ptr<const Chunk>;

constexpr int64_t kTimeMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kTimeMax = std::numeric_limits<int64_t>::max();

// Cell: one non-null cell of a column at a time on the queried timeline.
struct Cell {
  int64_t time = 0;
  RowId row_id;
  const Chunk* chunk = nullptr;            // the decoded chunk holding the row
  const arrow::ListArray* list = nullptr;  // null for tombstones (they read as [])
  int64_t row = 0;
  size_t store_chunk = 0;  // the reference's store chunk the row belongs to (bulk path bundles)
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

// ClearIsRecursive: whether a clear's cell says recursive. A Clear:is_recursive column of
// another type than list<bool> still clears, but never recursively (rerun-sdk 0.41's
// reading of such a file: test_differential.py's rule clear_of_another_type_is_not_recursive).
bool ClearIsRecursive(const arrow::ListArray& list, int64_t row) {
  if (list.IsNull(row) || list.value_length(row) == 0) return false;
  if (list.values()->type_id() != arrow::Type::BOOL) return false;
  const auto& values = static_cast<const arrow::BooleanArray&>(*list.values());
  const int64_t at = list.value_offset(row);
  return !values.IsNull(at) && values.Value(at);
}

// ColumnBuilder: turns per-row Sources into a ChunkedArray of slices (or one compact array).
// Not thread-safe; one per output column.
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

// ---- The reference's server-side chunk store

// Compaction limits of rerun's ChunkStoreConfig::DEFAULT (0.41).
constexpr int64_t kStoreMaxRows = 4096;
constexpr int64_t kStoreMaxRowsIfUnsorted = 1024;
constexpr int64_t kStoreMaxBytes = int64_t{12} * 8 * 4096;

// StoreMeta: what the chunk store's compaction looks at in a (possibly merged) temporal chunk.
struct StoreMeta {
  int64_t rows = 0;
  int64_t bytes = 0;  // our decoded size stands in for rerun's heap size (only compared to kStoreMaxBytes)
  bool time_sorted = true;
  std::vector<std::string> timelines;                                 // sorted
  std::map<std::string, std::shared_ptr<arrow::DataType>> datatypes;  // component -> list type
  // (timeline, component) -> [min, max] time over the rows where the component is not null.
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> ranges;
};

StoreMeta MakeStoreMeta(const std::vector<ChunkPtr>& chunks, const std::vector<size_t>& parts) {
  StoreMeta m;
  // The merged chunk's rows are sorted by row id (the store sorts after concatenating).
  std::vector<std::pair<RowId, std::pair<size_t, int64_t>>> order;
  for (size_t p : parts) {
    const Chunk& c = *chunks[p];
    m.rows += c.num_rows();
    m.bytes += c.ByteSize();
    if (parts.size() > 1) {
      for (int64_t r = 0; r < c.num_rows(); ++r) order.push_back({c.row_id(r), {p, r}});
    }
    for (const auto& comp : c.components()) {
      m.datatypes.emplace(comp.component, comp.list->type());
      for (const auto& tl : c.timelines()) {
        for (int64_t r = 0; r < c.num_rows(); ++r) {
          if (comp.list->IsNull(r)) continue;
          auto [it, inserted] = m.ranges.try_emplace({tl.name, comp.component}, tl.values[r], tl.values[r]);
          if (!inserted) {
            it->second.first = std::min(it->second.first, tl.values[r]);
            it->second.second = std::max(it->second.second, tl.values[r]);
          }
        }
      }
    }
  }
  for (const auto& tl : chunks[parts.front()]->timelines()) m.timelines.push_back(tl.name);
  std::sort(m.timelines.begin(), m.timelines.end());
  if (parts.size() == 1) {
    const Chunk& c = *chunks[parts.front()];
    for (const auto& tl : c.timelines()) {
      m.time_sorted = m.time_sorted && std::is_sorted(tl.values, tl.values + c.num_rows());
    }
  } else {
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& name : m.timelines) {
      int64_t prev = kTimeMin;
      for (const auto& [_, pr] : order) {
        const int64_t t = chunks[pr.first]->FindTimeline(name)->values[pr.second];
        m.time_sorted = m.time_sorted && prev <= t;
        prev = t;
      }
    }
  }
  return m;
}

// Concatenable: rerun's Chunk::concatenable — same timelines, same datatypes for the common components.
bool Concatenable(const StoreMeta& a, const StoreMeta& b) {
  if (a.timelines != b.timelines) return false;
  for (const auto& [comp, type] : a.datatypes) {
    auto it = b.datatypes.find(comp);
    if (it != b.datatypes.end() && !it->second->Equals(*type)) return false;
  }
  return true;
}

bool BelowLimits(int64_t rows, int64_t bytes, bool sorted) {
  return bytes <= kStoreMaxBytes && rows <= (sorted ? kStoreMaxRows : kStoreMaxRowsIfUnsorted);
}

}  // namespace

std::vector<std::vector<size_t>> CompactLikeEagerStore(const std::vector<ChunkPtr>& chunks, int64_t* ties) {
  struct Node {
    std::vector<size_t> parts;
    StoreMeta meta;
    bool alive = true;
  };
  std::vector<Node> nodes;
  // The store's per-component index: (timeline, component) -> start time -> store chunks.
  std::map<std::pair<std::string, std::string>, std::map<int64_t, std::set<size_t>>> index;
  auto index_node = [&](size_t id, bool add) {
    for (const auto& [key, range] : nodes[id].meta.ranges) {
      auto& per_start = index[key];
      if (add) {
        per_start[range.first].insert(id);
      } else if (auto it = per_start.find(range.first); it != per_start.end()) {
        it->second.erase(id);
        if (it->second.empty()) per_start.erase(it);
      }
    }
  };
  std::vector<std::vector<size_t>> statics;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = *chunks[i];
    if (c.is_static() || c.num_rows() == 0 || c.components().empty()) {
      statics.push_back({i});  // never merged (the store drops component-less chunks; they make no columns)
      continue;
    }
    Node incoming{{i}, MakeStoreMeta(chunks, {i}), true};
    std::map<size_t, uint64_t> points;
    if (BelowLimits(incoming.meta.rows, incoming.meta.bytes, incoming.meta.time_sorted)) {
      std::map<size_t, uint64_t> worth;  // rows of a candidate that may take the new chunk, else 0
      auto worth_of = [&](size_t id) -> uint64_t {
        auto [it, inserted] = worth.try_emplace(id, 0);
        if (inserted) {
          const StoreMeta& m = nodes[id].meta;
          if (Concatenable(incoming.meta, m) &&
              BelowLimits(incoming.meta.rows + m.rows, incoming.meta.bytes + m.bytes, m.time_sorted)) {
            it->second = static_cast<uint64_t>(m.rows);
          }
        }
        return it->second;
      };
      for (const auto& [key, range] : incoming.meta.ranges) {
        auto idx = index.find(key);
        if (idx == index.end()) continue;
        const auto& per_start = idx->second;
        // Direct neighbours: the last start time before this chunk's start (1 point per row of the candidate),
        // the first one after its end (1 point per row); chunks starting at the same time score twice.
        auto before = per_start.lower_bound(range.first);
        if (before != per_start.begin()) {
          for (size_t id : std::prev(before)->second) points[id] += worth_of(id);
        }
        auto after = per_start.upper_bound(range.second);
        if (after != per_start.end()) {
          for (size_t id : after->second) points[id] += worth_of(id);
        }
        if (auto same = per_start.find(range.first); same != per_start.end()) {
          for (size_t id : same->second) points[id] += 2 * worth_of(id);
        }
      }
    }
    std::optional<size_t> elected;
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [id, p] : points) {
      if (p == 0) continue;
      if (p > best) {
        best = p;
        elected = id;
        best_count = 1;
      } else if (p == best) {
        ++best_count;
      }
    }
    if (ties && best_count > 1) ++*ties;
    if (!elected) {
      nodes.push_back(std::move(incoming));
      index_node(nodes.size() - 1, true);
      continue;
    }
    Node merged;
    merged.parts = nodes[*elected].parts;
    merged.parts.push_back(i);
    merged.meta = MakeStoreMeta(chunks, merged.parts);
    index_node(*elected, false);
    nodes[*elected].alive = false;
    nodes.push_back(std::move(merged));
    index_node(nodes.size() - 1, true);
  }
  std::vector<std::vector<size_t>> out = std::move(statics);
  for (auto& n : nodes) {
    if (n.alive) out.push_back(std::move(n.parts));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.front() < b.front(); });
  return out;
}

namespace {

// StoreChunk: one chunk of the reference's store: a decoded chunk, or several merged by compaction.
struct StoreChunk {
  std::vector<const Chunk*> parts;
  bool is_static = false;
  std::optional<std::pair<int64_t, int64_t>> TimeRange(const std::string& timeline) const {
    std::optional<std::pair<int64_t, int64_t>> r;
    for (const Chunk* c : parts) {
      const auto* tl = c->FindTimeline(timeline);
      if (!tl || c->num_rows() == 0) continue;
      r = r ? std::make_pair(std::min(r->first, tl->min), std::max(r->second, tl->max))
            : std::make_pair(tl->min, tl->max);
    }
    return r;
  }
};

// HasNonNull: whether `list` has a non-null cell.
bool HasNonNull(const arrow::ListArray& list) {
  return list.null_count() < list.length();
}

// MaxNonNullRowId: the largest row id among the rows where `comp` is not null (rerun's
// row_id_range_per_component, which decides which static chunk provides a component).
std::optional<RowId> MaxNonNullRowId(const Chunk& c, const chunk::ComponentColumn& comp) {
  std::optional<RowId> best;
  for (int64_t r = 0; r < c.num_rows(); ++r) {
    if (!comp.list->IsNull(r) && (!best || *best < c.row_id(r))) best = c.row_id(r);
  }
  return best;
}

// ServerFetch: the chunks of one entity that the reference's server hands out for `q`, as store chunks.
// Static chunks: the store keeps, per component, the static chunk that provides it (eager stores: the one
// with the newest row for it; lazily served footer files: the last one in file order). A static-only query
// gets those; a timeline query gets every static chunk the store still holds (for footer files: all).
// Temporal chunks: see TemporalChunkFetched.
struct EntityStore {
  std::vector<StoreChunk> chunks;  // fetched, static first
};

// RangeFetched: whether the server's range part of the request hands out temporal chunk `sc`: without
// fill_latest_at, index values ask for the chunks holding one of them within their [min, max] on the index;
// a pushed-down range asks for the chunks overlapping it (index values bound the request on their own: a
// range filter then only filters the output).
bool RangeFetched(const StoreChunk& sc, const DataframeQuery& q) {
  if (!q.index) return false;
  const auto range = sc.TimeRange(*q.index);
  if (!range) return false;
  if (q.using_index_values) {
    if (q.fill_latest_at) return false;          // a latest-at request per value (LatestAtFetched)
    const auto& values = *q.using_index_values;  // sorted
    auto lo = std::lower_bound(values.begin(), values.end(), range->first);
    return lo != values.end() && *lo <= range->second;
  }
  if (q.index_range) return range->first <= q.index_range->second && range->second >= q.index_range->first;
  return false;
}

// SaturatingSub: a - b, or the smallest time when that underflows.
int64_t SaturatingSub(int64_t a, uint64_t b) {
  const uint64_t room = static_cast<uint64_t>(a) - static_cast<uint64_t>(kTimeMin);  // a - min, exact
  return b >= room ? kTimeMin : static_cast<int64_t>(static_cast<uint64_t>(a) - b);
}

// LatestAtFetched: with fill_latest_at, the server also answers a latest-at request, per component, at each
// index value (or at the start of the pushed-down range): rerun's store returns, for each component without
// static data, the chunks whose time range for that component starts at the latest start time at or before
// the queried time, or up to the component's longest chunk duration before it (the chunks that may overlap).
void LatestAtFetched(const std::vector<StoreChunk>& temporal, const DataframeQuery& q,
                     const std::set<std::string>& static_components, std::vector<uint8_t>& fetched) {
  if (!q.index || !q.fill_latest_at) return;
  std::vector<int64_t> times;
  if (q.using_index_values) {
    times = *q.using_index_values;
  } else if (q.index_range) {
    times.push_back(q.index_range->first);
  } else {
    return;
  }
  // component -> (start, end, store chunk) over the rows where the component is not null.
  std::map<std::string, std::vector<std::tuple<int64_t, int64_t, size_t>>> per_component;
  for (size_t i = 0; i < temporal.size(); ++i) {
    std::map<std::string, std::pair<int64_t, int64_t>> ranges;
    for (const Chunk* c : temporal[i].parts) {
      const auto* tl = c->FindTimeline(*q.index);
      if (!tl) continue;
      for (const auto& comp : c->components()) {
        if (static_components.count(comp.component)) continue;
        for (int64_t r = 0; r < c->num_rows(); ++r) {
          if (comp.list->IsNull(r)) continue;
          auto [it, inserted] = ranges.try_emplace(comp.component, tl->values[r], tl->values[r]);
          if (!inserted) {
            it->second.first = std::min(it->second.first, tl->values[r]);
            it->second.second = std::max(it->second.second, tl->values[r]);
          }
        }
      }
    }
    for (const auto& [comp, r] : ranges) per_component[comp].emplace_back(r.first, r.second, i);
  }
  for (auto& [_, entries] : per_component) {
    std::sort(entries.begin(), entries.end());
    uint64_t max_length = 0;
    for (const auto& [lo, hi, _i] : entries) {
      max_length = std::max(max_length, static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo));
    }
    for (int64_t t : times) {
      auto after = std::upper_bound(entries.begin(), entries.end(),
                                    std::make_tuple(t, kTimeMax, std::numeric_limits<size_t>::max()));
      if (after == entries.begin()) continue;
      const int64_t upper = std::get<0>(*std::prev(after));
      const int64_t lower = SaturatingSub(upper, max_length);
      for (auto it = entries.begin(); it != after; ++it) {
        if (std::get<0>(*it) >= lower) fetched[std::get<2>(*it)] = 1;
      }
    }
  }
}

EntityStore ServerFetch(const std::vector<ChunkPtr>& chunks, const DataframeQuery& q) {
  EntityStore out;
  std::vector<std::vector<size_t>> groups;
  if (q.eager_store) {
    groups = CompactLikeEagerStore(chunks);
  } else {
    for (size_t i = 0; i < chunks.size(); ++i) groups.push_back({i});
  }
  // Static providers per component.
  std::map<std::string, std::pair<size_t, RowId>> provider;  // component -> (chunk index, newest row id)
  std::set<std::string> static_components;
  std::vector<size_t> static_chunks;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = *chunks[i];
    if (!c.is_static() || c.num_rows() == 0) continue;
    static_chunks.push_back(i);
    for (const auto& comp : c.components()) {
      auto newest = MaxNonNullRowId(c, comp);
      if (!newest) continue;
      static_components.insert(comp.component);
      auto it = provider.find(comp.component);
      if (it == provider.end() || !q.eager_store || it->second.second < *newest) {
        provider[comp.component] = {i, *newest};
      }
    }
  }
  // An unrestricted timeline query (no index values, no range) gets every chunk the store holds: all of a
  // footer file's chunks, and what an eager store kept (it drops a static chunk once newer static chunks
  // provide all its components). A restricted or static-only query asks per component: static providers,
  // and temporal chunks only for components without static data.
  const bool unrestricted = q.index && !q.using_index_values && !q.index_range;
  std::set<size_t> providers;
  for (const auto& [_, p] : provider) providers.insert(p.first);
  for (size_t i : static_chunks) {
    if ((unrestricted && !q.eager_store) || providers.count(i)) {
      out.chunks.push_back(StoreChunk{{chunks[i].get()}, true});
    }
  }
  std::vector<StoreChunk> temporal;
  for (const auto& g : groups) {
    if (chunks[g.front()]->is_static()) continue;
    StoreChunk sc;
    for (size_t i : g) sc.parts.push_back(chunks[i].get());
    temporal.push_back(std::move(sc));
  }
  std::vector<uint8_t> fetched(temporal.size(), unrestricted ? 1 : 0);
  if (!unrestricted) {
    for (size_t i = 0; i < temporal.size(); ++i) {
      // The range part asks per component too: a temporal chunk whose every component has static data is
      // never handed out.
      bool has_temporal_component = false;
      for (const Chunk* c : temporal[i].parts) {
        for (const auto& comp : c->components()) {
          has_temporal_component = has_temporal_component || !static_components.count(comp.component);
        }
      }
      fetched[i] = has_temporal_component && RangeFetched(temporal[i], q);
    }
    LatestAtFetched(temporal, q, static_components, fetched);
  }
  for (size_t i = 0; i < temporal.size(); ++i) {
    if (fetched[i]) out.chunks.push_back(std::move(temporal[i]));
  }
  return out;
}

// Bundle: one chunk of a view column as the reference's streaming join sees it: the chunk's cells of that
// column (or its clear rows) inside the queried range, sorted by (time, row id), with a cursor. A static
// chunk has no times (its range is all of time) until the join first looks at it.
struct Bundle {
  std::vector<int64_t> times;
  int64_t time_min = kTimeMin, time_max = kTimeMax;
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
    int64_t max_prev_time_max = kTimeMin;
    for (size_t i = 0; i < bundles.size(); ++i) {
      Bundle& b = bundles[i];
      const bool prev_ok = max_prev_time_max < b.time_min;
      const bool next_ok = i + 1 == bundles.size() || b.time_max < bundles[i + 1].time_min;
      b.disjoint = prev_ok && next_ok;
      max_prev_time_max = std::max(max_prev_time_max, b.time_max);
      if (b.times.empty()) continue;  // a static chunk: never dense
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
    // One row through the per-row streaming join, which moves the cursors as the reference does (a matching
    // row leaves the cursor on it, so a chunk the join has touched never lines up for a bulk run again).
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

// StoreColumn: one (entity, component) column of the per-segment store, gathered in one pass over the
// fetched chunks.
struct StoreColumn {
  std::string entity_path;
  std::string component;
  std::shared_ptr<arrow::DataType> type;  // List<T> of the first chunk holding it
  bool type_conflict = false;
  std::string conflict_chunk;
  bool nonempty = false;            // some fetched cell is a non-empty list
  std::optional<Cell> static_cell;  // the store's static value (newest static row)
  std::vector<Cell> data;           // temporal non-null cells on the index (unused when static_cell)
  // Resolved per query:
  std::vector<Cell> tombstones;  // injected clears (read as []), sorted
  std::vector<Bundle> bundles;   // bulk path
};

// EntityClears: the clears of one fetched entity on the queried index.
struct EntityClears {
  bool has_static = false;  // a static Clear: the store then hands out only static clear chunks
  bool static_has_recursive = false;
  std::vector<Cell> all;        // temporal clear rows on the index, any kind
  std::vector<Cell> recursive;  // those with is_recursive = true
};

void AddBundles(std::vector<Bundle>& out, const std::vector<Cell>& cells, int64_t lo, int64_t hi) {
  std::map<size_t, std::vector<const Cell*>> by_chunk;
  for (const auto& c : cells) {
    if (c.time >= lo && c.time <= hi) by_chunk[c.store_chunk].push_back(&c);
  }
  for (auto& [_, list] : by_chunk) {
    std::sort(list.begin(), list.end(), [](const Cell* a, const Cell* b) { return ByTimeThenRowId(*a, *b); });
    Bundle b;
    for (const Cell* c : list) b.times.push_back(c->time);
    b.time_min = b.times.front();
    b.time_max = b.times.back();
    out.push_back(std::move(b));
  }
}

Result<std::shared_ptr<arrow::Table>> EmptyTable(const DataframeQuery& q) {
  auto empty = arrow::Table::MakeEmpty(OutputSchema(q));
  if (!empty.ok()) return Status::Internal(empty.status().ToString());
  return *empty;
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
  // The per-segment query sees the chunks of [range_lo, range_hi]: the index values' span. A pushed-down
  // index range only bounds which chunks the server hands out; the per-segment query runs over all their
  // rows and the range filters its output afterwards (which matters to the bulk path).
  int64_t range_lo = kTimeMin, range_hi = kTimeMax;
  if (q.using_index_values && !q.using_index_values->empty()) {
    range_lo = q.using_index_values->front();
    range_hi = q.using_index_values->back();
  }

  // 1. The per-segment store: what the server hands out for the fetched entities. One pass over its chunks
  //    gathers every column (cells on the index, static values, emptiness) and every entity's clears.
  std::vector<ChunkPtr> keep_alive;
  std::map<std::pair<std::string, std::string>, StoreColumn> store_columns;
  std::map<std::string, EntityClears> clears;
  bool any_fetched = false;        // the per-segment store is not empty
  bool any_fetched_index = false;  // ... and holds the index timeline (else the index column is null)
  size_t next_store_chunk = 0;
  std::set<std::string> fetch_entities;
  if (q.fetch_entities) {
    fetch_entities = *q.fetch_entities;
  } else {
    for (const auto& c : q.columns) fetch_entities.insert(c.entity_path);
  }
  for (const auto& entity : fetch_entities) {
    auto loaded = segment.LoadEntity(entity, cache);
    if (!loaded.ok()) return loaded.status();
    if (stats) stats->chunks_loaded += static_cast<int64_t>(loaded->size());
    EntityStore es = ServerFetch(*loaded, q);
    keep_alive.insert(keep_alive.end(), loaded->begin(), loaded->end());
    EntityClears& ec = clears[entity];
    for (const StoreChunk& sc : es.chunks) {
      const size_t sc_id = next_store_chunk++;
      any_fetched = true;
      for (const Chunk* ch : sc.parts) {
        const auto* tl = q.index ? ch->FindTimeline(*q.index) : nullptr;
        any_fetched_index = any_fetched_index || tl != nullptr;
        for (const auto& comp : ch->components()) {
          if (!HasNonNull(*comp.list)) continue;
          auto [it, inserted] = store_columns.try_emplace({entity, comp.component});
          StoreColumn& col = it->second;
          if (inserted) {
            col.entity_path = entity;
            col.component = comp.component;
            col.type = comp.list->type();
          } else if (!col.type_conflict && !col.type->Equals(*comp.list->type())) {
            col.type_conflict = true;
            col.conflict_chunk = ch->chunk_id() + " (" + comp.list->type()->ToString() + ")";
          }
          const bool is_clear = comp.component == kClearComponent;
          for (int64_t r = 0; r < ch->num_rows(); ++r) {
            if (comp.list->IsNull(r)) continue;
            col.nonempty = col.nonempty || comp.list->value_length(r) > 0;
            if (sc.is_static) {
              if (!col.static_cell || col.static_cell->row_id < ch->row_id(r)) {
                col.static_cell = Cell{0, ch->row_id(r), ch, comp.list.get(), r, sc_id};
              }
              if (is_clear) {
                ec.has_static = true;
                ec.static_has_recursive = ec.static_has_recursive || ClearIsRecursive(*comp.list, r);
              }
              continue;
            }
            if (!tl) continue;
            Cell cell{tl->values[r], ch->row_id(r), ch, comp.list.get(), r, sc_id};
            col.data.push_back(cell);
            if (is_clear) {
              cell.list = nullptr;  // a clear reads as [] where it applies
              ec.all.push_back(cell);
              if (ClearIsRecursive(*comp.list, r)) ec.recursive.push_back(cell);
            }
          }
        }
      }
    }
  }

  // 2. The segment's view: the store's columns, less tombstone columns (unless asked for) and columns whose
  //    every fetched cell is null or [] (unless asked for). Columns outside it read null and make no rows.
  std::vector<StoreColumn*> view;
  for (auto& [key, col] : store_columns) {
    if (!q.include_tombstone_columns && col.component == kClearComponent) continue;
    if (!q.include_semantically_empty_columns && !col.nonempty) continue;
    view.push_back(&col);
  }
  auto in_range = [&](int64_t t) { return t >= range_lo && t <= range_hi; };
  for (StoreColumn* col : view) {
    if (!q.index) continue;
    // A static column reads its static value everywhere (the store's range query returns its static chunk,
    // never its temporal ones), but the clears of its entity still make rows.
    if (col->static_cell) col->data.clear();
    std::sort(col->data.begin(), col->data.end(), ByTimeThenRowId);
    if (col->static_cell) {
      col->bundles.push_back(Bundle{});
    } else {
      AddBundles(col->bundles, col->data, range_lo, range_hi);
    }
    // Tombstones: the entity's own clears (its Clear column gets them too, as [] cells with the same row
    // ids, which never win over the data), and the recursive clears of fetched ancestors. An entity with a
    // static Clear hands out its static clear chunk instead: that gives no tombstone on the index.
    const EntityClears& own = clears[col->entity_path];
    if (own.has_static) {
      col->bundles.push_back(Bundle{});
    } else {
      if (col->component != kClearComponent) col->tombstones = own.all;
      AddBundles(col->bundles, own.all, range_lo, range_hi);
    }
    for (const auto& ancestor : chunk::StrictAncestors(col->entity_path)) {
      auto it = clears.find(ancestor);
      if (it == clears.end()) continue;
      if (it->second.has_static) {
        if (it->second.static_has_recursive) col->bundles.push_back(Bundle{});
        continue;
      }
      col->tombstones.insert(col->tombstones.end(), it->second.recursive.begin(), it->second.recursive.end());
      AddBundles(col->bundles, it->second.recursive, range_lo, range_hi);
    }
    std::sort(col->tombstones.begin(), col->tombstones.end(), ByTimeThenRowId);
  }

  // The output columns, in the view or not.
  std::vector<StoreColumn*> output(q.columns.size(), nullptr);
  for (size_t ci = 0; ci < q.columns.size(); ++ci) {
    auto it = store_columns.find({q.columns[ci].entity_path, q.columns[ci].component});
    if (it == store_columns.end() || std::find(view.begin(), view.end(), &it->second) == view.end()) continue;
    StoreColumn& col = it->second;
    const auto& expected = q.columns[ci].field->type();
    if (col.type_conflict || !col.type->Equals(*expected)) {
      return Status::Unsupported(
          where + ": column '" + q.columns[ci].field->name() + "' has type " +
          (col.type_conflict ? "another type in chunk " + col.conflict_chunk : col.type->ToString()) + " but " +
          expected->ToString() + " elsewhere");
    }
    output[ci] = &col;
  }

  // 3. The rows.
  std::vector<int64_t> rows;
  bool index_valid = true;  // whether the queried index column holds the row's value (else null)
  if (!q.index) {
    // One static row, in a segment where the store holds something (static: nothing temporal is fetched).
    if (!any_fetched) return EmptyTable(q);
    rows.push_back(0);  // its index values are null
    index_valid = false;
  } else if (q.using_index_values) {
    // Requested rows exist only in a segment where the reference fetched some chunk; if none of them
    // carries the index timeline, the per-segment store has no such index column and it reads null.
    if (!any_fetched) return EmptyTable(q);
    rows = *q.using_index_values;
    index_valid = any_fetched_index;
  } else {
    for (const StoreColumn* col : view) {
      for (const auto& c : col->data) {
        if (in_range(c.time)) rows.push_back(c.time);
      }
      for (const auto& c : col->tombstones) {
        if (in_range(c.time)) rows.push_back(c.time);
      }
    }
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  }
  // Rows the reference emits through its bulk path, where static values are not applied (BulkEmittedRows).
  // Only plain queries take that path, and it only changes rows of segments with a static output column.
  std::vector<uint8_t> bulk(rows.size(), 0);
  bool any_static_output = false;
  for (const StoreColumn* col : output) any_static_output = any_static_output || (col && col->static_cell);
  if (q.index && !q.fill_latest_at && !q.using_index_values && any_static_output && rows.size() >= 4) {
    std::vector<std::vector<Bundle>> columns;
    columns.reserve(view.size());
    for (StoreColumn* col : view) columns.push_back(std::move(col->bundles));
    // Any index column besides the queried one is "another timeline" of the selection, whether or not this
    // segment has it.
    bulk = BulkEmittedRows(columns, rows, q.index_columns.size() > 1);
  }
  if (q.index && q.index_range) {
    const int64_t lo = q.index_range->first, hi = q.index_range->second;
    size_t kept = 0;
    for (size_t ri = 0; ri < rows.size(); ++ri) {
      // A null index value never passes the range filter.
      if (!index_valid || rows[ri] < lo || rows[ri] > hi) continue;
      rows[kept] = rows[ri];
      bulk[kept] = bulk[ri];
      ++kept;
    }
    rows.resize(kept);
    bulk.resize(kept);
  }
  const size_t n = rows.size();
  if (stats) stats->rows += static_cast<int64_t>(n);

  // 4. Resolve each view column's cell per row; accumulate the other index columns over all of them (the
  //    reference takes the maximum over every view column's cell, shown or not).
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
  std::map<const StoreColumn*, size_t> output_index;
  for (size_t ci = 0; ci < output.size(); ++ci) {
    if (output[ci]) output_index[output[ci]] = ci;
  }
  std::vector<std::shared_ptr<arrow::ChunkedArray>> component_arrays(q.columns.size());
  for (const StoreColumn* col : view) {
    auto out_it = output_index.find(col);
    std::optional<ColumnBuilder> builder;
    if (out_it != output_index.end()) {
      builder.emplace(q.columns[out_it->second].field->type(), q.compact_below_run_length);
    }
    auto append = [&](const Source& s) {
      if (builder) builder->Append(s);
    };
    for (size_t ri = 0; ri < n; ++ri) {
      // Static values apply to the selected columns only (and not in bulk rows).
      if (col->static_cell && !bulk[ri] && builder) {
        append(Source{Source::kRow, col->static_cell->list, col->static_cell->row});
        continue;
      }
      if (!q.index) {
        append(Source{});
        continue;
      }
      const int64_t v = rows[ri];
      const Cell* exact = nullptr;
      auto d_hi = std::upper_bound(col->data.begin(), col->data.end(), v, time_less);
      if (d_hi != col->data.begin() && std::prev(d_hi)->time == v) exact = &*std::prev(d_hi);
      auto t_hi = std::upper_bound(col->tombstones.begin(), col->tombstones.end(), v, time_less);
      if (t_hi != col->tombstones.begin() && std::prev(t_hi)->time == v) {
        const Cell* tomb = &*std::prev(t_hi);
        if (!exact || exact->row_id < tomb->row_id) exact = tomb;
      }
      const Cell* chosen = exact;
      if (!chosen && q.fill_latest_at && d_hi != col->data.begin()) chosen = &*std::prev(d_hi);
      if (!chosen) {
        append(Source{});
        continue;
      }
      offer(ri, *chosen);
      if (chosen->list) {
        append(Source{Source::kRow, chosen->list, chosen->row});
      } else {
        append(Source{Source::kEmpty, nullptr, 0});
      }
    }
    if (builder) {
      RRL_ASSIGN_OR_RETURN(component_arrays[out_it->second], builder->Finish(static_cast<int64_t>(n), stats));
    }
  }
  for (size_t ci = 0; ci < q.columns.size(); ++ci) {
    if (component_arrays[ci]) continue;
    // Not in this segment's view: null throughout.
    auto nulls = arrow::MakeArrayOfNull(q.columns[ci].field->type(), static_cast<int64_t>(n));
    if (!nulls.ok()) return Status::Internal(nulls.status().ToString());
    component_arrays[ci] = std::make_shared<arrow::ChunkedArray>(*nulls);
    if (stats) ++stats->slices;
  }

  // 5. Assemble: segment id, index columns, component columns.
  arrow::ChunkedArrayVector out_columns;
  out_columns.reserve(1 + q.index_columns.size() + q.columns.size());
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
