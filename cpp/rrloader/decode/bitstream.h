// rrloader/decode/bitstream.h — what the video decoder needs to know about a compressed
// sample before handing it to libavcodec: which codec, which framing (Annex B start codes
// or 4-byte length prefixes), and whether the sample starts a GOP.
//
// A "sample" is one row of Rerun's `VideoStream:sample` column: one access unit (H.264 /
// H.265) or one temporal unit (AV1), in decode order.
//
// Keyframe rules (those of Rerun's `detect_gop_start`, so that a stream without an
// `is_keyframe` column is cut into the same GOPs Rerun would cut it into):
//   H.264: a sequence parameter set that parses, and an IDR slice (NAL type 5). An IDR
//          without an SPS in the same sample is NOT a keyframe (a decoder starting there
//          has no parameter sets).
//   H.265: a sequence parameter set that parses, and an IRAP picture (NAL types 16-23:
//          BLA, IDR, CRA).
//   AV1:   a sequence header OBU and a frame (or frame header) OBU with frame_type
//          KEY_FRAME and show_frame = 1 (show_existing_frame = 0). Rerun does not look at
//          show_frame; a hidden key frame is not a place where decoding can start and
//          show the sample's frame, so it is not a keyframe here.
//
// Every function reads only inside [data, data + size) — for any bytes, including empty
// and hostile input (fuzz/fuzz_video_bitstream.cc checks this under ASan).
//
// Thread safety: every function is reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "rrloader/common/status.h"

namespace rrl::decode {

// VideoCodec: the compressed formats the video decoder reads.
enum class VideoCodec { kH264, kH265, kAV1 };

// Rerun's `VideoCodec` component values (rerun-sdk 0.41 stores the WebCodecs FourCC as a
// big-endian uint32 in `VideoStream:codec`; checked by writing a stream with rerun-sdk).
inline constexpr uint32_t kRerunCodecH264 = 0x61766331;  // 'avc1'
inline constexpr uint32_t kRerunCodecH265 = 0x68657631;  // 'hev1'
inline constexpr uint32_t kRerunCodecAV1 = 0x61763031;   // 'av01'
inline constexpr uint32_t kRerunCodecVP8 = 0x76703830;   // 'vp80' (not decoded here)
inline constexpr uint32_t kRerunCodecVP9 = 0x76703039;   // 'vp09' (not decoded here)

// VideoCodecName: "h264", "h265" or "av1".
const char* VideoCodecName(VideoCodec codec);

// ParseVideoCodec: a codec from its name, case-insensitive: "h264"/"avc"/"avc1",
// "h265"/"hevc"/"hev1"/"hvc1", "av1"/"av01"; or the decimal Rerun component value
// (e.g. "1635148593"). VP8/VP9 and anything else → kUnsupported naming the input.
[[nodiscard]] Result<VideoCodec> ParseVideoCodec(std::string_view name);

// VideoCodecFromRerun: a codec from Rerun's `VideoStream:codec` component value.
// VP8/VP9 → kUnsupported ("vp9 video is not supported"); any other value → kCorrupt.
[[nodiscard]] Result<VideoCodec> VideoCodecFromRerun(uint32_t value);

// IsAnnexB: whether an H.264/H.265 sample is in Annex B form, i.e. starts with a start
// code. A sample starting with 00 00 00 01 is Annex B. One starting with 00 00 01 is
// Annex B unless its bytes also tile exactly as 4-byte-length-prefixed NAL units (a
// length-prefixed sample whose first NAL is 256-511 bytes long starts with 00 00 01;
// Rerun's check would misread it as Annex B). Anything else is length-prefixed.
bool IsAnnexB(const uint8_t* data, size_t size);

// AvccToAnnexB: rewrites a sample of 4-byte big-endian length-prefixed NAL units (the
// MP4 "AVCC"/"HVCC" sample layout) as Annex B with 4-byte start codes. The output has
// exactly `size` bytes (each length field becomes a start code), written to `out`, which
// may equal `data`. kCorrupt, naming the byte offset, when a length field is truncated, a
// NAL unit is empty, or a length runs past the end of the sample.
[[nodiscard]] Status AvccToAnnexB(const uint8_t* data, size_t size, uint8_t* out);

// IsKeyframe: whether the sample starts a GOP (rules above). H.264/H.265 samples may be in
// either framing. Malformed bitstream syntax (an SPS that does not parse, an OBU that runs
// past the end) makes a sample "not a keyframe", as in Rerun; the only error is kCorrupt
// for a length-prefixed H.264/H.265 sample whose lengths do not tile it.
[[nodiscard]] Result<bool> IsKeyframe(VideoCodec codec, const uint8_t* data, size_t size);

// --- Exposed only for tests and the fuzz target. -------------------------------------

// ParseH264Sps / ParseH265Sps: whether an SPS NAL unit (header included, emulation
// prevention bytes still in place) parses up to the picture size with every field in range.
bool ParseH264Sps(const uint8_t* nal, size_t size);
bool ParseH265Sps(const uint8_t* nal, size_t size);

}  // namespace rrl::decode
