// rrloader/decode/video.h — decoding frames of Rerun `VideoStream` fields (H.264, H.265,
// AV1) into planar [3, H, W] uint8 RGB (libavcodec + libswscale), or into YUV 4:2:0 planes
// taken straight from libavcodec's picture (rerun-sdk 0.41's `output_format="yuv420p"`).
//
// Two levels:
//   VideoDecoder       one libavcodec decoding session over one GOP: feed samples in
//                      decode order, get frames back tagged with the position (packet
//                      number) of the sample that coded them, convert them to RGB.
//   VideoFrameDecoder  what the engine calls: decode the wanted frames of one GOP, feeding
//                      each packet once, with open sessions kept in an LRU cache bounded in
//                      bytes so a later block that continues the GOP decodes only the new
//                      packets. Thread-safe; one per video field (or shared).
//
// How the engine drives it (one call per (segment, stream, GOP) touched by a block):
//   1. Plan: for each wanted sample, the row of the latest packet at or before it
//      (`position`, e.g. the row number within the segment's video column) and the row of
//      the latest keyframe at or before that packet (from `is_keyframe`, or IsKeyframe()
//      on the samples). No keyframe → the value is missing; do not call.
//   2. Group the wanted positions of a block by (segment, stream, keyframe position).
//   3. DecodeGop({stream_key = segment + column, codec, packets = the GOP's samples from
//      its keyframe through at least the largest wanted position, in decode order;
//      wanted = sorted unique positions}, sink). The sink returns where each frame goes
//      (e.g. straight into the batch buffer); positions reported missing stay missing.
//      Passing a few packets past the last wanted one lets a stream with B-frames deliver
//      its frames without ending the session (see DecodeGop).
//
// Pixel values: the RGB conversion is libswscale's YUV→RGB24 with SWS_BILINEAR and the
// frame's own colorspace (BT.601 when unspecified) and range, which is what PyAV's
// `frame.to_ndarray(format="rgb24")` does; without resizing, frames are pixel-identical to
// PyAV's (tests/python/test_video_decode.py). Resizing happens in the same libswscale call
// (bilinear); PyAV 18 wheels bundle FFmpeg 8, whose scaler rounds differently, so resized
// frames are close to, not identical with, PyAV's `to_ndarray(width=, height=)`.
//
// YUV 4:2:0 output (VideoOutputFormat::kYuv420, CopyYuv420): a yuv420p / yuvj420p picture's
// visible rows are copied as they are (no libswscale, no RGB); any other pixel format (4:2:2,
// 4:4:4, 10-bit, ...) is first converted to yuv420p by libswscale the way PyAV's
// `frame.reformat(format="yuv420p")` (what rerun-sdk 0.41 calls) does: SWS_BILINEAR, the
// frame's own matrix and range on both sides (so no range or matrix change, only chroma
// resampling and bit depth), chroma sited at the frame's chroma location. The colour metadata goes with each frame
// (VideoColor, with 0.41's mapping of FFmpeg's enums).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/decode/bitstream.h"
#include "rrloader/decode/ffmpeg.h"

