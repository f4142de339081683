// Tests of the numpy-exact generator and the emission buffer. The known-answer vectors were
// printed by numpy 2.4 / rerun-sdk 0.41 with the Python line quoted above each one;
// tests/python/test_numpy_random.py checks the same functions against numpy live, over many
// more inputs.
#include "rrloader/sample/numpy_random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "rrloader/sample/emission_buffer.h"

namespace rrl::sample {
namespace {

NumpyGenerator Rng(std::vector<uint64_t> ints) {
  return NumpyGenerator::FromInts(ints);
}

TEST(NumpyRandom, SeedWordsSplitLikeNumpy) {
  EXPECT_EQ(SeedWordsFromInt(0), (std::vector<uint32_t>{0}));
  EXPECT_EQ(SeedWordsFromInt(0xFFFFFFFFu), (std::vector<uint32_t>{0xFFFFFFFFu}));
  EXPECT_EQ(SeedWordsFromInt(0x100000000ull), (std::vector<uint32_t>{0, 1}));
  const std::vector<uint64_t> ints = {(1ull << 40) + 7, 0, 9};
  EXPECT_EQ(SeedWordsFromInts(ints), (std::vector<uint32_t>{7, 256, 0, 9}));
  EXPECT_TRUE(SeedWordsFromInts({}).empty());
}

TEST(NumpyRandom, SeedSequenceKnownAnswers) {
  // np.random.SeedSequence(12345).pool
  EXPECT_EQ(SeedSequence(SeedWordsFromInt(12345)).pool(),
            (std::array<uint32_t, 4>{4069775156u, 4251353637u, 4182767765u, 2267058336u}));
  // np.random.SeedSequence([1, 2, 3]).generate_state(4, np.uint64)
  const std::vector<uint64_t> ints = {1, 2, 3};
  EXPECT_EQ(SeedSequence(SeedWordsFromInts(ints)).GenerateState64(4),
            (std::vector<uint64_t>{12997252459554536576ull, 4810247055756232647ull, 1222713447732757573ull,
                                   10992519347067621260ull}));
  // np.random.SeedSequence([2**40 + 7, 0, 9, 1, 2]).generate_state(3)  (more words than the pool)
  const std::vector<uint64_t> wide = {(1ull << 40) + 7, 0, 9, 1, 2};
  EXPECT_EQ(SeedSequence(SeedWordsFromInts(wide)).GenerateState32(3),
            (std::vector<uint32_t>{2198295324u, 630295632u, 775008546u}));
  // np.random.SeedSequence([]).generate_state(2)
  EXPECT_EQ(SeedSequence({}).GenerateState32(2), (std::vector<uint32_t>{2968811710u, 3677149159u}));
}

TEST(NumpyRandom, Pcg64SeedingKnownAnswer) {
  // np.random.default_rng([3, 1, 2]).bit_generator.state  (128-bit values in hex halves)
  const Pcg64State s = Rng({3, 1, 2}).bit_generator().state();
  EXPECT_EQ(s.state_high, 0x594a1a85b2b7a857ull);
  EXPECT_EQ(s.state_low, 0x4a87dad4ae3d5c66ull);
  EXPECT_EQ(s.inc_high, 0x9888e1bef81a1b9dull);
  EXPECT_EQ(s.inc_low, 0x1fff775fbd18047bull);
  EXPECT_FALSE(s.has_uint32);
}

TEST(NumpyRandom, IntegersKnownAnswers) {
  // r = np.random.default_rng([3, 1, 2]);
  // [int(r.integers(k)) for k in [1, 2, 10, 2**31, 2**32-1, 2**32, 2**32+1, 2**62, 7]]
  const std::vector<int64_t> highs = {1, 2, 10, 1ll << 31, (1ll << 32) - 1, 1ll << 32, (1ll << 32) + 1, 1ll << 62, 7};
  const std::vector<int64_t> want = {0, 1, 4, 43957181, 3090334023, 2918693621, 1165448875, 1879388674594346270, 1};
  NumpyGenerator rng = Rng({3, 1, 2});
  for (size_t i = 0; i < highs.size(); ++i) {
    auto v = rng.Integers(highs[i]);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, want[i]) << "draw " << i << " high " << highs[i];
  }
  // r = np.random.default_rng(2**64 - 1); [int(r.integers(k)) for k in [5, 2**63 - 1, 3]]
  NumpyGenerator big = NumpyGenerator::FromSeed(UINT64_MAX);
  EXPECT_EQ(big.Integers(5).value(), 2);
  EXPECT_EQ(big.Integers(INT64_MAX).value(), 7796624836349661611ll);
  EXPECT_EQ(big.Integers(3).value(), 2);
}

TEST(NumpyRandom, IntegersOfOneDrawsNothing) {
  NumpyGenerator a = NumpyGenerator::FromSeed(7);
  NumpyGenerator b = NumpyGenerator::FromSeed(7);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.Integers(1).value(), 0);
  EXPECT_EQ(a.Integers(1000).value(), b.Integers(1000).value());
}

