// rrloader/decode/bitstream.cc — codec names, sample framing and keyframe detection.
//
// Syntax facts used here (field names as in the specifications):
//   H.264 (ITU-T H.264 §7.3.1, §7.3.2.1.1): 1-byte NAL header, nal_unit_type = low 5 bits;
//     5 = IDR slice, 7 = SPS. SPS: profile_idc u(8), constraint flags u(8), level_idc u(8),
//     seq_parameter_set_id ue(v), [high profiles: chroma/bit depth/scaling lists], ...,
//     pic_width_in_mbs_minus1 ue(v), pic_height_in_map_units_minus1 ue(v).
//   H.265 (ITU-T H.265 §7.3.1.2, §7.3.2.2): 2-byte NAL header, nal_unit_type = bits 1-6 of
//     the first byte; 16-23 = IRAP, 33 = SPS. SPS: vps id u(4), max_sub_layers_minus1 u(3),
//     temporal_id_nesting u(1), profile_tier_level, sps id ue(v), chroma_format_idc ue(v),
//     [separate_colour_plane u(1)], width ue(v), height ue(v).
//   AV1 (AV1 bitstream spec §5.3, §5.5, §5.9.2): OBU header = forbidden u(1), type u(4),
//     extension_flag u(1), has_size_field u(1), reserved u(1), [extension byte],
//     [leb128 size]; type 1 = sequence header, 3 = frame header, 6 = frame. Sequence
//     header: seq_profile u(3), still_picture u(1), reduced_still_picture_header u(1), ...
//     Frame header (uncompressed_header): with reduced_still_picture_header every frame is
//     a shown KEY_FRAME; else show_existing_frame u(1), frame_type u(2), show_frame u(1).
#include "rrloader/decode/bitstream.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <vector>

namespace rrl::decode {
namespace {

// RbspReader: an MSB-first bit reader over a NAL unit payload that skips emulation
// prevention bytes (the 03 in 00 00 03) on the fly. Reading past the end sets a sticky
// failure flag and yields zeros, so parsers check ok() once at the end.
class RbspReader {
 public:
  RbspReader(const uint8_t* data, size_t size, bool skip_emulation = true)
      : data_(data), size_(size), skip_emulation_(skip_emulation) {}

  bool ok() const { return ok_; }

  uint32_t Bit() {
    if (bit_ == 0 && !LoadByte()) return 0;
    --bit_;
    return (current_ >> bit_) & 1u;
  }

  uint32_t Bits(int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 1) | Bit();
    return v;
  }

  void Skip(int n) {
    for (int i = 0; i < n && ok_; ++i) Bit();
  }

  // Ue: unsigned Exp-Golomb; values above 2^31 - 2 (more than 31 leading zeros) fail.
  uint32_t Ue() {
    int zeros = 0;
    while (ok_ && Bit() == 0) {
      if (++zeros > 31) {
        ok_ = false;
        return 0;
      }
    }
    if (!ok_) return 0;
    const uint32_t rest = zeros == 0 ? 0 : Bits(zeros);
    return static_cast<uint32_t>((uint64_t{1} << zeros) - 1 + rest);
  }

  int32_t Se() {
    const uint32_t k = Ue();
    const int64_t magnitude = (int64_t{k} + 1) / 2;
    return static_cast<int32_t>((k & 1u) ? magnitude : -magnitude);
  }

 private:
  bool LoadByte() {
    if (pos_ >= size_) {
      ok_ = false;
      return false;
    }
    if (skip_emulation_ && zeros_ >= 2 && data_[pos_] == 0x03) {
      zeros_ = 0;
      ++pos_;
      if (pos_ >= size_) {
        ok_ = false;
        return false;
      }
    }
    current_ = data_[pos_++];
    zeros_ = current_ == 0 ? zeros_ + 1 : 0;
    bit_ = 8;
    return true;
  }

