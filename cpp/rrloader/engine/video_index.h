// rrloader/engine/video_index.h — the packets of one `VideoStream` of one segment on one
// index timeline, in decode order, with their keyframes and codec — indexed lazily, chunk
// by chunk — and a byte-bounded cache of these indexes.
//
// An index is created the first time a block needs the stream, from the segment's chunk
// index alone (the footer's or the catalog's manifest: per-chunk time ranges and
// per-component stats) plus a few small chunks (static ones, for the codec; chunks of
// `is_keyframe` markers or codec values without samples). The chunks that hold samples
// are grouped into *clusters*: chunks whose time ranges on the timeline overlap
// (transitively), so clusters are disjoint in time and ordered, and a packet's neighbours
// in (time, row id) order are in its own cluster or the next one. A cluster's packets are
// read (its chunks loaded, keyframe candidates run through the detector) only when a block
// needs one of them: the cluster holding a slot's packet and the clusters back to its
// keyframe. A stream logged one chunk per GOP (rerun's `optimize`, Mp4Reader) loads one
// chunk per GOP a block touches, never the whole stream.
//
// Rules (docs/dataloader.md, "Video"), the same whichever clusters are loaded:
//   * Packets: the non-null, non-empty cells of the sample column on the index timeline,
//     ordered by (index value, row id); a row id seen twice is one packet. A cell of several
//     blobs is their concatenation (as the reference reads it).
//   * Keyframes: when the segment logs the sibling `is_keyframe` component (sparse `true`
//     rows or dense `true`/`false` rows; a row counts when the first element of its list is
//     true), the first packet at each marked index value is a candidate; otherwise every
//     packet is. A candidate is a keyframe only when decode::IsKeyframe agrees (H.264: SPS +
//     IDR, H.265: SPS + IRAP, AV1: sequence header + shown key frame). A marked packet the
//     detector rejects is counted in `keyframes_rejected` and never starts a decode: its
//     frames decode from the previous keyframe (or are missing when there is none), so a
//     mislabeled stream can cost time but never yields a corrupt frame.
//   * Codec: the stream's `codec` component (static wins; else its temporal values, which
//     must agree), else the field's fallback (the decoder's `codec=` argument). Temporal
//     codec values are read from the chunks loaded so far (at least the first chunk that
//     holds one): a codec change in a part of the stream no block reads goes unnoticed.
//
// Positions: a packet's position, as the decoder sees it, is (cluster << 32) | its rank in
// the cluster: stable however many clusters are loaded, and increasing in stream order, so
// a decoder session continues a GOP across blocks.
//
// Thread safety: a VideoIndex's creation-time members are immutable; its loaded clusters
// are guarded by a mutex (two threads loading the same cluster both work, the first stored
// wins), `frame_shape` and the counters are atomics; share it freely. VideoIndexCache is
// thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/decode/bitstream.h"
#include "rrloader/engine/latest_at.h"
#include "rrloader/engine/video_plan.h"
#include "rrloader/store/chunk_cache.h"
#include "rrloader/store/segment.h"

