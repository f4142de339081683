// Tests of rrloader/engine/emitter.h: the explicit emission order (a manifest's emit_rank) and
// required fields (a manifest replay's strictness). Blocks are made up here: one int64 field
// whose value is the sample's fetch position, so what comes out says where it came from.
#include "rrloader/engine/emitter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace rrl::engine {
namespace {

// MakeBlock: samples `first`..`first + n - 1` (fetch positions), one int64 field [1] holding the
// position, and a second uint8 field [2] valid unless the position is in `missing_second`.
Block MakeBlock(int64_t first, int64_t n, const std::vector<int64_t>& missing_second = {}) {
  Block b;
  b.fields.resize(2);
  FieldOutput& a = b.fields[0];
  a.dtype = decode::DType::kInt64;
  a.data = std::shared_ptr<uint8_t[]>(new uint8_t[static_cast<size_t>(std::max<int64_t>(n, 1) * 8)]);
  a.uniform = true;
  FieldOutput& c = b.fields[1];
  c.dtype = decode::DType::kUInt8;
  c.data = std::shared_ptr<uint8_t[]>(new uint8_t[static_cast<size_t>(std::max<int64_t>(n, 1) * 2)]);
  c.uniform = true;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = first + i;
    b.global.push_back(1000 + p);
    b.segment_pos.push_back(static_cast<int32_t>(p % 3));
    b.values.push_back(10 * p);
    b.positions.push_back(p);
    std::memcpy(a.data.get() + i * 8, &p, 8);
    a.offsets.push_back(i * 8);
    a.shapes.push_back({1});
    a.valid.push_back(1);
    const bool gone = std::find(missing_second.begin(), missing_second.end(), p) != missing_second.end();
    c.data[static_cast<size_t>(2 * i)] = static_cast<uint8_t>(p);
    c.data[static_cast<size_t>(2 * i + 1)] = 7;
    c.offsets.push_back(i * 2);
    c.shapes.push_back({2});
    c.valid.push_back(gone ? 0 : 1);
    b.emit.push_back(static_cast<int32_t>(i));
  }
  return b;
}

// Positions: the fetch positions of an output block's samples, in the order handed out (read
// from the data, so a copy in the store must carry the right bytes).
std::vector<int64_t> Positions(const Block& b) {
  std::vector<int64_t> out;
  const FieldOutput& a = b.fields[0];
  for (int32_t i : b.emit) {
    const auto k = static_cast<size_t>(i);
    const uint8_t* src = a.sample_data.empty() ? a.data.get() + a.offsets[k] : a.sample_data[k].get();
    int64_t p = 0;
    std::memcpy(&p, src, 8);
    EXPECT_EQ(b.global[k], 1000 + p);
    EXPECT_EQ(b.values[k], 10 * p);
    out.push_back(p);
  }
  return out;
}

// Emit: the blocks of sizes `sizes` through an emitter with `options`; every position handed out.
std::vector<int64_t> Emit(const EmitOptions& options, const std::vector<int64_t>& sizes, std::vector<Block>* outs,
                          const std::vector<int64_t>& missing_second = {}) {
  auto e = Emitter::Make(options, 2, BufferPool::Make(0));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  std::vector<int64_t> out;
  int64_t first = 0;
  for (int64_t n : sizes) {
    std::vector<Block> blocks;
    EXPECT_TRUE((*e)->Process(MakeBlock(first, n, missing_second), &blocks).ok());
    first += n;
    for (auto& b : blocks) {
      for (int64_t p : Positions(b)) out.push_back(p);
      outs->push_back(std::move(b));
    }
    if ((*e)->stopped()) break;
  }
  std::vector<Block> rest;
  EXPECT_TRUE((*e)->Finish(&rest).ok());
  EXPECT_TRUE(rest.empty());
  return out;
}

