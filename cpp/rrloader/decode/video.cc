// rrloader/decode/video.cc — libavcodec decoding sessions, RGB conversion, YUV 4:2:0 plane
// copies, GOP planning and the byte-bounded session cache (see video.h for the contracts).
#include "rrloader/decode/video.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "rrloader/decode/pixels.h"

extern "C" {
#include <libavutil/imgutils.h>
#include <libavutil/mem.h>
#include <libavutil/pixdesc.h>
}

namespace rrl::decode {
namespace {

// FFmpeg's AV1 decoder in 5.1 ("av1") decodes through hardware acceleration only, so
// software AV1 needs libdav1d (preferred, as in Rerun) or libaom.
const AVCodec* FindDecoder(VideoCodec codec, std::string* tried) {
  const char* const h264[] = {"h264"};
  const char* const h265[] = {"hevc"};
  const char* const av1[] = {"libdav1d", "libaom-av1"};
  const char* const* names = h264;
  size_t count = 1;
  if (codec == VideoCodec::kH265) names = h265;
  if (codec == VideoCodec::kAV1) {
    names = av1;
    count = 2;
  }
  for (size_t i = 0; i < count; ++i) {
    if (!tried->empty()) *tried += ", ";
    *tried += names[i];
    if (const AVCodec* found = avcodec_find_decoder_by_name(names[i])) return found;
  }
  return nullptr;
}

// SwsColorspace: the libswscale coefficient table for a frame's AVColorSpace (the
// SWS_CS_* values are the AVColorSpace numbers of the spaces they name); BT.601 otherwise.
int SwsColorspace(const AVColorSpace& field) {
  // Read the field as the int it is: a damaged stream can leave a number there that is not
  // one of the enum's values, and loading such an enum is undefined behaviour.
  int space = 0;
  static_assert(sizeof(space) == sizeof(field));
  std::memcpy(&space, &field, sizeof(space));
  switch (space) {
    case AVCOL_SPC_BT709: return SWS_CS_ITU709;
    case AVCOL_SPC_FCC: return SWS_CS_FCC;
    case AVCOL_SPC_BT470BG:  // swscale's SWS_CS_SMPTE170M is the same table as SWS_CS_ITU601
    case AVCOL_SPC_SMPTE170M: return SWS_CS_ITU601;
    case AVCOL_SPC_SMPTE240M: return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: return SWS_CS_BT2020;
    default: return SWS_CS_DEFAULT;
  }
}

// WithoutJpegRange: the plain YUV format of a deprecated full-range "yuvj" format (whose
// range is then passed to libswscale explicitly), or `format` itself.
AVPixelFormat WithoutJpegRange(AVPixelFormat format, bool* was_jpeg) {
  *was_jpeg = true;
  switch (format) {
    case AV_PIX_FMT_YUVJ420P: return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P: return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P: return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P: return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P: return AV_PIX_FMT_YUV411P;
    default: *was_jpeg = false; return format;
  }
}

// ReadEnumAsInt: an AVFrame enum field as the int it is (see SwsColorspace).
template <typename Enum>
int ReadEnumAsInt(const Enum& field) {
  int value = 0;
  static_assert(sizeof(value) == sizeof(field));
  std::memcpy(&value, &field, sizeof(value));
  return value;
}

// IsDirectYuv420: pictures whose planes are already 8-bit 4:2:0, copied without libswscale
// (rerun-sdk 0.41 copies exactly these two formats and reformats the rest).
bool IsDirectYuv420(int format) {
  return format == AV_PIX_FMT_YUV420P || format == AV_PIX_FMT_YUVJ420P;
}

// CopyPlane: `rows` rows of `width` bytes from a strided plane to a packed one.
void CopyPlane(const uint8_t* src, int src_stride, int width, int rows, uint8_t* dst) {
  if (src_stride == width) {
    std::memcpy(dst, src, static_cast<size_t>(width) * rows);
    return;
  }
  for (int r = 0; r < rows; ++r) {
    std::memcpy(dst + static_cast<size_t>(r) * width, src + static_cast<ptrdiff_t>(r) * src_stride,
                static_cast<size_t>(width));
  }
}

// ChromaSiting: the position of a chroma sample within its 2x2 block in 1/256 luma pixels
// of a chroma location (FFmpeg's convention: x 0 = left, 128 = centre; y 0 = top, 256 =
// bottom); unspecified and unknown values mean centre, libswscale's own default.
void ChromaSiting(int location, int* x, int* y) {
  *x = 128;
  *y = 128;
  switch (location) {
    case AVCHROMA_LOC_LEFT: *x = 0; break;
    case AVCHROMA_LOC_TOPLEFT:
      *x = 0;
      *y = 0;
      break;
    case AVCHROMA_LOC_TOP: *y = 0; break;
    case AVCHROMA_LOC_BOTTOMLEFT:
      *x = 0;
      *y = 256;
      break;
    case AVCHROMA_LOC_BOTTOM: *y = 256; break;
    default: break;
  }
}

// MakeSitedScaler: a SWS_BILINEAR context whose source and destination chroma sit where
// the frame's chroma location says (on each side, along an axis that side subsamples; the
// destination inherits the source frame's location). PyAV 18's reformat (FFmpeg 8's
// sws_scale_frame) places chroma this way, while a plain sws_getContext assumes centred
// chroma: for 4:4:4 -> 4:2:0 with H.264's default "left" location the two differ by up to
// 3 levels. Null when libswscale refuses.
SwsContext* MakeSitedScaler(int src_w, int src_h, AVPixelFormat src_format, int dst_w, int dst_h,
                            AVPixelFormat dst_format, int chroma_location) {
  SwsContextPtr ctx(sws_alloc_context());
  if (ctx == nullptr) return nullptr;
  int x = 0;
  int y = 0;
  ChromaSiting(chroma_location, &x, &y);
  const AVPixFmtDescriptor* src_desc = av_pix_fmt_desc_get(src_format);
  const AVPixFmtDescriptor* dst_desc = av_pix_fmt_desc_get(dst_format);
  if (src_desc == nullptr || dst_desc == nullptr) return nullptr;
  // Positions scale with the subsampling grid (4:1:0 etc.); -513 = "not subsampled".
  auto sited = [](int pos, int log2_sub) { return log2_sub > 0 ? pos * ((1 << log2_sub) - 1) : -513; };
  const std::pair<const char*, int64_t> options[] = {
      {"srcw", src_w},
      {"srch", src_h},
      {"src_format", src_format},
      {"dstw", dst_w},
      {"dsth", dst_h},
      {"dst_format", dst_format},
      {"sws_flags", SWS_BILINEAR},
      {"src_h_chr_pos", sited(x, src_desc->log2_chroma_w)},
      {"src_v_chr_pos", sited(y, src_desc->log2_chroma_h)},
      {"dst_h_chr_pos", sited(x, dst_desc->log2_chroma_w)},
      {"dst_v_chr_pos", sited(y, dst_desc->log2_chroma_h)},
  };
  for (const auto& [name, value] : options) {
    if (av_opt_set_int(ctx.get(), name, value, 0) < 0) return nullptr;
  }
  if (sws_init_context(ctx.get(), nullptr, nullptr) < 0) return nullptr;
  return ctx.release();
}

uint64_t Fnv1a(const uint8_t* data, size_t size) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string PositionText(VideoCodec codec, int64_t position) {
  return std::string(VideoCodecName(codec)) + " sample at position " + std::to_string(position);
}

}  // namespace

// --- VideoDecoder ----------------------------------------------------------------------

VideoDecoder::VideoDecoder(VideoCodec codec, const VideoDecoderOptions& options) : codec_(codec), options_(options) {}

VideoDecoder::~VideoDecoder() = default;

const char* VideoOutputFormatName(VideoOutputFormat format) {
  return format == VideoOutputFormat::kYuv420 ? "yuv420p" : "rgb";
}

Result<VideoOutputFormat> ParseVideoOutputFormat(std::string_view name) {
  if (name == "rgb") return VideoOutputFormat::kRgb;
  if (name == "yuv420p") return VideoOutputFormat::kYuv420;
  return Status::InvalidArgument("video output_format must be 'rgb' or 'yuv420p', got '" + std::string(name) + "'");
}

const char* VideoColorSpaceName(VideoColorSpace space) {
  switch (space) {
    case VideoColorSpace::kBt601: return "bt601";
    case VideoColorSpace::kBt709: return "bt709";
    case VideoColorSpace::kBt2020: return "bt2020";
    case VideoColorSpace::kUnspecified: break;
  }
  return "unspecified";
}

const char* VideoColorRangeName(VideoColorRange range) {
  switch (range) {
    case VideoColorRange::kLimited: return "limited";
    case VideoColorRange::kFull: return "full";
    case VideoColorRange::kUnspecified: break;
  }
  return "unspecified";
}

VideoColor FrameColor(const AVFrame& frame) {
  VideoColor color;
  switch (ReadEnumAsInt(frame.colorspace)) {
    case AVCOL_SPC_BT709: color.space = VideoColorSpace::kBt709; break;
    case AVCOL_SPC_BT470BG:
    case AVCOL_SPC_SMPTE170M: color.space = VideoColorSpace::kBt601; break;
    case AVCOL_SPC_BT2020_NCL: color.space = VideoColorSpace::kBt2020; break;
    default: break;
  }
  switch (ReadEnumAsInt(frame.color_range)) {
    case AVCOL_RANGE_MPEG: color.range = VideoColorRange::kLimited; break;
    case AVCOL_RANGE_JPEG: color.range = VideoColorRange::kFull; break;
    default: {
      bool jpeg = false;
      WithoutJpegRange(static_cast<AVPixelFormat>(frame.format), &jpeg);
      if (jpeg) color.range = VideoColorRange::kFull;
    }
  }
  return color;
}

Result<std::unique_ptr<VideoDecoder>> VideoDecoder::Open(VideoCodec codec, const VideoDecoderOptions& options) {
  if (options.threads < 0 || options.threads > 64) {
    return Status::InvalidArgument("video decoder threads must be 0..64 (0: libavcodec chooses), got " +
                                   std::to_string(options.threads));
  }
  if (options.max_pixels <= 0) return Status::InvalidArgument("video decoder max_pixels must be positive");
  if (options.kept_frames < 1 || options.kept_frames > 1024) {
    return Status::InvalidArgument("video decoder kept_frames must be 1..1024, got " +
                                   std::to_string(options.kept_frames));
  }
  std::string tried;
  const AVCodec* av_codec = FindDecoder(codec, &tried);
  if (av_codec == nullptr) {
    return Status::Unsupported(std::string(VideoCodecName(codec)) + " video: this FFmpeg build (libavcodec " +
                               AV_STRINGIFY(LIBAVCODEC_VERSION) + ") has no decoder for it (tried " + tried + ")");
  }
  std::unique_ptr<VideoDecoder> d(new VideoDecoder(codec, options));
  d->ctx_.reset(avcodec_alloc_context3(av_codec));
  d->packet_ = MakeAvPacket();
  d->frame_ = MakeAvFrame();
  if (!d->ctx_ || !d->packet_ || !d->frame_) {
    return Status::Internal("could not allocate a " + std::string(av_codec->name) + " decoder");
  }
  AVCodecContext* ctx = d->ctx_.get();
  ctx->thread_count = options.threads;
  // One thread: nothing to choose. More (or libavcodec's choice): frame threading where the
  // decoder has it (H.264, H.265), slices otherwise. Frame threads hand each frame out up to
  // thread_count - 1 packets late; frames carry their packet's position as pts, and
  // DecodeGop feeds the packets after a wanted one (or flushes at the end of a GOP), so the
  // delay changes when frames come out, never which frame a position gets.
  ctx->thread_type = options.threads == 1 ? FF_THREAD_SLICE : FF_THREAD_FRAME | FF_THREAD_SLICE;
  ctx->max_pixels = options.max_pixels;
  // Errors the decoder can detect are reported instead of concealed: a damaged frame is
  // never delivered as if it were the real one.
  ctx->err_recognition |= AV_EF_EXPLODE;
  if (std::strcmp(av_codec->name, "libdav1d") == 0 && ctx->priv_data != nullptr) {
    // One frame out per packet (libdav1d's default pipelines several); absent in old builds.
    const int rc = av_opt_set_int(ctx->priv_data, "max_frame_delay", 1, 0);
    if (rc < 0 && rc != AVERROR_OPTION_NOT_FOUND) {
      return Status::Internal("libdav1d: setting max_frame_delay failed: " + AvErrorString(rc));
    }
  }
  const int rc = avcodec_open2(ctx, av_codec, nullptr);
  if (rc < 0) {
    return Status::Internal("could not open the " + std::string(av_codec->name) + " decoder: " + AvErrorString(rc));
  }
  return d;
}

Status VideoDecoder::Drain(const FrameCallback& on_frame, int64_t position_for_errors) {
  while (true) {
    const int rc = avcodec_receive_frame(ctx_.get(), frame_.get());
    if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return Status::OK();
    if (rc < 0) {
      return Status::Corrupt(PositionText(codec_, position_for_errors) + ": decoding failed: " + AvErrorString(rc));
    }
    int64_t position = frame_->pts;
    if (position == AV_NOPTS_VALUE) position = frame_->best_effort_timestamp;
    if (position == AV_NOPTS_VALUE) {
      av_frame_unref(frame_.get());
      return Status::Internal(PositionText(codec_, position_for_errors) + ": decoder returned a frame without a pts");
    }
    if (frame_->decode_error_flags != 0 || (frame_->flags & AV_FRAME_FLAG_CORRUPT) != 0) {
      const int flags = frame_->decode_error_flags;
      av_frame_unref(frame_.get());
      return Status::Corrupt(PositionText(codec_, position) + ": the decoded frame is damaged (decode_error_flags=" +
                             std::to_string(flags) + "; corrupt data or a missing reference)");
    }
    if (options_.reject_reordering &&
        (ctx_->has_b_frames > 0 || (codec_ == VideoCodec::kH264 && frame_->pict_type == AV_PICTURE_TYPE_B))) {
      av_frame_unref(frame_.get());
      return Status::Unsupported(PositionText(codec_, position) +
                                 ": the stream has B-frames (frames out of presentation order), which Rerun's "
                                 "VideoStream cannot carry: its samples have presentation times only, so their "
                                 "decode order is unknown; re-encode without B-frames (e.g. x264 bframes=0)");
    }
    ++frames_decoded_;
    const int bytes =
        av_image_get_buffer_size(static_cast<AVPixelFormat>(frame_->format), frame_->width, frame_->height, 1);
    if (bytes > 0) frame_bytes_ = bytes;
    pending_.erase(std::remove(pending_.begin(), pending_.end(), position), pending_.end());
    Status st = on_frame(*frame_, position);
    // Keep the frame (a reference, not a copy); the oldest kept one makes room.
    Kept kept;
    if (static_cast<int>(kept_.size()) >= options_.kept_frames) {
      kept = std::move(kept_.front());
      kept_.pop_front();
      av_frame_unref(kept.frame.get());
    } else {
      kept.frame = MakeAvFrame();
      if (kept.frame == nullptr) {
        av_frame_unref(frame_.get());
        return Status::Internal("out of memory for a video frame");
      }
    }
    av_frame_move_ref(kept.frame.get(), frame_.get());
    kept.position = position;
    kept_.push_back(std::move(kept));
    RRL_RETURN_IF_ERROR(st);
  }
}

Status VideoDecoder::SendAndDrain(const AVPacket* packet, int64_t position, const FrameCallback& on_frame) {
  // send_packet answers EAGAIN while frames wait to be received; receive, then resend.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int rc = avcodec_send_packet(ctx_.get(), packet);
    if (rc == AVERROR(EAGAIN)) {
      RRL_RETURN_IF_ERROR(Drain(on_frame, position));
      continue;
    }
    if (rc == AVERROR_EOF && packet == nullptr) return Drain(on_frame, position);
    if (rc < 0) {
      return Status::Corrupt(PositionText(codec_, position) + ": rejected by libavcodec's " + ctx_->codec->name +
                             " decoder: " + AvErrorString(rc) + " (corrupt data or a missing parameter set)");
    }
    return Drain(on_frame, position);
  }
  return Status::Internal(PositionText(codec_, position) + ": decoder neither took the packet nor returned frames");
}

