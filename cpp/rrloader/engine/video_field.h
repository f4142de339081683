// rrloader/engine/video_field.h — the engine's video fields (VideoFrameDecoder): options,
// what the fetch stage hands the decode stage, and the statistics a dataset reports.
//
// Fetch (Engine::FetchVideo, fetch thread): per (segment, column) the stream's VideoIndex
// (created on first use from the chunk index, cached in bytes), the clusters of the stream
// the block's slots need (the one holding each slot's packet and those back to its
// keyframe; loaded in rounds, each round's chunks prefetched together for every video field
// of the block), the block's view of each stream (the packets of those clusters), the
// block's plan over the views (video_plan.h: slots grouped by (segment, stream, keyframe)
// into GOPs), and each GOP's packet bytes, read in place from the chunks the block keeps
// alive.
// Decode (Engine::DecodeVideo, decode thread + pool): every GOP of every video field of the
// block on the engine's thread pool at once (largest first), each fed once to the field's
// decode::VideoFrameDecoder, whose session cache lets a later block continue a GOP; frames
// go straight into the field's [B, (T,) 3, H, W] buffer when their size is known in advance
// (`size=`, or learned from an earlier block of the stream), else into per-frame buffers
// that are then laid out; every other slot wanting the same frame gets a copy.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rrloader/decode/video.h"
#include "rrloader/engine/video_index.h"
#include "rrloader/engine/video_plan.h"

