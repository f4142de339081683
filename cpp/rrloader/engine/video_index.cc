// rrloader/engine/video_index.cc — building and caching video stream indexes (video_index.h).
#include "rrloader/engine/video_index.h"

#include <arrow/array.h>

#include <algorithm>
#include <exception>
#include <map>
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

int64_t VideoClusterPackets::ByteSize() const {
  return static_cast<int64_t>(sizeof(VideoClusterPackets) + times.capacity() * sizeof(int64_t) +
                              refs.capacity() * sizeof(VideoPacketRef) + keyframe.capacity() +
                              prior.capacity() * sizeof(int32_t));
}

VideoIndexLayout LayoutVideoIndex(const store::Segment& segment, const std::string& index,
                                  const VideoStreamColumns& columns) {
  VideoIndexLayout out;
  struct Member {
    int64_t min = 0, max = 0;
    size_t chunk = 0;
    bool codec = false;  // may hold a codec value
  };
  std::vector<Member> members;
  bool static_chunks = false;
  bool codec_setup = false;  // a setup chunk may hold a temporal codec value
  const auto& infos = segment.chunks();
  for (size_t i = 0; i < infos.size(); ++i) {
    const auto& info = infos[i];
    if (info.entity_path != columns.sample.entity_path || info.num_rows == 0) continue;
    if (info.is_static) {
      out.setup.push_back(i);
      static_chunks = true;
      continue;
    }
    const rrd::TimeRange* range = nullptr;
    for (const auto& r : info.ranges) {
      if (r.timeline == index) range = &r;
    }
    if (range == nullptr) continue;  // not on this timeline: invisible to this index
    if (!info.has_component_stats) out.complete = false;
    const bool samples = info.MayHold(index, columns.sample.component);
    const bool markers = info.MayHold(index, columns.keyframe_component);
    const bool codec = info.MayHold(index, columns.codec_component);
    if (markers && info.has_component_stats) out.has_marker_column = true;
    if (samples) {
      // The chunk's whole range (not only its samples'): a marker row of the chunk at a time
      // with no sample of its own must land in the cluster of the packet it marks.
      members.push_back({range->min, range->max, i, codec});
    } else if (markers || codec) {
      out.setup.push_back(i);
      codec_setup = codec_setup || codec;
    }
  }
  if (!out.complete) {
    // Without per-component stats nothing says which chunks hold markers (which decides
    // what a keyframe candidate is) or samples: one cluster of everything, read at creation.
    VideoCluster all;
    all.min = INT64_MAX;
    all.max = INT64_MIN;
    for (const auto& m : members) {
      all.min = std::min(all.min, m.min);
      all.max = std::max(all.max, m.max);
      all.chunks.push_back(static_cast<uint32_t>(m.chunk));
    }
    for (size_t i : out.setup) {
      if (!infos[i].is_static) all.chunks.push_back(static_cast<uint32_t>(i));
    }
    std::sort(all.chunks.begin(), all.chunks.end());
    out.setup.erase(std::remove_if(out.setup.begin(), out.setup.end(), [&](size_t i) { return !infos[i].is_static; }),
                    out.setup.end());
    if (!all.chunks.empty()) {
      out.clusters.push_back(std::move(all));
      out.setup_clusters.push_back(0);
    }
    return out;
  }
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.min != b.min ? a.min < b.min : a.max < b.max; });
  std::vector<bool> cluster_codec;
  for (const auto& m : members) {
    if (out.clusters.empty() || m.min > out.clusters.back().max) {
      out.clusters.push_back(VideoCluster{m.min, m.max, {}});
      cluster_codec.push_back(false);
    }
    auto& c = out.clusters.back();
    c.max = std::max(c.max, m.max);
    c.chunks.push_back(static_cast<uint32_t>(m.chunk));
    if (m.codec) cluster_codec.back() = true;
  }
  for (auto& c : out.clusters) std::sort(c.chunks.begin(), c.chunks.end());
  // The codec, when neither a static chunk nor a chunk without samples can give it: from
  // the first cluster that holds a value.
  if (!static_chunks && !codec_setup) {
    for (size_t c = 0; c < out.clusters.size(); ++c) {
      if (cluster_codec[c]) {
        out.setup_clusters.push_back(c);
        break;
      }
    }
  }
  return out;
}

