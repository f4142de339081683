// rrloader/decode/ffmpeg.h — RAII ownership of FFmpeg's libavcodec / libavutil /
// libswscale handles (internal).
//
// Every FFmpeg object the video decoder creates is held by one of these unique_ptrs, so
// each exit path (including early error returns) frees it. Written against FFmpeg 5.1
// (Debian 12: libavcodec 59, libavutil 57, libswscale 6); only APIs that exist there are
// used (send/receive decoding, AVFrame::best_effort_timestamp, sws_getCachedContext).
//
// Thread safety: a handle must be used by one thread at a time; distinct handles are
// independent. FFmpeg's global state (codec registry, log callback) is thread-safe.
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <memory>
#include <string>

namespace rrl::decode {

// AvCodecContextDeleter / AvCodecContextPtr: an owned decoder context
// (avcodec_free_context also closes it).
struct AvCodecContextDeleter {
  void operator()(AVCodecContext* ctx) const noexcept { avcodec_free_context(&ctx); }
};
using AvCodecContextPtr = std::unique_ptr<AVCodecContext, AvCodecContextDeleter>;

// AvPacketDeleter / AvPacketPtr: an owned packet (av_packet_free unrefs its data).
struct AvPacketDeleter {
  void operator()(AVPacket* packet) const noexcept { av_packet_free(&packet); }
};
using AvPacketPtr = std::unique_ptr<AVPacket, AvPacketDeleter>;

// AvFrameDeleter / AvFramePtr: an owned frame (av_frame_free unrefs its buffers).
struct AvFrameDeleter {
  void operator()(AVFrame* frame) const noexcept { av_frame_free(&frame); }
};
using AvFramePtr = std::unique_ptr<AVFrame, AvFrameDeleter>;

// SwsContextDeleter / SwsContextPtr: an owned scaler; null is allowed.
struct SwsContextDeleter {
  void operator()(SwsContext* ctx) const noexcept { sws_freeContext(ctx); }
};
using SwsContextPtr = std::unique_ptr<SwsContext, SwsContextDeleter>;

// MakeAvPacket / MakeAvFrame: new empty objects, or null when FFmpeg could not allocate.
[[nodiscard]] inline AvPacketPtr MakeAvPacket() {
  return AvPacketPtr(av_packet_alloc());
}
[[nodiscard]] inline AvFramePtr MakeAvFrame() {
  return AvFramePtr(av_frame_alloc());
}

// AvErrorString: FFmpeg's text for an AVERROR code, e.g. "Invalid data found when
// processing input (AVERROR -1094995529)".
[[nodiscard]] inline std::string AvErrorString(int error) {
  char buffer[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(error, buffer, sizeof(buffer));
  return std::string(buffer) + " (AVERROR " + std::to_string(error) + ")";
}

}  // namespace rrl::decode
