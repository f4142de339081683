#include "rrloader/store/segment.h"

#include <arrow/util/key_value_metadata.h>

#include <algorithm>
#include <atomic>
#include <set>

namespace rrl::store {

namespace {

// CacheKey: "<file number>@<byte offset>", the file numbered once per process by FromRrd:
// short (no heap allocation for the string; hashed and compared on every lookup of a
// block), and unique however long the file's path is.
std::string CacheKey(uint64_t file_number, const rrd::ChunkLocation& loc) {
  return std::to_string(file_number) + "@" + std::to_string(loc.offset);
}

std::atomic<uint64_t> g_next_file_number{0};

bool HasNonEmptyCell(const arrow::ListArray& list) {
  for (int64_t r = 0; r < list.length(); ++r) {
    if (!list.IsNull(r) && list.value_length(r) > 0) return true;
  }
  return false;
}

std::string Meta(const std::shared_ptr<const arrow::KeyValueMetadata>& md, const char* key) {
  if (!md) return "";
  auto v = md->Get(key);
  return v.ok() ? *v : "";
}

}  // namespace

const rrd::ComponentStats* ChunkInfo::Stats(const std::string& timeline, const std::string& component) const {
  for (const auto& c : components) {
    if (c.timeline == timeline && c.component == component) return &c;
  }
  return nullptr;
}

std::vector<rrd::ComponentStats> ComponentStatsOf(const chunk::Chunk& c) {
  std::vector<rrd::ComponentStats> out;
  for (const auto& tl : c.timelines()) {
    for (const auto& comp : c.components()) {
      rrd::ComponentStats st{tl.name, comp.component, 0, 0, 0};
      for (int64_t r = 0; r < c.num_rows(); ++r) {
        if (comp.list->IsNull(r)) continue;
        const int64_t t = tl.values[r];
        st.min = st.num_rows == 0 ? t : std::min(st.min, t);
        st.max = st.num_rows == 0 ? t : std::max(st.max, t);
        ++st.num_rows;
      }
      if (st.num_rows > 0) out.push_back(std::move(st));
    }
  }
  return out;
}

namespace {

// DescribeChunk: fills what a decoded chunk says of itself (the fields a footer's manifest
// would otherwise give); location and chunk id are left to the caller.
void DescribeChunk(const chunk::Chunk& c, ChunkInfo* info) {
  info->entity_path = c.entity_path();
  info->is_static = c.is_static();
  info->num_rows = static_cast<uint64_t>(c.num_rows());
  for (const auto& t : c.timelines()) info->ranges.push_back(rrd::TimeRange{t.name, t.kind, t.min, t.max});
  info->components = ComponentStatsOf(c);
  info->has_component_stats = !c.is_static();
}

}  // namespace

int64_t Segment::IndexBytes() const {
  int64_t bytes = static_cast<int64_t>(sizeof(Segment));
  for (const auto& c : chunks_) {
    bytes += static_cast<int64_t>(sizeof(ChunkInfo) + c.entity_path.capacity() + c.chunk_id.capacity() +
                                  c.chunk_key.capacity() + c.cache_key.capacity() +
                                  c.ranges.capacity() * sizeof(rrd::TimeRange) +
                                  c.components.capacity() * sizeof(rrd::ComponentStats));
    for (const auto& r : c.ranges) bytes += static_cast<int64_t>(r.timeline.capacity());
    for (const auto& st : c.components) bytes += static_cast<int64_t>(st.timeline.capacity() + st.component.capacity());
  }
  // Columns and the per-entity lists: small next to the chunks; a rough per-entry figure.
  bytes += static_cast<int64_t>(columns_.size() * 256 + by_entity_.size() * 64 + chunks_.size() * sizeof(size_t));
  return bytes;
}

void Segment::AddChunkInfo(ChunkInfo info, bool empty_chunks_have_ranges) {
  for (const auto& r : info.ranges) {
    if (info.num_rows == 0 && !empty_chunks_have_ranges) break;
    auto [it, inserted] = index_ranges_.try_emplace(r.timeline, r);
    if (!inserted) {
      it->second.min = std::min(it->second.min, r.min);
      it->second.max = std::max(it->second.max, r.max);
    }
  }
  by_entity_[info.entity_path].push_back(chunks_.size());
  chunks_.push_back(std::move(info));
}

const std::vector<size_t>& Segment::EntityChunks(const std::string& entity_path) const {
  static const std::vector<size_t> kNone;
  auto it = by_entity_.find(entity_path);
  return it == by_entity_.end() ? kNone : it->second;
}

std::vector<std::string> Segment::EntityPaths() const {
  std::vector<std::string> out;
  for (const auto& [e, _] : by_entity_) out.push_back(e);
  return out;
}

Result<std::shared_ptr<const chunk::Chunk>> Segment::LoadChunk(size_t i, ChunkCache& cache) const {
  if (i >= chunks_.size()) {
    return Status::Internal(source_name() + ": chunk number " + std::to_string(i) + " of segment '" + id_ +
                            "' out of range");
  }
  if (loader_ != nullptr) return loader_->Load(*this, i, cache);
  if (source_ == nullptr) return resident_[i];
  const auto& info = chunks_[i];
  const std::string& key = info.cache_key;
  if (auto hit = cache.Get(key)) return hit;
  RRL_ASSIGN_OR_RETURN(auto ipc, rrd::ReadChunkIpc(*source_, info.location));
  RRL_ASSIGN_OR_RETURN(auto decoded, chunk::Chunk::Decode(ipc, source_->Name() + ": chunk at byte offset " +
                                                                   std::to_string(info.location.offset)));
  if (decoded->entity_path() != info.entity_path) {
    return Status::Corrupt(source_->Name() + ": chunk at byte offset " + std::to_string(info.location.offset) +
                           " is for entity '" + decoded->entity_path() + "' but the footer says '" + info.entity_path +
                           "'");
  }
  cache.Put(key, decoded);
  return decoded;
}

Result<std::vector<std::shared_ptr<const chunk::Chunk>>> Segment::LoadEntity(const std::string& entity_path,
                                                                             ChunkCache& cache) const {
  std::vector<std::shared_ptr<const chunk::Chunk>> out;
  auto it = by_entity_.find(entity_path);
  if (it == by_entity_.end()) return out;
  std::set<std::string> seen_ids;
  for (size_t i : it->second) {
    RRL_ASSIGN_OR_RETURN(auto c, LoadChunk(i, cache));
    // Chunk ids are unique per recording; a repeated id is the same chunk written twice.
    if (!c->chunk_id().empty() && !seen_ids.insert(c->chunk_id()).second) continue;
    out.push_back(std::move(c));
  }
  return out;
}

void Segment::AddColumnsFromChunk(const chunk::Chunk& c) {
  for (const auto& comp : c.components()) {
    auto& col = columns_[{c.entity_path(), comp.component}];
    if (!col.type) {
      col.entity_path = c.entity_path();
      col.component = comp.component;
      col.archetype = comp.archetype;
      col.component_type = comp.component_type;
      col.type = comp.list->type();
    }
    if (c.is_static()) col.is_static = true;
    if (col.semantically_empty && HasNonEmptyCell(*comp.list)) col.semantically_empty = false;
  }
}

Status Segment::AddColumnsFromSorbetSchema(const arrow::Schema& schema) {
  for (const auto& field : schema.fields()) {
    const auto& md = field->metadata();
    if (Meta(md, "rerun:kind") != "data") continue;
    ColumnInfo col;
    col.entity_path = Meta(md, "rerun:entity_path");
    col.component = Meta(md, "rerun:component");
    if (col.entity_path.empty() || col.component.empty()) {
      return Status::Corrupt("footer schema column '" + field->name() + "' lacks rerun:entity_path or rerun:component");
    }
    col.archetype = Meta(md, "rerun:archetype");
    col.component_type = Meta(md, "rerun:component_type");
    col.type = field->type();
    col.is_static = Meta(md, "rerun:is_static") == "true";
    col.semantically_empty = Meta(md, "rerun:is_semantically_empty") == "true";
    columns_[{col.entity_path, col.component}] = col;
  }
  return Status::OK();
}

Result<std::shared_ptr<Segment>> Segment::FromChunks(std::string id, std::string application_id,
                                                     std::vector<std::shared_ptr<const chunk::Chunk>> chunks,
                                                     std::string source_name) {
  auto seg = std::make_shared<Segment>();
  seg->id_ = std::move(id);
  seg->application_id_ = std::move(application_id);
  seg->source_name_ = std::move(source_name);
  for (auto& c : chunks) {
    if (c == nullptr) return Status::Internal(seg->source_name_ + ": null chunk in segment '" + seg->id_ + "'");
    ChunkInfo info;
    DescribeChunk(*c, &info);
    seg->AddColumnsFromChunk(*c);
    seg->resident_bytes_ += c->ByteSize();
    seg->AddChunkInfo(std::move(info), false);  // a decoded empty chunk's range means nothing
    seg->resident_.push_back(std::move(c));
  }
  return seg;
}

Result<std::shared_ptr<Segment>> Segment::FromManifest(std::string id, std::string application_id,
                                                       std::vector<rrd::ChunkSummary> chunks,
                                                       const std::shared_ptr<arrow::Schema>& sorbet_schema,
                                                       std::shared_ptr<const ChunkLoader> loader,
                                                       std::string source_name) {
  if (loader == nullptr) return Status::Internal(source_name + ": a remote segment needs a chunk loader");
  auto seg = std::make_shared<Segment>();
  seg->id_ = std::move(id);
  seg->application_id_ = std::move(application_id);
  seg->source_name_ = std::move(source_name);
  seg->loader_ = std::move(loader);
  seg->chunks_.reserve(chunks.size());
  for (auto& s : chunks) {
    if (s.chunk_id.size() != 16 || s.chunk_key.empty()) {
      return Status::Corrupt(seg->source_name_ + ": the manifest of segment '" + seg->id_ +
                             "' lacks the chunk_id or chunk_key of a chunk of entity '" + s.entity_path + "'");
    }
    ChunkInfo info;
    info.entity_path = std::move(s.entity_path);
    info.is_static = s.is_static;
    info.num_rows = s.num_rows;
    info.ranges = std::move(s.ranges);
    info.components = std::move(s.components);
    info.has_component_stats = s.has_component_stats;
    info.chunk_id = std::move(s.chunk_id);
    info.chunk_key = std::move(s.chunk_key);
    info.byte_size = s.byte_size_uncompressed;
    info.cache_key = seg->id_ + std::string(1, '\0') + info.chunk_id;
    seg->AddChunkInfo(std::move(info), true);  // as for a file's footer
  }
  if (sorbet_schema) {
    auto st = seg->AddColumnsFromSorbetSchema(*sorbet_schema);
    if (!st.ok()) return st.WithPrefix(seg->source_name_ + ": segment '" + seg->id_ + "'");
  }
  return seg;
}

Result<std::vector<std::shared_ptr<Segment>>> Segment::FromRrd(const rrd::RrdIndex& index, ChunkCache& cache) {
  std::vector<std::shared_ptr<Segment>> out;
  const uint64_t file_number = g_next_file_number.fetch_add(1);
  for (const auto& store : index.recordings) {
    auto seg = std::make_shared<Segment>();
    seg->id_ = store.id.recording_id;
    seg->application_id_ = store.id.application_id;
    seg->source_ = index.source;
    for (size_t i = 0; i < store.chunks.size(); ++i) {
      ChunkInfo info;
      info.location = store.chunks[i];
      info.cache_key = CacheKey(file_number, info.location);
      if (!store.summaries.empty()) {
        const auto& s = store.summaries[i];
        info.entity_path = s.entity_path;
        info.is_static = s.is_static;
        info.num_rows = s.num_rows;
        info.ranges = s.ranges;
        info.components = s.components;
        info.has_component_stats = s.has_component_stats;
        info.chunk_id = s.chunk_id;
      } else {
        RRL_ASSIGN_OR_RETURN(auto ipc, rrd::ReadChunkIpc(*index.source, info.location));
        RRL_ASSIGN_OR_RETURN(auto c, chunk::Chunk::Decode(ipc, index.source->Name() + ": chunk at byte offset " +
                                                                   std::to_string(info.location.offset)));
        DescribeChunk(*c, &info);
        seg->AddColumnsFromChunk(*c);
        cache.Put(info.cache_key, c);
      }
      // (as the reference's store, a file's empty chunk still counts in the index ranges)
      seg->AddChunkInfo(std::move(info), true);
    }
    if (store.sorbet_schema) {
      auto st = seg->AddColumnsFromSorbetSchema(*store.sorbet_schema);
      if (!st.ok()) return st.WithPrefix(index.source->Name() + ": recording '" + seg->id_ + "'");
    }
    out.push_back(std::move(seg));
  }
  return out;
}

}  // namespace rrl::store