TEST(EmitterOrder, FollowsTheGivenOrderWhateverTheBlocks) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 60);
    EmitOptions o;
    o.emit_order.resize(static_cast<size_t>(n));
    std::iota(o.emit_order.begin(), o.emit_order.end(), 0);
    // A window-bounded shuffle (like a buffer's) half the time, a full one otherwise.
    if (trial % 2 == 0) {
      for (size_t i = 0; i + 1 < o.emit_order.size(); ++i) {
        const size_t j = i + rng() % std::min<size_t>(5, o.emit_order.size() - i);
        std::swap(o.emit_order[i], o.emit_order[j]);
      }
    } else {
      std::shuffle(o.emit_order.begin(), o.emit_order.end(), rng);
    }
    std::vector<int64_t> sizes;
    for (int64_t left = n; left > 0;) {
      const int64_t s = std::min<int64_t>(left, 1 + static_cast<int64_t>(rng() % 9));
      sizes.push_back(s);
      left -= s;
    }
    std::vector<Block> outs;
    EXPECT_EQ(Emit(o, sizes, &outs), o.emit_order) << "trial " << trial;
    EXPECT_EQ(outs.back().emitted.buffered, 0);
    EXPECT_EQ(outs.back().emitted.buffered_bytes, 0);
  }
}

TEST(EmitterOrder, AnOrderWithinEachBlockPassesTheBlocksThrough) {
  EmitOptions o;
  o.emit_order = {2, 0, 1, 3, 5, 4};
  std::vector<Block> outs;
  EXPECT_EQ(Emit(o, {3, 3}, &outs), o.emit_order);
  ASSERT_EQ(outs.size(), 2u);
  for (const Block& b : outs) {
    EXPECT_TRUE(b.fields[0].sample_data.empty());  // the decoded block itself, no copy
    EXPECT_EQ(b.emitted.buffered, 0);
  }
  EXPECT_EQ(outs[0].emit, (std::vector<int32_t>{2, 0, 1}));
}

TEST(EmitterOrder, SamplesWaitingForTheirTurnAreHeldAndCounted) {
  EmitOptions o;
  o.emit_order = {3, 0, 1, 2, 4, 5};
  std::vector<Block> outs;
  EXPECT_EQ(Emit(o, {2, 2, 2}, &outs), o.emit_order);
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_TRUE(outs[0].emit.empty());
  EXPECT_EQ(outs[0].emitted.buffered, 2);             // 0 and 1 wait for 3
  EXPECT_EQ(outs[0].emitted.buffered_bytes, 2 * 10);  // 8 + 2 bytes each
  EXPECT_EQ(outs[1].emitted.buffered, 0);
  EXPECT_FALSE(outs[1].fields[0].sample_data.empty());  // gathered from the store
}

TEST(EmitterOrder, RejectsWhatIsNotAPermutationOrMixesStages) {
  EmitOptions o;
  o.emit_order = {0, 2, 2};
  EXPECT_EQ(Emitter::Make(o, 2, BufferPool::Make(0)).status().code(), StatusCode::kInvalidArgument);
  o.emit_order = {0, 3, 1};
  EXPECT_EQ(Emitter::Make(o, 2, BufferPool::Make(0)).status().code(), StatusCode::kInvalidArgument);
  o.emit_order = {1, 0};
  o.buffer_size = 4;
  EXPECT_EQ(Emitter::Make(o, 2, BufferPool::Make(0)).status().code(), StatusCode::kInvalidArgument);
  o.buffer_size = 0;
  o.skip_incomplete = true;
  EXPECT_EQ(Emitter::Make(o, 2, BufferPool::Make(0)).status().code(), StatusCode::kInvalidArgument);
  EmitOptions r;
  r.required = {1};
  EXPECT_EQ(Emitter::Make(r, 2, BufferPool::Make(0)).status().code(), StatusCode::kInvalidArgument);
}

TEST(EmitterOrder, FinishReportsAnOrderTheInputNeverCompleted) {
  EmitOptions o;
  o.emit_order = {1, 0, 2};
  auto e = Emitter::Make(o, 2, BufferPool::Make(0));
  ASSERT_TRUE(e.ok());
  std::vector<Block> blocks;
  ASSERT_TRUE((*e)->Process(MakeBlock(0, 2), &blocks).ok());
  EXPECT_EQ((*e)->Finish(&blocks).code(), StatusCode::kInternal);
}

