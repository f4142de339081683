// rrloader/engine/latest_at.cc
#include "rrloader/engine/latest_at.h"

#include <algorithm>
#include <map>
#include <optional>

namespace rrl::engine {

namespace {

constexpr const char* kClearComponent = "Clear:is_recursive";

// ChunkCells: a temporal chunk's cells of the column and its entity's clears, each sorted
// by (time, row id) (TimeIndexes, kept with the cached chunk: built once per chunk load).
struct ChunkCells {
  std::shared_ptr<const chunk::Chunk> chunk;
  const arrow::ListArray* list = nullptr;  // the column in this chunk (nullptr: only clears)
  std::shared_ptr<const store::TimeIndex> data, clears;
};

using TemporalInfo = LatestAtMemo::Temporal;  // a temporal chunk of the column: number, range on the index

// A cell found so far: its time, row id, chunk and row.
struct Found {
  const ChunkCells* cells = nullptr;
  int64_t time = 0;
  chunk::RowId row_id;
  int64_t row = 0;
  bool clear = false;
};

bool FoundLess(const Found& a, const Found& b) {
  return a.time != b.time ? a.time < b.time : a.row_id < b.row_id;
}

// LastAtOrBefore: the last cell of `index` at or before v, or nullptr.
const store::TimeIndex::Cell* LastAtOrBefore(const store::TimeIndex& index, int64_t v) {
  auto end = std::upper_bound(index.cells.begin(), index.cells.end(), v,
                              [](int64_t x, const store::TimeIndex::Cell& c) { return x < c.time; });
  return end == index.cells.begin() ? nullptr : &*std::prev(end);
}

// Resolve: ResolveLatestAt, with `plan` (may be null) holding the (segment, column) setup:
// filled here when new (empty temporal list), else read.
Status Resolve(const store::Segment& segment, store::ChunkCache& cache, const std::string& index,
               const ColumnRef& column, const std::vector<int64_t>& values, std::vector<CellRef>* out,
               std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive, int64_t* chunks_loaded, LatestAtMemo* memo,
               LatestAtMemo::Plan* plan) {
  out->assign(values.size(), CellRef{});
  std::vector<TemporalInfo> own;
  const bool planned = plan != nullptr && !plan->temporal.empty();
  if (!planned) {
    std::optional<std::pair<chunk::RowId, CellRef>> static_cell;
    const auto& infos = segment.chunks();
    for (size_t i : segment.EntityChunks(column.entity_path)) {
      const auto& info = infos[i];
      if (info.num_rows == 0) continue;
      if (info.is_static) {
        auto ch = segment.LoadChunk(i, cache);
        if (!ch.ok()) return ch.status();
        ++*chunks_loaded;
        const auto* comp = (*ch)->FindComponent(column.component);
        if (comp == nullptr) continue;
        for (int64_t r = 0; r < (*ch)->num_rows(); ++r) {
          if (comp->list->IsNull(r)) continue;
          if (!static_cell || static_cell->first < (*ch)->row_id(r)) {
            static_cell = std::make_pair((*ch)->row_id(r), CellRef{comp->list.get(), r, false});
          }
        }
        keep_alive->push_back(*ch);
        continue;
      }
      for (const auto& range : info.ranges) {
        if (range.timeline == index) own.push_back({i, range.min, range.max});
      }
    }
    if (static_cell) {
      std::fill(out->begin(), out->end(), static_cell->second);
      return Status::OK();  // the plan stays empty: static columns are not memoized
    }
    // Chunks in order of decreasing end: after those containing v, the fill look-back visits
    // them in this order and stops once a chunk ends before the best cell found.
    std::sort(own.begin(), own.end(), [](const TemporalInfo& a, const TemporalInfo& b) { return a.max > b.max; });
    if (plan != nullptr && !own.empty()) {
      plan->temporal = own;
      plan->slots.assign(own.size(), LatestAtMemo::Slot{});
      memo->Filled(*plan);
    }
  }
  const std::vector<TemporalInfo>& temporal = planned ? plan->temporal : own;
  const size_t num_temporal = temporal.size();
  std::vector<ChunkCells> loaded(num_temporal);  // chunk == nullptr: not yet
  auto cells_of = [&](size_t t) -> Result<const ChunkCells*> {
    ChunkCells& cc = loaded[t];
    if (cc.chunk != nullptr) return &cc;
    LatestAtMemo::Slot* slot = plan != nullptr && t < plan->slots.size() ? &plan->slots[t] : nullptr;
    if (slot != nullptr) {
      if (auto ch = slot->chunk.lock()) {
        ++*chunks_loaded;
        cc.list = slot->list;
        if (slot->has_data && (cc.data = slot->data.lock()) == nullptr) {
          cc.data = cache.Index(ch, index, column.component);
          slot->data = cc.data;
        }
        if (slot->has_clears && (cc.clears = slot->clears.lock()) == nullptr) {
          cc.clears = cache.Index(ch, index, kClearComponent);
          slot->clears = cc.clears;
        }
        memo->Used(ch.get());
        cc.chunk = std::move(ch);
        keep_alive->push_back(cc.chunk);
        return &cc;
      }
    }
    auto ch = segment.LoadChunk(temporal[t].index, cache);
    if (!ch.ok()) return ch.status();
    ++*chunks_loaded;
    cc.chunk = std::move(*ch);
    if (cc.chunk->FindTimeline(index) != nullptr) {
      const auto* comp = cc.chunk->FindComponent(column.component);
      cc.list = comp != nullptr ? comp->list.get() : nullptr;
      if (comp != nullptr) cc.data = cache.Index(cc.chunk, index, column.component);
      if (cc.chunk->FindComponent(kClearComponent) != nullptr) {
        cc.clears = cache.Index(cc.chunk, index, kClearComponent);
      }
    }
    if (slot != nullptr) {
      *slot = LatestAtMemo::Slot{cc.chunk, cc.list, cc.data, cc.clears, cc.data != nullptr, cc.clears != nullptr};
    }
    keep_alive->push_back(cc.chunk);
    return &cc;
  };

  for (size_t k = 0; k < values.size(); ++k) {
    const int64_t v = values[k];
    Found exact;  // the cell logged exactly at v with the largest row id (data or clear)
    Found best;   // the latest data at or before v
    auto visit = [&](const ChunkCells& cc) {
      const chunk::Chunk& ch = *cc.chunk;
      if (cc.data != nullptr) {
        if (const auto* c = LastAtOrBefore(*cc.data, v)) {
          const Found f{&cc, c->time, ch.row_id(c->row), c->row, false};
          if (best.cells == nullptr || FoundLess(best, f)) best = f;
          // The last data cell at v is the one with the largest row id there.
          if (c->time == v && (exact.cells == nullptr || exact.row_id < f.row_id)) exact = f;
        }
      }
      if (cc.clears != nullptr) {
        if (const auto* c = LastAtOrBefore(*cc.clears, v); c != nullptr && c->time == v) {
          const Found f{&cc, c->time, ch.row_id(c->row), c->row, true};
          if (exact.cells == nullptr || exact.row_id < f.row_id) exact = f;
        }
      }
    };
    // 1. Every chunk whose range contains v (it may hold the exact cell).
    for (size_t t = 0; t < num_temporal; ++t) {
      const TemporalInfo& ti = temporal[t];
      if (ti.min <= v && v <= ti.max) {
        auto cc = cells_of(t);
        if (!cc.ok()) return cc.status();
        visit(**cc);
      }
    }
    // 2. Chunks that end before v, newest end first, while they could hold a later cell.
    for (size_t t = 0; t < num_temporal; ++t) {
      const TemporalInfo& ti = temporal[t];
      if (ti.max >= v) continue;
      if (best.cells != nullptr && ti.max < best.time) break;
      auto cc = cells_of(t);
      if (!cc.ok()) return cc.status();
      visit(**cc);
    }
    if (exact.cells != nullptr) {
      (*out)[k] = exact.clear ? CellRef{nullptr, 0, true} : CellRef{exact.cells->list, exact.row, false};
    } else if (best.cells != nullptr) {
      (*out)[k] = CellRef{best.cells->list, best.row, false};
    }
  }
  return Status::OK();
}

}  // namespace

LatestAtMemo::Plan* LatestAtMemo::Find(const std::shared_ptr<const store::Segment>& segment, const ColumnRef& column) {
  const std::pair<const void*, const void*> key{segment.get(), &column};
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    // A live weak reference names this very segment (no other live object has its address);
    // an expired one, a dropped segment whose address was reused: start the plan over.
    if (!it->second.segment.expired()) return &it->second;
    it->second = Plan{};
    it->second.segment = segment;
    return &it->second;
  }
  if (size_bytes_ >= capacity_bytes_) {
    plans_.clear();
    size_bytes_ = 0;
    return nullptr;
  }
  Plan& plan = plans_[key];
  plan.segment = segment;
  size_bytes_ += static_cast<int64_t>(sizeof(Plan) + sizeof(key) + 32);  // the node and its bucket
  return &plan;
}