namespace rrl::decode {

// VideoOutputFormat: the pixels DecodeGop hands to a sink.
enum class VideoOutputFormat : uint8_t {
  kRgb,     // planar [3, H, W] uint8 RGB (default)
  kYuv420,  // Y [H, W] and UV [2, ceil(H/2), ceil(W/2)] (U then V) uint8, see CopyYuv420
};

// VideoOutputFormatName: "rgb" | "yuv420p" (rerun-sdk 0.41's `output_format` values).
const char* VideoOutputFormatName(VideoOutputFormat format);
// ParseVideoOutputFormat: "rgb" or "yuv420p"; kInvalidArgument naming the value otherwise.
[[nodiscard]] Result<VideoOutputFormat> ParseVideoOutputFormat(std::string_view name);

// Yuv420ChromaHeight / Yuv420ChromaWidth: the chroma plane size of a 4:2:0 frame,
// ceil(H / 2) x ceil(W / 2) (odd sizes round up, as in FFmpeg and rerun-sdk 0.41).
constexpr int Yuv420ChromaHeight(int height) {
  return (height + 1) / 2;
}
constexpr int Yuv420ChromaWidth(int width) {
  return (width + 1) / 2;
}
// Yuv420LumaBytes / Yuv420ChromaBytes: bytes of the Y plane [H, W] and of the UV planes
// [2, ceil(H/2), ceil(W/2)] of one frame.
constexpr int64_t Yuv420LumaBytes(int height, int width) {
  return int64_t{height} * width;
}
constexpr int64_t Yuv420ChromaBytes(int height, int width) {
  return int64_t{2} * Yuv420ChromaHeight(height) * Yuv420ChromaWidth(width);
}
// VideoFrameBytes: the output bytes of one H x W frame in `format` (RGB: 3 per pixel;
// YUV 4:2:0: luma plus chroma, about 1.5 per pixel), for sizing buffers.
constexpr int64_t VideoFrameBytes(VideoOutputFormat format, int height, int width) {
  return format == VideoOutputFormat::kRgb ? int64_t{3} * height * width
                                           : Yuv420LumaBytes(height, width) + Yuv420ChromaBytes(height, width);
}

// VideoColorSpace / VideoColorRange: a frame's colour metadata as rerun-sdk 0.41 reports it
// (`Yuv420Frame.color_space` / `.color_range`).
enum class VideoColorSpace : uint8_t { kUnspecified, kBt601, kBt709, kBt2020 };
enum class VideoColorRange : uint8_t { kUnspecified, kLimited, kFull };
// VideoColorSpaceName: "unspecified" | "bt601" | "bt709" | "bt2020".
const char* VideoColorSpaceName(VideoColorSpace space);
// VideoColorRangeName: "unspecified" | "limited" | "full".
const char* VideoColorRangeName(VideoColorRange range);

// VideoColor: the colour metadata of one frame.
struct VideoColor {
  VideoColorSpace space = VideoColorSpace::kUnspecified;
  VideoColorRange range = VideoColorRange::kUnspecified;
  bool operator==(const VideoColor&) const = default;
};

// FrameColor: `frame`'s metadata with 0.41's mapping: AVColorSpace BT709 -> bt709,
// BT470BG and SMPTE170M -> bt601, BT2020_NCL -> bt2020, anything else (including
// BT2020_CL, FCC, SMPTE240M, RGB) -> unspecified; AVColorRange MPEG -> limited, JPEG ->
// full, else full for a deprecated "yuvj" pixel format (which means full range), else
// unspecified. Read from the frame as libavcodec gave it (before any reformat).
VideoColor FrameColor(const AVFrame& frame);

// VideoDecoderOptions: settings of one decoding session.
struct VideoDecoderOptions {
  // threads: libavcodec decoding threads (default 1; 0: libavcodec chooses, from the CPU
  // count). Other than 1, H.264 and H.265 use frame threading (several frames decode at
  // once), which holds each frame back until up to threads - 1 later packets are fed
  // (frame_delay()): frames still carry their own positions, and a GopRequest's packets
  // past its last wanted one let the held-back frames out without a flush, so a session
  // stays open for later blocks. libdav1d gets that many threads with max_frame_delay = 1.
  int threads = 1;
  // max_pixels: frames (or resize targets) larger than width * height = max_pixels are
  // refused with kUnsupported (default 2^26, ~67 MP).
  int64_t max_pixels = int64_t{1} << 26;
  // reject_reordering: a stream whose frames the decoder reorders (B-frames: the decoder
  // reports a reorder delay, or an H.264 frame is a B picture) is refused with kUnsupported
  // before any such frame is handed out (default false: frames are matched to their packets
  // by position, which is exact when the samples are fed in decode order). The dataloader
  // sets it: Rerun's VideoStream stores presentation times only, so a stream with B-frames
  // sorted by time is not in decode order, and libavcodec would silently return wrong
  // pictures for it.
  bool reject_reordering = false;
  // kept_frames: how many of the last frames that came out a session keeps (default 1, at
  // most 1024), so that a later request wanting one of them again (the frames of a window
  // that overlap the previous block's) is served without decoding the GOP anew. Each costs
  // one decoded picture of memory (counted in EstimatedBytes).
  int kept_frames = 1;
};

// VideoOutputSize: the output size; 0 x 0 (default) keeps each frame's own size.
struct VideoOutputSize {
  int height = 0;
  int width = 0;
  bool resize() const { return height > 0 && width > 0; }
};

// VideoDecoder: one libavcodec decoding session. Samples go in with strictly increasing
// positions; every frame that comes out carries the position of the sample that coded it
// (AVPacket pts = position, read back from AVFrame pts, so B-frame reordering is
// accounted for). Not thread-safe; one thread at a time. Movable only as a unique_ptr.
class VideoDecoder {
 public:
  // FrameCallback: called for each decoded frame, in output (presentation) order, with its
  // position. The frame is valid during the call only. A non-OK status stops decoding and
  // is returned by Feed/Flush.
  using FrameCallback = std::function<Status(const AVFrame& frame, int64_t position)>;

