// cpp/bindings/video_bindings.cc — video decode-layer entry points used by tests (and
// available to Python decoders) (internal).
//
//   _core.video_is_keyframe(codec, sample) -> bool
//   _core.video_is_annex_b(sample) -> bool
//   _core.video_to_annex_b(sample) -> bytes            (4-byte length prefixes -> start codes)
//   _core.video_codec_name(codec) -> "h264" | "h265" | "av1"  (names or Rerun enum values)
//   _core.decode_video_packets(codec, packets, wanted, *, size=None, threads=1,
//                              verify_keyframe=True, reject_reordering=False,
//                              output_format="rgb")
//       -> list[numpy uint8 [3, H, W] | None]                      (output_format="rgb")
//       -> list[(y [1, H, W], uv [2, ceil(H/2), ceil(W/2)], color_space, color_range)
//               | None]                                            (output_format="yuv420p")
//       packets: the samples of one stream from a keyframe on, decode order, positions
//       0..n-1; wanted: positions; None where no frame exists (see VideoFrameDecoder).
//       color_space: "bt601" | "bt709" | "bt2020" | "unspecified"; color_range: "limited" |
//       "full" | "unspecified" (rerun-sdk 0.41's Yuv420Frame metadata). yuv420p takes no size.
//   _core.VideoFrameDecoder(*, session_cache_bytes=256 MiB, threads=1, max_pixels=2**26,
//                           max_sessions=-1)
//       .decode_gop(stream_key, codec, packets, positions, wanted, *, size=None,
//                   verify_keyframe=True, output_format="rgb")
//           -> list[ndarray | tuple | None]  (aligned with wanted, as above)
//       .stats() -> dict, .clear_sessions()
//
// `codec` is a name ("h264", "hevc", "av1", ...) or a Rerun VideoCodec value (int).
// Samples are bytes-like objects read in place while the GIL is released. Failures raise
// the classes of the exception table in module.cc (kCorrupt -> RrdCorruptError, ...).
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "rrloader/decode/bitstream.h"
#include "rrloader/decode/video.h"
#include "rrloader/engine/video_field.h"

