// Tests of engine::LatestAtChunks (latest_at.h): over random segments (overlapping chunks,
// null cells, static chunks), the chunks it names from the chunk index alone are every
// chunk ResolveLatestAt then loads — checked on a remote segment (testing::FakeCatalog),
// where a chunk that was not prefetched would be fetched on its own and counted — and, on
// chunks that do not overlap, about one per value instead of the whole entity.
#include <gtest/gtest.h>

#include <random>

#include "rrloader/catalog/remote_dataset.h"
#include "rrloader/engine/latest_at.h"
#include "tests/catalog/fake_catalog.h"

namespace rrl::engine {
namespace {

TEST(LatestAtChunks, NamesEveryChunkResolveLatestAtLoads) {
  std::mt19937 rng(7);
  for (int round = 0; round < 40; ++round) {
    testing::FakeCatalog catalog;
    const int chunks = 1 + static_cast<int>(rng() % 12);
    for (int k = 0; k < chunks; ++k) {
      const int64_t start = static_cast<int64_t>(rng() % 200);
      const int rows = 1 + static_cast<int>(rng() % 15);
      std::vector<int64_t> frames;
      std::vector<std::optional<std::vector<double>>> values;
      for (int r = 0; r < rows; ++r) {
        frames.push_back(start + static_cast<int64_t>(rng() % 40));
        if (rng() % 3 == 0) {
          values.push_back(std::nullopt);
        } else {
          values.push_back(std::vector<double>{static_cast<double>(k)});
        }
      }
      catalog.Add("s", "/a", frames, values);
    }
    if (round % 10 == 0) catalog.Add("s", "/a", {}, {std::vector<double>{1}}, /*is_static=*/true);
    catalog.AddRange("s", "/b", 0, 50);  // another entity: never named
    catalog::RemoteOptions o;
    o.description = "test";
    auto ds = catalog::RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a", "/b"}), catalog.Rpc(), o).value();
    auto seg = ds->EntitySegment("s", "/a").value();
    std::vector<int64_t> values;
    const int n = 1 + static_cast<int>(rng() % 6);
    values.reserve(static_cast<size_t>(n));
    for (int k = 0; k < n; ++k) values.push_back(static_cast<int64_t>(rng() % 260) - 10);
    const ColumnRef col{"/a", "Scalars:scalars"};
    const auto wanted = LatestAtChunks(*seg, "frame", col, values);
    for (size_t i : wanted) EXPECT_EQ(seg->chunks()[i].entity_path, "/a");
    std::vector<std::shared_ptr<const chunk::Chunk>> alive;
    ASSERT_TRUE(ds->Prefetch({{seg, wanted}}, &alive).ok());
    std::vector<CellRef> cells;
    int64_t loaded = 0;
    ASSERT_TRUE(ResolveLatestAt(*seg, ds->cache(), "frame", col, values, &cells, &alive, &loaded).ok());
    EXPECT_EQ(ds->Stats().on_demand_chunks, 0) << "round " << round;
  }
}

TEST(LatestAtChunks, AboutOneChunkPerValueOnDisjointChunks) {
  testing::FakeCatalog catalog;
  for (int64_t k = 0; k < 100; ++k) catalog.AddRange("s", "/a", 10 * k, 10);
  catalog::RemoteOptions o;
  o.description = "test";
  auto ds = catalog::RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), catalog.Rpc(), o).value();
  auto seg = ds->EntitySegment("s", "/a").value();
  const ColumnRef col{"/a", "Scalars:scalars"};
  EXPECT_EQ(LatestAtChunks(*seg, "frame", col, {555}), std::vector<size_t>({55}));
  EXPECT_EQ(LatestAtChunks(*seg, "frame", col, {5, 555, 556, 2000}), std::vector<size_t>({0, 55, 99}));
  EXPECT_TRUE(LatestAtChunks(*seg, "frame", col, {-1}).empty());
}

}  // namespace
}  // namespace rrl::engine