Status VideoDecoder::Feed(const uint8_t* data, size_t size, int64_t position, const FrameCallback& on_frame) {
  if (flushed_) return Status::InvalidArgument(PositionText(codec_, position) + ": fed after Flush");
  if (last_fed_position_ != INT64_MIN && position <= last_fed_position_) {
    return Status::InvalidArgument(PositionText(codec_, position) + ": positions must increase (last fed " +
                                   std::to_string(last_fed_position_) + ")");
  }
  if (size == 0) return Status::InvalidArgument(PositionText(codec_, position) + ": empty sample");
  if (size > static_cast<size_t>(INT32_MAX - AV_INPUT_BUFFER_PADDING_SIZE)) {
    return Status::Unsupported(PositionText(codec_, position) + ": sample of " + std::to_string(size) +
                               " bytes is too large");
  }
  av_packet_unref(packet_.get());
  if (av_new_packet(packet_.get(), static_cast<int>(size)) < 0) {
    return Status::Internal(PositionText(codec_, position) + ": out of memory for a packet");
  }
  if (codec_ != VideoCodec::kAV1 && !IsAnnexB(data, size)) {
    RRL_RETURN_IF_ERROR(AvccToAnnexB(data, size, packet_->data).WithPrefix(PositionText(codec_, position)));
  } else {
    std::memcpy(packet_->data, data, size);
  }
  packet_->pts = position;
  packet_->dts = AV_NOPTS_VALUE;
  last_fed_position_ = position;
  pending_.push_back(position);
  Status st = SendAndDrain(packet_.get(), position, on_frame);
  av_packet_unref(packet_.get());
  return st;
}

