// rrloader/engine/video_index.cc — building and caching video stream indexes (video_index.h).
#include "rrloader/engine/video_index.h"

#include <arrow/array.h>

#include <algorithm>
#include <exception>
#include <set>
#include <string>
#include <utility>

namespace rrl::engine {

namespace {

// PacketEntry: a sample cell found while scanning the chunks.
struct PacketEntry {
  int64_t time = 0;
  chunk::RowId row_id;
  uint32_t chunk = 0;
  uint32_t row = 0;
  bool detected_key = false;  // decode::IsKeyframe said yes
};

bool EntryLess(const PacketEntry& a, const PacketEntry& b) {
  return a.time != b.time ? a.time < b.time : a.row_id < b.row_id;
}

// BlobInstance: the bytes of instance `i` of a blob array.
void BlobInstance(const arrow::Array& a, int64_t i, const uint8_t** data, int64_t* size) {
  switch (a.type_id()) {
    case arrow::Type::BINARY: {
      int32_t len = 0;
      *data = static_cast<const arrow::BinaryArray&>(a).GetValue(i, &len);
      *size = len;
      return;
    }
    case arrow::Type::LARGE_BINARY: {
      int64_t len = 0;
      *data = static_cast<const arrow::LargeBinaryArray&>(a).GetValue(i, &len);
      *size = len;
      return;
    }
    case arrow::Type::LIST: {
      const auto& l = static_cast<const arrow::ListArray&>(a);
      *data = static_cast<const arrow::UInt8Array&>(*l.values()).raw_values() + l.value_offset(i);
      *size = l.value_length(i);
      return;
    }
    case arrow::Type::LARGE_LIST: {
      const auto& l = static_cast<const arrow::LargeListArray&>(a);
      *data = static_cast<const arrow::UInt8Array&>(*l.values()).raw_values() + l.value_offset(i);
      *size = l.value_length(i);
      return;
    }
    default:
      *data = nullptr;
      *size = 0;
      return;
  }
}

// FirstUInt32: the first instance of a List<UInt32> cell (Rerun's VideoCodec component).
std::optional<uint32_t> FirstUInt32(const arrow::ListArray& list, int64_t row) {
  if (list.IsNull(row) || list.value_length(row) < 1) return std::nullopt;
  const auto& values = *list.values();
  const int64_t at = list.value_offset(row);
  if (values.IsNull(at)) return std::nullopt;
  switch (values.type_id()) {
    case arrow::Type::UINT32: return static_cast<const arrow::UInt32Array&>(values).Value(at);
    case arrow::Type::INT32: return static_cast<uint32_t>(static_cast<const arrow::Int32Array&>(values).Value(at));
    case arrow::Type::UINT64: return static_cast<uint32_t>(static_cast<const arrow::UInt64Array&>(values).Value(at));
    case arrow::Type::INT64: return static_cast<uint32_t>(static_cast<const arrow::Int64Array&>(values).Value(at));
    default: return std::nullopt;
  }
}

// FirstIsTrue: whether a List<Bool> cell's first element is true (null/empty/false: no).
bool FirstIsTrue(const arrow::ListArray& list, int64_t row) {
  if (list.IsNull(row) || list.value_length(row) < 1) return false;
  const auto& values = *list.values();
  const int64_t at = list.value_offset(row);
  if (values.type_id() != arrow::Type::BOOL || values.IsNull(at)) return false;
  return static_cast<const arrow::BooleanArray&>(values).Value(at);
}

std::string CodecText(uint32_t value) {
  return std::to_string(value);
}

}  // namespace

int64_t VideoIndex::ByteSize() const {
  return static_cast<int64_t>(times.capacity() * sizeof(int64_t) + refs.capacity() * sizeof(VideoPacketRef) +
                              prior_keyframe.capacity() * sizeof(int32_t)) +
         static_cast<int64_t>(sizeof(VideoIndex));
}

bool VideoSampleBytes(const arrow::ListArray& list, int64_t row, std::vector<uint8_t>* scratch, const uint8_t** data,
                      size_t* size) {
  if (list.IsNull(row)) return false;
  const int64_t offset = list.value_offset(row);
  const int64_t length = list.value_length(row);
  const arrow::Array& blobs = *list.values();
  if (length == 1) {
    if (blobs.IsNull(offset)) return false;
    int64_t n = 0;
    BlobInstance(blobs, offset, data, &n);
    *size = static_cast<size_t>(n);
    return n > 0 && *data != nullptr;
  }
  scratch->clear();
  for (int64_t k = offset; k < offset + length; ++k) {
    if (blobs.IsNull(k)) continue;
    const uint8_t* d = nullptr;
    int64_t n = 0;
    BlobInstance(blobs, k, &d, &n);
    if (d != nullptr) scratch->insert(scratch->end(), d, d + n);
  }
  *data = scratch->data();
  *size = scratch->size();
  return !scratch->empty();
}

Result<std::shared_ptr<const VideoIndex>> BuildVideoIndex(std::shared_ptr<const store::Segment> segment_ptr,
                                                          store::ChunkCache& cache, const std::string& index,
                                                          const VideoStreamColumns& columns,
                                                          std::optional<decode::VideoCodec> fallback_codec,
                                                          const std::string& where) {
  if (segment_ptr == nullptr) return Status::Internal(where + ": no segment");
  const store::Segment& segment = *segment_ptr;
  std::vector<PacketEntry> entries;
  std::set<int64_t> marked_times;  // index values whose is_keyframe row says true
  bool has_marker_column = false;
  std::optional<std::pair<chunk::RowId, uint32_t>> static_codec;  // latest by row id
  std::set<uint32_t> temporal_codecs;
  std::set<std::string> seen_chunk_ids;
  std::vector<uint8_t> scratch;

  // Pass 1 reads every chunk of the entity once, keeping no chunk: packet locations,
  // keyframe markers and the codec. The codec (needed by the keyframe detector) is only
  // known once every chunk was seen, so detection is pass 2, over the candidates' chunks.
  const auto& infos = segment.chunks();
  for (size_t i = 0; i < infos.size(); ++i) {
    const auto& info = infos[i];
    if (info.entity_path != columns.sample.entity_path || info.num_rows == 0) continue;
    if (!info.is_static &&
        std::none_of(info.ranges.begin(), info.ranges.end(), [&](const auto& r) { return r.timeline == index; })) {
      continue;  // not on this timeline: invisible to this index
    }
    auto loaded = segment.LoadChunk(i, cache);
    if (!loaded.ok()) return loaded.status().WithPrefix(where);
    const std::shared_ptr<const chunk::Chunk>& ch = *loaded;
    if (!ch->chunk_id().empty() && !seen_chunk_ids.insert(ch->chunk_id()).second) continue;
    const auto* codec_col = ch->FindComponent(columns.codec_component);
    const auto* sample_col = ch->FindComponent(columns.sample.component);
    if (ch->is_static()) {
      if (codec_col != nullptr) {
        for (int64_t r = 0; r < ch->num_rows(); ++r) {
          auto v = FirstUInt32(*codec_col->list, r);
          if (v && (!static_codec || static_codec->first < ch->row_id(r))) static_codec = {{ch->row_id(r), *v}};
        }
      }
      if (sample_col != nullptr) {
        for (int64_t r = 0; r < ch->num_rows(); ++r) {
          if (!sample_col->list->IsNull(r) && sample_col->list->value_length(r) > 0) {
            return Status::Unsupported(where + ": video samples logged as static data cannot be decoded as a stream");
          }
        }
      }
      continue;
    }
    const auto* tl = ch->FindTimeline(index);
    if (tl == nullptr) continue;
    if (codec_col != nullptr) {
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (auto v = FirstUInt32(*codec_col->list, r)) temporal_codecs.insert(*v);
      }
    }
    if (const auto* key_col = ch->FindComponent(columns.keyframe_component)) {
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (key_col->list->IsNull(r)) continue;
        has_marker_column = true;
        if (FirstIsTrue(*key_col->list, r)) marked_times.insert(tl->values[r]);
      }
    }
    if (sample_col == nullptr) continue;
    if (ch->num_rows() > int64_t{UINT32_MAX} || i > size_t{UINT32_MAX}) {
      return Status::Unsupported(where + ": a video chunk of more than 2^32 rows");
    }
    for (int64_t r = 0; r < ch->num_rows(); ++r) {
      const uint8_t* data = nullptr;
      size_t size = 0;
      if (!VideoSampleBytes(*sample_col->list, r, &scratch, &data, &size)) continue;
      entries.push_back({tl->values[r], ch->row_id(r), static_cast<uint32_t>(i), static_cast<uint32_t>(r), false});
    }
  }

  auto out = std::make_shared<VideoIndex>();
  out->segment = segment_ptr;
  std::sort(entries.begin(), entries.end(), EntryLess);
  entries.erase(std::unique(entries.begin(), entries.end(),
                            [](const PacketEntry& a, const PacketEntry& b) { return a.row_id == b.row_id; }),
                entries.end());
  if (entries.empty()) return std::shared_ptr<const VideoIndex>(std::move(out));
  if (entries.size() > size_t{INT32_MAX}) return Status::Unsupported(where + ": more than 2^31 video samples");

  // Codec: static wins; else the temporal values, which must agree; else the fallback.
  if (static_codec) {
    auto c = decode::VideoCodecFromRerun(static_codec->second);
    if (!c.ok()) return c.status().WithPrefix(where + ": codec component");
    out->codec = *c;
  } else if (!temporal_codecs.empty()) {
    if (temporal_codecs.size() > 1) {
      std::string values;
      for (uint32_t v : temporal_codecs) values += (values.empty() ? "" : ", ") + CodecText(v);
      return Status::Unsupported(where + ": the codec changes within the stream (Rerun VideoCodec values " + values +
                                 ")");
    }
    auto c = decode::VideoCodecFromRerun(*temporal_codecs.begin());
    if (!c.ok()) return c.status().WithPrefix(where + ": codec component");
    out->codec = *c;
  } else if (fallback_codec) {
    out->codec = *fallback_codec;
  } else {
    return Status::InvalidArgument(where + ": the stream has no codec component (" + columns.codec_component +
                                   "); pass VideoFrameDecoder(codec=...)");
  }

  // Keyframe candidates: the first packet at each marked value, or every packet.
  out->keyframes_from_column = has_marker_column;
  const size_t n = entries.size();
  std::vector<bool> candidate(n, !has_marker_column);
  if (has_marker_column) {
    for (size_t k = 0; k < n; ++k) {
      if ((k == 0 || entries[k - 1].time != entries[k].time) && marked_times.count(entries[k].time) != 0) {
        candidate[k] = true;
      }
    }
  }
  // Pass 2: the detector over the candidates, one chunk at a time (candidates sorted by
  // chunk, so each chunk is loaded once more, usually from the cache).
  std::vector<size_t> by_chunk;
  for (size_t k = 0; k < n; ++k) {
    if (candidate[k]) by_chunk.push_back(k);
  }
  std::stable_sort(by_chunk.begin(), by_chunk.end(),
                   [&](size_t a, size_t b) { return entries[a].chunk < entries[b].chunk; });
  std::shared_ptr<const chunk::Chunk> ch;
  uint32_t loaded_chunk = 0;
  const chunk::ComponentColumn* sample_col = nullptr;
  for (size_t k : by_chunk) {
    PacketEntry& e = entries[k];
    if (ch == nullptr || loaded_chunk != e.chunk) {
      auto loaded = segment.LoadChunk(e.chunk, cache);
      if (!loaded.ok()) return loaded.status().WithPrefix(where);
      ch = std::move(*loaded);
      loaded_chunk = e.chunk;
      sample_col = ch->FindComponent(columns.sample.component);
      if (sample_col == nullptr) return Status::Internal(where + ": a video chunk lost its sample column");
    }
    const uint8_t* data = nullptr;
    size_t size = 0;
    (void)VideoSampleBytes(*sample_col->list, e.row, &scratch, &data, &size);
    // A sample the detector cannot parse (e.g. length prefixes that do not tile it) is not a
    // place to start decoding, as in Rerun's detector; decoding it later reports why.
    auto key = decode::IsKeyframe(*out->codec, data, size);
    e.detected_key = key.ok() && *key;
  }
  ch.reset();
  out->times.resize(n);
  out->refs.resize(n);
  out->prior_keyframe.resize(n);
  int32_t prior = -1;
  for (size_t k = 0; k < n; ++k) {
    const PacketEntry& e = entries[k];
    out->times[k] = e.time;
    out->refs[k] = {e.chunk, e.row};
    if (e.detected_key) {
      prior = static_cast<int32_t>(k);
      ++out->keyframes;
    } else if (candidate[k]) {
      if (has_marker_column) ++out->keyframes_rejected;
    }
    out->prior_keyframe[k] = prior;
  }
  return std::shared_ptr<const VideoIndex>(std::move(out));
}

