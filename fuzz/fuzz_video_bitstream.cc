// libFuzzer target over rrloader/decode/bitstream.h (IsAnnexB, AvccToAnnexB, IsKeyframe),
// the packet path of rrloader/decode/video.h (VideoFrameDecoder::DecodeGop feeding
// libavcodec and converting frames to RGB or copying YUV 4:2:0 planes; with a session cache, kept frames and B-frame
// refusal, as the dataloader runs it) and the GOP planning of rrloader/engine/video_plan.h. Any input must produce a
// value or a Status, never a crash, hang or sanitizer report; the target also checks the contracts callers rely on
// (AvccToAnnexB keeps the size and writes only its output, delivered frames have the size the sink was asked for, every
// wanted position is delivered or missing).
//
// Input layout: byte 0 = flags (bits 0-1 codec: 0/3 H.264, 1 H.265, 2 AV1; bit 2 run the
// packet path; bit 3 verify the keyframe; bit 4 resize to 12x16; bit 5 run the packet path
// a second time on the same decoder as the dataloader configures it (sessions, 3 kept
// frames, B-frames refused), wanting an earlier and a later part of the GOP; bit 6 run the
// planner on a stream described by the bytes; bit 7 the packet path asks for YUV 4:2:0
// planes instead of RGB), then the sample for the bitstream functions,
// which is also split into up to 8 packets for the packet path, each as [u16 little-endian
// length][bytes] (a length past the end takes what is left). The planner reads the same
// bytes as: per packet a time step (byte % 4, so ties happen) and a keyframe bit (byte & 4),
// then slots per sample, lookahead and sample values.
// Seeds: tools/make_video_fuzz_corpus.py.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "rrloader/decode/bitstream.h"
#include "rrloader/decode/video.h"
#include "rrloader/engine/video_plan.h"