TEST(EmitterRequired, StopsAtTheFirstSampleLackingARequiredField) {
  // Fetch positions 0..9 in blocks of 4; position 6 lacks field 1 (required).
  EmitOptions o;
  o.required = {0, 1};
  std::vector<Block> outs;
  EXPECT_EQ(Emit(o, {4, 4, 2}, &outs, {6}), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  const EmitStats& s = outs.back().emitted;
  EXPECT_TRUE(s.required_missing);
  EXPECT_EQ(s.missing_global, 1006);
  EXPECT_EQ(s.missing_segment, 0);
  EXPECT_EQ(s.missing_value, 60);
  EXPECT_EQ(s.missing_fields, (std::vector<int64_t>{1}));
  // Not required: the sample goes out with the field missing.
  o.required = {1, 0};
  outs.clear();
  EXPECT_EQ(Emit(o, {4, 4, 2}, &outs, {6}).size(), 10u);
  EXPECT_FALSE(outs.back().emitted.required_missing);
}

TEST(EmitterRequired, WithAnOrderHandsOutOnlyWhatPrecededTheFailure) {
  // rerun 0.41's replay pulls samples in fetch order and fails on pulling the bad one: what it
  // yielded is the prefix of the emission order whose positions all came before it.
  EmitOptions o;
  o.emit_order = {1, 0, 3, 6, 2, 4, 5, 7};
  o.required = {0, 1};
  std::vector<Block> outs;
  EXPECT_EQ(Emit(o, {3, 3, 2}, &outs, {5}), (std::vector<int64_t>{1, 0, 3}));
  EXPECT_TRUE(outs.back().emitted.required_missing);
  EXPECT_EQ(outs.back().emitted.missing_value, 50);
}

TEST(EmitterSkip, FirstSkippedSaysWhichDropFirstLackedEachField) {
  // rerun 0.41 warns once per field, when it first drops a sample lacking it; first_skipped
  // (1-based drop number, 0: never) lets the front end warn in that order.
  EmitOptions o;
  o.skip_incomplete = true;
  auto e = Emitter::Make(o, 2, BufferPool::Make(0));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  std::vector<Block> out;
  // Block 1, positions 0..4: position 1 lacks field 1, position 3 lacks both.
  Block b = MakeBlock(0, 5, {1, 3});
  b.fields[0].valid[3] = 0;
  ASSERT_TRUE((*e)->Process(std::move(b), &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Positions(out[0]), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(out[0].emitted.skipped, 2);
  EXPECT_EQ(out[0].emitted.skipped_by_field, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(out[0].emitted.first_skipped, (std::vector<int64_t>{2, 1}));
  // Block 2, positions 5..7: position 6 lacks field 0 only; the first drops stay.
  Block c = MakeBlock(5, 3);
  c.fields[0].valid[1] = 0;
  ASSERT_TRUE((*e)->Process(std::move(c), &out).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(Positions(out[1]), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(out[1].emitted.total_skipped, 3);
  EXPECT_EQ(out[1].emitted.total_skipped_by_field, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(out[1].emitted.first_skipped, (std::vector<int64_t>{2, 1}));
}

TEST(EmitterSkip, TheSkipLimitStopCarriesFirstSkipped) {
  EmitOptions o;
  o.skip_incomplete = true;
  o.max_consecutive_skips = 1;
  auto e = Emitter::Make(o, 2, BufferPool::Make(0));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  std::vector<Block> out;
  // Positions 2 and 3 lack field 1: the second drop in a row exceeds the limit of 1.
  ASSERT_TRUE((*e)->Process(MakeBlock(0, 6, {2, 3}), &out).ok());
  ASSERT_EQ(out.size(), 1u);
  const EmitStats& s = out[0].emitted;
  EXPECT_TRUE(s.skip_limit_exceeded);
  EXPECT_TRUE((*e)->stopped());
  EXPECT_EQ(s.consecutive_skipped, 2);
  EXPECT_EQ(s.first_skipped, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(Positions(out[0]), (std::vector<int64_t>{0, 1}));
}

}  // namespace
}  // namespace rrl::engine
