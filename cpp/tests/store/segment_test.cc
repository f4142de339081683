// Tests of rrloader/store/: resident segments (Segment::FromChunks).
#include "rrloader/store/segment.h"

#include <gtest/gtest.h>

#include "tests/chunk/make_chunk.h"

namespace rrl::store {
namespace {

std::shared_ptr<const chunk::Chunk> MakeChunk(const testing::ChunkSpec& s) {
  return chunk::Chunk::FromRecordBatch(testing::MakeChunkBatch(s), "test").value();
}

TEST(SegmentFromChunks, IndexColumnsAndRanges) {
  testing::ChunkSpec a;
  a.chunk_id = "chunk_a";
  a.frames = {3, 1};
  a.values = {std::vector<double>{1}, std::vector<double>{2}};
  testing::ChunkSpec b = a;
  b.chunk_id = "chunk_b";
  b.frames = {7};
  b.values = {std::vector<double>{3}};
  testing::ChunkSpec st = a;
  st.chunk_id = "chunk_static";
  st.is_static = true;
  st.frames.clear();
  st.values = {std::vector<double>{42}};
  auto ca = MakeChunk(a), cb = MakeChunk(b), cs = MakeChunk(st);
  auto seg = Segment::FromChunks("seg_1", "app", {ca, cb, cs}, "remote test").value();

  EXPECT_EQ(seg->id(), "seg_1");
  EXPECT_EQ(seg->source_name(), "remote test");
  ASSERT_EQ(seg->chunks().size(), 3u);
  EXPECT_EQ(seg->chunks()[0].entity_path, "/robot/state");
  EXPECT_EQ(seg->chunks()[0].num_rows, 2u);
  EXPECT_FALSE(seg->chunks()[0].is_static);
  EXPECT_TRUE(seg->chunks()[2].is_static);
  ASSERT_EQ(seg->chunks()[0].ranges.size(), 1u);
  EXPECT_EQ(seg->chunks()[0].ranges[0].min, 1);
  EXPECT_EQ(seg->chunks()[0].ranges[0].max, 3);
  const auto& frame = seg->index_ranges().at("frame");
  EXPECT_EQ(frame.min, 1);
  EXPECT_EQ(frame.max, 7);
  const auto& col = seg->columns().at({"/robot/state", "Scalars:scalars"});
  EXPECT_TRUE(col.is_static);
  EXPECT_FALSE(col.semantically_empty);
  EXPECT_EQ(seg->EntityPaths(), std::vector<std::string>{"/robot/state"});
  EXPECT_EQ(seg->ResidentBytes(), ca->ByteSize() + cb->ByteSize() + cs->ByteSize());
}

TEST(SegmentFromChunks, LoadChunkHandsOutTheResidentChunkWithoutTheCache) {
  testing::ChunkSpec a;
  a.frames = {0};
  a.values = {std::vector<double>{1}};
  auto ca = MakeChunk(a);
  auto seg = Segment::FromChunks("s", "", {ca, ca}, "remote").value();
  ChunkCache cache(1 << 20);
  EXPECT_EQ(seg->LoadChunk(0, cache).value().get(), ca.get());
  EXPECT_EQ(cache.size_bytes(), 0);
  EXPECT_EQ(cache.misses(), 0);
  // The same chunk twice (same id) is one chunk to LoadEntity.
  EXPECT_EQ(seg->LoadEntity("/robot/state", cache).value().size(), 1u);
  EXPECT_TRUE(seg->LoadEntity("/other", cache).value().empty());
  EXPECT_EQ(seg->LoadChunk(2, cache).status().code(), StatusCode::kInternal);
}

TEST(SegmentFromChunks, EmptyAndNull) {
  auto empty = Segment::FromChunks("s", "", {}, "remote").value();
  EXPECT_TRUE(empty->chunks().empty());
  EXPECT_TRUE(empty->index_ranges().empty());
  EXPECT_EQ(Segment::FromChunks("s", "", {nullptr}, "remote").status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace rrl::store