namespace {

constexpr size_t kGuardBytes = 32;
constexpr uint8_t kGuard = 0x5A;

void Check(bool condition) {
  if (!condition) std::abort();
}

void FuzzBitstream(rrl::decode::VideoCodec codec, const uint8_t* data, size_t size) {
  const bool annexb = rrl::decode::IsAnnexB(data, size);
  auto key = rrl::decode::IsKeyframe(codec, data, size);
  std::vector<uint8_t> out(size + kGuardBytes, kGuard);
  const rrl::Status st = rrl::decode::AvccToAnnexB(data, size, out.data());
  for (size_t i = size; i < out.size(); ++i) Check(out[i] == kGuard);
  if (st.ok() && size > 0) {
    Check(rrl::decode::IsAnnexB(out.data(), size));
  }
  if (codec != rrl::decode::VideoCodec::kAV1 && !annexb && size > 0) {
    // A sample that is not Annex B is read as length-prefixed: the detector fails exactly
    // when the conversion does.
    Check(key.ok() == st.ok());
  } else {
    Check(key.ok());
  }
}

// Packets: the GOP request of the input's packets (see the layout above).
rrl::decode::GopRequest Packets(rrl::decode::VideoCodec codec, uint8_t flags, const uint8_t* data, size_t size) {
  rrl::decode::GopRequest request;
  request.stream_key = "fuzz";
  request.codec = codec;
  request.verify_keyframe = (flags & 8) != 0;
  if (flags & 16) request.size = {12, 16};
  size_t pos = 0;
  for (int64_t i = 0; i < 8 && pos < size; ++i) {
    size_t length = size - pos;
    if (size - pos >= 2) {
      length = data[pos] | (size_t{data[pos + 1]} << 8);
      pos += 2;
      if (length > size - pos) length = size - pos;
    } else {
      pos = size;
      length = 0;
    }
    request.packets.push_back({data + pos, length, i});
    request.wanted.push_back(i);
    pos += length;
  }
  return request;
}

// CheckOutcome: every wanted position delivered or missing, guard bytes intact.
void CheckOutcome(const rrl::decode::GopRequest& request, const rrl::Result<rrl::decode::GopOutcome>& outcome,
                  const std::vector<std::vector<uint8_t>>& frames) {
  for (const auto& f : frames) {
    for (size_t i = f.size() - kGuardBytes; i < f.size(); ++i) Check(f[i] == kGuard);
  }
  if (outcome.ok()) {
    Check(outcome->delivered.size() + outcome->missing.size() == request.wanted.size());
    Check(outcome->delivered.size() == frames.size());
  }
}

void FuzzPackets(rrl::decode::VideoCodec codec, uint8_t flags, const uint8_t* data, size_t size) {
  rrl::decode::GopRequest request = Packets(codec, flags, data, size);
  if (request.packets.empty()) return;
  rrl::decode::VideoFrameDecoderOptions options;
  options.decoder.max_pixels = int64_t{1} << 16;  // keeps each execution fast and bounded
  options.session_cache_bytes = 0;
  rrl::decode::VideoFrameDecoder decoder(options);
  std::vector<std::vector<uint8_t>> frames;
  if (flags & 128) {
    // YUV 4:2:0: Y and UV in separate buffers, both guarded; no resize.
    request.output_format = rrl::decode::VideoOutputFormat::kYuv420;
    std::vector<std::vector<uint8_t>> chroma;
    rrl::decode::FrameTargetSink sink =
        [&](int64_t, const rrl::decode::VideoFrameInfo& info) -> rrl::Result<rrl::decode::FrameTarget> {
      Check(info.height > 0 && info.width > 0 && int64_t{info.height} * info.width <= options.decoder.max_pixels);
      frames.emplace_back(static_cast<size_t>(rrl::decode::Yuv420LumaBytes(info.height, info.width)) + kGuardBytes,
                          kGuard);
      chroma.emplace_back(static_cast<size_t>(rrl::decode::Yuv420ChromaBytes(info.height, info.width)) + kGuardBytes,
                          kGuard);
      return rrl::decode::FrameTarget{frames.back().data(), chroma.back().data()};
    };
    auto outcome = decoder.DecodeGop(request, sink);
    if (request.size.resize()) Check(outcome.status().code() == rrl::StatusCode::kInvalidArgument);
    CheckOutcome(request, outcome, frames);
    for (const auto& f : chroma) {
      for (size_t i = f.size() - kGuardBytes; i < f.size(); ++i) Check(f[i] == kGuard);
    }
    return;
  }
  rrl::decode::FrameSink sink = [&](int64_t, int height, int width) -> rrl::Result<uint8_t*> {
    Check(height > 0 && width > 0 && int64_t{height} * width <= options.decoder.max_pixels);
    if (request.size.resize()) Check(height == 12 && width == 16);
    frames.emplace_back(size_t{3} * height * width + kGuardBytes, kGuard);
    return frames.back().data();
  };
  auto outcome = decoder.DecodeGop(request, sink);
  CheckOutcome(request, outcome, frames);
  if (!outcome.ok()) Check(outcome.status().code() != rrl::StatusCode::kOk);
}

// FuzzSessions: the dataloader's configuration, two requests on one decoder: the first
// part of the GOP, then (continuing the cached session, or starting over) a later part and
// the kept frames of the first.
void FuzzSessions(rrl::decode::VideoCodec codec, uint8_t flags, const uint8_t* data, size_t size) {
  const rrl::decode::GopRequest all = Packets(codec, flags, data, size);
  if (all.packets.empty()) return;
  rrl::decode::VideoFrameDecoderOptions options;
  options.decoder.max_pixels = int64_t{1} << 16;
  options.decoder.kept_frames = 3;
  options.decoder.reject_reordering = true;
  options.session_cache_bytes = int64_t{16} << 20;
  rrl::decode::VideoFrameDecoder decoder(options);
  const size_t half = (all.wanted.size() + 1) / 2;
  std::vector<std::vector<int64_t>> parts = {
      std::vector<int64_t>(all.wanted.begin(), all.wanted.begin() + static_cast<std::ptrdiff_t>(half)),
      std::vector<int64_t>(all.wanted.begin() + static_cast<std::ptrdiff_t>(half / 2), all.wanted.end())};
  for (const auto& wanted : parts) {
    rrl::decode::GopRequest request = all;
    request.wanted = wanted;
    request.describe = [](int64_t position) { return "packet " + std::to_string(position); };
    std::vector<std::vector<uint8_t>> frames;
    rrl::decode::FrameSink sink = [&](int64_t, int height, int width) -> rrl::Result<uint8_t*> {
      Check(height > 0 && width > 0 && int64_t{height} * width <= options.decoder.max_pixels);
      frames.emplace_back(size_t{3} * height * width + kGuardBytes, kGuard);
      return frames.back().data();
    };
    auto outcome = decoder.DecodeGop(request, sink);
    CheckOutcome(request, outcome, frames);
  }
  const rrl::decode::VideoStats stats = decoder.stats();
  Check(stats.bytes_cached >= 0 && stats.sessions_cached <= 1);
}

// FuzzPlan: PlanVideoBlock over a stream and block described by the bytes; checks the
// plan's contracts (video_plan.h).
void FuzzPlan(const uint8_t* data, size_t size) {
  if (size < 4) return;
  const size_t count = std::min<size_t>(data[0] % 40, size - 3);
  std::vector<int64_t> times;
  std::vector<int32_t> prior;
  int64_t t = 0;
  int32_t last_key = -1;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t b = data[1 + i];
    t += b % 4;
    times.push_back(t);
    if (b & 4) last_key = static_cast<int32_t>(i);
    prior.push_back(last_key);
  }
  size_t pos = 1 + count;
  const int64_t slots = 1 + data[pos++] % 4;
  const int64_t lookahead = data[pos++] % 4;
  std::vector<int32_t> sample_stream;
  std::vector<int64_t> values;
  for (; pos + 1 < size && sample_stream.size() < 16; pos += 2) {
    sample_stream.push_back((data[pos] & 0x80) ? -1 : 0);
    const int64_t v = static_cast<int64_t>(data[pos] & 0x7F) - 8;
    for (int64_t k = 0; k < slots; ++k) values.push_back(v + k * (1 + data[pos + 1] % 3));
  }
  const rrl::engine::VideoStreamView view{times.data(), prior.data(), static_cast<int64_t>(count)};
  const rrl::engine::VideoBlockPlan plan = rrl::engine::PlanVideoBlock({view}, sample_stream, values, slots, lookahead);
  Check(plan.slots.size() == values.size() && plan.sample_missing.size() == sample_stream.size());
  for (const auto& gop : plan.gops) {
    Check(!gop.wanted.empty() && gop.stream == 0);
    Check(std::is_sorted(gop.wanted.begin(), gop.wanted.end()));
    Check(std::adjacent_find(gop.wanted.begin(), gop.wanted.end()) == gop.wanted.end());
    Check(gop.keyframe >= 0 && gop.keyframe <= gop.wanted.front() && gop.wanted.back() <= gop.last);
    Check(gop.last < view.count && gop.last - gop.wanted.back() <= lookahead);
    Check(prior[static_cast<size_t>(gop.keyframe)] == gop.keyframe);
    for (int64_t p = gop.keyframe + 1; p <= gop.last; ++p) {
      Check(prior[static_cast<size_t>(p)] == gop.keyframe);  // never into the next GOP
    }
  }
  for (size_t i = 0; i < sample_stream.size(); ++i) {
    const bool missing = plan.sample_missing[i] != rrl::engine::SlotMissing::kNone;
    for (int64_t k = 0; k < slots; ++k) {
      const size_t at = i * static_cast<size_t>(slots) + static_cast<size_t>(k);
      const rrl::engine::VideoSlot& slot = plan.slots[at];
      Check(missing == (slot.gop < 0));
      if (missing) continue;
      Check(slot.position == rrl::engine::LatestPacketAtOrBefore(view, values[at]));
      const auto& gop = plan.gops[static_cast<size_t>(slot.gop)];
      Check(std::binary_search(gop.wanted.begin(), gop.wanted.end(), slot.position));
      Check(prior[static_cast<size_t>(slot.position)] == gop.keyframe);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  av_log_set_level(AV_LOG_QUIET);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  const int codec_bits = flags & 3;
  const rrl::decode::VideoCodec codec = codec_bits == 1   ? rrl::decode::VideoCodec::kH265
                                        : codec_bits == 2 ? rrl::decode::VideoCodec::kAV1
                                                          : rrl::decode::VideoCodec::kH264;
  FuzzBitstream(codec, data + 1, size - 1);
  if (flags & 4) FuzzPackets(codec, flags, data + 1, size - 1);
  if (flags & 32) FuzzSessions(codec, flags, data + 1, size - 1);
  if (flags & 64) FuzzPlan(data + 1, size - 1);
  return 0;
}
