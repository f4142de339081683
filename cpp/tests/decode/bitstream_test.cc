// Tests of rrloader/decode/bitstream.h on hand-built bytes: codec names, Annex B versus
// length-prefixed framing, SPS parsing and keyframe rules. Samples from real encoders are
// tested in video_test.cc (encoded at test time with libavcodec).
#include "rrloader/decode/bitstream.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace rrl::decode {
namespace {

using Bytes = std::vector<uint8_t>;

// BitWriter: MSB-first bits with Exp-Golomb codes, for building parameter sets.
class BitWriter {
 public:
  void Bits(uint32_t value, int n) {
    for (int i = n - 1; i >= 0; --i) Bit((value >> i) & 1u);
  }
  void Bit(uint32_t b) {
    if (bits_ % 8 == 0) bytes_.push_back(0);
    if (b) bytes_.back() = static_cast<uint8_t>(bytes_.back() | (0x80u >> (bits_ % 8)));
    ++bits_;
  }
  void Ue(uint32_t v) {
    const uint64_t x = uint64_t{v} + 1;
    int len = 0;
    while ((x >> len) > 1) ++len;
    Bits(0, len);
    for (int i = len; i >= 0; --i) Bit(static_cast<uint32_t>((x >> i) & 1u));
  }
  Bytes Finish() {
    Bit(1);  // rbsp_stop_one_bit
    return bytes_;
  }

 private:
  Bytes bytes_;
  int bits_ = 0;
};

// A baseline-profile H.264 SPS NAL unit (header 0x67) for a 64x48 picture.
Bytes H264Sps(uint32_t sps_id = 0, uint32_t poc_type = 0) {
  BitWriter w;
  w.Bits(0x67, 8);  // forbidden 0, nal_ref_idc 3, type 7
  w.Bits(66, 8);    // profile_idc baseline
  w.Bits(0xC0, 8);  // constraint flags
  w.Bits(30, 8);    // level_idc
  w.Ue(sps_id);
  w.Ue(0);  // log2_max_frame_num_minus4
  w.Ue(poc_type);
  if (poc_type == 0) w.Ue(2);
  w.Ue(1);   // max_num_ref_frames
  w.Bit(0);  // gaps
  w.Ue(3);   // width in MBs - 1  (64)
  w.Ue(2);   // height in map units - 1 (48)
  w.Bit(1);  // frame_mbs_only_flag
  w.Bit(1);  // direct_8x8_inference_flag
  w.Bit(0);  // frame_cropping_flag
  w.Bit(0);  // vui_parameters_present_flag
  return w.Finish();
}

// An H.265 SPS NAL unit (header 0x42 0x01) for a 64x48 picture, one sub-layer.
Bytes H265Sps() {
  BitWriter w;
  w.Bits(0x4201, 16);
  w.Bits(0, 4);  // vps id
  w.Bits(0, 3);  // max_sub_layers_minus1
  w.Bit(1);      // temporal_id_nesting
  w.Bits(0x01, 8);
  w.Bits(0x60000000, 32);  // compatibility flags
  w.Bits(0, 32);
  w.Bits(0, 16);
  w.Bits(60, 8);  // level
  w.Ue(0);        // sps id
  w.Ue(1);        // chroma_format_idc 4:2:0
  w.Ue(64);
  w.Ue(48);
  return w.Finish();
}

Bytes AnnexB(std::initializer_list<Bytes> nals, bool four_byte = true) {
  Bytes out;
  for (const Bytes& nal : nals) {
    if (four_byte) out.push_back(0);
    out.insert(out.end(), {0, 0, 1});
    out.insert(out.end(), nal.begin(), nal.end());
  }
  return out;
}

Bytes LengthPrefixed(std::initializer_list<Bytes> nals) {
  Bytes out;
  for (const Bytes& nal : nals) {
    const auto n = static_cast<uint32_t>(nal.size());
    out.insert(out.end(), {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8),
                           static_cast<uint8_t>(n)});
    out.insert(out.end(), nal.begin(), nal.end());
  }
  return out;
}

