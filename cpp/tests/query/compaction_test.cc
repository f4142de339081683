// Tests of query::CompactLikeEagerStore: how rerun's eager chunk store merges the chunks of a footer-less
// recording as it loads them (docs/query-semantics.md, "Footer-less files are compacted"). Chunks are built
// here as Arrow IPC streams with Sorbet metadata and decoded like chunks read from a file.
#include <arrow/builder.h>
#include <arrow/io/memory.h>
#include <arrow/ipc/writer.h>
#include <arrow/util/key_value_metadata.h>
#include <gtest/gtest.h>

#include <optional>
#include <utility>

#include "rrloader/chunk/chunk.h"
#include "rrloader/query/dataframe.h"

namespace rrl::query {
namespace {

using ChunkPtr = std::shared_ptr<const chunk::Chunk>;

// Column: one component column of a test chunk; nullopt cells are null.
struct Column {
  std::string component;
  std::vector<std::optional<std::vector<double>>> cells;
  bool as_int64 = false;  // List<int64> instead of List<double>
};

// MakeChunk: a temporal chunk of `entity` (static when `timelines` is empty) whose rows get row ids
// `first_row_id`, `first_row_id` + 1, ... (row ids order rows like rerun's TUIDs).
ChunkPtr MakeChunk(const std::string& entity, uint64_t first_row_id,
                   const std::vector<std::pair<std::string, std::vector<int64_t>>>& timelines,
                   const std::vector<Column>& columns) {
  const int64_t rows = columns.empty() ? static_cast<int64_t>(timelines.front().second.size())
                                       : static_cast<int64_t>(columns.front().cells.size());
  arrow::FieldVector fields;
  arrow::ArrayVector arrays;
  arrow::FixedSizeBinaryBuilder ids(arrow::fixed_size_binary(16));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t bytes[16] = {};
    const uint64_t v = first_row_id + static_cast<uint64_t>(r);
    for (int i = 0; i < 8; ++i) bytes[15 - i] = static_cast<uint8_t>(v >> (8 * i));
    EXPECT_TRUE(ids.Append(bytes).ok());
  }
  fields.push_back(arrow::field("rerun.controls.RowId", arrow::fixed_size_binary(16), false,
                                arrow::key_value_metadata({"rerun:kind"}, {"control"})));
  arrays.push_back(ids.Finish().ValueOrDie());
  for (const auto& [name, values] : timelines) {
    arrow::Int64Builder b;
    EXPECT_TRUE(b.AppendValues(values).ok());
    fields.push_back(arrow::field(name, arrow::int64(), false,
                                  arrow::key_value_metadata({"rerun:kind", "rerun:index_name"}, {"index", name})));
    arrays.push_back(b.Finish().ValueOrDie());
  }
  for (const auto& col : columns) {
    std::shared_ptr<arrow::Array> array;
    if (col.as_int64) {
      arrow::ListBuilder b(arrow::default_memory_pool(), std::make_shared<arrow::Int64Builder>());
      auto* values = static_cast<arrow::Int64Builder*>(b.value_builder());
      for (const auto& cell : col.cells) {
        EXPECT_TRUE((cell ? b.Append() : b.AppendNull()).ok());
        for (double x : cell.value_or(std::vector<double>{})) EXPECT_TRUE(values->Append(static_cast<int64_t>(x)).ok());
      }
      array = b.Finish().ValueOrDie();
    } else {
      arrow::ListBuilder b(arrow::default_memory_pool(), std::make_shared<arrow::DoubleBuilder>());
      auto* values = static_cast<arrow::DoubleBuilder*>(b.value_builder());
      for (const auto& cell : col.cells) {
        EXPECT_TRUE((cell ? b.Append() : b.AppendNull()).ok());
        for (double x : cell.value_or(std::vector<double>{})) EXPECT_TRUE(values->Append(x).ok());
      }
      array = b.Finish().ValueOrDie();
    }
    fields.push_back(
        arrow::field(col.component, array->type(), true,
                     arrow::key_value_metadata({"rerun:kind", "rerun:component"}, {"data", col.component})));
    arrays.push_back(array);
  }
  static int next_id = 0;
  auto schema = arrow::schema(fields, arrow::key_value_metadata({"rerun:entity_path", "rerun:id"},
                                                                {entity, "chunk_" + std::to_string(next_id++)}));
  auto batch = arrow::RecordBatch::Make(schema, rows, arrays);
  auto sink = arrow::io::BufferOutputStream::Create().ValueOrDie();
  auto writer = arrow::ipc::MakeStreamWriter(sink, schema).ValueOrDie();
  EXPECT_TRUE(writer->WriteRecordBatch(*batch).ok());
  EXPECT_TRUE(writer->Close().ok());
  auto decoded = chunk::Chunk::Decode(sink->Finish().ValueOrDie(), "test chunk");
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  return *decoded;
}

std::vector<std::optional<std::vector<double>>> Cells(size_t n, double v = 1.0) {
  return std::vector<std::optional<std::vector<double>>>(n, std::vector<double>{v});
}

using Groups = std::vector<std::vector<size_t>>;

// The chunks of differential case 1951 (seed 390), one entity: a 10-row text chunk over [40, 220] and a 2-row
// {text, media_type} chunk over [80, 180]. Inserted second, the small chunk finds the big one as the chunk
// starting right before it (via `text`) and is merged into it, so `media_type` then spans [40, 220]; inserted
// first, it has no neighbour, and the big one, overlapping it, finds none either.
TEST(CompactLikeEagerStore, MergesIntoTheNeighbourStartingBefore) {
  std::vector<int64_t> big_times = {40, 50, 40, 50, 60, 60, 70, 170, 210, 220};
  auto big = MakeChunk("/labels", 100, {{"dur", big_times}}, {{"text", Cells(10)}});
  auto small = MakeChunk("/labels", 200, {{"dur", {80, 180}}}, {{"text", Cells(2)}, {"media_type", Cells(2)}});
  EXPECT_EQ(CompactLikeEagerStore({big, small}), (Groups{{0, 1}}));
  EXPECT_EQ(CompactLikeEagerStore({small, big}), (Groups{{0}, {1}}));
}

TEST(CompactLikeEagerStore, MergesAdjacentChunksOfOneComponent) {
  auto a = MakeChunk("/a", 10, {{"frame", {1, 2, 3, 4}}}, {{"Scalars:scalars", Cells(4)}});
  auto b = MakeChunk("/a", 20, {{"frame", {5, 6, 7, 8}}}, {{"Scalars:scalars", Cells(4)}});
  auto c = MakeChunk("/a", 30, {{"frame", {9}}}, {{"Scalars:scalars", Cells(1)}});
  // b merges into a (a starts before it); c then merges into the merged chunk.
  EXPECT_EQ(CompactLikeEagerStore({a, b, c}), (Groups{{0, 1, 2}}));
}

TEST(CompactLikeEagerStore, NeedsASharedComponentAndTheSameTimelines) {
  auto a = MakeChunk("/a", 10, {{"frame", {1, 2}}}, {{"x", Cells(2)}});
  auto other_component = MakeChunk("/a", 20, {{"frame", {3}}}, {{"y", Cells(1)}});
  auto other_timelines = MakeChunk("/a", 30, {{"frame", {4}}, {"t", {4}}}, {{"x", Cells(1)}});
  EXPECT_EQ(CompactLikeEagerStore({a, other_component, other_timelines}), (Groups{{0}, {1}, {2}}));
}

TEST(CompactLikeEagerStore, NeedsTheSameDatatypes) {
  auto a = MakeChunk("/a", 10, {{"frame", {1, 2}}}, {{"x", Cells(2)}});
  auto b = MakeChunk("/a", 20, {{"frame", {3}}}, {{"x", Cells(1), /*as_int64=*/true}});
  EXPECT_EQ(CompactLikeEagerStore({a, b}), (Groups{{0}, {1}}));
}

TEST(CompactLikeEagerStore, IgnoresNullCellsWhenPlacingAComponent) {
  // `x` of chunk b is only non-null at frame 20: it starts after a's `x`, so a is b's neighbour "before" even
  // though b's rows start at frame 0.
  auto a = MakeChunk("/a", 10, {{"frame", {10, 11}}}, {{"x", Cells(2)}});
  auto b = MakeChunk("/a", 20, {{"frame", {0, 20}}}, {{"x", {std::nullopt, std::vector<double>{1.0}}}});
  EXPECT_EQ(CompactLikeEagerStore({a, b}), (Groups{{0, 1}}));
}

TEST(CompactLikeEagerStore, StaticChunksAreNeverMerged) {
  auto s1 = MakeChunk("/a", 10, {}, {{"x", Cells(1)}});
  auto s2 = MakeChunk("/a", 20, {}, {{"x", Cells(1)}});
  auto t = MakeChunk("/a", 30, {{"frame", {1}}}, {{"x", Cells(1)}});
  EXPECT_EQ(CompactLikeEagerStore({s1, s2, t}), (Groups{{0}, {1}, {2}}));
}

TEST(CompactLikeEagerStore, RespectsTheRowLimits) {
  // 1020 unsorted rows + 10: over the 1024-row limit for unsorted chunks.
  std::vector<int64_t> unsorted(1020);
  for (size_t i = 0; i < unsorted.size(); ++i) unsorted[i] = static_cast<int64_t>((i * 7) % 1020);
  auto big_unsorted = MakeChunk("/a", 10, {{"frame", unsorted}}, {{"x", Cells(1020)}});
  auto next = MakeChunk("/a", 5000, {{"frame", {2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009}}},
                        {{"x", Cells(10)}});
  EXPECT_EQ(CompactLikeEagerStore({big_unsorted, next}), (Groups{{0}, {1}}));
  // Sorted, the limit is 4096 rows.
  std::vector<int64_t> sorted(1020);
  for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = static_cast<int64_t>(i);
  auto big_sorted = MakeChunk("/a", 10, {{"frame", sorted}}, {{"x", Cells(1020)}});
  EXPECT_EQ(CompactLikeEagerStore({big_sorted, next}), (Groups{{0, 1}}));
}

TEST(CompactLikeEagerStore, CountsTiesTheReferenceBreaksAtRandom) {
  // Differential seed 31, segment 0, entity /robot: a 2-row translation chunk and a 2-row rotation chunk both
  // start before a chunk holding both components; each scores 2 points.
  auto translation = MakeChunk("/robot", 10, {{"step", {-1, 24}}}, {{"translation", Cells(2)}});
  auto rotation = MakeChunk("/robot", 20, {{"step", {4, 27}}}, {{"rotation", Cells(2)}});
  auto both = MakeChunk("/robot", 30, {{"step", {30}}}, {{"translation", Cells(1)}, {"rotation", Cells(1)}});
  int64_t ties = 0;
  auto groups = CompactLikeEagerStore({translation, rotation, both}, &ties);
  EXPECT_EQ(ties, 1);
  EXPECT_EQ(groups.size(), 2u);
  int64_t no_ties = 0;
  EXPECT_EQ(CompactLikeEagerStore({translation, both}, &no_ties), (Groups{{0, 1}}));
  EXPECT_EQ(no_ties, 0);
}

}  // namespace
}  // namespace rrl::query