int VideoDecoder::frame_delay() const {
  if (ctx_ == nullptr || (ctx_->active_thread_type & FF_THREAD_FRAME) == 0) return 0;
  return std::max(ctx_->thread_count - 1, 0);
}

void VideoDecoder::Reset() {
  avcodec_flush_buffers(ctx_.get());
  av_packet_unref(packet_.get());
  av_frame_unref(frame_.get());
  kept_.clear();
  pending_.clear();
  last_fed_position_ = INT64_MIN;
  frames_decoded_ = 0;
  flushed_ = false;
}

Status VideoDecoder::Flush(const FrameCallback& on_frame) {
  if (flushed_) return Status::OK();
  flushed_ = true;
  return SendAndDrain(nullptr, last_fed_position_, on_frame);
}

Status VideoDecoder::ConvertToRgb(const AVFrame& frame, const VideoOutputSize& size, uint8_t* out,
                                  int64_t out_capacity) {
  const int src_w = frame.width;
  const int src_h = frame.height;
  if (src_w <= 0 || src_h <= 0) return Status::Corrupt("decoded video frame has no pixels");
  const int out_w = size.resize() ? size.width : src_w;
  const int out_h = size.resize() ? size.height : src_h;
  if (int64_t{out_w} * out_h > options_.max_pixels || int64_t{src_w} * src_h > options_.max_pixels) {
    return Status::Unsupported("video frame " + std::to_string(src_w) + "x" + std::to_string(src_h) + " -> " +
                               std::to_string(out_w) + "x" + std::to_string(out_h) + " exceeds max_pixels " +
                               std::to_string(options_.max_pixels));
  }
  const int64_t need = int64_t{3} * out_w * out_h;
  if (out_capacity < need) {
    return Status::InvalidArgument("video frame needs " + std::to_string(need) + " output bytes, got " +
                                   std::to_string(out_capacity));
  }
  RRL_RETURN_IF_ERROR(rgb_scaler_.Prepare(frame, out_w, out_h, AV_PIX_FMT_RGB24));
  const int stride = (out_w * 3 + 63) & ~63;
  const size_t scratch = static_cast<size_t>(stride) * out_h + 64;
  // The packed RGB24 scratch is per thread, not per session: a session cache holds many
  // sessions, but only the threads converting need one.
  uint8_t* rgb_scratch = Scratch(scratch);
  if (rgb_scratch == nullptr) return Status::Internal("out of memory for a video frame");
  uint8_t* dst[4] = {rgb_scratch, nullptr, nullptr, nullptr};
  int dst_stride[4] = {stride, 0, 0, 0};
  const int rows = sws_scale(rgb_scaler_.ctx.get(), frame.data, frame.linesize, 0, src_h, dst, dst_stride);
  if (rows != out_h) {
    return Status::Internal("libswscale converted " + std::to_string(rows) + " of " + std::to_string(out_h) + " rows");
  }
  const size_t plane = static_cast<size_t>(out_w) * out_h;
  uint8_t* r = out;
  uint8_t* g = out + plane;
  uint8_t* b = out + 2 * plane;
  for (int y = 0; y < out_h; ++y) {
    const size_t row = static_cast<size_t>(y) * out_w;
    DeinterleaveRgb(rgb_scratch + static_cast<size_t>(y) * stride, out_w, r + row, g + row, b + row);
  }
  return Status::OK();
}