const Bytes kH264Pps = {0x68, 0xCE, 0x38, 0x80};
const Bytes kH264Idr = {0x65, 0x88, 0x84, 0x00, 0x33, 0xFF};
const Bytes kH264NonIdr = {0x41, 0x9A, 0x02, 0x04};

bool Key(VideoCodec codec, const Bytes& b) {
  auto r = IsKeyframe(codec, b.data(), b.size());
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() && *r;
}

TEST(VideoCodecTest, ParsesNamesAndRerunValues) {
  EXPECT_EQ(ParseVideoCodec("h264").value(), VideoCodec::kH264);
  EXPECT_EQ(ParseVideoCodec("H264").value(), VideoCodec::kH264);
  EXPECT_EQ(ParseVideoCodec("avc").value(), VideoCodec::kH264);
  EXPECT_EQ(ParseVideoCodec("hevc").value(), VideoCodec::kH265);
  EXPECT_EQ(ParseVideoCodec("H265").value(), VideoCodec::kH265);
  EXPECT_EQ(ParseVideoCodec("AV1").value(), VideoCodec::kAV1);
  EXPECT_EQ(ParseVideoCodec("1635148593").value(), VideoCodec::kH264);
  EXPECT_EQ(ParseVideoCodec("1751479857").value(), VideoCodec::kH265);
  EXPECT_EQ(ParseVideoCodec("1635135537").value(), VideoCodec::kAV1);
  EXPECT_EQ(VideoCodecFromRerun(kRerunCodecAV1).value(), VideoCodec::kAV1);
  for (const char* bad : {"vp9", "mjpeg", "", "h264 ", "99999999999"}) {
    auto r = ParseVideoCodec(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  }
  EXPECT_EQ(VideoCodecFromRerun(kRerunCodecVP9).status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(VideoCodecFromRerun(7).status().code(), StatusCode::kCorrupt);
}

TEST(AnnexBTest, DetectsFramingPerSample) {
  const Bytes annexb4 = AnnexB({H264Sps(), kH264Pps, kH264Idr});
  const Bytes annexb3 = AnnexB({H264Sps(), kH264Pps, kH264Idr}, false);
  const Bytes avcc = LengthPrefixed({H264Sps(), kH264Pps, kH264Idr});
  EXPECT_TRUE(IsAnnexB(annexb4.data(), annexb4.size()));
  EXPECT_TRUE(IsAnnexB(annexb3.data(), annexb3.size()));
  EXPECT_FALSE(IsAnnexB(avcc.data(), avcc.size()));
  EXPECT_FALSE(IsAnnexB(nullptr, 0));
  // A length-prefixed sample whose first NAL unit is 256..511 bytes starts with 00 00 01
  // yet tiles exactly: it is not Annex B.
  Bytes big(300, 0x11);
  big[0] = 0x65;
  const Bytes avcc_300 = LengthPrefixed({big});
  ASSERT_EQ(avcc_300[2], 1);
  EXPECT_FALSE(IsAnnexB(avcc_300.data(), avcc_300.size()));
}

TEST(AnnexBTest, ConvertsLengthPrefixedInPlace) {
  Bytes avcc = LengthPrefixed({H264Sps(), kH264Pps, kH264Idr});
  const Bytes expected = AnnexB({H264Sps(), kH264Pps, kH264Idr});
  Bytes out(avcc.size());
  ASSERT_TRUE(AvccToAnnexB(avcc.data(), avcc.size(), out.data()).ok());
  EXPECT_EQ(out, expected);
  ASSERT_TRUE(AvccToAnnexB(avcc.data(), avcc.size(), avcc.data()).ok());
  EXPECT_EQ(avcc, expected);
}

TEST(AnnexBTest, MalformedLengthsNameTheOffset) {
  Bytes avcc = LengthPrefixed({kH264Pps, kH264Idr});
  Bytes out(avcc.size() + 8);
  // Truncated inside the second NAL unit (starts at offset 8).
  Status st = AvccToAnnexB(avcc.data(), avcc.size() - 1, out.data());
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("byte offset 8"), std::string::npos) << st.message();
  // A length field cut short.
  st = AvccToAnnexB(avcc.data(), 10, out.data());
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("offset 8"), std::string::npos) << st.message();
  // A zero-length NAL unit.
  const Bytes zero = {0, 0, 0, 0};
  st = AvccToAnnexB(zero.data(), zero.size(), out.data());
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("empty NAL unit at byte offset 0"), std::string::npos) << st.message();
}