  // Open: a session for `codec` (libavcodec decoders "h264", "hevc", and "libdav1d" for AV1
  // when the build has it, else "av1"). kUnsupported naming the codec when this FFmpeg
  // build has no such decoder; kInternal when FFmpeg cannot allocate or open it.
  [[nodiscard]] static Result<std::unique_ptr<VideoDecoder>> Open(VideoCodec codec, const VideoDecoderOptions& options);

  ~VideoDecoder();
  VideoDecoder(const VideoDecoder&) = delete;
  VideoDecoder& operator=(const VideoDecoder&) = delete;

  // Feed: decodes one sample (an access unit / temporal unit). H.264/H.265 samples may be
  // Annex B or 4-byte length-prefixed (converted, detected per sample). `position` must be
  // above every position fed before (kInvalidArgument). Frames that become ready are passed
  // to `on_frame`. kCorrupt (naming the position) when libavcodec rejects the data or
  // returns a frame it marks damaged; kInvalidArgument after Flush.
  [[nodiscard]] Status Feed(const uint8_t* data, size_t size, int64_t position, const FrameCallback& on_frame);

  // Flush: end of stream; the frames libavcodec still holds (reordering delay) come out.
  // The session takes no more samples afterwards (until Reset).
  [[nodiscard]] Status Flush(const FrameCallback& on_frame);

  // Reset: back to the state of a newly opened session (avcodec_flush_buffers: no frames,
  // no positions fed, no kept frames), keeping libavcodec's allocations (its picture pool,
  // tables) and the RGB scratch, so decoding another GOP from its keyframe costs no new
  // memory. The next sample must be a keyframe (with its parameter sets), as for Open.
  void Reset();

  // ConvertToRgb: converts `frame` to planar [3, H, W] uint8 RGB in `out` (H x W is
  // `size`, or the frame's own size), in one libswscale call (see the file comment).
  // kInvalidArgument when `out_capacity` < 3 * H * W; kUnsupported above max_pixels or
  // for a pixel format libswscale cannot read. Uses the session's scaler and scratch.
  [[nodiscard]] Status ConvertToRgb(const AVFrame& frame, const VideoOutputSize& size, uint8_t* out,
                                    int64_t out_capacity);

  // CopyYuv420: writes `frame`'s visible Y rows to `y_dst` ([H, W], row stride W) and its
  // U then V rows to `uv_dst` ([2, ceil(H/2), ceil(W/2)], U at uv_dst, V at uv_dst +
  // ceil(H/2) * ceil(W/2)), H x W being the frame's own size (no resizing). yuv420p and
  // yuvj420p pictures are copied as decoded; other pixel formats go through libswscale to
  // yuv420p first (see the file comment; the session's scaler and the thread's scratch).
  // The destinations may be anywhere (no alignment) and must not overlap. kUnsupported
  // above max_pixels or for a pixel format libswscale cannot read; kCorrupt for a frame
  // without pixels.
  [[nodiscard]] Status CopyYuv420(const AVFrame& frame, uint8_t* y_dst, uint8_t* uv_dst);

  VideoCodec codec() const { return codec_; }
  // frame_delay: how many packets past a frame's own libavcodec may need before it hands
  // the frame out (frame threading: its thread count - 1; else 0). B-frame reordering
  // comes on top (and is refused when reject_reordering is set).
  int frame_delay() const;
  // last_fed_position: the position of the last sample fed (INT64_MIN before the first).
  int64_t last_fed_position() const { return last_fed_position_; }
  // frames_decoded: frames that came out of libavcodec in this session.
  int64_t frames_decoded() const { return frames_decoded_; }
  bool flushed() const { return flushed_; }
  // pending_positions: positions fed whose frame has not come out yet (reorder delay).
  const std::vector<int64_t>& pending_positions() const { return pending_; }
  // last_frame / last_frame_position: the last frame that came out (kept so a later block
  // wanting the same position is served without a new session), or null / INT64_MIN.
  const AVFrame* last_frame() const { return kept_.empty() ? nullptr : kept_.back().frame.get(); }
  int64_t last_frame_position() const { return kept_.empty() ? INT64_MIN : kept_.back().position; }
  // KeptFrame: the kept frame (one of the last `kept_frames` out) of `position`, or null.
  const AVFrame* KeptFrame(int64_t position) const;
  // kept_positions: the positions of the kept frames, oldest first.
  std::vector<int64_t> kept_positions() const;
  // EstimatedBytes: an estimate of the memory this session holds (libavcodec's pictures and
  // tables, the kept frames), for byte-bounded caches.
  int64_t EstimatedBytes() const;

