// rrloader/engine/video_index.h — the packets of one `VideoStream` of one segment on one
// index timeline, in decode order, with their keyframes and codec; and a byte-bounded
// cache of these indexes.
//
// An index is built the first time a block needs the stream (by the engine's fetch stage),
// from every chunk of the stream's entity that the dataset's `EntitySegment` lists, loaded
// through the chunk cache. It records where each packet lives (chunk number, row), not its
// bytes: a block loads the chunks of the GOPs it decodes.
//
// Rules (docs/dataloader.md, "Video"):
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
//     must agree), else the field's fallback (the decoder's `codec=` argument).
//
// Thread safety: a VideoIndex is immutable after Build except `frame_shape`, an atomic
// hint; share it freely. VideoIndexCache is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
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

// VideoIndex: one stream of one segment (see the file comment).
class VideoIndex {
 public:
  std::vector<int64_t> times;           // per packet: index value (ns on time timelines)
  std::vector<VideoPacketRef> refs;     // per packet
  std::vector<int32_t> prior_keyframe;  // per packet: latest keyframe position <= it, or -1
  // segment: the Segment the index was built from; `refs` number its chunks, so packets are
  // loaded through it (the same object) for as long as the index lives.
  std::shared_ptr<const store::Segment> segment;
  std::optional<decode::VideoCodec> codec;  // unset only when the stream has no packets
  bool keyframes_from_column = false;       // the segment logs is_keyframe
  int64_t keyframes = 0;                    // verified keyframes
  int64_t keyframes_rejected = 0;           // marked is_keyframe, rejected by the detector
  // frame_shape: (height << 32) | width of the frames decoded so far (0: none yet); a hint
  // that lets a later block allocate its output before decoding.
  mutable std::atomic<uint64_t> frame_shape{0};

  int64_t count() const { return static_cast<int64_t>(times.size()); }
  VideoStreamView View() const { return {times.data(), prior_keyframe.data(), count()}; }
  // ByteSize: memory held by the index (for the cache bound).
  int64_t ByteSize() const;
};

// BuildVideoIndex: the index of `columns` in `segment` on timeline `index`. `where` names
// the field, column and segment in error messages. Errors: the chunk loads' statuses;
// kInvalidArgument when the stream has packets but no codec is known; kUnsupported for a
// codec the decoder does not read (VP8/VP9), a codec that changes within the stream, or
// samples logged as static; kCorrupt for an unknown codec value.
[[nodiscard]] Result<std::shared_ptr<const VideoIndex>> BuildVideoIndex(
    std::shared_ptr<const store::Segment> segment, store::ChunkCache& cache, const std::string& index,
    const VideoStreamColumns& columns, std::optional<decode::VideoCodec> fallback_codec, const std::string& where);

// VideoSampleBytes: the bytes of the sample cell at `row` of `list` (List<List<UInt8>>,
// List<Binary> or List<LargeBinary>): its one instance in place, or several instances
// concatenated into `scratch`. False when the cell is null or holds no bytes.
bool VideoSampleBytes(const arrow::ListArray& list, int64_t row, std::vector<uint8_t>* scratch, const uint8_t** data,
                      size_t* size);

// kDefaultVideoIndexCacheBytes: 128 MiB of indexes (about 20 bytes per packet: some
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
// not cached (the next request tries again). Thread-safe.
class VideoIndexCache {
 public:
  using Builder = std::function<Result<std::shared_ptr<const VideoIndex>>()>;
  explicit VideoIndexCache(int64_t capacity_bytes = kDefaultVideoIndexCacheBytes) : capacity_bytes_(capacity_bytes) {}

  [[nodiscard]] Result<std::shared_ptr<const VideoIndex>> GetOrBuild(const std::string& key, const Builder& build);
  VideoIndexCacheStats stats() const;

 private:
  using Built = Result<std::shared_ptr<const VideoIndex>>;
  struct Entry {
    std::string key;
    std::shared_ptr<const VideoIndex> value;
    int64_t bytes = 0;
  };
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
