// Tests of engine::ResolveLatestAt (latest_at.h) against a brute-force latest-at over random
// remote segments (overlapping and unsorted chunks, ties, null cells, static chunks), with
// chunk caches that keep every chunk and its TimeIndexes, none, or evict them between
// lookups, with and without a LatestAtMemo (one that keeps everything, and one so small it
// starts over): the cells found never depend on what the cache or the memo holds.
#include "rrloader/engine/latest_at.h"

#include <gtest/gtest.h>

#include <random>
#include <utility>

#include "rrloader/catalog/remote_dataset.h"
#include "tests/catalog/fake_catalog.h"

namespace rrl::engine {
namespace {

// RowIdOf: the row id of `cell`, found among `chunks` (0 when there is no cell).
uint64_t RowIdOf(const CellRef& cell, const std::vector<std::shared_ptr<const chunk::Chunk>>& chunks) {
  if (cell.list == nullptr) return 0;
  for (const auto& c : chunks) {
    const auto* comp = c->FindComponent("Scalars:scalars");
    if (comp != nullptr && comp->list.get() == cell.list) return c->row_id(cell.row).hi;
  }
  ADD_FAILURE() << "a cell of no chunk";
  return 0;
}

TEST(ResolveLatestAt, MatchesABruteForceWhateverTheCacheHolds) {
  std::mt19937 rng(16);
  for (int round = 0; round < 60; ++round) {
    testing::FakeCatalog catalog;
    struct Row {
      int64_t frame;
      uint64_t row_id;
    };
    std::vector<Row> rows;  // every non-null temporal cell
    std::optional<uint64_t> static_row;
    const int chunks = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < chunks; ++k) {
      const int64_t start = static_cast<int64_t>(rng() % 100);
      const int n = 1 + static_cast<int>(rng() % 12);
      std::vector<int64_t> frames;
      std::vector<std::optional<std::vector<double>>> values;
      for (int r = 0; r < n; ++r) {
        frames.push_back(start + static_cast<int64_t>(rng() % 20));  // unsorted, with ties
        if (rng() % 4 == 0) {
          values.push_back(std::nullopt);
        } else {
          values.push_back(std::vector<double>{static_cast<double>(k)});
          // FakeCatalog numbers chunks from 1; row r of chunk n has row id 5000 + 100 n + r.
          rows.push_back({frames.back(), 5000 + 100 * static_cast<uint64_t>(k + 1) + static_cast<uint64_t>(r)});
        }
      }
      catalog.Add("s", "/a", frames, values);
    }
    if (round % 7 == 0) {
      catalog.Add("s", "/a", {}, {std::vector<double>{1}}, /*is_static=*/true);
      static_row = 5000 + 100 * static_cast<uint64_t>(chunks + 1);
    }
    std::vector<int64_t> values;
    values.reserve(20);
    for (int k = 0; k < 20; ++k) values.push_back(static_cast<int64_t>(rng() % 140) - 10);
    std::vector<uint64_t> expected;
    for (int64_t v : values) {
      uint64_t exact = 0, best = 0;
      int64_t best_frame = 0;
      for (const auto& r : rows) {
        if (r.frame == v) exact = std::max(exact, r.row_id);
        if (r.frame <= v && (best == 0 || r.frame > best_frame || (r.frame == best_frame && r.row_id > best))) {
          best = r.row_id;
          best_frame = r.frame;
        }
      }
      expected.push_back(static_row ? *static_row : exact != 0 ? exact : best);
    }
    for (const int64_t cache_bytes : {int64_t{1} << 30, int64_t{0}, int64_t{2500}}) {
      catalog::RemoteOptions o;
      o.description = "test";
      o.cache_bytes = cache_bytes;
      auto ds = catalog::RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), catalog.Rpc(), o).value();
      auto seg = ds->EntitySegment("s", "/a").value();
      const ColumnRef column{"/a", "Scalars:scalars"};
      LatestAtMemo memo, tiny(1);  // tiny: full after one plan, so it starts over every other lookup
      for (int pass = 0; pass < 6; ++pass) {
        // Passes 0-1: no memo (the second reads the kept indexes, if any); 2-3: `memo`, new
        // then kept; 4-5: `tiny`. Each lookup asks for half the values, then the rest, so a
        // memo's plan is reused within a pass with different chunks loaded.
        LatestAtMemo* m = pass < 2 ? nullptr : pass < 4 ? &memo : &tiny;
        std::vector<std::shared_ptr<const chunk::Chunk>> alive;
        std::vector<CellRef> cells;
        int64_t loaded = 0;
        for (const auto& [begin, end] : {std::pair<size_t, size_t>{0, 10}, {10, values.size()}}) {
          const std::vector<int64_t> part(values.begin() + static_cast<std::ptrdiff_t>(begin),
                                          values.begin() + static_cast<std::ptrdiff_t>(end));
          ASSERT_TRUE((m == nullptr
                           ? ResolveLatestAt(*seg, ds->cache(), "frame", column, part, &cells, &alive, &loaded)
                           : ResolveLatestAt(seg, ds->cache(), "frame", column, part, &cells, &alive, &loaded, m))
                          .ok());
          ASSERT_EQ(cells.size(), part.size());
          for (size_t k = 0; k < part.size(); ++k) {
            EXPECT_EQ(RowIdOf(cells[k], alive), expected[begin + k])
                << "round " << round << ", cache " << cache_bytes << ", pass " << pass << ", value " << part[k];
          }
          if (m != nullptr) ds->cache().Touch(m->TakeTouched());
        }
      }
      // The memo holds nothing alive: with every lookup's chunks released, a cache that keeps
      // none leaves none alive (a memo's chunk references expire with them).
      if (cache_bytes == 0 && !static_row) {
        std::vector<std::shared_ptr<const chunk::Chunk>> alive;
        std::vector<CellRef> cells;
        int64_t loaded = 0;
        ASSERT_TRUE(ResolveLatestAt(seg, ds->cache(), "frame", column, values, &cells, &alive, &loaded, &memo).ok());
        std::vector<std::weak_ptr<const chunk::Chunk>> weak(alive.begin(), alive.end());
        alive.clear();
        for (const auto& w : weak) EXPECT_TRUE(w.expired()) << "round " << round;
      }
      EXPECT_LE(memo.size_bytes(), kDefaultLatestAtMemoBytes);
      EXPECT_LE(ds->Stats().size_bytes, cache_bytes);
    }
  }
}