namespace rrl::engine {

// kDefaultVideoSessionCacheBytes: the decoder-session cache of one video field (32 MiB,
// as estimated by VideoDecoder::EstimatedBytes: a 640x480 H.264 session with one reference
// frame is about 2.5 MiB, so some 13 sessions; a 1080p one about 15 MiB). Sessions pay off
// when a later block continues a GOP (sequential reading needs one or two per stream);
// under a full shuffle they rarely do, so the bound is kept small.
inline constexpr int64_t kDefaultVideoSessionCacheBytes = int64_t{32} << 20;

// kVideoLookaheadPackets: packets past a GOP request's last wanted one that the decoder may
// be fed (within the GOP) so that a stream with B-frames delivers without a flush; a field
// with frame-threaded sessions gets at least their frame delay (VideoLookahead).
inline constexpr int64_t kVideoLookaheadPackets = 8;

// kVideoAutoThreads: the most threads libavcodec gives a session that leaves the count to
// it (threads = 0: the CPU count + 1, at most 16), so its frame delay is at most 15.
inline constexpr int kVideoAutoThreads = 16;

// VideoFieldOptions: a video field's settings (FieldSpec::video).
struct VideoFieldOptions {
  // codec: a codec name (decode::ParseVideoCodec); "" = none. A fallback for streams that log
  // no `codec` component, or, with codec_overrides, the codec of every stream whatever it
  // logs (rerun-sdk 0.41's VideoFrameDecoder(codec=...) never reads the component).
  std::string codec;
  bool codec_overrides = false;
  decode::VideoOutputSize size;  // 0 x 0: each frame's own size
  int64_t session_cache_bytes = kDefaultVideoSessionCacheBytes;
  // max_sessions: a bound on the cached decoder sessions beside the byte bound (-1: none;
  // 0: none are kept, every GOP decodes from its keyframe).
  int64_t max_sessions = -1;
  // threads: libavcodec threads per session (the pool decodes GOPs in parallel); 0 lets
  // libavcodec choose. Other than 1, H.264/H.265 sessions are frame-threaded, and the plan
  // feeds them up to their frame delay past the last wanted packet of a GOP (VideoLookahead)
  // so that sessions stay open across blocks.
  int threads = 1;
  // output_format: [3, H, W] RGB, or libavcodec's own YUV 4:2:0 planes (no resize then).
  decode::VideoOutputFormat output_format = decode::VideoOutputFormat::kRgb;
};

// VideoLookahead: packets past a GOP request's last wanted one the plan hands the decoder
// for a field decoded with `threads` per session (kVideoLookaheadPackets, or the frame
// delay of frame threading when larger).
inline int64_t VideoLookahead(int threads) {
  const int64_t delay = threads == 0 ? kVideoAutoThreads - 1 : threads - 1;
  return delay > kVideoLookaheadPackets ? delay : kVideoLookaheadPackets;
}

// VideoPrepared: what Engine::Make resolved for a video field.
struct VideoPrepared {
  VideoStreamColumns columns;
  std::optional<decode::VideoCodec> fallback_codec;  // from VideoFieldOptions::codec
  bool codec_overrides = false;                      // fallback_codec wins over the component
};

// VideoStreamBlock: the part of one stream a block reads: the packets of the clusters its
// slots need, in stream order (view positions 0, 1, ...), with their decoder positions
// (VideoIndex::Position). Not thread-safe; owned by its block.
struct VideoStreamBlock {
  std::vector<int64_t> times;
  std::vector<int32_t> prior_keyframe;  // view position of the latest keyframe at or before, or -1
  std::vector<uint8_t> continues;       // the next view packet is the stream's next packet
  std::vector<int64_t> positions;       // decoder positions, increasing
  std::vector<VideoPacketRef> refs;
  VideoStreamView View() const {
    return {times.data(), prior_keyframe.data(), static_cast<int64_t>(times.size()), continues.data()};
  }
};

// VideoFetch: one video field of a fetched block. Not thread-safe; owned by its block.
struct VideoFetch {
  VideoBlockPlan plan;                                     // over the views: positions are view positions
  std::vector<std::shared_ptr<const VideoIndex>> streams;  // by the plan's stream number
  std::vector<VideoStreamBlock> views;                     // by the plan's stream number
  std::vector<int32_t> stream_segment;                     // segment number of each stream
  std::vector<std::vector<decode::GopPacket>> packets;     // per planned GOP: [keyframe, last]
  std::vector<std::vector<int64_t>> wanted;                // per planned GOP: decoder positions of its wanted
  std::list<std::vector<uint8_t>> owned;                   // bytes of cells of several blobs
};

// VideoFieldStats: what a video field did since the engine was made. `frames_decoded /
// frames_delivered` is the figure to steer by: 1.0 means no frame was decoded that was not
// delivered. The decoder-session and index numbers are current sizes, the rest counters.
struct VideoFieldStats {
  int64_t frames_decoded = 0;               // frames out of libavcodec
  int64_t frames_delivered = 0;             // distinct frames converted to RGB for the block buffers
  int64_t slots_filled = 0;                 // (sample, slot) frames handed out (repeats included)
  int64_t gops_started = 0;                 // GOPs decoded from their keyframe
  int64_t sessions_recycled = 0;            // of those: on a reset idle session (no new allocations)
  int64_t gop_requests = 0;                 // GOP requests decoded (one per (stream, keyframe) per block)
  int64_t session_hits = 0;                 // requests that continued a cached session
  int64_t session_misses = 0;               // requests that needed a new session
  int64_t bytes_cached = 0;                 // decoder sessions' estimated bytes now
  int64_t sessions_cached = 0;              // decoder sessions now
  int64_t missing_no_keyframe = 0;          // samples with no verified keyframe at or before a slot's
                                            // packet, or no packet at all at or before a slot
  int64_t missing_before_first_packet = 0;  // of those: no packet at or before a slot
  int64_t missing_not_decoded = 0;          // samples whose frame libavcodec did not output
  int64_t streams_indexed = 0;              // video indexes created (segment, column)
  int64_t clusters_loaded = 0;              // parts of streams read (a cluster: chunks overlapping in time)
  int64_t keyframes_rejected = 0;           // is_keyframe marks the detector refused, in the parts read
};

// VideoFieldCounters: the engine-side counters of VideoFieldStats. Thread-safe.
struct VideoFieldCounters {
  std::atomic<int64_t> slots_filled{0};
  std::atomic<int64_t> gop_requests{0};
  std::atomic<int64_t> missing_no_keyframe{0};
  std::atomic<int64_t> missing_before_first_packet{0};
  std::atomic<int64_t> missing_not_decoded{0};
  std::atomic<int64_t> streams_indexed{0};
  std::atomic<int64_t> clusters_loaded{0};
  std::atomic<int64_t> keyframes_rejected{0};
  // last_shape: (height << 32) | width of the field's last delivered frame (0: none yet): the
  // size predicted for a stream that has not delivered a frame itself.
  std::atomic<uint64_t> last_shape{0};
};

}  // namespace rrl::engine