  const uint8_t* data_;
  size_t size_;
  bool skip_emulation_;
  size_t pos_ = 0;
  int zeros_ = 0;
  uint32_t current_ = 0;
  int bit_ = 0;
  bool ok_ = true;
};

// NalUnit: one NAL unit inside a sample (header included).
struct NalUnit {
  const uint8_t* data;
  size_t size;
};

// SplitAnnexB: the NAL units between start codes (00 00 01, optionally preceded by more
// zeros). Trailing zero bytes of a NAL unit belong to the next start code and are dropped.
std::vector<NalUnit> SplitAnnexB(const uint8_t* data, size_t size) {
  std::vector<NalUnit> nals;
  size_t i = 0;
  size_t nal_start = SIZE_MAX;
  while (i + 3 <= size) {
    if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
      if (nal_start != SIZE_MAX) {
        size_t end = i;
        while (end > nal_start && data[end - 1] == 0) --end;
        if (end > nal_start) nals.push_back({data + nal_start, end - nal_start});
      }
      i += 3;
      nal_start = i;
    } else {
      ++i;
    }
  }
  if (nal_start != SIZE_MAX && nal_start < size) nals.push_back({data + nal_start, size - nal_start});
  return nals;
}

uint32_t ReadBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// SplitLengthPrefixed: the NAL units of a 4-byte-length-prefixed sample, or kCorrupt
// naming the offset where the framing breaks.
Status SplitLengthPrefixed(const uint8_t* data, size_t size, std::vector<NalUnit>* nals) {
  size_t pos = 0;
  while (pos < size) {
    if (size - pos < 4) {
      return Status::Corrupt("length-prefixed video sample: truncated NAL length field at byte offset " +
                             std::to_string(pos) + " (sample is " + std::to_string(size) + " bytes)");
    }
    const uint32_t length = ReadBe32(data + pos);
    if (length == 0) {
      return Status::Corrupt("length-prefixed video sample: empty NAL unit at byte offset " + std::to_string(pos));
    }
    if (length > size - pos - 4) {
      return Status::Corrupt("length-prefixed video sample: NAL unit at byte offset " + std::to_string(pos) +
                             " claims " + std::to_string(length) + " bytes but only " + std::to_string(size - pos - 4) +
                             " remain");
    }
    if (nals != nullptr) nals->push_back({data + pos + 4, length});
    pos += 4 + size_t{length};
  }
  return Status::OK();
}

bool IsHighProfile(uint32_t profile_idc) {
  switch (profile_idc) {
    case 100:
    case 110:
    case 122:
    case 244:
    case 44:
    case 83:
    case 86:
    case 118:
    case 128:
    case 138:
    case 139:
    case 134:
    case 135: return true;
    default: return false;
  }
}

void SkipH264ScalingList(RbspReader& r, int entries) {
  int32_t last = 8;
  int32_t next = 8;
  for (int j = 0; j < entries && r.ok(); ++j) {
    if (next != 0) {
      const int32_t delta = r.Se();
      if (delta < -128 || delta > 127) {
        r.Skip(1 << 20);  // out of range: force failure
        return;
      }
      next = (last + delta + 256) % 256;
    }
    last = next == 0 ? last : next;
  }
}

bool H265IsIrap(uint32_t type) {
  return type >= 16 && type <= 23;
}

// ReadLeb128: AV1's leb128() (at most 8 bytes, value below 2^32). Advances *pos.
bool ReadLeb128(const uint8_t* data, size_t size, size_t* pos, uint64_t* value) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    if (*pos >= size) return false;
    const uint8_t byte = data[(*pos)++];
    v |= uint64_t{byte & 0x7Fu} << (7 * i);
    if ((byte & 0x80) == 0) {
      *value = v;
      return v <= 0xFFFFFFFFu;
    }
  }
  return false;
}

