#include "rrloader/rrd/reader.h"

#include <arrow/array.h>
#include <arrow/record_batch.h>
#include <arrow/util/key_value_metadata.h>

#include <map>
#include <string_view>

#include "rrloader/rrd/codec.h"

namespace rrl::rrd {

namespace {

std::string_view View(const arrow::Buffer& b) {
  return {reinterpret_cast<const char*>(b.data()), static_cast<size_t>(b.size())};
}

std::string At(const io::ByteSource& src, uint64_t offset) {
  return src.Name() + ": at byte offset " + std::to_string(offset);
}

bool EndsWith(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

// Manifest columns we read by name; the per-timeline ones are found by metadata.
Result<std::vector<ChunkSummary>> DecodeManifestTable(const arrow::RecordBatch& batch,
                                                      std::vector<ChunkLocation>* locations) {
  auto column = [&](const char* name) -> std::shared_ptr<arrow::Array> { return batch.GetColumnByName(name); };
  auto entity = std::dynamic_pointer_cast<arrow::StringArray>(column("chunk_entity_path"));
  auto is_static = std::dynamic_pointer_cast<arrow::BooleanArray>(column("chunk_is_static"));
  auto num_rows = std::dynamic_pointer_cast<arrow::UInt64Array>(column("chunk_num_rows"));
  auto offset = std::dynamic_pointer_cast<arrow::UInt64Array>(column("chunk_byte_offset"));
  auto size = std::dynamic_pointer_cast<arrow::UInt64Array>(column("chunk_byte_size"));
  if (!entity || !is_static || !num_rows || !offset || !size) {
    return Status::Corrupt(
        "footer manifest lacks one of the chunk_entity_path, chunk_is_static, "
        "chunk_num_rows, chunk_byte_offset, chunk_byte_size columns or has wrong types");
  }
  // Optional: the chunk id, its uncompressed size and a catalog's fetch key.
  auto chunk_id = std::dynamic_pointer_cast<arrow::FixedSizeBinaryArray>(column("chunk_id"));
  if (chunk_id && chunk_id->byte_width() != 16) chunk_id = nullptr;
  auto uncompressed = std::dynamic_pointer_cast<arrow::UInt64Array>(column("chunk_byte_size_uncompressed"));
  auto key = std::dynamic_pointer_cast<arrow::BinaryArray>(column("chunk_key"));
  // Global per-timeline ranges: "<timeline>:start"/":end" with rerun:index metadata and
  // no rerun:component; per-component ones carry rerun:component and come in triples
  // "<timeline>:<component>:start/end/num_rows" (names are sanitized: go by metadata).
  struct RangeCols {
    TimeKind kind = TimeKind::kSequence;
    std::shared_ptr<arrow::Array> start, end;
  };
  struct ComponentCols {
    std::shared_ptr<arrow::Array> start, end;
    std::shared_ptr<arrow::UInt64Array> num_rows;
  };
  std::map<std::string, RangeCols> ranges;
  std::map<std::pair<std::string, std::string>, ComponentCols> components;  // (timeline, component)
  const auto& schema = *batch.schema();
  for (int i = 0; i < schema.num_fields(); ++i) {
    const auto& field = schema.field(i);
    const auto& md = field->metadata();
    if (!md) continue;
    auto index = md->Get("rerun:index");
    if (!index.ok() || *index == "rerun:static") continue;
    const std::string& name = field->name();
    const bool is_start = EndsWith(name, ":start");
    const bool is_end = EndsWith(name, ":end");
    const bool is_count = EndsWith(name, ":num_rows");
    if (auto component = md->Get("rerun:component"); component.ok()) {
      auto& cc = components[{*index, *component}];
      if (is_count) {
        cc.num_rows = std::dynamic_pointer_cast<arrow::UInt64Array>(batch.column(i));
        if (!cc.num_rows) return Status::Corrupt("footer manifest column '" + name + "' is not uint64");
      } else if (is_start || is_end) {
        if (!TimeKindFromArrow(*field->type())) {
          return Status::Corrupt("footer manifest column '" + name + "' has a non-index type");
        }
        (is_start ? cc.start : cc.end) = batch.column(i);
      }
      continue;
    }
    if (!is_start && !is_end) continue;
    auto kind = TimeKindFromArrow(*field->type());
    if (!kind) return Status::Corrupt("footer manifest column '" + name + "' has a non-index type");
    auto& rc = ranges[*index];
    rc.kind = *kind;
    (is_start ? rc.start : rc.end) = batch.column(i);
  }
  // Complete triples only: a manifest with per-component columns lists every (timeline,
  // component) of the store, so a chunk without an entry has no such cell.
  for (auto it = components.begin(); it != components.end();) {
    it = (it->second.start && it->second.end && it->second.num_rows) ? std::next(it) : components.erase(it);
  }
  const bool has_component_stats = !components.empty();
  std::vector<ChunkSummary> out;
  out.reserve(static_cast<size_t>(batch.num_rows()));
  for (int64_t r = 0; r < batch.num_rows(); ++r) {
    if (entity->IsNull(r) || is_static->IsNull(r) || offset->IsNull(r) || size->IsNull(r) || num_rows->IsNull(r)) {
      return Status::Corrupt("footer manifest row " + std::to_string(r) + " has nulls in fixed columns");
    }
    ChunkSummary s;
    s.entity_path = std::string(entity->GetView(r));
    s.is_static = is_static->Value(r);
    s.num_rows = num_rows->Value(r);
    for (const auto& [timeline, rc] : ranges) {
      if (!rc.start || !rc.end || rc.start->IsNull(r) || rc.end->IsNull(r)) continue;
      // Int64, Timestamp and Duration arrays all store int64 values.
      const auto* lo = rc.start->data()->GetValues<int64_t>(1);
      const auto* hi = rc.end->data()->GetValues<int64_t>(1);
      s.ranges.push_back(TimeRange{timeline, rc.kind, lo[r], hi[r]});
    }
    s.has_component_stats = has_component_stats && !s.is_static;
    if (s.has_component_stats) {
      for (const auto& [tc, cc] : components) {
        if (cc.num_rows->IsNull(r) || cc.num_rows->Value(r) == 0 || cc.start->IsNull(r) || cc.end->IsNull(r)) continue;
        s.components.push_back(ComponentStats{tc.first, tc.second, cc.start->data()->GetValues<int64_t>(1)[r],
                                              cc.end->data()->GetValues<int64_t>(1)[r], cc.num_rows->Value(r)});
      }
    }
    if (chunk_id && !chunk_id->IsNull(r)) {
      s.chunk_id.assign(reinterpret_cast<const char*>(chunk_id->GetValue(r)), 16);
    }
    if (uncompressed && !uncompressed->IsNull(r)) s.byte_size_uncompressed = uncompressed->Value(r);
    if (key && !key->IsNull(r)) s.chunk_key = std::string(key->GetView(r));
    out.push_back(std::move(s));
    locations->push_back(ChunkLocation{offset->Value(r), size->Value(r)});
  }
  return out;
}

namespace {

Result<std::optional<RrdIndex>> TryOpenFromFooter(const std::shared_ptr<io::ByteSource>& src,
                                                  const StreamHeader& header) {
  const uint64_t file_size = src->Size();
  if (file_size < kStreamHeaderSize + kStreamTrailerSize) return std::optional<RrdIndex>();
  const uint64_t trailer_at = file_size - kStreamTrailerSize;
  RRL_ASSIGN_OR_RETURN(auto tail, src->ReadAt(trailer_at, kStreamTrailerSize));
  auto trailer_or = ParseFooterTrailer(View(*tail));
  if (!trailer_or.ok()) return trailer_or.status().WithPrefix(At(*src, trailer_at));
  auto trailer = *trailer_or;
  if (!trailer) return std::optional<RrdIndex>();
  const uint64_t start = trailer->footer_offset, len = trailer->footer_length;
  if (start < kStreamHeaderSize + kMessageHeaderSize || start > trailer_at || len > trailer_at - start) {
    return Status::Corrupt(At(*src, trailer_at) + ": footer trailer points at bytes " + std::to_string(start) + ".." +
                           std::to_string(start + len) + " outside the file");
  }
  // The End message's own header must sit right before the footer. If it does not, the
  // trailer belongs to a later stream of a byte-concatenated file (offsets relative to
  // that stream): fall back to scanning.
  RRL_ASSIGN_OR_RETURN(auto end_header, src->ReadAt(start - kMessageHeaderSize, kMessageHeaderSize));
  const MessageHeader mh = ParseMessageHeader(View(*end_header));
  if (mh.kind != 0 || mh.length != len) return std::optional<RrdIndex>();

  RRL_ASSIGN_OR_RETURN(auto footer, src->ReadAt(start, len));
  const uint32_t crc = FooterChecksum(View(*footer));
  if (crc != trailer->checksum) {
    return Status::Corrupt(At(*src, start) + ": footer checksum mismatch (stored " + std::to_string(trailer->checksum) +
                           ", computed " + std::to_string(crc) + ")");
  }
  auto manifests_or = ParseRrdFooter(View(*footer));
  if (!manifests_or.ok()) return manifests_or.status().WithPrefix(At(*src, start) + ": footer");
  RrdIndex index;
  index.source = src;
  index.header = header;
  index.from_footer = true;
  for (const auto& m : *manifests_or) {
    if (m.store_id.kind != StoreKind::kRecording) continue;
    const std::string where = At(*src, start) + ": footer manifest of recording '" + m.store_id.recording_id + "'";
    StoreContents store;
    store.id = m.store_id;
    if (!m.sorbet_schema_ipc.empty()) {
      auto schema = DecodeIpcSchema(
          arrow::SliceBuffer(footer, m.sorbet_schema_ipc.data() - reinterpret_cast<const char*>(footer->data()),
                             static_cast<int64_t>(m.sorbet_schema_ipc.size())));
      if (!schema.ok()) return schema.status().WithPrefix(where + ": schema");
      store.sorbet_schema = *schema;
    }
    auto ipc = DecompressPayload(footer, m.data_payload, m.data_compression, m.data_uncompressed_size);
    if (!ipc.ok()) return ipc.status().WithPrefix(where);
    auto batch = DecodeIpcRecordBatch(*ipc);
    if (!batch.ok()) return batch.status().WithPrefix(where);
    auto summaries = DecodeManifestTable(**batch, &store.chunks);
    if (!summaries.ok()) return summaries.status().WithPrefix(where);
    store.summaries = std::move(*summaries);
    for (const auto& loc : store.chunks) {
      if (loc.offset < kStreamHeaderSize + kMessageHeaderSize || loc.offset > file_size ||
          loc.size > file_size - loc.offset) {
        return Status::Corrupt(where + ": chunk at byte offset " + std::to_string(loc.offset) + " (+" +
                               std::to_string(loc.size) + ") lies outside the file");
      }
    }
    index.recordings.push_back(std::move(store));
  }
  return std::optional<RrdIndex>(std::move(index));
}

// Scan: walk the frames (shared/spec/rrd-format.md §2.6). Concatenated streams are
// followed; a message cut short is an error (kTruncated), never silently dropped.
Result<RrdIndex> Scan(const std::shared_ptr<io::ByteSource>& src, const StreamHeader& header) {
  RrdIndex index;
  index.source = src;
  index.header = header;
  std::map<std::string, size_t> by_recording;  // recording id -> index in recordings
  auto store_for = [&](const StoreId& id) -> StoreContents* {
    if (id.kind != StoreKind::kRecording) return nullptr;
    auto [it, inserted] = by_recording.try_emplace(id.recording_id, index.recordings.size());
    if (inserted) index.recordings.push_back(StoreContents{id, {}, {}, nullptr});
    return &index.recordings[it->second];
  };
  const uint64_t size = src->Size();
  uint64_t pos = kStreamHeaderSize;
  while (pos < size) {
    if (size - pos < kMessageHeaderSize) {
      return Status::Truncated(At(*src, pos) + ": message header cut short (" + std::to_string(size - pos) +
                               " of 16 bytes)");
    }
    RRL_ASSIGN_OR_RETURN(auto hb, src->ReadAt(pos, kMessageHeaderSize));
    const MessageHeader mh = ParseMessageHeader(View(*hb));
    if (!IsKnownMessageKind(mh.kind)) {
      // Possibly a concatenated stream without an End marker.
      RRL_ASSIGN_OR_RETURN(auto sh, src->ReadAt(pos, std::min<uint64_t>(kStreamHeaderSize, size - pos)));
      auto next = ParseStreamHeader(View(*sh));
      if (!next.ok()) {
        return Status::Corrupt(At(*src, pos) + ": unknown message kind " + std::to_string(mh.kind));
      }
      pos += kStreamHeaderSize;
      continue;
    }
    const uint64_t payload_at = pos + kMessageHeaderSize;
    if (mh.length > size - payload_at) {
      return Status::Truncated(At(*src, pos) + ": message of " + std::to_string(mh.length) + " bytes but only " +
                               std::to_string(size - payload_at) + " remain");
    }
    if (mh.kind == static_cast<uint64_t>(MessageKind::kSetStoreInfo)) {
      RRL_ASSIGN_OR_RETURN(auto payload, src->ReadAt(payload_at, mh.length));
      auto id = ParseSetStoreInfo(View(*payload));
      if (!id.ok()) return id.status().WithPrefix(At(*src, payload_at) + ": SetStoreInfo");
      store_for(*id);
    } else if (mh.kind == static_cast<uint64_t>(MessageKind::kArrowMsg)) {
      RRL_ASSIGN_OR_RETURN(auto payload, src->ReadAt(payload_at, mh.length));
      auto msg = ParseArrowMsg(View(*payload));
      if (!msg.ok()) return msg.status().WithPrefix(At(*src, payload_at) + ": ArrowMsg");
      if (StoreContents* store = store_for(msg->store_id)) {
        store->chunks.push_back(ChunkLocation{payload_at, mh.length});
      }
    } else if (mh.kind == static_cast<uint64_t>(MessageKind::kEnd)) {
      pos = payload_at + mh.length;
      // A trailer follows when it reads RRF2FOOT; otherwise a new stream may start.
      if (pos == size) continue;
      if (size - pos >= kStreamTrailerSize) {
        RRL_ASSIGN_OR_RETURN(auto t, src->ReadAt(pos, kStreamTrailerSize));
        auto trailer = ParseFooterTrailer(View(*t));
        if (trailer.ok() && *trailer) {
          pos += kStreamTrailerSize;
          continue;
        }
      }
      RRL_ASSIGN_OR_RETURN(auto sh, src->ReadAt(pos, std::min<uint64_t>(kStreamHeaderSize, size - pos)));
      auto next = ParseStreamHeader(View(*sh));
      if (next.ok()) {
        pos += kStreamHeaderSize;
        continue;
      }
      if (size - pos < kStreamTrailerSize) {
        return Status::Truncated(At(*src, pos) + ": footer trailer after the End message cut short (" +
                                 std::to_string(size - pos) + " of 32 bytes)");
      }
      return Status::Corrupt(At(*src, pos) +
                             ": bytes after the End message are neither a footer trailer nor a new stream");
    }
    pos = payload_at + mh.length;
  }
  return index;
}

}  // namespace

std::optional<TimeKind> TimeKindFromArrow(const arrow::DataType& type) {
  switch (type.id()) {
    case arrow::Type::INT64: return TimeKind::kSequence;
    case arrow::Type::TIMESTAMP:
      if (static_cast<const arrow::TimestampType&>(type).unit() != arrow::TimeUnit::NANO) return std::nullopt;
      return TimeKind::kTimestamp;
    case arrow::Type::DURATION:
      if (static_cast<const arrow::DurationType&>(type).unit() != arrow::TimeUnit::NANO) return std::nullopt;
      return TimeKind::kDuration;
    default: return std::nullopt;
  }
}

std::shared_ptr<arrow::DataType> ArrowTypeOf(TimeKind kind) {
  switch (kind) {
    case TimeKind::kSequence: return arrow::int64();
    case TimeKind::kTimestamp: return arrow::timestamp(arrow::TimeUnit::NANO);
    case TimeKind::kDuration: return arrow::duration(arrow::TimeUnit::NANO);
  }
  return arrow::int64();
}

Result<RrdIndex> OpenRrd(const std::shared_ptr<io::ByteSource>& src) {
  RRL_ASSIGN_OR_RETURN(auto hb, src->ReadAt(0, std::min<uint64_t>(kStreamHeaderSize, src->Size())));
  auto header = ParseStreamHeader(View(*hb));
  if (!header.ok()) return Status(header.status().code(), src->Name() + ": " + header.status().message());
  RRL_ASSIGN_OR_RETURN(auto from_footer, TryOpenFromFooter(src, *header));
  if (from_footer) return std::move(*from_footer);
  return Scan(src, *header);
}

Result<std::shared_ptr<arrow::Buffer>> ReadChunkIpc(const io::ByteSource& src, const ChunkLocation& loc,
                                                    StoreId* store) {
  RRL_ASSIGN_OR_RETURN(auto bytes, src.ReadAt(loc.offset - kMessageHeaderSize, loc.size + kMessageHeaderSize));
  const MessageHeader mh = ParseMessageHeader(View(*bytes).substr(0, kMessageHeaderSize));
  if (mh.kind != static_cast<uint64_t>(MessageKind::kArrowMsg) || mh.length != loc.size) {
    return Status::Corrupt(At(src, loc.offset - kMessageHeaderSize) + ": expected an ArrowMsg frame of " +
                           std::to_string(loc.size) + " bytes, found kind " + std::to_string(mh.kind) + " of " +
                           std::to_string(mh.length) + " bytes");
  }
  auto payload = arrow::SliceBuffer(bytes, kMessageHeaderSize, static_cast<int64_t>(loc.size));
  auto msg = ParseArrowMsg(View(*payload));
  if (!msg.ok()) return msg.status().WithPrefix(At(src, loc.offset) + ": ArrowMsg");
  if (store) *store = msg->store_id;
  auto ipc = DecompressPayload(payload, msg->payload, msg->compression, msg->uncompressed_size);
  if (!ipc.ok()) return ipc.status().WithPrefix(At(src, loc.offset + msg->payload_offset) + ": ArrowMsg payload");
  return ipc;
}

}  // namespace rrl::rrd