Result<std::shared_ptr<const VideoIndex>> VideoIndexCache::GetOrBuild(const std::string& key, const Builder& build) {
  std::promise<Built> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = map_.find(key); it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++hits_;
      return it->second->value;
    }
    if (auto it = building_.find(key); it != building_.end()) {
      std::shared_future<Built> pending = it->second;
      lock.unlock();
      return pending.get();  // a copy of the builder's result
    }
    building_.emplace(key, promise.get_future().share());
    ++builds_;
  }
  // Whatever happens, the waiters get an answer (an exception, e.g. std::bad_alloc, would
  // otherwise leave them waiting on a promise nobody sets).
  Built built = Status::Internal("video index build did not finish");
  try {
    built = build();
  } catch (const std::exception& e) {
    built = Status::Internal(std::string("building a video index failed: ") + e.what());
  }
  std::vector<std::shared_ptr<const VideoIndex>> evicted;  // freed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    building_.erase(key);
    if (built.ok() && *built != nullptr) {
      const int64_t bytes = (*built)->ByteSize();
      if (bytes <= capacity_bytes_) {
        lru_.push_front(Entry{key, *built, bytes});
        map_[key] = lru_.begin();
        bytes_ += bytes;
        while (bytes_ > capacity_bytes_ && !lru_.empty()) {
          Entry& last = lru_.back();
          bytes_ -= last.bytes;
          evicted.push_back(std::move(last.value));
          map_.erase(last.key);
          lru_.pop_back();
        }
      }
    }
  }
  promise.set_value(built);
  return built;
}

VideoIndexCacheStats VideoIndexCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {builds_, hits_, bytes_, static_cast<int64_t>(lru_.size())};
}

}  // namespace rrl::engine