Status VideoDecoder::Scaler::Prepare(const AVFrame& frame, int out_w, int out_h, AVPixelFormat out_format) {
  bool jpeg_format = false;
  const auto format = WithoutJpegRange(static_cast<AVPixelFormat>(frame.format), &jpeg_format);
  // Our own cache key: sws_getCachedContext re-creates a context for yuvj* formats on every
  // call (it compares against the normalized format), and a new context at the old address
  // would silently lose the colorspace details set below.
  const bool to_rgb = out_format == AV_PIX_FMT_RGB24;
  const int chroma_location = to_rgb ? 0 : ReadEnumAsInt(frame.chroma_location);
  const Key want{frame.width, frame.height, frame.format, out_w, out_h, out_format, chroma_location};
  if (ctx == nullptr || !(want == key)) {
    colorspace = -1;
    src_full_range = -1;
    if (to_rgb) {
      ctx.reset(sws_getContext(frame.width, frame.height, format, out_w, out_h, out_format, SWS_BILINEAR, nullptr,
                               nullptr, nullptr));
    } else {
      ctx.reset(MakeSitedScaler(frame.width, frame.height, format, out_w, out_h, out_format, chroma_location));
    }
    if (ctx == nullptr) {
      const char* name = av_get_pix_fmt_name(format);
      return Status::Unsupported(std::string("libswscale cannot convert pixel format ") + (name ? name : "unknown") +
                                 " to " + av_get_pix_fmt_name(out_format));
    }
    key = want;
  }
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(format);
  const bool yuv = desc != nullptr && (desc->flags & AV_PIX_FMT_FLAG_RGB) == 0 && desc->nb_components >= 3;
  if (!yuv) return Status::OK();
  // The frame's own matrix and range (BT.601 limited when untagged), as PyAV does. RGB24
  // output is full range; a YUV destination gets the source's matrix and range (PyAV's
  // reformat tags the new frame with both), so libswscale changes neither.
  const int space = SwsColorspace(frame.colorspace);
  const int src_full = (frame.color_range == AVCOL_RANGE_JPEG || jpeg_format) ? 1 : 0;
  if (space != colorspace || src_full != src_full_range) {
    const int* table = sws_getCoefficients(space);
    const int* dst_table = to_rgb ? sws_getCoefficients(SWS_CS_DEFAULT) : table;
    const int dst_full = to_rgb ? 1 : src_full;
    if (sws_setColorspaceDetails(ctx.get(), table, src_full, dst_table, dst_full, 0, 1 << 16, 1 << 16) < 0) {
      return Status::Internal("libswscale refused the colorspace of the frame");
    }
    colorspace = space;
    src_full_range = src_full;
  }
  return Status::OK();
}

