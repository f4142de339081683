// libFuzzer target over every entry point of rrloader/decode/image.h: ProbeEncodedImage and
// DecodeEncodedImage on the input as a JPEG/PNG blob, then ProbeRawImage and DecodeRawImage
// with a Rerun ImageFormat taken from the input's first 8 bytes. Any input must produce a
// Status, never a crash, hang or sanitizer report; beyond that the target checks the
// contracts callers rely on (the probed shape is the decoded shape, the output buffer is
// the only memory written, a raw image consumed exactly its buffer).
// Seeds: tools/make_image_fuzz_corpus.py.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "rrloader/decode/image.h"

namespace {

// A smaller pixel limit than the default keeps each execution fast and the memory bounded
// (the default's 805 MB RGB buffer would only measure the allocator).
constexpr int64_t kFuzzMaxPixels = int64_t{1} << 22;
// Guard bytes after the output buffer: a decoder writing past num_bytes() changes them
// (ASan catches heap overflows, but not writes into our own slack).
constexpr size_t kGuardBytes = 64;
constexpr uint8_t kGuard = 0xA5;

void Check(bool condition) {
  if (!condition) std::abort();
}

bool SameShape(const rrl::decode::ImageShape& a, const rrl::decode::ImageShape& b) {
  return a.channels == b.channels && a.height == b.height && a.width == b.width;
}

void CheckGuard(const std::vector<uint8_t>& out, size_t used) {
  for (size_t i = used; i < out.size(); ++i) Check(out[i] == kGuard);
}

void FuzzEncoded(const uint8_t* data, size_t size, const rrl::decode::ImageLimits& limits) {
  auto probed = rrl::decode::ProbeEncodedImage(data, size, limits);
  if (!probed.ok()) {
    // The decoder must refuse too (it validates everything the probe does, and more).
    uint8_t scratch[16];
    Check(!rrl::decode::DecodeEncodedImage(data, size, limits, scratch, sizeof(scratch)).ok());
    return;
  }
  Check(probed->num_bytes() > 0 && probed->height * int64_t{probed->width} <= limits.max_pixels);
  const size_t need = static_cast<size_t>(probed->num_bytes());
  std::vector<uint8_t> out(need + kGuardBytes, kGuard);
  auto decoded = rrl::decode::DecodeEncodedImage(data, size, limits, out.data(), probed->num_bytes());
  if (decoded.ok()) Check(SameShape(*decoded, *probed));
  CheckGuard(out, need);
  // A buffer one byte short is refused before anything is written.
  std::vector<uint8_t> small(need - 1 + kGuardBytes, kGuard);
  auto refused = rrl::decode::DecodeEncodedImage(data, size, limits, small.data(), probed->num_bytes() - 1);
  Check(!refused.ok());
}

void FuzzRaw(const uint8_t* data, size_t size, const rrl::decode::ImageLimits& limits) {
  if (size < 8) return;
  // Header: width (u16 LE), height (u16 LE), color model, channel datatype, pixel format,
  // flags (bit 0: use the pixel format, bit 1: negative width, bit 2: use the datatype,
  // else U8); the rest is the pixel buffer.
  rrl::decode::RawImageFormat format;
  format.width = data[0] | (data[1] << 8);
  format.height = data[2] | (data[3] << 8);
  format.color_model = data[4] % 8;
  format.channel_datatype = (data[7] & 4) ? data[5] : 6;
  format.pixel_format = (data[7] & 1) ? data[6] : 0;
  if (data[7] & 2) format.width = -format.width;
  const uint8_t* buffer = data + 8;
  const size_t buffer_size = size - 8;
  auto probed = rrl::decode::ProbeRawImage(buffer_size, format, limits);
  if (!probed.ok()) return;
  Check(static_cast<size_t>(probed->num_bytes()) == buffer_size);
  const size_t need = static_cast<size_t>(probed->num_bytes());
  std::vector<uint8_t> out(need + kGuardBytes, kGuard);
  auto decoded = rrl::decode::DecodeRawImage(buffer, buffer_size, format, limits, out.data(), probed->num_bytes());
  Check(decoded.ok() && SameShape(*decoded, *probed));
  CheckGuard(out, need);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rrl::decode::ImageLimits limits;
  limits.max_pixels = kFuzzMaxPixels;
  FuzzEncoded(data, size, limits);
  FuzzRaw(data, size, limits);
  return 0;
}
