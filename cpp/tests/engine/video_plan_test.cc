// Tests of rrloader/engine/video_plan.h: which GOPs and frames a block of video samples
// asks for. Streams are made up here (packet times and keyframes); no bytes are involved.
#include "rrloader/engine/video_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace rrl::engine {
namespace {

// Stream: packet times and keyframe flags, with the prior-keyframe table planning reads.
struct Stream {
  std::vector<int64_t> times;
  std::vector<int32_t> prior;

  Stream(std::vector<int64_t> t, const std::vector<bool>& key) : times(std::move(t)) {
    int32_t last = -1;
    for (size_t i = 0; i < times.size(); ++i) {
      if (key[i]) last = static_cast<int32_t>(i);
      prior.push_back(last);
    }
  }
  VideoStreamView View() const { return {times.data(), prior.data(), static_cast<int64_t>(times.size())}; }
};

// Regular: packets at 0, step, 2 step, ... with a keyframe every `gop` packets from `first_key`.
Stream Regular(int64_t count, int64_t step, int64_t gop, int64_t first_key = 0) {
  std::vector<int64_t> t;
  std::vector<bool> k;
  for (int64_t i = 0; i < count; ++i) {
    t.push_back(i * step);
    k.push_back(i >= first_key && (i - first_key) % gop == 0);
  }
  return Stream(t, k);
}

TEST(VideoPlan, LatestPacketAtOrBefore) {
  const Stream s({10, 20, 20, 30}, {true, false, false, false});
  EXPECT_EQ(LatestPacketAtOrBefore(s.View(), 9), -1);
  EXPECT_EQ(LatestPacketAtOrBefore(s.View(), 10), 0);
  EXPECT_EQ(LatestPacketAtOrBefore(s.View(), 19), 0);
  EXPECT_EQ(LatestPacketAtOrBefore(s.View(), 20), 2);  // ties: the last packet at that value
  EXPECT_EQ(LatestPacketAtOrBefore(s.View(), 1000), 3);
}

TEST(VideoPlan, SequentialSamplesShareTheirGops) {
  const Stream s = Regular(60, 1, 30);
  std::vector<int32_t> stream(40, 0);
  std::vector<int64_t> values;
  for (int64_t v = 10; v < 50; ++v) values.push_back(v);
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, stream, values, 1, 0);
  ASSERT_EQ(plan.gops.size(), 2u);
  EXPECT_EQ(plan.gops[0].keyframe, 0);
  EXPECT_EQ(plan.gops[0].wanted.front(), 10);
  EXPECT_EQ(plan.gops[0].wanted.back(), 29);
  EXPECT_EQ(plan.gops[0].last, 29);
  EXPECT_EQ(plan.gops[1].keyframe, 30);
  EXPECT_EQ(plan.gops[1].wanted.size(), 20u);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(plan.sample_missing[i], SlotMissing::kNone);
    EXPECT_EQ(plan.slots[i].position, values[i]);
    EXPECT_EQ(plan.slots[i].gop, values[i] < 30 ? 0 : 1);
  }
}

// ends_gop: a request that runs to the packet before the next keyframe ends its GOP (the
// decoder's cache gives its session up first); one that stops mid-GOP, or at the view's end
// (what follows is not known) or at a gap in the view, does not.
TEST(VideoPlan, RequestsKnowWhetherTheyEndTheirGop) {
  const Stream s = Regular(70, 1, 30);
  const std::vector<int32_t> stream(3, 0);
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, stream, {29, 35, 69}, 1, 0);
  ASSERT_EQ(plan.gops.size(), 3u);
  EXPECT_TRUE(plan.gops[0].ends_gop);   // 29, then keyframe 30
  EXPECT_FALSE(plan.gops[1].ends_gop);  // 35: mid-GOP
  EXPECT_FALSE(plan.gops[2].ends_gop);  // 69: the view's last packet
  // Lookahead that reaches the GOP's end ends it too.
  const VideoBlockPlan ahead = PlanVideoBlock({s.View()}, stream, {29, 55, 69}, 1, 8);
  EXPECT_TRUE(ahead.gops[0].ends_gop);
  EXPECT_EQ(ahead.gops[1].last, 59);
  EXPECT_TRUE(ahead.gops[1].ends_gop);
  // A gap in the view right after the request: not known.
  std::vector<uint8_t> continues(70, 1);
  continues[29] = 0;
  VideoStreamView gap = s.View();
  gap.continues = continues.data();
  EXPECT_FALSE(PlanVideoBlock({gap}, stream, {29, 35, 69}, 1, 0).gops[0].ends_gop);
}