int64_t VideoIndex::ClusterAtOrBefore(int64_t value) const {
  auto it = std::upper_bound(clusters.begin(), clusters.end(), value,
                             [](int64_t v, const VideoCluster& c) { return v < c.min; });
  return static_cast<int64_t>(it - clusters.begin()) - 1;
}

std::shared_ptr<const VideoClusterPackets> VideoIndex::Loaded(size_t c) const {
  std::lock_guard<std::mutex> lock(mu_);
  return c < loaded_.size() ? loaded_[c] : nullptr;
}

int64_t VideoIndex::ByteSize() const {
  int64_t bytes = static_cast<int64_t>(sizeof(VideoIndex) + clusters.capacity() * sizeof(VideoCluster) +
                                       marked_times.size() * 48 + loaded_.capacity() * 16);
  for (const auto& c : clusters) bytes += static_cast<int64_t>(c.chunks.capacity() * sizeof(uint32_t));
  return bytes + loaded_bytes_.load();
}

Result<std::shared_ptr<const VideoClusterPackets>> VideoIndex::Load(size_t c, store::ChunkCache& cache,
                                                                    bool* newly) const {
  *newly = false;
  if (c >= clusters.size()) return Status::Internal(where + ": video cluster " + std::to_string(c) + " out of range");
  if (auto have = Loaded(c)) return have;
  const store::Segment& seg = *segment;
  std::vector<PacketEntry> entries;
  std::set<int64_t> local_marks;
  bool local_marker_rows = false;
  std::set<uint32_t> codec_values;
  std::set<std::string> seen_chunk_ids;
  std::map<uint32_t, std::shared_ptr<const chunk::Chunk>> chunks;  // held while detecting
  std::vector<uint8_t> scratch;
  for (uint32_t i : clusters[c].chunks) {
    auto loaded = seg.LoadChunk(i, cache);
    if (!loaded.ok()) return loaded.status().WithPrefix(where);
    const std::shared_ptr<const chunk::Chunk>& ch = *loaded;
    if (!ch->chunk_id().empty() && !seen_chunk_ids.insert(ch->chunk_id()).second) continue;
    const auto* tl = ch->FindTimeline(index);
    if (tl == nullptr) continue;
    if (const auto* codec_col = ch->FindComponent(columns.codec_component)) {
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (auto v = FirstUInt32(*codec_col->list, r)) codec_values.insert(*v);
      }
    }
    if (const auto* key_col = ch->FindComponent(columns.keyframe_component)) {
      for (int64_t r = 0; r < ch->num_rows(); ++r) {
        if (key_col->list->IsNull(r)) continue;
        local_marker_rows = true;
        if (FirstIsTrue(*key_col->list, r)) local_marks.insert(tl->values[r]);
      }
    }
    const auto* sample_col = ch->FindComponent(columns.sample.component);
    if (sample_col == nullptr) continue;
    if (ch->num_rows() > int64_t{UINT32_MAX}) {
      return Status::Unsupported(where + ": a video chunk of more than 2^32 rows");
    }
    for (int64_t r = 0; r < ch->num_rows(); ++r) {
      const uint8_t* data = nullptr;
      size_t size = 0;
      if (!VideoSampleBytes(*sample_col->list, r, &scratch, &data, &size)) continue;
      entries.push_back({tl->values[r], ch->row_id(r), i, static_cast<uint32_t>(r), false});
    }
    chunks[i] = ch;
  }
  // Temporal codec values must agree with the stream's (when it came from them).
  if (codec_from_temporal_) {
    for (uint32_t v : codec_values) {
      if (v != *codec_value) {
        return Status::Unsupported(where + ": the codec changes within the stream (Rerun VideoCodec values " +
                                   CodecText(*codec_value) + ", " + CodecText(v) + ")");
      }
    }
  }
  std::sort(entries.begin(), entries.end(), EntryLess);
  entries.erase(std::unique(entries.begin(), entries.end(),
                            [](const PacketEntry& a, const PacketEntry& b) { return a.row_id == b.row_id; }),
                entries.end());
  if (!entries.empty() && !codec) {
    return Status::InvalidArgument(where + ": the stream has no codec component (" + columns.codec_component +
                                   "); pass VideoFrameDecoder(codec=...)");
  }
  if (entries.size() > size_t{INT32_MAX}) return Status::Unsupported(where + ": more than 2^31 video samples");
  // Keyframe candidates: the first packet at each marked value, or every packet.
  const bool has_marker = has_marker_column_ || local_marker_rows;
  auto packets = std::make_shared<VideoClusterPackets>();
  const size_t n = entries.size();
  packets->times.resize(n);
  packets->refs.resize(n);
  packets->keyframe.assign(n, 0);
  packets->prior.resize(n);
  int32_t prior = -1;
  for (size_t k = 0; k < n; ++k) {
    const PacketEntry& e = entries[k];
    packets->times[k] = e.time;
    packets->refs[k] = {e.chunk, e.row};
    bool candidate = !has_marker;
    if (has_marker && (k == 0 || entries[k - 1].time != e.time)) {
      candidate = marked_times.count(e.time) != 0 || local_marks.count(e.time) != 0;
    }
    if (candidate) {
      const auto* sample_col = chunks[e.chunk]->FindComponent(columns.sample.component);
      const uint8_t* data = nullptr;
      size_t size = 0;
      (void)VideoSampleBytes(*sample_col->list, e.row, &scratch, &data, &size);
      // A sample the detector cannot parse (e.g. length prefixes that do not tile it) is not
      // a place to start decoding, as in Rerun's detector; decoding it later reports why.
      auto key = decode::IsKeyframe(*codec, data, size);
      if (key.ok() && *key) {
        packets->keyframe[k] = 1;
        prior = static_cast<int32_t>(k);
        ++packets->keyframes;
      } else if (has_marker) {
        ++packets->keyframes_rejected;
      }
    }
    packets->prior[k] = prior;
  }
  packets->last_keyframe = prior;
  std::shared_ptr<const VideoClusterPackets> stored = packets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (loaded_[c] != nullptr) return loaded_[c];  // another thread was first
    loaded_[c] = stored;
  }
  *newly = true;
  keyframes_ += packets->keyframes;
  keyframes_rejected_ += packets->keyframes_rejected;
  ++clusters_loaded_;
  loaded_bytes_ += packets->ByteSize();
  return stored;
}