Status VideoDecoder::CopyYuv420(const AVFrame& frame, uint8_t* y_dst, uint8_t* uv_dst) {
  const int w = frame.width;
  const int h = frame.height;
  if (w <= 0 || h <= 0) return Status::Corrupt("decoded video frame has no pixels");
  if (int64_t{w} * h > options_.max_pixels) {
    return Status::Unsupported("video frame " + std::to_string(w) + "x" + std::to_string(h) + " exceeds max_pixels " +
                               std::to_string(options_.max_pixels));
  }
  const int cw = Yuv420ChromaWidth(w);
  const int ch = Yuv420ChromaHeight(h);
  uint8_t* u_dst = uv_dst;
  uint8_t* v_dst = uv_dst + static_cast<size_t>(ch) * cw;
  if (IsDirectYuv420(frame.format)) {
    CopyPlane(frame.data[0], frame.linesize[0], w, h, y_dst);
    CopyPlane(frame.data[1], frame.linesize[1], cw, ch, u_dst);
    CopyPlane(frame.data[2], frame.linesize[2], cw, ch, v_dst);
    return Status::OK();
  }
  // libswscale writes an aligned yuv420p picture in the thread's scratch (the layout its
  // SIMD paths expect, as in PyAV's frames), whose visible rows are then copied out.
  RRL_RETURN_IF_ERROR(yuv_scaler_.Prepare(frame, w, h, AV_PIX_FMT_YUV420P));
  const int y_stride = (w + 63) & ~63;
  const int c_stride = (cw + 63) & ~63;
  const size_t y_bytes = static_cast<size_t>(y_stride) * h;
  const size_t c_bytes = static_cast<size_t>(c_stride) * ch;
  uint8_t* scratch = Scratch(y_bytes + 2 * c_bytes + 64);
  if (scratch == nullptr) return Status::Internal("out of memory for a video frame");
  uint8_t* dst[4] = {scratch, scratch + y_bytes, scratch + y_bytes + c_bytes, nullptr};
  int dst_stride[4] = {y_stride, c_stride, c_stride, 0};
  const int rows = sws_scale(yuv_scaler_.ctx.get(), frame.data, frame.linesize, 0, h, dst, dst_stride);
  if (rows != h) {
    return Status::Internal("libswscale converted " + std::to_string(rows) + " of " + std::to_string(h) + " rows");
  }
  CopyPlane(dst[0], y_stride, w, h, y_dst);
  CopyPlane(dst[1], c_stride, cw, ch, u_dst);
  CopyPlane(dst[2], c_stride, cw, ch, v_dst);
  return Status::OK();
}