 private:
  explicit VideoDecoder(VideoCodec codec, const VideoDecoderOptions& options);
  Status Drain(const FrameCallback& on_frame, int64_t position_for_errors);
  Status SendAndDrain(const AVPacket* packet, int64_t position, const FrameCallback& on_frame);
  // Scratch: this thread's conversion buffer (packed RGB24, or a yuv420p picture) of at
  // least `bytes`, or null (no memory). One at a time: valid until the thread's next call.
  static uint8_t* Scratch(size_t bytes);

  VideoCodec codec_;
  VideoDecoderOptions options_;
  AvCodecContextPtr ctx_;
  AvPacketPtr packet_;
  AvFramePtr frame_;
  struct Kept {
    int64_t position = 0;
    AvFramePtr frame;
  };
  std::deque<Kept> kept_;  // the last frames out, oldest first (at most options_.kept_frames)
  int64_t last_fed_position_ = INT64_MIN;
  int64_t frames_decoded_ = 0;
  int64_t frame_bytes_ = 0;  // YUV bytes of the last frame seen
  bool flushed_ = false;
  std::vector<int64_t> pending_;
  // Scaler: one libswscale context with the key it was made for and the colour details
  // last set on it (sws_getCachedContext is not used: see Prepare).
  struct Scaler {
    struct Key {
      int src_width = 0, src_height = 0, src_format = -1, out_width = 0, out_height = 0, out_format = -1;
      int chroma_location = 0;  // YUV destinations only (see MakeSitedScaler in video.cc)
      bool operator==(const Key&) const = default;
    };
    SwsContextPtr ctx;
    Key key;
    int colorspace = -1;
    int src_full_range = -1;
    // Prepare: a context converting `frame` (its size and format) to out_w x out_h
    // `out_format` (RGB24 or yuv420p) with SWS_BILINEAR and the frame's own matrix and
    // range; made again only when the key changes.
    [[nodiscard]] Status Prepare(const AVFrame& frame, int out_w, int out_h, AVPixelFormat out_format);
  };
  Scaler rgb_scaler_;  // to RGB24
  Scaler yuv_scaler_;  // to yuv420p (pixel formats other than yuv420p / yuvj420p)
};

// GopPacket: one sample of a GOP: its bytes (not owned; valid during the call) and its
// position (any strictly increasing int64 per stream, e.g. the row number).
struct GopPacket {
  const uint8_t* data = nullptr;
  size_t size = 0;
  int64_t position = 0;
};

// GopRequest: the frames wanted from one GOP of one stream.
struct GopRequest {
  // stream_key: names the stream (e.g. segment id + column); sessions are cached per
  // (stream_key, keyframe position) and checked against the keyframe's bytes.
  std::string stream_key;
  VideoCodec codec = VideoCodec::kH264;
  // packets: decode order, strictly increasing positions; packets[0] is the GOP's keyframe.
  // Must reach the largest wanted position; packets after it are fed only while a wanted
  // frame is still held back by the decoder (B-frames).
  std::vector<GopPacket> packets;
  // wanted: positions whose frames to deliver; sorted ascending, unique, each one of the
  // packets' positions (others are reported missing).
  std::vector<int64_t> wanted;
  VideoOutputSize size;
  // output_format: RGB (default) or YUV 4:2:0 planes. YUV takes no resize (a size with
  // kYuv420 is kInvalidArgument) and needs the FrameTargetSink form of DecodeGop.
  VideoOutputFormat output_format = VideoOutputFormat::kRgb;
  // verify_keyframe: check packets[0] with IsKeyframe (default true, as Rerun does to cover
  // a mis-logged is_keyframe); when it is not a keyframe every wanted frame is missing.
  bool verify_keyframe = true;
  // describe: optional; names a packet position in error messages (e.g. "frame=120", the
  // index value the caller knows it by). Called only on errors, from the decoding thread.
  std::function<std::string(int64_t position)> describe;
  // ends_gop: the packets run to the GOP's last one (the stream's next packet is a
  // keyframe, or there is none). A session fed through them can serve its kept frames
  // only, so the cache gives it up before sessions that can continue (default false:
  // not known, treated as a session that may continue).
  bool ends_gop = false;
};

// FrameSink: where the frame of `position` goes: a buffer of at least 3 * height * width
// bytes that receives planar RGB, or an error (stops decoding). Called once per delivered
// position, from the thread running DecodeGop. RGB requests only.
using FrameSink = std::function<Result<uint8_t*>(int64_t position, int height, int width)>;

// VideoFrameInfo: what a FrameTargetSink learns of a frame before saying where it goes.
struct VideoFrameInfo {
  int height = 0;    // output height: the request's resize target, or the frame's own
  int width = 0;     // output width
  VideoColor color;  // the decoded frame's colour metadata (FrameColor)
};

// FrameTarget: where one frame goes. RGB: `data` receives planar [3, H, W] (3 * H * W
// bytes), `uv` is unused. YUV 4:2:0: `data` receives Y [H, W] (Yuv420LumaBytes) and `uv`
// receives [2, ceil(H/2), ceil(W/2)], U then V (Yuv420ChromaBytes); the two may be far
// apart (e.g. a block's Y region and its UV region) but must not overlap.
struct FrameTarget {
  uint8_t* data = nullptr;
  uint8_t* uv = nullptr;
};

// FrameTargetSink: the FrameTarget of `position`'s frame, or an error (stops decoding).
// Called once per delivered position, from the thread running DecodeGop.
using FrameTargetSink = std::function<Result<FrameTarget>(int64_t position, const VideoFrameInfo& info)>;

// GopOutcome: what DecodeGop did.
struct GopOutcome {
  std::vector<int64_t> delivered;  // positions handed to the sink, ascending
  std::vector<int64_t> missing;    // wanted positions with no frame (see DecodeGop)
  int64_t frames_decoded = 0;      // frames libavcodec produced during this call
  int64_t packets_fed = 0;         // samples fed during this call
  bool session_hit = false;        // continued a cached session
};

// VideoStats: counters since construction (monotonic, except bytes_cached).
struct VideoStats {
  int64_t frames_decoded = 0;      // frames out of libavcodec
  int64_t frames_delivered = 0;    // frames written to a sink (RGB or YUV)
  int64_t frames_reformatted = 0;  // of the YUV ones: not 4:2:0 8-bit, converted by libswscale
  int64_t gops_started = 0;        // GOPs decoded from their keyframe (a new or a reset session)
  int64_t sessions_recycled = 0;   // of those: on a reset cached session instead of a new one
  int64_t session_hits = 0;        // DecodeGop calls that continued a cached session
  int64_t session_misses = 0;      // DecodeGop calls that needed a new session
  int64_t bytes_cached = 0;        // EstimatedBytes of the sessions in the cache now
  int64_t sessions_cached = 0;     // sessions in the cache now
};

// VideoFrameDecoderOptions: decoder settings plus the session cache bounds.
// What the cache gives up first when it is over a bound: a spent session (flushed, fed
// through the end of its GOP, or behind a position of its GOP that this pass, see
// BeginPass, already fed: it serves its kept frames only, since a pass asks for each
// sample once), least recently used first; then one that could continue, least recently
// used first. Why: a shuffle by blocks ends most blocks mid-GOP, and the block that
// starts where one ended comes at a random later time of the epoch; under plain LRU the
// GOPs decoded in between (all spent) pushed its session out, and that block decoded the
// GOP's head again from the keyframe.
struct VideoFrameDecoderOptions {
  VideoDecoderOptions decoder;
  // session_cache_bytes: bound on the EstimatedBytes of idle sessions (default
  // 256 MiB; 0 keeps none, so every call starts from the keyframe).
  int64_t session_cache_bytes = int64_t{256} << 20;
  // max_sessions: bound on the number of idle sessions, beside the byte bound (default
  // -1: none; 0 keeps none, as rerun-sdk 0.41's max_decoder_sessions=0).
  int64_t max_sessions = -1;
};

// VideoFrameDecoder: GOP-at-a-time frame decoding with a session cache bounded in bytes
// and, optionally, in sessions.
// Thread-safe: DecodeGop may run concurrently on any threads (a session is used by one
// call at a time; two calls on the same GOP at once use two sessions).
class VideoFrameDecoder {
 public:
  explicit VideoFrameDecoder(const VideoFrameDecoderOptions& options = {});
  ~VideoFrameDecoder();
  VideoFrameDecoder(const VideoFrameDecoder&) = delete;
  VideoFrameDecoder& operator=(const VideoFrameDecoder&) = delete;

