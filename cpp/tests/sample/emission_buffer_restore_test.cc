// EmissionBuffer::Restore and Pcg64::FromState: a buffer rebuilt from a running one's state
// emits what the running one would have.
#include <gtest/gtest.h>

#include <vector>

#include "rrloader/sample/emission_buffer.h"

namespace rrl::sample {
namespace {

std::vector<int64_t> PushAll(EmissionBuffer& b, int64_t from, int64_t to) {
  std::vector<int64_t> out;
  for (int64_t id = from; id < to; ++id) {
    auto e = b.Push(id);
    EXPECT_TRUE(e.ok());
    if (e.ok() && e->has_value()) out.push_back(**e);
  }
  auto rest = b.Finish();
  EXPECT_TRUE(rest.ok());
  out.insert(out.end(), rest->begin(), rest->end());
  return out;
}

TEST(EmissionBufferRestore, ContinuesExactly) {
  for (int64_t cut : {0, 1, 2, 3, 7, 20, 57, 99}) {
    auto whole = EmissionBuffer::Make(16, std::nullopt, NumpyGenerator::FromInts(std::vector<uint64_t>{3, 1, 0}));
    ASSERT_TRUE(whole.ok());
    const std::vector<int64_t> expected = PushAll(*whole, 0, 100);

    auto first = EmissionBuffer::Make(16, std::nullopt, NumpyGenerator::FromInts(std::vector<uint64_t>{3, 1, 0}));
    ASSERT_TRUE(first.ok());
    std::vector<int64_t> got;
    for (int64_t id = 0; id < cut; ++id) {
      auto e = first->Push(id);
      ASSERT_TRUE(e.ok());
      if (e->has_value()) got.push_back(**e);
    }
    auto second = EmissionBuffer::Restore(16, std::nullopt,
                                          NumpyGenerator(Pcg64::FromState(first->generator().bit_generator().state())),
                                          first->held(), first->awaiting_extra());
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    const std::vector<int64_t> rest = PushAll(*second, cut, 100);
    got.insert(got.end(), rest.begin(), rest.end());
    EXPECT_EQ(got, expected) << "cut " << cut;
  }
}

TEST(EmissionBufferRestore, RefusesAFullBuffer) {
  std::vector<int64_t> held(16);
  EXPECT_FALSE(EmissionBuffer::Restore(16, std::nullopt, NumpyGenerator::FromSeed(0), held, false).ok());
}

}  // namespace
}  // namespace rrl::sample
