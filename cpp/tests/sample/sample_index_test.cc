// Tests of the sample layer: locating samples, epoch orders and shards.
#include "rrloader/sample/sample_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace rrl::sample {
namespace {

TEST(SampleIndex, LocatesAcrossSegmentEdges) {
  auto s = SampleIndex::Make({{0, 10, 3}, {1, 100, 1}, {2, 50, 2}}, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->total(), 6);
  const int64_t want_value[] = {10, 11, 12, 100, 50, 51};
  const int32_t want_seg[] = {0, 0, 0, 1, 2, 2};
  for (int64_t g = 0; g < 6; ++g) {
    int32_t seg = -1;
    int64_t v = -1;
    ASSERT_TRUE(s->Locate(g, &seg, &v).ok());
    EXPECT_EQ(seg, want_seg[g]) << g;
    EXPECT_EQ(v, want_value[g]) << g;
  }
  int32_t seg = 0;
  int64_t v = 0;
  EXPECT_EQ(s->Locate(6, &seg, &v).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Locate(-1, &seg, &v).code(), StatusCode::kInvalidArgument);
}

TEST(SampleIndex, GridStep) {
  auto s = SampleIndex::Make({{0, 1'000, 4}}, 250);
  ASSERT_TRUE(s.ok());
  int32_t seg = 0;
  int64_t v = 0;
  ASSERT_TRUE(s->Locate(3, &seg, &v).ok());
  EXPECT_EQ(v, 1'750);
}

TEST(SampleIndex, RejectsEmptySegmentsAndBadSteps) {
  EXPECT_FALSE(SampleIndex::Make({{0, 0, 0}}, 1).ok());
  EXPECT_FALSE(SampleIndex::Make({{0, 0, 1}}, 0).ok());
}

TEST(EpochOrder, IsAPermutationFixedBySeedAndEpoch) {
  const auto a = EpochOrder(1000, 7, 3, true);
  const auto b = EpochOrder(1000, 7, 3, true);
  const auto c = EpochOrder(1000, 7, 4, true);
  const auto d = EpochOrder(1000, 8, 3, true);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  const auto natural = EpochOrder(5, 7, 3, false);
  EXPECT_EQ(natural, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(EpochOrder(0, 1, 1, true).empty());
}

TEST(ShardBounds, PartitionsExactlyWithSizesWithinOne) {
  for (int64_t n : {0, 1, 5, 17, 100}) {
    for (int64_t count : {1, 2, 3, 7}) {
      int64_t expect_begin = 0;
      int64_t min_size = n, max_size = 0;
      for (int64_t p = 0; p < count; ++p) {
        const auto [b, e] = ShardBounds(n, p, count);
        EXPECT_EQ(b, expect_begin);
        expect_begin = e;
        min_size = std::min(min_size, e - b);
        max_size = std::max(max_size, e - b);
      }
      EXPECT_EQ(expect_begin, n);
      EXPECT_LE(max_size - min_size, 1);
    }
  }
  EXPECT_EQ(ShardBounds(10, 3, 3), (std::pair<int64_t, int64_t>{0, 0}));
}

}  // namespace
}  // namespace rrl::sample
