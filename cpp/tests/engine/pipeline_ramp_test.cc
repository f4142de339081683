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

TEST(PieceEndTest, PiecesOfNearlyEqualSizeWithoutATinyRemainder) {
  // 128 samples in pieces of at most 34: four pieces of 32, not 34, 34, 34, 26.
  int64_t begin = 0;
  Cuts ends;
  while (begin < 128) ends.push_back(begin = PieceEnd(begin, 128, 34));
  EXPECT_EQ(ends, (Cuts{32, 64, 96, 128}));
  // From inside a block, and an uneven split: 10 samples, at most 4 -> 4, 3, 3.
  EXPECT_EQ(PieceEnd(100, 110, 4), 104);
  EXPECT_EQ(PieceEnd(104, 110, 4), 107);
  EXPECT_EQ(PieceEnd(107, 110, 4), 110);
}

TEST(PieceEndTest, NoCapOrAShortRestIsTheWholeRest) {
  EXPECT_EQ(PieceEnd(5, 133, 0), 133);
  EXPECT_EQ(PieceEnd(5, 133, -1), 133);
  EXPECT_EQ(PieceEnd(5, 9, 8), 9);
  EXPECT_EQ(PieceEnd(0, 1, 1), 1);
}

}  // namespace
}  // namespace rrl::engine