uint8_t* VideoDecoder::Scratch(size_t bytes) {
  // One kept buffer per thread (up to kKeptBytes, like the image decoder's scratch); a larger
  // frame gets a buffer of its own, freed by the thread's next call.
  struct Scratch {
    uint8_t* data = nullptr;
    size_t size = 0;
    ~Scratch() { av_free(data); }
    uint8_t* Get(size_t need) {
      if (size < need) {
        av_free(data);
        data = static_cast<uint8_t*>(av_malloc(need));
        size = data == nullptr ? 0 : need;
      }
      return data;
    }
    void Release() {
      av_free(data);
      data = nullptr;
      size = 0;
    }
  };
  constexpr size_t kKeptBytes = size_t{64} << 20;
  thread_local Scratch kept;
  thread_local Scratch oversized;
  oversized.Release();
  return bytes <= kKeptBytes ? kept.Get(bytes) : oversized.Get(bytes);
}

const AVFrame* VideoDecoder::KeptFrame(int64_t position) const {
  for (const Kept& k : kept_) {
    if (k.position == position) return k.frame.get();
  }
  return nullptr;
}

std::vector<int64_t> VideoDecoder::kept_positions() const {
  std::vector<int64_t> out;
  for (const Kept& k : kept_) out.push_back(k.position);
  return out;
}

int64_t VideoDecoder::EstimatedBytes() const {
  // libavcodec keeps up to `refs` reference pictures (AV1: 8 slots), plus reordering delay,
  // one picture per thread in flight, the one being decoded, one its picture pool keeps
  // spare, and the kept frames (which the decoder may still share as references: an upper
  // bound); plus its per-macroblock tables, about a fifth of a picture (measured: 23
  // 640x480 H.264 sessions with refs = 1 held about 4.9 MiB each, with the RGB scratch
  // that is per thread now).
  int64_t refs = codec_ == VideoCodec::kAV1 ? 8 : std::clamp<int64_t>(ctx_ ? ctx_->refs : 4, 1, 16);
  const int64_t delay = ctx_ ? std::max(ctx_->has_b_frames, 0) : 0;
  const int64_t threads = ctx_ ? std::max(ctx_->thread_count, 1) : std::max(options_.threads, 1);
  const int64_t frames = refs + delay + threads + 2 + static_cast<int64_t>(kept_.size());
  return frames * frame_bytes_ + frame_bytes_ / 5 + (int64_t{64} << 10);
}

// --- VideoFrameDecoder -----------------------------------------------------------------

VideoFrameDecoder::VideoFrameDecoder(const VideoFrameDecoderOptions& options) : options_(options) {}
VideoFrameDecoder::~VideoFrameDecoder() = default;

std::unique_ptr<VideoDecoder> VideoFrameDecoder::Checkout(const std::string& key, uint64_t hash, size_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  CachedSession entry = std::move(*it->second);
  lru_.erase(it->second);
  index_.erase(it);
  bytes_cached_ -= entry.bytes;
  if (entry.keyframe_hash != hash || entry.keyframe_size != size) return nullptr;  // same key, other bytes
  return std::move(entry.session);
}

VideoFrameDecoder::Entry VideoFrameDecoder::FirstToGoLocked(const VideoCodec* codec) {
  Entry oldest = lru_.end();  // least recently used of any kind
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    if (codec != nullptr && it->session->codec() != *codec) continue;
    if (it->spent) return std::next(it).base();
    if (oldest == lru_.end()) oldest = std::next(it).base();
  }
  return oldest;
}

void VideoFrameDecoder::Checkin(const std::string& key, uint64_t hash, size_t size, bool spent,
                                std::unique_ptr<VideoDecoder> session) {
  const int64_t bytes = session->EstimatedBytes();
  std::unique_ptr<VideoDecoder> dropped;  // freed outside the lock
  std::vector<std::unique_ptr<VideoDecoder>> evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes > options_.session_cache_bytes || options_.max_sessions == 0) return;
    // Behind what this pass already fed of the GOP: the frames after it were delivered, so
    // (each sample coming once per pass) nothing will continue it.
    if (fed_through_.size() >= kMaxFedMarks) fed_through_.clear();  // a hint only: start over
    auto [mark, inserted] = fed_through_.try_emplace(key, session->last_fed_position());
    if (!inserted) {
      spent = spent || mark->second > session->last_fed_position();
      mark->second = std::max(mark->second, session->last_fed_position());
    }
    if (auto it = index_.find(key); it != index_.end()) {
      bytes_cached_ -= it->second->bytes;
      dropped = std::move(it->second->session);
      lru_.erase(it->second);
      index_.erase(it);
    }
    lru_.push_front(CachedSession{key, hash, size, std::move(session), bytes, spent});
    index_[key] = lru_.begin();
    bytes_cached_ += bytes;
    const auto over = [&] {
      return bytes_cached_ > options_.session_cache_bytes ||
             (options_.max_sessions >= 0 && static_cast<int64_t>(lru_.size()) > options_.max_sessions);
    };
    while (over() && !lru_.empty()) {
      const Entry victim = FirstToGoLocked(nullptr);
      bytes_cached_ -= victim->bytes;
      evicted.push_back(std::move(victim->session));
      index_.erase(victim->key);
      lru_.erase(victim);
    }
  }
}