  // DecodeGop: delivers the wanted frames of one GOP to `sink`, feeding each packet at
  // most once. A cached session for (stream_key, keyframe) continues when every wanted
  // position is still to come, still held by the decoder, or one of the session's kept
  // frames (VideoDecoderOptions::kept_frames); otherwise the GOP decodes from its keyframe
  // on that session reset (avcodec_flush_buffers), on a reset idle one when the cache is
  // full, or on a new one. Feeding stops as soon as every wanted frame is delivered; if the
  // packets run out while a wanted frame is still held back (B-frames, or frame threading
  // at the end of a GOP), the session is flushed: it is cached still, serving only its kept
  // frames until it is reset for another GOP.
  // Missing (not an error): packets[0] is not a keyframe (verify_keyframe), a wanted
  // position that is not a packet's, a frame libavcodec never outputs (e.g. an H.265 RASL
  // picture after a CRA it cannot decode). Errors: kInvalidArgument for an empty packet
  // list or unordered positions; kUnsupported for a codec this build lacks; kCorrupt from
  // the packets (naming the stream key and position); the sink's errors.
  // This form delivers RGB only (kInvalidArgument for a kYuv420 request).
  [[nodiscard]] Result<GopOutcome> DecodeGop(const GopRequest& request, const FrameSink& sink);
  // DecodeGop (FrameTargetSink): the same for either output format; the sink sees each
  // frame's size and colour metadata and returns where its pixels (or planes) go. A kYuv420
  // request with a resize is kInvalidArgument.
  [[nodiscard]] Result<GopOutcome> DecodeGop(const GopRequest& request, const FrameTargetSink& sink);

