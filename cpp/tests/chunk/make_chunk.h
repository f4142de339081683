// cpp/tests/chunk/make_chunk.h — record batches in Rerun's chunk schema, built in memory
// for tests (the layout rerun-sdk's Chunk.to_record_batch() produces: schema metadata
// rerun:entity_path / rerun:id / sorbet:version, a RowId control column, index columns,
// List<T> component columns). Header-only; included by the chunk, store and catalog tests.
#pragma once

#include <arrow/api.h>
#include <arrow/util/key_value_metadata.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rrl::testing {

struct ChunkSpec {
  std::string entity = "/robot/state";
  std::string chunk_id = "chunk_test";
  std::vector<int64_t> frames;  // empty + is_static: a static chunk
  bool is_static = false;
  // One cell per row: nullopt = null cell; otherwise the cell's scalars.
  std::vector<std::optional<std::vector<double>>> values;
  uint64_t row_id_base = 1000;  // row r gets row id (row_id_base + r, r)
};

inline std::shared_ptr<arrow::RecordBatch> MakeChunkBatch(const ChunkSpec& spec) {
  const int64_t rows = static_cast<int64_t>(spec.values.size());
  arrow::FieldVector fields;
  arrow::ArrayVector columns;

  arrow::FixedSizeBinaryBuilder ids(arrow::fixed_size_binary(16));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t bytes[16];
    const uint64_t hi = spec.row_id_base + static_cast<uint64_t>(r), lo = static_cast<uint64_t>(r);
    for (int i = 0; i < 8; ++i) {
      bytes[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
      bytes[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
    }
    (void)ids.Append(bytes);
  }
  fields.push_back(arrow::field("rerun.controls.RowId", arrow::fixed_size_binary(16), false,
                                arrow::key_value_metadata({"rerun:kind"}, {"control"})));
  columns.push_back(ids.Finish().ValueOrDie());

  if (!spec.is_static) {
    arrow::Int64Builder frames;
    (void)frames.AppendValues(spec.frames);
    fields.push_back(arrow::field("frame", arrow::int64(), true,
                                  arrow::key_value_metadata({"rerun:kind", "rerun:index_name"}, {"index", "frame"})));
    columns.push_back(frames.Finish().ValueOrDie());
  }

  auto values = std::make_shared<arrow::DoubleBuilder>();
  arrow::ListBuilder list(arrow::default_memory_pool(), values);
  for (const auto& cell : spec.values) {
    if (!cell) {
      (void)list.AppendNull();
      continue;
    }
    (void)list.Append();
    (void)values->AppendValues(*cell);
  }
  fields.push_back(arrow::field(
      "Scalars:scalars", arrow::list(arrow::float64()), true,
      arrow::key_value_metadata({"rerun:kind", "rerun:component", "rerun:archetype", "rerun:component_type"},
                                {"data", "Scalars:scalars", "rerun.archetypes.Scalars", "rerun.components.Scalar"})));
  columns.push_back(list.Finish().ValueOrDie());

  auto schema = arrow::schema(fields, arrow::key_value_metadata({"rerun:entity_path", "rerun:id", "sorbet:version"},
                                                                {spec.entity, spec.chunk_id, "0.1.4"}));
  return arrow::RecordBatch::Make(schema, rows, columns);
}

// CatalogSchema: a dataset schema as DatasetEntry.schema() gives it, for `entities` with
// one Scalars column each, on the `frame` timeline.
inline std::shared_ptr<arrow::Schema> CatalogSchema(const std::vector<std::string>& entities) {
  arrow::FieldVector fields{
      arrow::field("rerun.controls.RowId", arrow::fixed_size_binary(16), false,
                   arrow::key_value_metadata({"rerun:kind"}, {"control"})),
      arrow::field("frame", arrow::int64(), true,
                   arrow::key_value_metadata({"rerun:kind", "rerun:index_name"}, {"index", "frame"})),
  };
  for (const auto& e : entities) {
    fields.push_back(arrow::field(
        e + ":Scalars:scalars", arrow::list(arrow::float64()), true,
        arrow::key_value_metadata({"rerun:kind", "rerun:entity_path", "rerun:component", "rerun:archetype"},
                                  {"data", e, "Scalars:scalars", "rerun.archetypes.Scalars"})));
  }
  return arrow::schema(fields);
}

}  // namespace rrl::testing