bool Av1IsKeyframe(const uint8_t* data, size_t size) {
  bool sequence_header = false;
  bool reduced_still_picture_header = false;
  bool key_frame = false;
  size_t pos = 0;
  while (pos < size) {
    const uint8_t header = data[pos++];
    if (header & 0x80) return false;  // forbidden bit
    const int type = (header >> 3) & 0x0F;
    const bool extension = (header & 0x04) != 0;
    const bool has_size = (header & 0x02) != 0;
    if (extension) {
      if (pos >= size) return false;
      ++pos;
    }
    uint64_t payload_size = size - pos;
    if (has_size && !ReadLeb128(data, size, &pos, &payload_size)) return false;
    if (payload_size > size - pos) return false;
    const uint8_t* payload = data + pos;
    const size_t payload_bytes = static_cast<size_t>(payload_size);
    if (type == 1) {  // OBU_SEQUENCE_HEADER
      RbspReader r(payload, payload_bytes, /*skip_emulation=*/false);
      const uint32_t seq_profile = r.Bits(3);
      r.Bit();  // still_picture
      reduced_still_picture_header = r.Bit() != 0;
      if (!r.ok() || seq_profile > 2) return false;
      sequence_header = true;
    } else if (type == 3 || type == 6) {  // OBU_FRAME_HEADER, OBU_FRAME
      if (reduced_still_picture_header && sequence_header) {
        key_frame = true;  // every frame of a reduced still picture stream is a shown key frame
      } else if (!reduced_still_picture_header) {
        RbspReader r(payload, payload_bytes, /*skip_emulation=*/false);
        const uint32_t show_existing_frame = r.Bit();
        if (show_existing_frame == 0) {
          const uint32_t frame_type = r.Bits(2);
          const uint32_t show_frame = r.Bit();
          if (r.ok() && frame_type == 0 && show_frame == 1) key_frame = true;
        }
      }
    }
    pos += payload_bytes;
  }
  return sequence_header && key_frame;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

const char* VideoCodecName(VideoCodec codec) {
  switch (codec) {
    case VideoCodec::kH264: return "h264";
    case VideoCodec::kH265: return "h265";
    case VideoCodec::kAV1: return "av1";
  }
  return "unknown";
}

Result<VideoCodec> VideoCodecFromRerun(uint32_t value) {
  switch (value) {
    case kRerunCodecH264: return VideoCodec::kH264;
    case kRerunCodecH265: return VideoCodec::kH265;
    case kRerunCodecAV1: return VideoCodec::kAV1;
    case kRerunCodecVP8: return Status::Unsupported("vp8 video is not supported (Rerun VideoCodec value 0x76703830)");
    case kRerunCodecVP9: return Status::Unsupported("vp9 video is not supported (Rerun VideoCodec value 0x76703039)");
    default: return Status::Corrupt("unknown Rerun VideoCodec value " + std::to_string(value));
  }
}

Result<VideoCodec> ParseVideoCodec(std::string_view name) {
  const std::string n = Lower(name);
  if (n == "h264" || n == "avc" || n == "avc1") return VideoCodec::kH264;
  if (n == "h265" || n == "hevc" || n == "hev1" || n == "hvc1") return VideoCodec::kH265;
  if (n == "av1" || n == "av01") return VideoCodec::kAV1;
  if (!n.empty() && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    uint32_t value = 0;
    const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), value);
    if (ec == std::errc() && end == n.data() + n.size()) {
      auto codec = VideoCodecFromRerun(value);
      if (codec.ok() || codec.status().code() == StatusCode::kUnsupported) return codec;
    }
  }
  return Status::Unsupported("video codec '" + std::string(name) +
                             "' is not supported (expected h264/avc, h265/hevc or av1, or a Rerun VideoCodec value)");
}

bool IsAnnexB(const uint8_t* data, size_t size) {
  if (size >= 4 && data[0] == 0 && data[1] == 0 && data[2] == 0 && data[3] == 1) return true;
  if (size >= 3 && data[0] == 0 && data[1] == 0 && data[2] == 1) {
    return !SplitLengthPrefixed(data, size, nullptr).ok();
  }
  return false;
}

Status AvccToAnnexB(const uint8_t* data, size_t size, uint8_t* out) {
  std::vector<NalUnit> nals;
  RRL_RETURN_IF_ERROR(SplitLengthPrefixed(data, size, &nals));
  if (out != data) std::memmove(out, data, size);
  size_t pos = 0;
  while (pos < size) {
    const uint32_t length = ReadBe32(out + pos);
    out[pos] = 0;
    out[pos + 1] = 0;
    out[pos + 2] = 0;
    out[pos + 3] = 1;
    pos += 4 + size_t{length};
  }
  return Status::OK();
}