TEST(KeyframeTest, H264NeedsSpsAndIdr) {
  EXPECT_TRUE(Key(VideoCodec::kH264, AnnexB({H264Sps(), kH264Pps, kH264Idr})));
  EXPECT_TRUE(Key(VideoCodec::kH264, AnnexB({H264Sps(), kH264Pps, kH264Idr}, false)));
  EXPECT_TRUE(Key(VideoCodec::kH264, LengthPrefixed({H264Sps(), kH264Pps, kH264Idr})));
  EXPECT_TRUE(Key(VideoCodec::kH264, AnnexB({H264Sps(5, 2), kH264Pps, kH264Idr})));
  EXPECT_FALSE(Key(VideoCodec::kH264, AnnexB({kH264Pps, kH264Idr})));                // IDR without SPS
  EXPECT_FALSE(Key(VideoCodec::kH264, AnnexB({H264Sps(), kH264Pps, kH264NonIdr})));  // SPS, no IDR
  EXPECT_FALSE(Key(VideoCodec::kH264, AnnexB({kH264NonIdr})));
  // An SPS that does not parse (sps id out of range; cut short) does not count.
  EXPECT_FALSE(Key(VideoCodec::kH264, AnnexB({H264Sps(40), kH264Pps, kH264Idr})));
  Bytes cut = H264Sps();
  cut.resize(5);
  EXPECT_FALSE(Key(VideoCodec::kH264, AnnexB({cut, kH264Pps, kH264Idr})));
  // Forbidden bit set on the IDR.
  Bytes bad_idr = kH264Idr;
  bad_idr[0] |= 0x80;
  EXPECT_FALSE(Key(VideoCodec::kH264, AnnexB({H264Sps(), kH264Pps, bad_idr})));
  // Broken length prefixes are an error, not a guess.
  Bytes broken = LengthPrefixed({H264Sps(), kH264Idr});
  broken.pop_back();
  auto r = IsKeyframe(VideoCodec::kH264, broken.data(), broken.size());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
}

TEST(KeyframeTest, H265NeedsSpsAndIrap) {
  const Bytes vps = {0x40, 0x01, 0x0C, 0x01};
  const Bytes pps = {0x44, 0x01, 0xC1, 0x72};
  for (int type = 16; type <= 23; ++type) {
    const Bytes irap = {static_cast<uint8_t>(type << 1), 0x01, 0xAF, 0x08};
    EXPECT_TRUE(Key(VideoCodec::kH265, AnnexB({vps, H265Sps(), pps, irap}))) << type;
    EXPECT_FALSE(Key(VideoCodec::kH265, AnnexB({vps, pps, irap}))) << type;
  }
  const Bytes trail = {0x02, 0x01, 0xD0, 0x08};  // TRAIL_R
  EXPECT_FALSE(Key(VideoCodec::kH265, AnnexB({vps, H265Sps(), pps, trail})));
  const Bytes idr = {0x26, 0x01, 0xAF, 0x08};
  Bytes cut = H265Sps();
  cut.resize(8);
  EXPECT_FALSE(Key(VideoCodec::kH265, AnnexB({vps, cut, pps, idr})));
  EXPECT_TRUE(Key(VideoCodec::kH265, LengthPrefixed({vps, H265Sps(), pps, idr})));
}