TEST(NumpyRandom, ThirtyTwoBitDrawsShareOneSixtyFourBitDraw) {
  // Two 32-bit-range draws consume one 64-bit output (low half, then the buffered high half).
  NumpyGenerator a = NumpyGenerator::FromSeed(99);
  Pcg64 raw = NumpyGenerator::FromSeed(99).bit_generator();
  const uint64_t word = raw.Next64();
  EXPECT_EQ(a.BoundedInclusive(0xFFFFFFFFu), word & 0xFFFFFFFFu);
  EXPECT_TRUE(a.bit_generator().state().has_uint32);
  EXPECT_EQ(a.BoundedInclusive(0xFFFFFFFFu), word >> 32);
  EXPECT_FALSE(a.bit_generator().state().has_uint32);
  // A 64-bit draw leaves a buffered half in place.
  (void)a.BoundedInclusive(0xFFFFFFFFu);
  (void)a.BoundedInclusive(1ull << 40);
  EXPECT_TRUE(a.bit_generator().state().has_uint32);
}

TEST(NumpyRandom, IntegersRejectsNonPositiveHigh) {
  NumpyGenerator rng = NumpyGenerator::FromSeed(0);
  EXPECT_EQ(rng.Integers(0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(rng.Integers(-3).status().code(), StatusCode::kInvalidArgument);
}

TEST(NumpyRandom, PermutationKnownAnswerAndEdges) {
  // np.random.default_rng(42).permutation(10)
  auto p = NumpyGenerator::FromSeed(42).Permutation(10);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (std::vector<int64_t>{5, 6, 0, 7, 3, 2, 4, 9, 1, 8}));
  EXPECT_TRUE(NumpyGenerator::FromSeed(1).Permutation(0)->empty());
  EXPECT_EQ(NumpyGenerator::FromSeed(1).Permutation(1).value(), (std::vector<int64_t>{0}));
  EXPECT_EQ(NumpyGenerator::FromSeed(1).Permutation(-1).status().code(), StatusCode::kInvalidArgument);
  auto big = NumpyGenerator::FromSeed(3).Permutation(5000);
  ASSERT_TRUE(big.ok());
  std::vector<int64_t> sorted = *big;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 5000; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
}

TEST(EmissionBuffer, EmitOrderKnownAnswers) {
  // ShuffleBuffer(4).emit_order(10, rng=np.random.default_rng([0, 0, 0]))
  auto a = EmitOrder(10, 4, std::nullopt, Rng({0, 0, 0}));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (std::vector<int64_t>{1, 2, 4, 3, 6, 0, 8, 9, 5, 7}));
  // ShuffleBuffer(3, min_fill=3).emit_order(9, rng=np.random.default_rng([5, 0, 1]))
  auto b = EmitOrder(9, 3, 3, Rng({5, 0, 1}));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<int64_t>{2, 3, 1, 4, 6, 7, 8, 0, 5}));
}