bool ParseH264Sps(const uint8_t* nal, size_t size) {
  if (size < 2 || (nal[0] & 0x80) != 0 || (nal[0] & 0x1F) != 7) return false;
  RbspReader r(nal + 1, size - 1);
  const uint32_t profile_idc = r.Bits(8);
  r.Skip(8);                      // constraint_set flags + reserved
  r.Skip(8);                      // level_idc
  if (r.Ue() > 31) return false;  // seq_parameter_set_id
  if (IsHighProfile(profile_idc)) {
    const uint32_t chroma_format_idc = r.Ue();
    if (chroma_format_idc > 3) return false;
    if (chroma_format_idc == 3) r.Skip(1);  // separate_colour_plane_flag
    if (r.Ue() > 6) return false;           // bit_depth_luma_minus8
    if (r.Ue() > 6) return false;           // bit_depth_chroma_minus8
    r.Skip(1);                              // qpprime_y_zero_transform_bypass_flag
    if (r.Bit()) {                          // seq_scaling_matrix_present_flag
      const int lists = chroma_format_idc != 3 ? 8 : 12;
      for (int i = 0; i < lists && r.ok(); ++i) {
        if (r.Bit()) SkipH264ScalingList(r, i < 6 ? 16 : 64);
      }
    }
  }
  if (r.Ue() > 12) return false;  // log2_max_frame_num_minus4
  const uint32_t poc_type = r.Ue();
  if (poc_type > 2) return false;
  if (poc_type == 0) {
    if (r.Ue() > 12) return false;  // log2_max_pic_order_cnt_lsb_minus4
  } else if (poc_type == 1) {
    r.Skip(1);  // delta_pic_order_always_zero_flag
    r.Se();     // offset_for_non_ref_pic
    r.Se();     // offset_for_top_to_bottom_field
    const uint32_t cycle = r.Ue();
    if (cycle > 255) return false;
    for (uint32_t i = 0; i < cycle && r.ok(); ++i) r.Se();
  }
  r.Ue();                           // max_num_ref_frames
  r.Skip(1);                        // gaps_in_frame_num_value_allowed_flag
  if (r.Ue() > 4095) return false;  // pic_width_in_mbs_minus1 (65536 pixels)
  if (r.Ue() > 4095) return false;  // pic_height_in_map_units_minus1
  return r.ok();
}

bool ParseH265Sps(const uint8_t* nal, size_t size) {
  if (size < 3 || (nal[0] & 0x80) != 0 || ((nal[0] >> 1) & 0x3F) != 33) return false;
  RbspReader r(nal + 2, size - 2);
  r.Skip(4);  // sps_video_parameter_set_id
  const uint32_t max_sub_layers_minus1 = r.Bits(3);
  if (max_sub_layers_minus1 > 6) return false;
  r.Skip(1);   // sps_temporal_id_nesting_flag
  r.Skip(88);  // general profile: space, tier, idc, 32 compatibility flags, 48 constraint bits
  r.Skip(8);   // general_level_idc
  bool profile_present[8] = {};
  bool level_present[8] = {};
  for (uint32_t i = 0; i < max_sub_layers_minus1; ++i) {
    profile_present[i] = r.Bit() != 0;
    level_present[i] = r.Bit() != 0;
  }
  if (max_sub_layers_minus1 > 0) {
    for (uint32_t i = max_sub_layers_minus1; i < 8; ++i) r.Skip(2);  // reserved_zero_2bits
  }
  for (uint32_t i = 0; i < max_sub_layers_minus1; ++i) {
    if (profile_present[i]) r.Skip(88);
    if (level_present[i]) r.Skip(8);
  }
  if (r.Ue() > 15) return false;  // sps_seq_parameter_set_id
  const uint32_t chroma_format_idc = r.Ue();
  if (chroma_format_idc > 3) return false;
  if (chroma_format_idc == 3) r.Skip(1);  // separate_colour_plane_flag
  const uint32_t width = r.Ue();
  const uint32_t height = r.Ue();
  if (width == 0 || height == 0 || width > 65536 || height > 65536) return false;
  return r.ok();
}

Result<bool> IsKeyframe(VideoCodec codec, const uint8_t* data, size_t size) {
  if (size == 0) return false;
  if (codec == VideoCodec::kAV1) return Av1IsKeyframe(data, size);

  std::vector<NalUnit> nals;
  if (IsAnnexB(data, size)) {
    nals = SplitAnnexB(data, size);
  } else {
    RRL_RETURN_IF_ERROR(SplitLengthPrefixed(data, size, &nals));
  }
  bool sps = false;
  bool random_access = false;
  for (const NalUnit& nal : nals) {
    if ((nal.data[0] & 0x80) != 0) continue;  // forbidden_zero_bit set: not a NAL unit we trust
    if (codec == VideoCodec::kH264) {
      const uint32_t type = nal.data[0] & 0x1Fu;
      if (type == 7 && !sps) sps = ParseH264Sps(nal.data, nal.size);
      if (type == 5) random_access = true;
    } else {
      const uint32_t type = (nal.data[0] >> 1) & 0x3Fu;
      if (type == 33 && !sps) sps = ParseH265Sps(nal.data, nal.size);
      if (H265IsIrap(type)) random_access = true;
    }
  }
  return sps && random_access;
}

}  // namespace rrl::decode
