#include "rrloader/chunk/chunk.h"

#include <arrow/extension_type.h>
#include <arrow/util/byte_size.h>
#include <arrow/util/key_value_metadata.h>

#include <algorithm>

#include "rrloader/rrd/codec.h"

namespace rrl::chunk {

namespace {

std::string MetaOr(const std::shared_ptr<const arrow::KeyValueMetadata>& md, const std::string& key,
                   const std::string& fallback) {
  if (!md) return fallback;
  auto v = md->Get(key);
  return v.ok() ? *v : fallback;
}

uint64_t LoadBE64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const TimelineColumn* Chunk::FindTimeline(const std::string& name) const {
  for (const auto& t : timelines_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const ComponentColumn* Chunk::FindComponent(const std::string& component) const {
  for (const auto& c : components_) {
    if (c.component == component) return &c;
  }
  return nullptr;
}

Result<std::shared_ptr<const Chunk>> Chunk::Decode(const std::shared_ptr<arrow::Buffer>& ipc,
                                                   const std::string& where) {
  auto batch_or = rrd::DecodeIpcRecordBatch(ipc);
  if (!batch_or.ok()) return batch_or.status().WithPrefix(where);
  return Parse(*batch_or, ipc->size(), where);
}

Result<std::shared_ptr<const Chunk>> Chunk::FromRecordBatch(const std::shared_ptr<arrow::RecordBatch>& batch,
                                                            const std::string& where) {
  if (batch == nullptr) return Status::InvalidArgument(where + ": no record batch");
  const int64_t bytes = static_cast<int64_t>(arrow::util::TotalBufferSize(*batch));
  return Parse(batch, bytes, where);
}

Result<std::shared_ptr<const Chunk>> Chunk::Parse(const std::shared_ptr<arrow::RecordBatch>& batch, int64_t byte_size,
                                                  const std::string& where) {
  auto chunk = std::make_shared<Chunk>();
  chunk->batch_ = batch;
  chunk->num_rows_ = batch->num_rows();
  chunk->byte_size_ = byte_size;
  const auto& schema = *batch->schema();
  const auto& smd = schema.metadata();
  chunk->entity_path_ = MetaOr(smd, "rerun:entity_path", MetaOr(smd, "rerun.entity_path", ""));
  chunk->chunk_id_ = MetaOr(smd, "rerun:id", MetaOr(smd, "rerun.id", ""));
  if (chunk->entity_path_.empty()) {
    return Status::Corrupt(where + ": chunk schema has no rerun:entity_path metadata");
  }
  bool have_row_ids = false;
  for (int i = 0; i < schema.num_fields(); ++i) {
    const auto& field = schema.field(i);
    const auto& md = field->metadata();
    std::string kind = MetaOr(md, "rerun:kind", "data");
    std::shared_ptr<arrow::Array> col = batch->column(i);
    // An extension type known to this process's Arrow registry (e.g. the row id's
    // rerun.datatypes.TUID, if some library registered it) is read as its storage.
    if (col->type_id() == arrow::Type::EXTENSION) col = static_cast<const arrow::ExtensionArray&>(*col).storage();
    if (kind == "control" || kind == "row_id") {
      if (col->type_id() != arrow::Type::FIXED_SIZE_BINARY ||
          static_cast<const arrow::FixedSizeBinaryType&>(*col->type()).byte_width() != 16 || col->null_count() != 0) {
        return Status::Corrupt(where + ": row-id column '" + field->name() +
                               "' is not FixedSizeBinary(16) without nulls");
      }
      const auto& fsb = static_cast<const arrow::FixedSizeBinaryArray&>(*col);
      chunk->row_ids_.resize(static_cast<size_t>(batch->num_rows()));
      for (int64_t r = 0; r < batch->num_rows(); ++r) {
        const uint8_t* p = fsb.GetValue(r);
        chunk->row_ids_[static_cast<size_t>(r)] = RowId{LoadBE64(p), LoadBE64(p + 8)};
      }
      have_row_ids = true;
    } else if (kind == "index" || kind == "time") {
      auto tk = rrd::TimeKindFromArrow(*col->type());
      if (!tk) {
        return Status::Unsupported(where + ": index column '" + field->name() + "' has type " +
                                   col->type()->ToString() + " (expected int64, timestamp[ns] or duration[ns])");
      }
      if (col->null_count() != 0) {
        return Status::Corrupt(where + ": index column '" + field->name() + "' has nulls");
      }
      TimelineColumn t;
      t.name = MetaOr(md, "rerun:index_name", field->name());
      t.kind = *tk;
      t.values = col->data()->GetValues<int64_t>(1);
      if (batch->num_rows() > 0) {
        auto [lo, hi] = std::minmax_element(t.values, t.values + batch->num_rows());
        t.min = *lo;
        t.max = *hi;
      }
      chunk->timelines_.push_back(std::move(t));
    } else {
      if (col->type_id() != arrow::Type::LIST) {
        return Status::Unsupported(where + ": component column '" + field->name() + "' has type " +
                                   col->type()->ToString() + "; only List<T> component columns are supported");
      }
      ComponentColumn c;
      c.component = MetaOr(md, "rerun:component", "");
      if (c.component.empty()) c.component = field->name();
      c.archetype = MetaOr(md, "rerun:archetype", "");
      c.component_type = MetaOr(md, "rerun:component_type", "");
      c.list = std::static_pointer_cast<arrow::ListArray>(col);
      chunk->components_.push_back(std::move(c));
    }
  }
  if (!have_row_ids) return Status::Corrupt(where + ": chunk has no row-id column");
  return std::shared_ptr<const Chunk>(std::move(chunk));
}

}  // namespace rrl::chunk