TEST(EmissionBuffer, StreamingEqualsEmitOrderAndEmitsEveryIdOnce) {
  for (int64_t buffer_size : {2, 3, 5, 16}) {
    for (std::optional<int64_t> min_fill :
         {std::optional<int64_t>(), std::optional<int64_t>(1), std::optional<int64_t>(buffer_size)}) {
      for (int64_t n : {0, 1, 2, 3, 4, 7, 33, 100}) {
        SCOPED_TRACE(testing::Message() << "n=" << n << " buffer_size=" << buffer_size
                                        << " min_fill=" << min_fill.value_or(-1));
        const std::vector<uint64_t> seed = {static_cast<uint64_t>(n), 1, static_cast<uint64_t>(buffer_size)};
        auto want = EmitOrder(n, buffer_size, min_fill, Rng(seed));
        ASSERT_TRUE(want.ok());
        auto buffer = EmissionBuffer::Make(buffer_size, min_fill, Rng(seed));
        ASSERT_TRUE(buffer.ok());
        std::vector<int64_t> got;
        for (int64_t i = 0; i < n; ++i) {
          auto emitted = buffer->Push(100 + i);  // ids need not be positions
          ASSERT_TRUE(emitted.ok());
          ASSERT_LE(buffer->size(), buffer_size - 1);
          if (emitted->has_value()) got.push_back(**emitted - 100);
        }
        auto rest = buffer->Finish();
        ASSERT_TRUE(rest.ok());
        for (int64_t id : *rest) got.push_back(id - 100);
        EXPECT_EQ(got, *want);
        EXPECT_EQ(buffer->size(), 0);
        std::sort(got.begin(), got.end());
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[static_cast<size_t>(i)], i);
      }
    }
  }
}

TEST(EmissionBuffer, WarmUpFollowsTheExtraPull) {
  // Every item push below capacity waits for its extra pull; emission starts once min_fill ids
  // are held, at the extra pull (the reference's `next(items)` inside the loop).
  auto buffer = EmissionBuffer::Make(8, std::nullopt, NumpyGenerator::FromSeed(1));  // min_fill 4
  ASSERT_TRUE(buffer.ok());
  EXPECT_EQ(buffer->min_fill(), 4);
  std::vector<bool> emitted;
  for (int64_t i = 0; i < 8; ++i) emitted.push_back(buffer->Push(i)->has_value());
  EXPECT_EQ(emitted, (std::vector<bool>{false, false, false, true, false, true, false, true}));
  // Four emitted of eight pushed: the buffer keeps growing toward capacity.
  EXPECT_EQ(buffer->size(), 5);
}

TEST(EmissionBuffer, FinishInEitherStateDrainsEverything) {
  for (int64_t n : {1, 2, 3, 4, 5}) {
    auto buffer = EmissionBuffer::Make(16, 16, NumpyGenerator::FromSeed(5));
    ASSERT_TRUE(buffer.ok());
    for (int64_t i = 0; i < n; ++i) ASSERT_FALSE(buffer->Push(i)->has_value());
    auto rest = buffer->Finish();
    ASSERT_TRUE(rest.ok());
    EXPECT_EQ(static_cast<int64_t>(rest->size()), n);
  }
}

TEST(EmissionBuffer, RejectsBadArgumentsAndUseAfterFinish) {
  const auto seed = NumpyGenerator::FromSeed(0);
  EXPECT_EQ(EmissionBuffer::Make(1, std::nullopt, seed).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EmissionBuffer::Make(0, std::nullopt, seed).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EmissionBuffer::Make(4, 0, seed).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EmissionBuffer::Make(4, 5, seed).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(EmissionBuffer::Make(4, 4, seed).ok());
  EXPECT_TRUE(EmissionBuffer::Make(2, 1, seed).ok());
  EXPECT_EQ(EmissionBuffer::Make(2, std::nullopt, seed)->min_fill(), 1);
  EXPECT_EQ(EmitOrder(-1, 4, std::nullopt, seed).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EmitOrder(3, 1, std::nullopt, seed).status().code(), StatusCode::kInvalidArgument);

  auto buffer = EmissionBuffer::Make(4, std::nullopt, seed);
  ASSERT_TRUE(buffer.ok());
  ASSERT_TRUE(buffer->Push(0).ok());
  ASSERT_TRUE(buffer->Finish().ok());
  EXPECT_TRUE(buffer->finished());
  EXPECT_EQ(buffer->Push(1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(buffer->Finish().status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rrl::sample