// A memo reused across lookups counts each chunk it hands out as a cache hit once the caller
// touches them (as many as the same lookups without a memo) and keeps those chunks the most
// recently used: a cache with room for two of three chunks evicts the one not asked for.
TEST(LatestAtMemo, TouchKeepsTheCacheCountsAndOrder) {
  testing::FakeCatalog catalog;
  for (int64_t k = 0; k < 3; ++k) {
    catalog.Add("s", "/a", {10 * k, 10 * k + 5},
                {std::vector<double>{static_cast<double>(k)}, std::vector<double>{2.0 * static_cast<double>(k)}});
  }
  catalog::RemoteOptions o;
  o.description = "test";
  o.cache_bytes = int64_t{1} << 30;
  auto ds = catalog::RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), catalog.Rpc(), o).value();
  auto seg = ds->EntitySegment("s", "/a").value();
  const ColumnRef column{"/a", "Scalars:scalars"};
  LatestAtMemo memo;
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  std::vector<CellRef> cells;
  int64_t loaded = 0;
  // Load all three, keeping them alive here so that the memo's references stay valid.
  ASSERT_TRUE(ResolveLatestAt(seg, ds->cache(), "frame", column, {0, 10, 20}, &cells, &alive, &loaded, &memo).ok());
  EXPECT_EQ(memo.num_plans(), 1u);
  EXPECT_TRUE(memo.TakeTouched().empty());  // all three came from the cache (or the server)
  // HoldAll: all three chunks are known and alive; a memo that saw one of them is not enough.
  std::vector<std::shared_ptr<const chunk::Chunk>> held;
  EXPECT_TRUE(memo.HoldAll(seg, column, &held));
  EXPECT_EQ(held.size(), 3u);
  EXPECT_TRUE(memo.HoldAll(seg, column, nullptr));  // the answer alone
  LatestAtMemo partial;
  ASSERT_TRUE(ResolveLatestAt(seg, ds->cache(), "frame", column, {5}, &cells, &alive, &loaded, &partial).ok());
  EXPECT_FALSE(partial.HoldAll(seg, column, &held));
  EXPECT_FALSE(partial.HoldAll(seg, column, nullptr));
  EXPECT_EQ(held.size(), 3u);
  EXPECT_FALSE(LatestAtMemo().HoldAll(seg, column, &held));
  const int64_t hits = ds->cache().hits();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(ResolveLatestAt(seg, ds->cache(), "frame", column, {5, 25}, &cells, &alive, &loaded, &memo).ok());
    const auto touched = memo.TakeTouched();
    EXPECT_EQ(touched.size(), 2u);
    ds->cache().Touch(touched);
  }
  EXPECT_EQ(ds->cache().hits(), hits + 8);
  EXPECT_EQ(cells[0].list, alive[0]->FindComponent("Scalars:scalars")->list.get());
  // Chunk 1 (frames 10-15) was not asked for since: shrinking the cache to two chunks drops
  // it (without the touches the LRU would drop chunk 0, the first loaded).
  const int64_t per_chunk = ds->cache().size_bytes() / 3;
  ds->cache().SetCapacity(2 * per_chunk + per_chunk / 2);
  const int64_t misses = ds->cache().misses();
  ASSERT_TRUE(ResolveLatestAt(*seg, ds->cache(), "frame", column, {5, 25}, &cells, &alive, &loaded).ok());
  EXPECT_EQ(ds->cache().misses(), misses);  // chunks 0 and 2 are still cached
  ASSERT_TRUE(ResolveLatestAt(*seg, ds->cache(), "frame", column, {12}, &cells, &alive, &loaded).ok());
  EXPECT_GT(ds->cache().misses(), misses);  // chunk 1 is not
  EXPECT_NE(cells[0].list, nullptr);
}

}  // namespace
}  // namespace rrl::engine
