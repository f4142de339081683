// Tests of rrloader/store/chunk_cache.h: TimeIndexes (cells sorted by time and row id, nulls
// left out) and how the cache keeps them: built once per cached chunk, counted in its bytes,
// dropped with it, never kept for a chunk it does not hold.
#include "rrloader/store/chunk_cache.h"

#include <gtest/gtest.h>

#include "tests/chunk/make_chunk.h"

namespace rrl::store {
namespace {

std::shared_ptr<const chunk::Chunk> MakeChunk(std::vector<int64_t> frames,
                                              std::vector<std::optional<std::vector<double>>> values,
                                              std::string id = "c") {
  testing::ChunkSpec s;
  s.chunk_id = std::move(id);
  s.frames = std::move(frames);
  s.values = std::move(values);
  return chunk::Chunk::FromRecordBatch(testing::MakeChunkBatch(s), "test").value();
}

std::vector<std::pair<int64_t, int64_t>> Cells(const TimeIndex& index) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& c : index.cells) out.emplace_back(c.time, c.row);
  return out;
}

TEST(TimeIndex, SortedByTimeThenRowIdWithoutNulls) {
  // Rows 0..4 have increasing row ids; frames out of order, a tie at 5, a null at row 1.
  auto c = MakeChunk({5, 1, 9, 3, 5}, {std::vector<double>{0}, std::nullopt, std::vector<double>{2},
                                       std::vector<double>{3}, std::vector<double>{4}});
  auto index = BuildTimeIndex(*c, "frame", "Scalars:scalars");
  EXPECT_EQ(Cells(*index), (std::vector<std::pair<int64_t, int64_t>>{{3, 3}, {5, 0}, {5, 4}, {9, 2}}));
  // A timeline or component the chunk lacks: empty.
  EXPECT_TRUE(BuildTimeIndex(*c, "time", "Scalars:scalars")->cells.empty());
  EXPECT_TRUE(BuildTimeIndex(*c, "frame", "Clear:is_recursive")->cells.empty());
}

TEST(ChunkCache, AnIndexIsBuiltOncePerCachedChunkAndCountedInItsBytes) {
  ChunkCache cache(1 << 20);
  auto c = MakeChunk({0, 1, 2}, {std::vector<double>{0}, std::vector<double>{1}, std::vector<double>{2}});
  cache.Put("k", c);
  EXPECT_EQ(cache.size_bytes(), c->ByteSize());
  auto a = cache.Index(c, "frame", "Scalars:scalars");
  auto b = cache.Index(c, "frame", "Scalars:scalars");
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(cache.index_builds(), 1);
  EXPECT_GT(cache.size_bytes(), c->ByteSize() + a->ByteSize() - 1);
  // Another (timeline, component): another index.
  (void)cache.Index(c, "frame", "Clear:is_recursive");
  EXPECT_EQ(cache.index_builds(), 2);
}

TEST(ChunkCache, ContainsCountsNothingAndKeepsTheOrder) {
  auto a = MakeChunk({0}, {std::vector<double>{0}}, "a");
  auto b = MakeChunk({0}, {std::vector<double>{1}}, "b");
  ChunkCache cache(a->ByteSize() + b->ByteSize());
  cache.Put("a", a);
  cache.Put("b", b);
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_FALSE(cache.Contains("c"));
  EXPECT_EQ(cache.hits(), 0);
  EXPECT_EQ(cache.misses(), 0);
  // "a" is still the least recently used: a third chunk evicts it, not "b".
  cache.Put("c", MakeChunk({0}, {std::vector<double>{2}}, "c"));
  EXPECT_FALSE(cache.Contains("a"));
  EXPECT_TRUE(cache.Contains("b"));
}

TEST(ChunkCache, AChunkItDoesNotHoldGetsAFreshIndexEachTime) {
  ChunkCache cache(1 << 20);
  auto c = MakeChunk({0, 1}, {std::vector<double>{0}, std::vector<double>{1}});
  auto a = cache.Index(c, "frame", "Scalars:scalars");
  auto b = cache.Index(c, "frame", "Scalars:scalars");
  EXPECT_NE(a.get(), b.get());
  EXPECT_EQ(Cells(*a), Cells(*b));
  EXPECT_EQ(cache.index_builds(), 2);
  EXPECT_EQ(cache.size_bytes(), 0);
}

TEST(ChunkCache, IndexesGoWithTheirChunkAndTheCapacityHolds) {
  auto a =
      MakeChunk({0, 1, 2, 3},
                {std::vector<double>{0}, std::vector<double>{1}, std::vector<double>{2}, std::vector<double>{3}}, "a");
  auto b =
      MakeChunk({0, 1, 2, 3},
                {std::vector<double>{0}, std::vector<double>{1}, std::vector<double>{2}, std::vector<double>{3}}, "b");
  // Room for one chunk and its index, not two chunks.
  ChunkCache probe(1 << 20);
  probe.Put("a", a);
  (void)probe.Index(a, "frame", "Scalars:scalars");
  const int64_t one = probe.size_bytes() + b->ByteSize() / 2;
  ChunkCache cache(one);
  cache.Put("a", a);
  (void)cache.Index(a, "frame", "Scalars:scalars");
  EXPECT_LE(cache.size_bytes(), one);
  cache.Put("b", b);  // evicts a, and a's index with it
  EXPECT_EQ(cache.Get("a"), nullptr);
  EXPECT_EQ(cache.size_bytes(), b->ByteSize());
  (void)cache.Index(a, "frame", "Scalars:scalars");  // a is gone: built, not kept
  EXPECT_EQ(cache.size_bytes(), b->ByteSize());
  EXPECT_EQ(cache.index_builds(), 2);
  // An index that does not fit next to its chunk evicts older entries, never past the capacity.
  ChunkCache tight(b->ByteSize());
  tight.Put("b", b);
  (void)tight.Index(b, "frame", "Scalars:scalars");
  EXPECT_LE(tight.size_bytes(), b->ByteSize());
}

}  // namespace
}  // namespace rrl::store