Result<std::shared_ptr<const VideoIndex>> CreateVideoIndex(const std::shared_ptr<const store::Segment>& segment_ptr,
                                                           store::ChunkCache& cache, const std::string& index,
                                                           const VideoStreamColumns& columns,
                                                           std::optional<decode::VideoCodec> fallback_codec,
                                                           const std::string& where, bool codec_overrides) {
  if (segment_ptr == nullptr) return Status::Internal(where + ": no segment");
  const store::Segment& segment = *segment_ptr;
  VideoIndexLayout layout = LayoutVideoIndex(segment, index, columns);
  auto out = std::make_shared<VideoIndex>();
  out->segment = segment_ptr;
  out->index = index;
  out->columns = columns;
  out->where = where;
  out->clusters = std::move(layout.clusters);
  out->has_marker_column_ = layout.has_marker_column;
  out->loaded_.resize(out->clusters.size());
  std::optional<std::pair<chunk::RowId, uint32_t>> static_codec;  // latest by row id
  std::set<uint32_t> temporal_codecs;
  std::set<std::string> seen_chunk_ids;
  for (size_t i : layout.setup) {
    auto loaded = segment.LoadChunk(i, cache);
    if (!loaded.ok()) return loaded.status().WithPrefix(where);
    const std::shared_ptr<const chunk::Chunk>& ch = *loaded;
    if (!ch->chunk_id().empty() && !seen_chunk_ids.insert(ch->chunk_id()).second) continue;
    const auto* codec_col = ch->FindComponent(columns.codec_component);
    if (ch->is_static()) {
      if (codec_col != nullptr) {
        for (int64_t r = 0; r < ch->num_rows(); ++r) {
          auto v = FirstUInt32(*codec_col->list, r);
          if (v && (!static_codec || static_codec->first < ch->row_id(r))) static_codec = {{ch->row_id(r), *v}};
        }
      }
      if (const auto* sample_col = ch->FindComponent(columns.sample.component)) {
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
        out->has_marker_column_ = true;
        if (FirstIsTrue(*key_col->list, r)) out->marked_times.insert(tl->values[r]);
      }
    }
  }
  // The first cluster with a codec value, when no static or marker chunk gave one: its
  // values decide (read here, then checked again as the cluster's packets load).
  if (!static_codec && temporal_codecs.empty()) {
    for (size_t c : layout.setup_clusters) {
      for (uint32_t i : out->clusters[c].chunks) {
        auto loaded = segment.LoadChunk(i, cache);
        if (!loaded.ok()) return loaded.status().WithPrefix(where);
        const auto* tl = (*loaded)->FindTimeline(index);
        const auto* codec_col = (*loaded)->FindComponent(columns.codec_component);
        if (tl == nullptr || codec_col == nullptr) continue;
        for (int64_t r = 0; r < (*loaded)->num_rows(); ++r) {
          if (auto v = FirstUInt32(*codec_col->list, r)) temporal_codecs.insert(*v);
        }
      }
    }
  }
  // Codec: an overriding codec; else static wins; else the temporal values, which must agree;
  // else the fallback.
  // NOLINTNEXTLINE(bugprone-branch-clone): the first and last branches are the same assignment at different priorities
  if (codec_overrides && fallback_codec) {
    out->codec = *fallback_codec;
  } else if (static_codec) {
    auto c = decode::VideoCodecFromRerun(static_codec->second);
    if (!c.ok()) return c.status().WithPrefix(where + ": codec component");
    out->codec = *c;
    out->codec_value = static_codec->second;
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
    out->codec_value = *temporal_codecs.begin();
    out->codec_from_temporal_ = true;
  } else if (fallback_codec) {
    out->codec = *fallback_codec;
  }
  // (No codec at all is an error once a cluster turns out to hold packets: VideoIndex::Load.)
  out->keyframes_from_column = out->has_marker_column_;
  for (size_t c : layout.setup_clusters) {
    bool newly = false;
    auto packets = out->Load(c, cache, &newly);
    if (!packets.ok()) return packets.status();
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
        EvictLocked(&evicted);
      }
    }
  }
  promise.set_value(built);
  return built;
}

void VideoIndexCache::EvictLocked(std::vector<std::shared_ptr<const VideoIndex>>* evicted) {
  while (bytes_ > capacity_bytes_ && !lru_.empty()) {
    Entry& last = lru_.back();
    bytes_ -= last.bytes;
    evicted->push_back(std::move(last.value));
    map_.erase(last.key);
    lru_.pop_back();
  }
}

bool VideoIndexCache::Contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.count(key) != 0;
}

void VideoIndexCache::Resize(const std::string& key) {
  std::vector<std::shared_ptr<const VideoIndex>> evicted;  // freed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return;
  const int64_t bytes = it->second->value->ByteSize();
  bytes_ += bytes - it->second->bytes;
  it->second->bytes = bytes;
  EvictLocked(&evicted);
}

VideoIndexCacheStats VideoIndexCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {builds_, hits_, bytes_, static_cast<int64_t>(lru_.size())};
}

}  // namespace rrl::engine
