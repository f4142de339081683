// libFuzzer target over rrloader/decode/bitstream.h (IsAnnexB, AvccToAnnexB, IsKeyframe)
// and the packet path of rrloader/decode/video.h (VideoFrameDecoder::DecodeGop feeding
// libavcodec and converting frames to RGB). Any input must produce a value or a Status,
// never a crash, hang or sanitizer report; the target also checks the contracts callers
// rely on (AvccToAnnexB keeps the size and writes only its output, delivered frames have
// the size the sink was asked for, every wanted position is delivered or missing).
//
// Input layout: byte 0 = flags (bits 0-1 codec: 0/3 H.264, 1 H.265, 2 AV1; bit 2 run the
// packet path; bit 3 verify the keyframe; bit 4 resize to 12x16), then the sample for the
// bitstream functions, which is also split into up to 8 packets for the packet path, each
// as [u16 little-endian length][bytes] (a length past the end takes what is left).
// Seeds: tools/make_video_fuzz_corpus.py.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "rrloader/decode/bitstream.h"
#include "rrloader/decode/video.h"

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

void FuzzPackets(rrl::decode::VideoCodec codec, uint8_t flags, const uint8_t* data, size_t size) {
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
  if (request.packets.empty()) return;
  rrl::decode::VideoFrameDecoderOptions options;
  options.decoder.max_pixels = int64_t{1} << 16;  // keeps each execution fast and bounded
  options.session_cache_bytes = 0;
  rrl::decode::VideoFrameDecoder decoder(options);
  std::vector<std::vector<uint8_t>> frames;
  rrl::decode::FrameSink sink = [&](int64_t, int height, int width) -> rrl::Result<uint8_t*> {
    Check(height > 0 && width > 0 && int64_t{height} * width <= options.decoder.max_pixels);
    if (request.size.resize()) Check(height == 12 && width == 16);
    frames.emplace_back(size_t{3} * height * width + kGuardBytes, kGuard);
    return frames.back().data();
  };
  auto outcome = decoder.DecodeGop(request, sink);
  for (const auto& f : frames) {
    for (size_t i = f.size() - kGuardBytes; i < f.size(); ++i) Check(f[i] == kGuard);
  }
  if (outcome.ok()) {
    Check(outcome->delivered.size() + outcome->missing.size() == request.wanted.size());
    Check(outcome->delivered.size() == frames.size());
  } else {
    Check(outcome.status().code() != rrl::StatusCode::kOk);
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
  return 0;
}