namespace rrl::engine {

// VideoStreamColumns: the components of one VideoStream entity.
struct VideoStreamColumns {
  ColumnRef sample;                // e.g. {"/cam", "VideoStream:sample"}
  std::string keyframe_component;  // e.g. "VideoStream:is_keyframe"
  std::string codec_component;     // e.g. "VideoStream:codec"
};

// VideoPacketRef: where a packet's cell is: chunk number in the Segment, row in the chunk.
struct VideoPacketRef {
  uint32_t chunk = 0;
  uint32_t row = 0;
};

// VideoCluster: chunks of the stream whose ranges on the timeline overlap; inclusive range.
struct VideoCluster {
  int64_t min = 0, max = 0;
  std::vector<uint32_t> chunks;  // numbers in the Segment
};

// VideoClusterPackets: the packets of one loaded cluster, in stream order.
struct VideoClusterPackets {
  std::vector<int64_t> times;
  std::vector<VideoPacketRef> refs;
  std::vector<uint8_t> keyframe;  // verified keyframe
  std::vector<int32_t> prior;     // rank of the latest keyframe at or before each packet in the cluster, or -1
  int32_t last_keyframe = -1;     // rank of the cluster's last keyframe, or -1
  int64_t keyframes = 0;          // verified
  int64_t keyframes_rejected = 0;
  int64_t ByteSize() const;
};

// VideoIndexLayout: what the chunk index alone says about a stream: the chunks to read when
// the index is created (`setup`: static chunks of the entity, marker or codec chunks without
// samples, and the first cluster holding a codec value when no static one may exist) and
// the clusters. `complete`: every chunk of the entity had per-component stats; otherwise
// the layout is one cluster of every chunk, loaded at creation (the old full scan).
struct VideoIndexLayout {
  std::vector<size_t> setup;
  std::vector<VideoCluster> clusters;
  std::vector<size_t> setup_clusters;  // clusters loaded at creation
  bool has_marker_column = false;      // some chunk logs is_keyframe cells on the timeline
  bool complete = true;
};
VideoIndexLayout LayoutVideoIndex(const store::Segment& segment, const std::string& index,
                                  const VideoStreamColumns& columns);

// VideoIndex: one stream of one segment (see the file comment).
class VideoIndex {
 public:
  // segment: the Segment the index was created from; refs number its chunks, so packets
  // are loaded through it (the same object) for as long as the index lives.
  std::shared_ptr<const store::Segment> segment;
  std::string index;  // the timeline
  VideoStreamColumns columns;
  std::optional<decode::VideoCodec> codec;  // unset only when no cluster can hold a packet
  std::optional<uint32_t> codec_value;      // the Rerun VideoCodec value it came from, if any
  bool keyframes_from_column = false;       // the segment logs is_keyframe
  std::set<int64_t> marked_times;           // from the marker chunks read at creation
  std::vector<VideoCluster> clusters;       // sorted by time, disjoint
  std::string where;                        // names the field, column and segment
  // frame_shape: (height << 32) | width of the frames decoded so far (0: none yet); a hint
  // that lets a later block allocate its output before decoding.
  mutable std::atomic<uint64_t> frame_shape{0};

  // ClusterAtOrBefore: the last cluster whose range starts at or before `value`, or -1.
  int64_t ClusterAtOrBefore(int64_t value) const;
  // Loaded: cluster `c`'s packets, or null when not loaded yet.
  std::shared_ptr<const VideoClusterPackets> Loaded(size_t c) const;
  // Load: cluster `c`'s packets, reading its chunks through `cache` (a remote dataset's were
  // prefetched). `*newly` says whether this call stored them. Errors: the chunk loads';
  // kUnsupported for a codec value that differs from the stream's; kInvalidArgument when
  // the cluster has packets but no codec is known.
  [[nodiscard]] Result<std::shared_ptr<const VideoClusterPackets>> Load(size_t c, store::ChunkCache& cache,
                                                                        bool* newly) const;
  // ChunksOf: the chunk numbers of cluster `c`.
  const std::vector<uint32_t>& ChunksOf(size_t c) const { return clusters[c].chunks; }

  int64_t keyframes() const { return keyframes_.load(); }
  int64_t keyframes_rejected() const { return keyframes_rejected_.load(); }
  int64_t clusters_loaded() const { return clusters_loaded_.load(); }
  // ByteSize: memory held by the index now (for the cache bound); grows as clusters load.
  int64_t ByteSize() const;

  static int64_t Position(size_t cluster, size_t rank) {
    return (static_cast<int64_t>(cluster) << 32) | static_cast<int64_t>(rank);
  }

