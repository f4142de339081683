// Tests of rrloader/engine/pipeline.h's RampCuts: the fetch blocks a pipeline walks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "rrloader/engine/pipeline.h"

namespace rrl::engine {
namespace {

using Cuts = std::vector<int64_t>;

TEST(RampCutsTest, AFullFirstBlockIsCutIntoTheRamp) {
  EXPECT_EQ(RampCuts({128, 256, 384}, 16, 128), (Cuts{16, 32, 64, 128, 256, 384}));
}

TEST(RampCutsTest, AShortFirstBlockLeavesTheRampToTheNextBlock) {
  // A resume 104 samples into a 128-sample block: its remainder is 24 samples.
  EXPECT_EQ(RampCuts({24, 152, 280}, 16, 128), (Cuts{16, 24, 32, 64, 128, 152, 280}));
  // A remainder shorter than the first cut.
  EXPECT_EQ(RampCuts({8, 136, 264}, 16, 128), (Cuts{8, 16, 32, 64, 128, 136, 264}));
}

TEST(RampCutsTest, TheRampStopsBelowTwiceTheBlockSize) {
  EXPECT_EQ(RampCuts({600, 1200}, 16, 128), (Cuts{16, 32, 64, 128, 600, 1200}));
  EXPECT_EQ(RampCuts({1000}, 100, 100), (Cuts{100, 1000}));
}

TEST(RampCutsTest, CutsAreTheCallersEndsPlusIncreasingRampCuts) {
  const Cuts ends = {3, 5, 40, 41, 42, 300};
  const Cuts cuts = RampCuts(ends, 4, 16);
  for (const int64_t e : ends) EXPECT_NE(std::find(cuts.begin(), cuts.end(), e), cuts.end()) << e;
  for (size_t i = 1; i < cuts.size(); ++i) EXPECT_LT(cuts[i - 1], cuts[i]);
  EXPECT_EQ(cuts, (Cuts{3, 4, 5, 8, 16, 40, 41, 42, 300}));
  EXPECT_TRUE(RampCuts({}, 16, 128).empty());
}

}  // namespace
}  // namespace rrl::engine