std::unique_ptr<VideoDecoder> VideoFrameDecoder::Recyclable(VideoCodec codec) {
  std::lock_guard<std::mutex> lock(mu_);
  const Entry it = FirstToGoLocked(&codec);
  if (it == lru_.end()) return nullptr;
  const bool room = bytes_cached_ + it->bytes <= options_.session_cache_bytes &&
                    (options_.max_sessions < 0 || static_cast<int64_t>(lru_.size()) < options_.max_sessions);
  if (room) return nullptr;  // checking in one more session would not evict it: keep it
  std::unique_ptr<VideoDecoder> taken = std::move(it->session);
  bytes_cached_ -= it->bytes;
  index_.erase(it->key);
  lru_.erase(it);
  return taken;
}

void VideoFrameDecoder::BeginPass() {
  std::lock_guard<std::mutex> lock(mu_);
  fed_through_.clear();
}

void VideoFrameDecoder::ClearSessions() {
  std::list<CachedSession> old;
  std::lock_guard<std::mutex> lock(mu_);
  old.swap(lru_);
  index_.clear();
  bytes_cached_ = 0;
}

VideoStats VideoFrameDecoder::stats() const {
  VideoStats s;
  s.frames_decoded = frames_decoded_.load();
  s.frames_delivered = frames_delivered_.load();
  s.frames_reformatted = frames_reformatted_.load();
  s.gops_started = gops_started_.load();
  s.sessions_recycled = sessions_recycled_.load();
  s.session_hits = session_hits_.load();
  s.session_misses = session_misses_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.bytes_cached = bytes_cached_;
  s.sessions_cached = static_cast<int64_t>(lru_.size());
  return s;
}

Result<GopOutcome> VideoFrameDecoder::DecodeGop(const GopRequest& request, const FrameSink& sink) {
  if (request.output_format != VideoOutputFormat::kRgb) {
    return Status::InvalidArgument("video stream '" + request.stream_key +
                                   "': a YUV 4:2:0 request needs a FrameTargetSink (Y and UV destinations)");
  }
  const FrameTargetSink target_sink = [&sink](int64_t position, const VideoFrameInfo& info) -> Result<FrameTarget> {
    RRL_ASSIGN_OR_RETURN(uint8_t * out, sink(position, info.height, info.width));
    return FrameTarget{out, nullptr};
  };
  return DecodeGop(request, target_sink);
}