TEST(VideoPlan, RepeatedAndShuffledSamplesAskForEachFrameOnce) {
  const Stream s = Regular(30, 10, 12);
  // A 50 Hz grid over 10-unit packets: several values map to the same packet.
  const std::vector<int64_t> values = {57, 50, 55, 59, 51, 230, 233, 121};
  const std::vector<int32_t> stream(values.size(), 0);
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, stream, values, 1, 0);
  ASSERT_EQ(plan.gops.size(), 2u);  // keyframes 0 and 12 (packets 5; 12 and 23)
  EXPECT_EQ(plan.gops[0].keyframe, 0);
  EXPECT_EQ(plan.gops[0].wanted, (std::vector<int64_t>{5}));
  EXPECT_EQ(plan.gops[0].slots, 5);
  EXPECT_EQ(plan.gops[1].keyframe, 12);
  EXPECT_EQ(plan.gops[1].wanted, (std::vector<int64_t>{12, 23}));
  EXPECT_EQ(plan.gops[1].slots, 3);
  EXPECT_EQ(plan.slots[5].position, 23);
  EXPECT_EQ(plan.slots[7].position, 12);
}

TEST(VideoPlan, WindowSlotsGroupByTheirOwnKeyframe) {
  const Stream s = Regular(40, 1, 10);
  // One sample at 21 with a window of 4 slots ending there: values 18..21 over two GOPs.
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0}, {18, 19, 20, 21}, 4, 0);
  ASSERT_EQ(plan.gops.size(), 2u);
  EXPECT_EQ(plan.gops[0].keyframe, 10);
  EXPECT_EQ(plan.gops[0].wanted, (std::vector<int64_t>{18, 19}));
  EXPECT_EQ(plan.gops[1].keyframe, 20);
  EXPECT_EQ(plan.gops[1].wanted, (std::vector<int64_t>{20, 21}));
  EXPECT_EQ(plan.slots[0].gop, 0);
  EXPECT_EQ(plan.slots[3].gop, 1);
  EXPECT_EQ(plan.slots[3].position, 21);
}

TEST(VideoPlan, OverlappingWindowsShareFrames) {
  const Stream s = Regular(30, 1, 30);
  // Two samples (5 and 6) with windows of 3 slots: 3..5 and 4..6 -> frames 3..6 once.
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0, 0}, {3, 4, 5, 4, 5, 6}, 3, 0);
  ASSERT_EQ(plan.gops.size(), 1u);
  EXPECT_EQ(plan.gops[0].wanted, (std::vector<int64_t>{3, 4, 5, 6}));
  EXPECT_EQ(plan.gops[0].slots, 6);
}

TEST(VideoPlan, BeforeTheFirstPacketIsMissing) {
  std::vector<int64_t> t = {100, 110, 120};
  const Stream s(t, {true, false, false});
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0, 0, 0}, {99, 100, 125}, 1, 0);
  EXPECT_EQ(plan.sample_missing[0], SlotMissing::kBeforeFirstPacket);
  EXPECT_EQ(plan.slots[0].gop, -1);
  EXPECT_EQ(plan.sample_missing[1], SlotMissing::kNone);
  EXPECT_EQ(plan.sample_missing[2], SlotMissing::kNone);
  ASSERT_EQ(plan.gops.size(), 1u);
  EXPECT_EQ(plan.gops[0].wanted, (std::vector<int64_t>{0, 2}));
}