 private:
  friend Result<std::shared_ptr<const VideoIndex>> CreateVideoIndex(const std::shared_ptr<const store::Segment>&,
                                                                    store::ChunkCache&, const std::string&,
                                                                    const VideoStreamColumns&,
                                                                    std::optional<decode::VideoCodec>,
                                                                    const std::string&, bool);
  mutable std::mutex mu_;
  mutable std::vector<std::shared_ptr<const VideoClusterPackets>> loaded_;  // per cluster
  mutable std::atomic<int64_t> keyframes_{0};
  mutable std::atomic<int64_t> keyframes_rejected_{0};
  mutable std::atomic<int64_t> clusters_loaded_{0};
  mutable std::atomic<int64_t> loaded_bytes_{0};
  bool has_marker_column_ = false;
  bool codec_from_temporal_ = false;  // codec_value must then match every value read
};

// CreateVideoIndex: the index of `columns` in `segment` on timeline `index`, reading the
// layout's setup chunks through `cache`. `where` names the field, column and segment in
// error messages. Errors: the chunk loads' statuses; kInvalidArgument when the stream has
// samples but no codec is known; kUnsupported for a codec the decoder does not read
// (VP8/VP9), temporal codec values that disagree, or samples logged as static; kCorrupt for
// an unknown codec value. `codec_overrides`: the stream is decoded as `fallback_codec` whatever
// its codec component says (the component is not read, nor checked).
[[nodiscard]] Result<std::shared_ptr<const VideoIndex>> CreateVideoIndex(
    const std::shared_ptr<const store::Segment>& segment, store::ChunkCache& cache, const std::string& index,
    const VideoStreamColumns& columns, std::optional<decode::VideoCodec> fallback_codec, const std::string& where,
    bool codec_overrides = false);

// VideoSampleBytes: the bytes of the sample cell at `row` of `list` (List<List<UInt8>>,
// List<Binary> or List<LargeBinary>): its one instance in place, or several instances
// concatenated into `scratch`. False when the cell is null or holds no bytes.
bool VideoSampleBytes(const arrow::ListArray& list, int64_t row, std::vector<uint8_t>* scratch, const uint8_t** data,
                      size_t* size);

// kDefaultVideoIndexCacheBytes: 128 MiB of indexes (about 20 bytes per loaded packet: some
// 6.7 million packets, 62 hours of 30 fps video) unless told otherwise.
inline constexpr int64_t kDefaultVideoIndexCacheBytes = int64_t{128} << 20;

// VideoIndexCacheStats: counters since construction (bytes/entries: now).
struct VideoIndexCacheStats {
  int64_t builds = 0;
  int64_t hits = 0;
  int64_t bytes = 0;
  int64_t entries = 0;
};

// VideoIndexCache: key -> index, least recently used evicted past `capacity_bytes` (an
// index larger than the whole capacity is returned but not kept). Concurrent requests for
// the same missing key build it once: the others wait for that build. A failed build is
// not cached (the next request tries again). Indexes grow as their clusters load: Resize
// re-reads an entry's size and evicts past the bound. Thread-safe.
class VideoIndexCache {
 public:
  using Builder = std::function<Result<std::shared_ptr<const VideoIndex>>()>;
  explicit VideoIndexCache(int64_t capacity_bytes = kDefaultVideoIndexCacheBytes) : capacity_bytes_(capacity_bytes) {}

  [[nodiscard]] Result<std::shared_ptr<const VideoIndex>> GetOrBuild(const std::string& key, const Builder& build);
  // Contains: whether `key` is cached now (no hit counted, no recency change).
  bool Contains(const std::string& key) const;
  // Resize: re-reads the size of `key`'s entry (no-op when absent) and evicts past the bound.
  void Resize(const std::string& key);
  VideoIndexCacheStats stats() const;

 private:
  using Built = Result<std::shared_ptr<const VideoIndex>>;
  struct Entry {
    std::string key;
    std::shared_ptr<const VideoIndex> value;
    int64_t bytes = 0;
  };
  void EvictLocked(std::vector<std::shared_ptr<const VideoIndex>>* evicted);
  const int64_t capacity_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // front = most recent
  std::unordered_map<std::string, std::list<Entry>::iterator> map_;
  std::unordered_map<std::string, std::shared_future<Built>> building_;
  int64_t bytes_ = 0;
  int64_t builds_ = 0;
  int64_t hits_ = 0;
};

}  // namespace rrl::engine
