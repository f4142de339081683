// Tests of engine::ResolveLatestAt (latest_at.h) against a brute-force latest-at over random
// remote segments (overlapping and unsorted chunks, ties, null cells, static chunks), with
// chunk caches that keep every chunk and its TimeIndexes, none, or evict them between
// lookups: the cells found never depend on what the cache holds.
#include "rrloader/engine/latest_at.h"

#include <gtest/gtest.h>

#include <random>

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
      for (int pass = 0; pass < 2; ++pass) {  // the second pass reads the kept indexes, if any
        std::vector<std::shared_ptr<const chunk::Chunk>> alive;
        std::vector<CellRef> cells;
        int64_t loaded = 0;
        ASSERT_TRUE(
            ResolveLatestAt(*seg, ds->cache(), "frame", {"/a", "Scalars:scalars"}, values, &cells, &alive, &loaded)
                .ok());
        ASSERT_EQ(cells.size(), values.size());
        for (size_t k = 0; k < values.size(); ++k) {
          EXPECT_EQ(RowIdOf(cells[k], alive), expected[k])
              << "round " << round << ", cache " << cache_bytes << ", pass " << pass << ", value " << values[k];
        }
      }
      EXPECT_LE(ds->Stats().size_bytes, cache_bytes);
    }
  }
}

}  // namespace
}  // namespace rrl::engine