bool LatestAtMemo::HoldAll(const std::shared_ptr<const store::Segment>& segment, const ColumnRef& column,
                           std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const {
  auto it = plans_.find({segment.get(), &column});
  if (it == plans_.end() || it->second.segment.expired() || it->second.temporal.empty()) return false;
  if (keep_alive == nullptr) {
    return std::none_of(it->second.slots.begin(), it->second.slots.end(),
                        [](const Slot& slot) { return slot.chunk.expired(); });
  }
  const size_t before = keep_alive->size();
  for (const Slot& slot : it->second.slots) {
    auto chunk = slot.chunk.lock();
    if (chunk == nullptr) {
      keep_alive->resize(before);
      return false;
    }
    keep_alive->push_back(std::move(chunk));
  }
  return true;
}

void LatestAtMemo::Filled(const Plan& plan) {
  size_bytes_ +=
      static_cast<int64_t>(plan.temporal.capacity() * sizeof(Temporal) + plan.slots.capacity() * sizeof(Slot));
}

Status ResolveLatestAt(const store::Segment& segment, store::ChunkCache& cache, const std::string& index,
                       const ColumnRef& column, const std::vector<int64_t>& values, std::vector<CellRef>* out,
                       std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive, int64_t* chunks_loaded) {
  return Resolve(segment, cache, index, column, values, out, keep_alive, chunks_loaded, nullptr, nullptr);
}

Status ResolveLatestAt(const std::shared_ptr<const store::Segment>& segment, store::ChunkCache& cache,
                       const std::string& index, const ColumnRef& column, const std::vector<int64_t>& values,
                       std::vector<CellRef>* out, std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive,
                       int64_t* chunks_loaded, LatestAtMemo* memo) {
  LatestAtMemo::Plan* plan = memo != nullptr ? memo->Find(segment, column) : nullptr;
  return Resolve(*segment, cache, index, column, values, out, keep_alive, chunks_loaded, memo, plan);
}

std::vector<size_t> LatestAtChunks(const store::Segment& segment, const std::string& index, const ColumnRef& column,
                                   const std::vector<int64_t>& values) {
  std::vector<size_t> out;
  struct Temporal {
    size_t index = 0;
    int64_t min = 0, max = 0;
    // known: a time of a non-null cell of the column in the chunk: the latest at or before
    // the chunk's end is at least `latest` (stats: the column's last cell), and one at
    // `earliest` exists (its first). Unset without stats or cells.
    std::optional<int64_t> earliest, latest;
  };
  std::vector<Temporal> temporal;
  const auto& infos = segment.chunks();
  for (size_t i : segment.EntityChunks(column.entity_path)) {
    const auto& info = infos[i];
    if (info.num_rows == 0) continue;
    if (info.is_static) {
      out.push_back(i);  // ResolveLatestAt reads every static chunk of the entity
      continue;
    }
    for (const auto& range : info.ranges) {
      if (range.timeline != index) continue;
      Temporal t{i, range.min, range.max, std::nullopt, std::nullopt};
      if (const auto* st = info.Stats(index, column.component)) {
        t.earliest = st->min;
        t.latest = st->max;
      }
      temporal.push_back(t);
    }
  }
  // As ResolveLatestAt: decreasing end.
  std::sort(temporal.begin(), temporal.end(), [](const Temporal& a, const Temporal& b) { return a.max > b.max; });
  std::vector<int64_t> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<char> wanted(infos.size(), 0);
  for (const int64_t v : sorted) {
    // A lower bound of the time of the best cell ResolveLatestAt will find for v.
    std::optional<int64_t> bound;
    auto raise = [&](int64_t t) { bound = bound ? std::max(*bound, t) : t; };
    for (const auto& t : temporal) {
      if (t.min <= v && v <= t.max) {
        wanted[t.index] = 1;
        if (t.latest && *t.latest <= v) {
          raise(*t.latest);
        } else if (t.earliest && *t.earliest <= v) {
          raise(*t.earliest);
        }
      }
    }
    for (const auto& t : temporal) {
      if (t.max >= v) continue;
      // ResolveLatestAt stops once a chunk ends before its best cell, which is at or after
      // `bound`: it never reads a chunk that ends before the bound.
      if (bound && t.max < *bound) break;
      wanted[t.index] = 1;
      if (t.latest) raise(*t.latest);  // the chunk ends before v: its last cell is at or before v
    }
  }
  for (size_t i = 0; i < wanted.size(); ++i) {
    if (wanted[i]) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace rrl::engine
