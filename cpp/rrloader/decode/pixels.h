// rrloader/decode/pixels.h — pixel layout conversions shared by the image and video
// decoders (internal to the decode layer).
#pragma once

#include <cstdint>

namespace rrl::decode {

// DeinterleaveRgb: packed RGB24 (`pixels` x 3 bytes) -> three planes r, g, b of `pixels`
// bytes each. The buffers must not overlap. Stateless and thread-safe; uses SSSE3 byte
// shuffles where the CPU has them (checked once, at the first call), else a scalar loop.
void DeinterleaveRgb(const uint8_t* src, int64_t pixels, uint8_t* r, uint8_t* g, uint8_t* b);

}  // namespace rrl::decode
