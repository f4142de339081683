// Tests of sample/interleave.h: coverage, per-run order, rounds of distinct runs, determinism.
#include "rrloader/sample/interleave.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

namespace rrl::sample {
namespace {

// Runs of varied lengths over 0..total-1, consecutive.
void MakeRuns(const std::vector<int64_t>& lengths, std::vector<int64_t>* starts, int64_t* total) {
  *total = 0;
  starts->clear();
  for (int64_t len : lengths) {
    starts->push_back(*total);
    *total += len;
  }
}

TEST(InterleavedOrder, EverySampleOnceRunsInOrderRoundsDistinct) {
  const std::vector<int64_t> lengths{30, 30, 7, 1, 30, 12, 30, 30, 5, 30, 29, 30};
  std::vector<int64_t> starts;
  int64_t total = 0;
  MakeRuns(lengths, &starts, &total);
  for (int64_t open : {1, 2, 4, 5, 12, 100}) {
    auto order = InterleavedOrder(starts, lengths, open, NumpyGenerator::FromSeed(7));
    ASSERT_TRUE(order.ok()) << order.status().ToString();
    std::vector<int64_t> sorted = *order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < total; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i) << "open " << open;
    // Each run's samples come out in their natural order.
    auto run_of = [&](int64_t s) {
      return static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), s) - starts.begin() - 1);
    };
    std::map<size_t, int64_t> last;
    for (int64_t s : *order) {
      const size_t r = run_of(s);
      if (last.count(r)) {
        EXPECT_GT(s, last[r]);
      }
      last[r] = s;
    }
    // The first round visits min(open, runs) different runs.
    const auto first = static_cast<size_t>(std::min<int64_t>(open, static_cast<int64_t>(lengths.size())));
    std::set<size_t> runs;
    for (size_t k = 0; k < first; ++k) runs.insert(run_of((*order)[k]));
    EXPECT_EQ(runs.size(), first);
  }
}

TEST(InterleavedOrder, PureFunctionOfTheSeed) {
  const std::vector<int64_t> lengths{4, 9, 16, 3, 8};
  std::vector<int64_t> starts;
  int64_t total = 0;
  MakeRuns(lengths, &starts, &total);
  auto a = InterleavedOrder(starts, lengths, 3, NumpyGenerator::FromSeed(1));
  auto b = InterleavedOrder(starts, lengths, 3, NumpyGenerator::FromSeed(1));
  auto c = InterleavedOrder(starts, lengths, 3, NumpyGenerator::FromSeed(2));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST(InterleavedOrder, Errors) {
  EXPECT_FALSE(InterleavedOrder({0}, {1, 2}, 2, NumpyGenerator::FromSeed(0)).ok());
  EXPECT_FALSE(InterleavedOrder({0}, {0}, 2, NumpyGenerator::FromSeed(0)).ok());
  EXPECT_FALSE(InterleavedOrder({0}, {3}, 0, NumpyGenerator::FromSeed(0)).ok());
  auto empty = InterleavedOrder({}, {}, 4, NumpyGenerator::FromSeed(0));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace rrl::sample