  // stats: a snapshot of the counters.
  VideoStats stats() const;
  // ClearSessions: drops every cached session.
  void ClearSessions();
  // BeginPass: a new pass over the data starts (an epoch): the positions fed so far no
  // longer mark sessions behind them as spent (see VideoFrameDecoderOptions).
  void BeginPass();

 private:
  struct CachedSession {
    std::string key;
    uint64_t keyframe_hash = 0;
    size_t keyframe_size = 0;
    std::unique_ptr<VideoDecoder> session;
    int64_t bytes = 0;
    bool spent = false;  // can serve its kept frames only (see VideoFrameDecoderOptions)
  };
  using Entry = std::list<CachedSession>::iterator;
  std::unique_ptr<VideoDecoder> Checkout(const std::string& key, uint64_t hash, size_t size);
  // Recyclable: the idle session of `codec` that the cache would give up first, taken out
  // of the cache, when the cache is so full (in bytes or sessions) that checking in one
  // more session of its size would evict it anyway; else null.
  std::unique_ptr<VideoDecoder> Recyclable(VideoCodec codec);
  void Checkin(const std::string& key, uint64_t hash, size_t size, bool spent, std::unique_ptr<VideoDecoder> session);
  // FirstToGoLocked: the session the cache gives up first (of `codec`, unless null), or
  // lru_.end(). Requires mu_.
  Entry FirstToGoLocked(const VideoCodec* codec);

  VideoFrameDecoderOptions options_;
  mutable std::mutex mu_;
  std::list<CachedSession> lru_;  // front = most recently used
  std::unordered_map<std::string, std::list<CachedSession>::iterator> index_;
  int64_t bytes_cached_ = 0;
  // fed_through_: per session key, the furthest position fed in this pass (at most
  // kMaxFedMarks keys, ~100 B each; past that the marks start over).
  static constexpr size_t kMaxFedMarks = 65536;
  std::unordered_map<std::string, int64_t> fed_through_;
  std::atomic<int64_t> frames_decoded_{0};
  std::atomic<int64_t> frames_delivered_{0};
  std::atomic<int64_t> frames_reformatted_{0};
  std::atomic<int64_t> gops_started_{0};
  std::atomic<int64_t> sessions_recycled_{0};
  std::atomic<int64_t> session_hits_{0};
  std::atomic<int64_t> session_misses_{0};
};

}  // namespace rrl::decode