Result<GopOutcome> VideoFrameDecoder::DecodeGop(const GopRequest& request, const FrameTargetSink& sink) {
  GopOutcome outcome;
  const std::string where = "video stream '" + request.stream_key + "'";
  const bool yuv = request.output_format == VideoOutputFormat::kYuv420;
  if (request.packets.empty()) return Status::InvalidArgument(where + ": a GOP needs at least its keyframe packet");
  for (size_t i = 1; i < request.packets.size(); ++i) {
    if (request.packets[i].position <= request.packets[i - 1].position) {
      return Status::InvalidArgument(where + ": packet positions must increase (" +
                                     std::to_string(request.packets[i - 1].position) + " then " +
                                     std::to_string(request.packets[i].position) + ")");
    }
  }
  for (size_t i = 1; i < request.wanted.size(); ++i) {
    if (request.wanted[i] <= request.wanted[i - 1]) {
      return Status::InvalidArgument(where + ": wanted positions must be sorted and unique");
    }
  }
  if (request.size.resize() != (request.size.height != 0 || request.size.width != 0)) {
    return Status::InvalidArgument(where + ": output size must be both positive or both 0");
  }
  if (yuv && request.size.resize()) {
    return Status::InvalidArgument(where + ": a resize (" + std::to_string(request.size.height) + "x" +
                                   std::to_string(request.size.width) +
                                   ") is supported for RGB output only, not for output_format yuv420p");
  }
  if (request.wanted.empty()) return outcome;

  const GopPacket& keyframe = request.packets.front();
  if (request.verify_keyframe) {
    auto is_key = IsKeyframe(request.codec, keyframe.data, keyframe.size);
    if (!is_key.ok() || !*is_key) {
      outcome.missing = request.wanted;
      return outcome;
    }
  }

  // Targets: wanted positions that are non-empty packets; the rest are missing.
  std::vector<int64_t> targets;
  for (int64_t w : request.wanted) {
    auto it = std::lower_bound(request.packets.begin(), request.packets.end(), w,
                               [](const GopPacket& p, int64_t pos) { return p.position < pos; });
    if (it != request.packets.end() && it->position == w && it->size > 0) {
      targets.push_back(w);
    } else {
      outcome.missing.push_back(w);
    }
  }
  if (targets.empty()) return outcome;
  std::vector<bool> done(targets.size(), false);
  size_t remaining = targets.size();

  const uint64_t hash = Fnv1a(keyframe.data, keyframe.size);
  const std::string key = request.stream_key + '\0' + std::to_string(keyframe.position);
  std::unique_ptr<VideoDecoder> session = Checkout(key, hash, keyframe.size);
  bool continues = false;
  if (session && session->codec() != request.codec) session.reset();
  if (session) {
    // A flushed session takes no more packets: it serves its kept frames only.
    const auto& pending = session->pending_positions();
    continues = true;
    for (int64_t t : targets) {
      const bool to_come = !session->flushed() && (t > session->last_fed_position() ||
                                                   std::find(pending.begin(), pending.end(), t) != pending.end());
      if (!to_come && session->KeptFrame(t) == nullptr) {
        continues = false;
        break;
      }
    }
  }
  if (continues) {
    outcome.session_hit = true;
    session_hits_.fetch_add(1);
  } else {
    session_misses_.fetch_add(1);
    // The GOP's own session, when it cannot continue, is reset and decodes the GOP again;
    // else, under random access the cache is full of sessions nobody will continue: reuse
    // the oldest one's allocations instead of freeing them and allocating the same again (a
    // 640x480 H.264 session is ~3 MiB of fresh pages, faulted in and cleared by the kernel;
    // with frame threading, its threads too).
    if (session == nullptr) session = Recyclable(request.codec);
    if (session != nullptr) {
      session->Reset();
      sessions_recycled_.fetch_add(1);
    } else {
      RRL_ASSIGN_OR_RETURN(session, VideoDecoder::Open(request.codec, options_.decoder));
    }
    gops_started_.fetch_add(1);
  }

  auto deliver = [&](const AVFrame& frame, int64_t position) -> Status {
    auto it = std::lower_bound(targets.begin(), targets.end(), position);
    if (it == targets.end() || *it != position) return Status::OK();
    const size_t index = static_cast<size_t>(it - targets.begin());
    if (done[index]) return Status::OK();
    const int height = request.size.resize() ? request.size.height : frame.height;
    const int width = request.size.resize() ? request.size.width : frame.width;
    if (int64_t{height} * width > options_.decoder.max_pixels) {
      return Status::Unsupported(where + ", position " + std::to_string(position) + ": frame " + std::to_string(width) +
                                 "x" + std::to_string(height) + " exceeds max_pixels " +
                                 std::to_string(options_.decoder.max_pixels));
    }
    RRL_ASSIGN_OR_RETURN(FrameTarget target, sink(position, VideoFrameInfo{height, width, FrameColor(frame)}));
    if (target.data == nullptr || (yuv && target.uv == nullptr)) {
      return Status::Internal(where + ": frame sink returned no buffer");
    }
    const Status copied = yuv ? session->CopyYuv420(frame, target.data, target.uv)
                              : session->ConvertToRgb(frame, request.size, target.data, int64_t{3} * height * width);
    if (!copied.ok()) return copied.WithPrefix(where + ", position " + std::to_string(position));
    if (yuv && !IsDirectYuv420(frame.format)) frames_reformatted_.fetch_add(1);
    done[index] = true;
    --remaining;
    frames_delivered_.fetch_add(1);
    outcome.delivered.push_back(position);
    return Status::OK();
  };
  auto on_frame = [&](const AVFrame& frame, int64_t position) -> Status {
    ++outcome.frames_decoded;
    frames_decoded_.fetch_add(1);
    return deliver(frame, position);
  };

  for (int64_t kept : session->kept_positions()) RRL_RETURN_IF_ERROR(deliver(*session->KeptFrame(kept), kept));
  for (const GopPacket& packet : request.packets) {
    if (remaining == 0) break;
    if (packet.position <= session->last_fed_position() || packet.size == 0) continue;
    Status fed = session->Feed(packet.data, packet.size, packet.position, on_frame);
    if (!fed.ok()) return fed.WithPrefix(request.describe ? where + ", " + request.describe(packet.position) : where);
    ++outcome.packets_fed;
  }
  if (remaining > 0) {
    bool held_back = false;
    const auto& pending = session->pending_positions();
    for (size_t i = 0; i < targets.size(); ++i) {
      if (!done[i] && std::find(pending.begin(), pending.end(), targets[i]) != pending.end()) held_back = true;
    }
    if (held_back) RRL_RETURN_IF_ERROR(session->Flush(on_frame).WithPrefix(where));
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!done[i]) outcome.missing.push_back(targets[i]);
  }
  std::sort(outcome.missing.begin(), outcome.missing.end());
  std::sort(outcome.delivered.begin(), outcome.delivered.end());
  const bool spent =
      session->flushed() || (request.ends_gop && session->last_fed_position() >= request.packets.back().position);
  Checkin(key, hash, keyframe.size, spent, std::move(session));
  return outcome;
}

}  // namespace rrl::decode