TEST(VideoPlan, DataStartingMidGopHasNoKeyframe) {
  const Stream s = Regular(20, 1, 8, /*first_key=*/5);  // packets 0..4 precede any keyframe
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0, 0, 0}, {2, 4, 5}, 1, 0);
  EXPECT_EQ(plan.sample_missing[0], SlotMissing::kNoKeyframe);
  EXPECT_EQ(plan.sample_missing[1], SlotMissing::kNoKeyframe);
  EXPECT_EQ(plan.sample_missing[2], SlotMissing::kNone);
  ASSERT_EQ(plan.gops.size(), 1u);
  EXPECT_EQ(plan.gops[0].keyframe, 5);
}

TEST(VideoPlan, OneMissingSlotMakesTheSampleMissingAndRequestsNothing) {
  const Stream s = Regular(20, 1, 8, /*first_key=*/3);
  // The window 1..4: slots 1 and 2 have no keyframe, so the sample is missing and frames 3, 4
  // (which could decode) are not requested.
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0}, {1, 2, 3, 4}, 4, 0);
  EXPECT_EQ(plan.sample_missing[0], SlotMissing::kNoKeyframe);
  EXPECT_TRUE(plan.gops.empty());
  for (const auto& slot : plan.slots) EXPECT_EQ(slot.gop, -1);
}

TEST(VideoPlan, SamplesWithoutAStreamAreMissing) {
  const Stream s = Regular(10, 1, 5);
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {-1, 0}, {3, 3}, 1, 0);
  EXPECT_EQ(plan.sample_missing[0], SlotMissing::kBeforeFirstPacket);
  EXPECT_EQ(plan.sample_missing[1], SlotMissing::kNone);
}

TEST(VideoPlan, StreamsOfDifferentSegmentsNeverShareAGop) {
  const Stream a = Regular(30, 1, 30);
  const Stream b = Regular(30, 1, 30);
  const VideoBlockPlan plan = PlanVideoBlock({a.View(), b.View()}, {1, 0, 1, 0}, {4, 4, 7, 9}, 1, 0);
  ASSERT_EQ(plan.gops.size(), 2u);
  EXPECT_EQ(plan.gops[0].stream, 0);
  EXPECT_EQ(plan.gops[0].wanted, (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(plan.gops[1].stream, 1);
  EXPECT_EQ(plan.gops[1].wanted, (std::vector<int64_t>{4, 7}));
  EXPECT_EQ(plan.slots[0].gop, 1);
  EXPECT_EQ(plan.slots[1].gop, 0);
}

TEST(VideoPlan, LookaheadStaysInsideTheGop) {
  const Stream s = Regular(40, 1, 10);
  VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0, 0}, {2, 17}, 1, 4);
  ASSERT_EQ(plan.gops.size(), 2u);
  EXPECT_EQ(plan.gops[0].last, 6);   // 2 + 4
  EXPECT_EQ(plan.gops[1].last, 19);  // stops before the keyframe at 20
  plan = PlanVideoBlock({s.View()}, {0}, {39}, 1, 4);
  EXPECT_EQ(plan.gops[0].last, 39);  // stops at the end of the stream
}

TEST(VideoPlan, TiedPacketTimesUseTheLastPacket) {
  // Two packets logged at the same value 10 (a keyframe and a later one).
  const Stream s({0, 10, 10, 20}, {true, false, false, false});
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {0, 0}, {10, 15}, 1, 0);
  ASSERT_EQ(plan.gops.size(), 1u);
  EXPECT_EQ(plan.gops[0].wanted, (std::vector<int64_t>{2}));
  EXPECT_EQ(plan.slots[0].position, 2);
  EXPECT_EQ(plan.slots[1].position, 2);
}

TEST(VideoPlan, EmptyBlock) {
  const Stream s = Regular(5, 1, 5);
  const VideoBlockPlan plan = PlanVideoBlock({s.View()}, {}, {}, 3, 2);
  EXPECT_TRUE(plan.gops.empty());
  EXPECT_TRUE(plan.slots.empty());
  EXPECT_TRUE(plan.sample_missing.empty());
}

}  // namespace
}  // namespace rrl::engine