namespace rrl_bindings {
namespace {

using namespace nb::literals;
using ImageArray = nb::ndarray<nb::numpy, uint8_t, nb::ndim<3>, nb::c_contig>;
using rrl::decode::FrameTarget;
using rrl::decode::VideoCodec;
using rrl::decode::VideoOutputFormat;

// SampleView: a read-only view of a bytes-like object's buffer, held (and the object kept
// alive) until destruction. Construct and destroy with the GIL held.
class SampleView {
 public:
  explicit SampleView(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) throw nb::python_error();
  }
  ~SampleView() { PyBuffer_Release(&view_); }
  SampleView(const SampleView&) = delete;
  SampleView& operator=(const SampleView&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

VideoCodec CodecOf(nb::handle codec) {
  if (nb::isinstance<nb::int_>(codec)) {
    return Unwrap(rrl::decode::VideoCodecFromRerun(nb::cast<uint32_t>(codec)));
  }
  return Unwrap(rrl::decode::ParseVideoCodec(nb::cast<std::string>(codec)));
}

rrl::decode::VideoOutputSize SizeOf(const std::optional<std::pair<int, int>>& size) {
  rrl::decode::VideoOutputSize out;
  if (size) {
    if (size->first <= 0 || size->second <= 0) {
      Throw(rrl::Status::InvalidArgument("size must be (height, width) with both positive"));
    }
    out.height = size->first;
    out.width = size->second;
  }
  return out;
}

// DecodedFrame: a frame collected by a sink, owned until handed to numpy: planar RGB, or
// the Y plane followed by the UV planes (one allocation).
struct DecodedFrame {
  std::unique_ptr<uint8_t[]> pixels;
  int height = 0;
  int width = 0;
  rrl::decode::VideoColor color;
};

VideoOutputFormat OutputFormatOf(const std::string& name) {
  return Unwrap(rrl::decode::ParseVideoOutputFormat(name));
}

nb::list ToList(const std::vector<int64_t>& wanted, std::map<int64_t, DecodedFrame>& frames, VideoOutputFormat format) {
  nb::list out;
  for (int64_t w : wanted) {
    auto it = frames.find(w);
    if (it == frames.end() || !it->second.pixels) {
      out.append(nb::none());
      continue;
    }
    DecodedFrame& f = it->second;
    // Each request gets its own memory, even when a position is wanted twice.
    const auto bytes = static_cast<size_t>(rrl::decode::VideoFrameBytes(format, f.height, f.width));
    uint8_t* ptr = new uint8_t[bytes];
    std::copy(f.pixels.get(), f.pixels.get() + bytes, ptr);
    nb::capsule owner(ptr, [](void* p) noexcept { delete[] static_cast<uint8_t*>(p); });
    const auto h = static_cast<size_t>(f.height);
    const auto wd = static_cast<size_t>(f.width);
    if (format == VideoOutputFormat::kRgb) {
      out.append(ImageArray(ptr, {3, h, wd}, owner));
      continue;
    }
    // Both planes are views of the one allocation (the capsule is their common owner).
    uint8_t* uv = ptr + rrl::decode::Yuv420LumaBytes(f.height, f.width);
    const auto ch = static_cast<size_t>(rrl::decode::Yuv420ChromaHeight(f.height));
    const auto cw = static_cast<size_t>(rrl::decode::Yuv420ChromaWidth(f.width));
    out.append(nb::make_tuple(ImageArray(ptr, {1, h, wd}, owner), ImageArray(uv, {2, ch, cw}, owner),
                              rrl::decode::VideoColorSpaceName(f.color.space),
                              rrl::decode::VideoColorRangeName(f.color.range)));
  }
  return out;
}

nb::list DecodeWith(rrl::decode::VideoFrameDecoder& decoder, const std::string& stream_key, nb::handle codec_obj,
                    const std::vector<nb::object>& packets, const std::vector<int64_t>& positions,
                    const std::vector<int64_t>& wanted, const std::optional<std::pair<int, int>>& size,
                    bool verify_keyframe, const std::string& output_format) {
  if (positions.size() != packets.size()) {
    Throw(rrl::Status::InvalidArgument("positions must have one entry per packet"));
  }
  rrl::decode::GopRequest request;
  request.stream_key = stream_key;
  request.codec = CodecOf(codec_obj);
  request.size = SizeOf(size);
  request.verify_keyframe = verify_keyframe;
  request.output_format = OutputFormatOf(output_format);
  const VideoOutputFormat format = request.output_format;
  std::vector<std::unique_ptr<SampleView>> views;
  views.reserve(packets.size());
  for (size_t i = 0; i < packets.size(); ++i) {
    views.push_back(std::make_unique<SampleView>(packets[i]));
    request.packets.push_back({views.back()->data(), views.back()->size(), positions[i]});
  }
  request.wanted = wanted;
  std::sort(request.wanted.begin(), request.wanted.end());
  request.wanted.erase(std::unique(request.wanted.begin(), request.wanted.end()), request.wanted.end());
  std::map<int64_t, DecodedFrame> frames;
  rrl::Result<rrl::decode::GopOutcome> outcome = rrl::Status::Internal("not run");
  {
    nb::gil_scoped_release release;
    rrl::decode::FrameTargetSink sink =
        [&frames, format](int64_t position, const rrl::decode::VideoFrameInfo& info) -> rrl::Result<FrameTarget> {
      DecodedFrame& f = frames[position];
      f.pixels.reset(new uint8_t[static_cast<size_t>(rrl::decode::VideoFrameBytes(format, info.height, info.width))]);
      f.height = info.height;
      f.width = info.width;
      f.color = info.color;
      uint8_t* uv = format == VideoOutputFormat::kYuv420
                        ? f.pixels.get() + rrl::decode::Yuv420LumaBytes(info.height, info.width)
                        : nullptr;
      return FrameTarget{f.pixels.get(), uv};
    };
    outcome = decoder.DecodeGop(request, sink);
  }
  Unwrap(std::move(outcome));
  return ToList(wanted, frames, format);
}

nb::list DecodeVideoPackets(nb::handle codec, const std::vector<nb::object>& packets,
                            const std::vector<int64_t>& wanted, std::optional<std::pair<int, int>> size, int threads,
                            bool verify_keyframe, bool reject_reordering, const std::string& output_format) {
  rrl::decode::VideoFrameDecoderOptions options;
  options.decoder.threads = threads;
  options.decoder.reject_reordering = reject_reordering;
  options.session_cache_bytes = 0;
  rrl::decode::VideoFrameDecoder decoder(options);
  std::vector<int64_t> positions(packets.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int64_t>(i);
  return DecodeWith(decoder, "decode_video_packets", codec, packets, positions, wanted, size, verify_keyframe,
                    output_format);
}

class PyVideoFrameDecoder {
 public:
  PyVideoFrameDecoder(int64_t session_cache_bytes, int threads, int64_t max_pixels, int64_t max_sessions) {
    rrl::decode::VideoFrameDecoderOptions options;
    options.session_cache_bytes = session_cache_bytes;
    options.max_sessions = max_sessions;
    options.decoder.threads = threads;
    options.decoder.max_pixels = max_pixels;
    decoder_ = std::make_unique<rrl::decode::VideoFrameDecoder>(options);
  }

  nb::list decode_gop(const std::string& stream_key, nb::handle codec, const std::vector<nb::object>& packets,
                      const std::vector<int64_t>& positions, const std::vector<int64_t>& wanted,
                      std::optional<std::pair<int, int>> size, bool verify_keyframe, const std::string& output_format) {
    return DecodeWith(*decoder_, stream_key, codec, packets, positions, wanted, size, verify_keyframe, output_format);
  }

  nb::dict stats() const {
    const rrl::decode::VideoStats s = decoder_->stats();
    nb::dict d;
    d["frames_decoded"] = s.frames_decoded;
    d["frames_delivered"] = s.frames_delivered;
    d["frames_reformatted"] = s.frames_reformatted;
    d["gops_started"] = s.gops_started;
    d["sessions_recycled"] = s.sessions_recycled;
    d["session_hits"] = s.session_hits;
    d["session_misses"] = s.session_misses;
    d["bytes_cached"] = s.bytes_cached;
    d["sessions_cached"] = s.sessions_cached;
    return d;
  }

  void clear_sessions() { decoder_->ClearSessions(); }

 private:
  std::unique_ptr<rrl::decode::VideoFrameDecoder> decoder_;
};

bool VideoIsKeyframe(nb::handle codec, nb::handle sample) {
  const VideoCodec c = CodecOf(codec);
  SampleView view(sample);
  return Unwrap(rrl::decode::IsKeyframe(c, view.data(), view.size()));
}

bool VideoIsAnnexB(nb::handle sample) {
  SampleView view(sample);
  return rrl::decode::IsAnnexB(view.data(), view.size());
}

nb::bytes VideoToAnnexB(nb::handle sample) {
  SampleView view(sample);
  std::string out(view.size(), '\0');
  auto* dst = reinterpret_cast<uint8_t*>(out.data());
  if (view.size() > 0) {
    rrl::Status st = rrl::decode::AvccToAnnexB(view.data(), view.size(), dst);
    if (!st.ok()) Throw(st);
  }
  return nb::bytes(out.data(), out.size());
}

}  // namespace

void BindVideo(nanobind::module_& m) {
  const rrl::decode::VideoFrameDecoderOptions defaults;
  m.attr("DEFAULT_VIDEO_SESSION_CACHE_BYTES") = defaults.session_cache_bytes;
  m.attr("DEFAULT_VIDEO_FIELD_SESSION_CACHE_BYTES") = rrl::engine::kDefaultVideoSessionCacheBytes;
  m.def("video_is_keyframe", &VideoIsKeyframe, "codec"_a, "sample"_a,
        "Whether a VideoStream sample starts a GOP (Rerun's rules; internal).");
  m.def("video_is_annex_b", &VideoIsAnnexB, "sample"_a, "Whether an H.264/H.265 sample uses start codes (internal).");
  m.def("video_to_annex_b", &VideoToAnnexB, "sample"_a,
        "Rewrites a 4-byte length-prefixed H.264/H.265 sample with start codes (internal).");
  m.def(
      "video_codec_name", [](nb::handle codec) { return std::string(rrl::decode::VideoCodecName(CodecOf(codec))); },
      "codec"_a, "Canonical name of a codec name or Rerun VideoCodec value (internal).");
  m.def("decode_video_packets", &DecodeVideoPackets, "codec"_a, "packets"_a, "wanted"_a, nb::kw_only(),
        "size"_a = nb::none(), "threads"_a = 1, "verify_keyframe"_a = true, "reject_reordering"_a = false,
        "output_format"_a = "rgb",
        "Decodes the wanted positions of one stream's packets (from a keyframe, decode order) into uint8 "
        "[3, H, W] RGB arrays, or with output_format='yuv420p' into (y [1, H, W], uv [2, ceil(H/2), "
        "ceil(W/2)], color_space, color_range) tuples; None where no frame exists (internal; GIL released).");
  nb::class_<PyVideoFrameDecoder>(m, "VideoFrameDecoder")
      .def(nb::init<int64_t, int, int64_t, int64_t>(), nb::kw_only(),
           "session_cache_bytes"_a = defaults.session_cache_bytes, "threads"_a = defaults.decoder.threads,
           "max_pixels"_a = defaults.decoder.max_pixels, "max_sessions"_a = defaults.max_sessions)
      .def("decode_gop", &PyVideoFrameDecoder::decode_gop, "stream_key"_a, "codec"_a, "packets"_a, "positions"_a,
           "wanted"_a, nb::kw_only(), "size"_a = nb::none(), "verify_keyframe"_a = true, "output_format"_a = "rgb")
      .def("stats", &PyVideoFrameDecoder::stats)
      .def("clear_sessions", &PyVideoFrameDecoder::clear_sessions);
}

}  // namespace rrl_bindings
