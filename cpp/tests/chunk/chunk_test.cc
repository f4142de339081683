// Tests of rrloader/chunk/: a chunk parsed from a record batch (the remote path) and from
// the same batch written as an Arrow IPC stream (the .rrd path) read the same.
#include "rrloader/chunk/chunk.h"

#include <arrow/io/memory.h>
#include <arrow/ipc/writer.h>
#include <arrow/util/byte_size.h>
#include <gtest/gtest.h>

#include "tests/chunk/make_chunk.h"

namespace rrl::chunk {
namespace {

std::shared_ptr<arrow::Buffer> ToIpc(const std::shared_ptr<arrow::RecordBatch>& batch) {
  auto sink = arrow::io::BufferOutputStream::Create().ValueOrDie();
  auto writer = arrow::ipc::MakeStreamWriter(sink, batch->schema()).ValueOrDie();
  EXPECT_TRUE(writer->WriteRecordBatch(*batch).ok());
  EXPECT_TRUE(writer->Close().ok());
  return sink->Finish().ValueOrDie();
}

testing::ChunkSpec Spec() {
  testing::ChunkSpec s;
  s.entity = "/robot/state";
  s.chunk_id = "chunk_1";
  s.frames = {5, 2, 9};
  s.values = {std::vector<double>{1, 2}, std::nullopt, std::vector<double>{}};
  return s;
}

TEST(ChunkFromRecordBatch, ParsesSorbetMetadata) {
  auto batch = testing::MakeChunkBatch(Spec());
  auto c = Chunk::FromRecordBatch(batch, "test").value();
  EXPECT_EQ(c->entity_path(), "/robot/state");
  EXPECT_EQ(c->chunk_id(), "chunk_1");
  EXPECT_EQ(c->num_rows(), 3);
  EXPECT_FALSE(c->is_static());
  ASSERT_EQ(c->timelines().size(), 1u);
  EXPECT_EQ(c->timelines()[0].name, "frame");
  EXPECT_EQ(c->timelines()[0].min, 2);
  EXPECT_EQ(c->timelines()[0].max, 9);
  EXPECT_EQ(c->row_id(1).hi, 1001u);
  EXPECT_EQ(c->row_id(1).lo, 1u);
  const auto* comp = c->FindComponent("Scalars:scalars");
  ASSERT_NE(comp, nullptr);
  EXPECT_EQ(comp->archetype, "rerun.archetypes.Scalars");
  EXPECT_TRUE(comp->list->IsNull(1));
  EXPECT_EQ(comp->list->value_length(0), 2);
  // Zero copy: the chunk keeps the caller's batch (and its buffers), and counts them.
  EXPECT_EQ(c->batch().get(), batch.get());
  EXPECT_EQ(c->ByteSize(), static_cast<int64_t>(arrow::util::TotalBufferSize(*batch)));
}

TEST(ChunkFromRecordBatch, SameAsDecodingTheIpcStream) {
  auto batch = testing::MakeChunkBatch(Spec());
  auto a = Chunk::FromRecordBatch(batch, "batch").value();
  auto b = Chunk::Decode(ToIpc(batch), "ipc").value();
  EXPECT_EQ(a->entity_path(), b->entity_path());
  EXPECT_EQ(a->chunk_id(), b->chunk_id());
  ASSERT_EQ(a->num_rows(), b->num_rows());
  for (int64_t r = 0; r < a->num_rows(); ++r) {
    EXPECT_TRUE(a->row_id(r) == b->row_id(r));
    EXPECT_EQ(a->timelines()[0].values[r], b->timelines()[0].values[r]);
  }
  EXPECT_TRUE(a->components()[0].list->Equals(*b->components()[0].list));
}

TEST(ChunkFromRecordBatch, StaticChunk) {
  auto s = Spec();
  s.is_static = true;
  s.frames.clear();
  auto c = Chunk::FromRecordBatch(testing::MakeChunkBatch(s), "test").value();
  EXPECT_TRUE(c->is_static());
}

TEST(ChunkFromRecordBatch, ErrorsNameWhere) {
  auto batch = testing::MakeChunkBatch(Spec());
  auto no_entity = batch->ReplaceSchemaMetadata(arrow::key_value_metadata({"rerun:id"}, {"x"}));
  auto st = Chunk::FromRecordBatch(no_entity, "remote seg_a").status();
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("remote seg_a"), std::string::npos);

  auto no_rowid = batch->RemoveColumn(0).ValueOrDie();
  EXPECT_EQ(Chunk::FromRecordBatch(no_rowid, "x").status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(Chunk::FromRecordBatch(nullptr, "x").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rrl::chunk