// AV1 OBUs: header byte (type << 3 | has_size 0x02), leb128 size, payload.
Bytes Obu(int type, const Bytes& payload, bool with_size = true) {
  Bytes out = {static_cast<uint8_t>((type << 3) | (with_size ? 0x02 : 0x00))};
  if (with_size) out.push_back(static_cast<uint8_t>(payload.size()));  // < 128 here
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes Concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(KeyframeTest, Av1NeedsSequenceHeaderAndShownKeyFrame) {
  const Bytes td = Obu(2, {});
  const Bytes seq = Obu(1, {0x00, 0x00, 0x00, 0x02, 0xAF});  // profile 0, not reduced
  const Bytes seq_reduced = Obu(1, {0x18, 0x00});            // still_picture + reduced header
  const Bytes key_shown = Obu(6, {0x10, 0x00});              // show_existing 0, frame_type 0, show_frame 1
  const Bytes key_hidden = Obu(6, {0x00, 0x00});             // show_frame 0
  const Bytes inter = Obu(6, {0x30, 0x00});                  // frame_type 1
  const Bytes show_existing = Obu(3, {0x80});                // show_existing_frame 1
  EXPECT_TRUE(Key(VideoCodec::kAV1, Concat({td, seq, key_shown})));
  EXPECT_TRUE(Key(VideoCodec::kAV1, Concat({td, seq, Obu(3, {0x10}), Obu(4, {0x00})})));
  EXPECT_FALSE(Key(VideoCodec::kAV1, Concat({td, key_shown})));
  EXPECT_FALSE(Key(VideoCodec::kAV1, Concat({td, seq, inter})));
  EXPECT_FALSE(Key(VideoCodec::kAV1, Concat({td, seq, key_hidden})));
  EXPECT_FALSE(Key(VideoCodec::kAV1, Concat({td, seq, show_existing})));
  EXPECT_TRUE(Key(VideoCodec::kAV1, Concat({seq_reduced, Obu(6, {0x00})})));
  // The last OBU may omit its size field (it runs to the end of the sample).
  EXPECT_TRUE(Key(VideoCodec::kAV1, Concat({td, seq, Obu(6, {0x10, 0x00}, false)})));
  // A size running past the end, the forbidden bit, an unterminated leb128: not keyframes.
  Bytes overrun = Concat({td, seq, key_shown});
  overrun[overrun.size() - 3] = 0x7F;
  EXPECT_FALSE(Key(VideoCodec::kAV1, overrun));
  Bytes forbidden = Concat({td, seq, key_shown});
  forbidden[0] |= 0x80;
  EXPECT_FALSE(Key(VideoCodec::kAV1, forbidden));
  EXPECT_FALSE(Key(VideoCodec::kAV1, Bytes{0x12, 0x80, 0x80, 0x80}));
  EXPECT_FALSE(Key(VideoCodec::kAV1, Bytes{0xFF, 0xFF, 0xFF, 0xFF, 0xFF}));
}

TEST(KeyframeTest, EmptyAndRandomInputNeverCrash) {
  for (VideoCodec codec : {VideoCodec::kH264, VideoCodec::kH265, VideoCodec::kAV1}) {
    EXPECT_FALSE(Key(codec, Bytes{}));
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; ++i) {
      Bytes b(rng() % 64);
      for (auto& x : b) x = static_cast<uint8_t>(rng() % 4 == 0 ? 0 : rng());
      auto r = IsKeyframe(codec, b.data(), b.size());
      (void)r;
      const bool annexb = IsAnnexB(b.data(), b.size());
      (void)annexb;
    }
  }
}

TEST(SpsTest, EmulationPreventionBytesAreSkipped) {
  // An SPS whose payload has an emulation prevention byte (00 00 03) still parses.
  Bytes sps = H264Sps();
  ASSERT_TRUE(ParseH264Sps(sps.data(), sps.size()));
  Bytes with_epb = {sps[0], 100, 0x00, 0x00, 0x03, 0x00};  // high profile, constraint 0, level 0
  // level_idc 0, then the rest of a high-profile SPS: id 0, chroma 1, depths 0, 0, flags 0.
  BitWriter w;
  w.Ue(0);
  w.Ue(1);
  w.Ue(0);
  w.Ue(0);
  w.Bit(0);
  w.Bit(0);
  w.Ue(0);
  w.Ue(0);
  w.Ue(2);
  w.Ue(1);
  w.Bit(0);
  w.Ue(3);
  w.Ue(2);
  const Bytes rest = w.Finish();
  with_epb.pop_back();
  with_epb.insert(with_epb.end(), rest.begin(), rest.end());
  EXPECT_TRUE(ParseH264Sps(with_epb.data(), with_epb.size()));
}

}  // namespace
}  // namespace rrl::decode
