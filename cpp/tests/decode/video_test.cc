// Tests of rrloader/decode/video.h (and bitstream.h on real encoder output). Every stream
// is encoded here, at test time, with libavcodec's encoders (libx264, libx265, libaom-av1
// from Debian's FFmpeg); a test skips when its encoder is missing. Pixel-exact agreement
// with PyAV is checked by tests/python/test_video_decode.py.
#include "rrloader/decode/video.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "rrloader/decode/bitstream.h"
#include "rrloader/decode/ffmpeg.h"

extern "C" {
#include <libavutil/pixdesc.h>
}

// LeakSanitizer hook (read only under ASan): libx265 leaks the strings of its parameter
// parsing when an encoder opens (x265_copy_params / x265_param_parse); the encoder is only
// used here, to make test streams.
// NOLINTNEXTLINE(bugprone-reserved-identifier): the name LeakSanitizer looks up.
extern "C" __attribute__((visibility("default"), used)) const char* __lsan_default_suppressions() {
  return "leak:libx265\n";
}

namespace rrl::decode {
namespace {

using Bytes = std::vector<uint8_t>;

struct Stream {
  VideoCodec codec = VideoCodec::kH264;
  int width = 0;
  int height = 0;
  std::vector<Bytes> packets;   // decode order
  std::vector<bool> key;        // encoder's keyframe flag per packet
  std::vector<int64_t> source;  // source frame index (pts) coded by each packet
};

struct EncodeSpec {
  const char* encoder = "libx264";
  int width = 64;
  int height = 48;
  int frames = 24;
  int gop = 12;
  int bframes = 0;
  // The encoder's input pixel format (4:2:0, 4:2:2, 4:4:4, 8 or 10 bits), colour tags, and
  // lossless coding (x264 qp=0: decoded pictures equal the input exactly).
  AVPixelFormat pix_fmt = AV_PIX_FMT_YUV420P;
  AVColorSpace colorspace = AVCOL_SPC_UNSPECIFIED;
  AVColorRange color_range = AVCOL_RANGE_UNSPECIFIED;
  bool lossless = false;
  // flat_chroma: U and V constant over each frame (a different pair per frame), so a
  // resampling filter of any width gives exactly those values.
  bool flat_chroma = false;
};

// FrameLuma: the mean luma of source frame i (distinct per frame, so a decoded frame can be
// matched to the source frame it shows).
int FrameLuma(int i) {
  return 20 + 6 * (i % 33);
}

// SourceLuma / SourceChroma: the 8-bit sample values of source frame i at luma pixel (x, y)
// and of chroma plane p (1 = U, 2 = V) at chroma block (cx, cy) = (x / 2, y / 2): whatever
// the input's chroma subsampling, chroma is constant over each 2x2 luma block, so its 4:2:0
// form (without resampling) is exactly these values.
uint8_t SourceLuma(int i, int x, int y) {
  return static_cast<uint8_t>(FrameLuma(i) + ((x / 8 + y / 8) % 2) * 6);
}
uint8_t SourceChroma(const EncodeSpec& spec, int i, int p, int cx, int cy) {
  if (spec.flat_chroma) return static_cast<uint8_t>(p == 1 ? 100 + 3 * i : 160 - 2 * i);
  return static_cast<uint8_t>(p == 1 ? 118 + cx / 4 : 138 - cy / 4);
}

// FillFrame: source frame i in `frame`'s pixel format (8 or 16-bit samples; 10-bit ones are
// the 8-bit values times 4).
void FillFrame(const EncodeSpec& spec, AVFrame* frame, int i) {
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(frame->format));
  const int depth = desc->comp[0].depth;
  const int sx = desc->log2_chroma_w;
  const int sy = desc->log2_chroma_h;
  auto put = [&](int plane, int x, int y, uint8_t value) {
    uint8_t* row = frame->data[plane] + static_cast<ptrdiff_t>(y) * frame->linesize[plane];
    if (depth > 8) {
      const auto v = static_cast<uint16_t>(value << (depth - 8));
      std::memcpy(row + (ptrdiff_t{2} * x), &v, 2);
    } else {
      row[x] = value;
    }
  };
  for (int y = 0; y < frame->height; ++y) {
    for (int x = 0; x < frame->width; ++x) put(0, x, y, SourceLuma(i, x, y));
  }
  const int cw = -((-frame->width) >> sx);
  const int ch = -((-frame->height) >> sy);
  for (int p = 1; p <= 2; ++p) {
    for (int y = 0; y < ch; ++y) {
      for (int x = 0; x < cw; ++x) put(p, x, y, SourceChroma(spec, i, p, (x << sx) / 2, (y << sy) / 2));
    }
  }
}

// Encode: a synthetic YUV 4:2:0 clip (flat luma level per frame plus texture) through an
// FFmpeg encoder, packets in decode order with their pts and keyframe flags.
Stream Encode(const EncodeSpec& spec) {
  Stream s;
  s.width = spec.width;
  s.height = spec.height;
  const AVCodec* enc = avcodec_find_encoder_by_name(spec.encoder);
  if (enc == nullptr) return s;
  AvCodecContextPtr ctx(avcodec_alloc_context3(enc));
  ctx->width = spec.width;
  ctx->height = spec.height;
  ctx->pix_fmt = spec.pix_fmt;
  ctx->colorspace = spec.colorspace;
  ctx->color_range = spec.color_range;
  ctx->time_base = {1, 30};
  ctx->framerate = {30, 1};
  ctx->gop_size = spec.gop;
  ctx->max_b_frames = spec.bframes;
  ctx->thread_count = 1;
  const std::string name = spec.encoder;
  if (name == "libx264") {
    s.codec = VideoCodec::kH264;
    av_opt_set(ctx->priv_data, "preset", "veryfast", 0);
    av_opt_set(ctx->priv_data, "x264-params", "scenecut=0:log=-1", 0);
    if (spec.lossless) av_opt_set(ctx->priv_data, "qp", "0", 0);
  } else if (name == "libx265") {
    s.codec = VideoCodec::kH265;
    const std::string params = "keyint=" + std::to_string(spec.gop) + ":min-keyint=" + std::to_string(spec.gop) +
                               ":scenecut=0:open-gop=0:bframes=" + std::to_string(spec.bframes) +
                               ":log-level=none:frame-threads=1:pools=none";
    av_opt_set(ctx->priv_data, "preset", "ultrafast", 0);
    av_opt_set(ctx->priv_data, "x265-params", params.c_str(), 0);
  } else {
    s.codec = VideoCodec::kAV1;
    av_opt_set_int(ctx->priv_data, "cpu-used", 8, 0);
    av_opt_set_int(ctx->priv_data, "lag-in-frames", 0, 0);
    av_opt_set(ctx->priv_data, "usage", "realtime", 0);
    ctx->bit_rate = 200000;
  }
  if (avcodec_open2(ctx.get(), enc, nullptr) < 0) return s;
  AvFramePtr frame = MakeAvFrame();
  frame->format = spec.pix_fmt;
  frame->width = spec.width;
  frame->height = spec.height;
  EXPECT_GE(av_frame_get_buffer(frame.get(), 0), 0);
  AvPacketPtr pkt = MakeAvPacket();
  auto drain = [&]() {
    while (avcodec_receive_packet(ctx.get(), pkt.get()) == 0) {
      s.packets.emplace_back(pkt->data, pkt->data + pkt->size);
      s.key.push_back((pkt->flags & AV_PKT_FLAG_KEY) != 0);
      s.source.push_back(pkt->pts);
      av_packet_unref(pkt.get());
    }
  };
  for (int i = 0; i < spec.frames; ++i) {
    EXPECT_GE(av_frame_make_writable(frame.get()), 0);
    FillFrame(spec, frame.get(), i);
    frame->pts = i;
    EXPECT_GE(avcodec_send_frame(ctx.get(), frame.get()), 0);
    drain();
  }
  EXPECT_GE(avcodec_send_frame(ctx.get(), nullptr), 0);
  drain();
  return s;
}

// `stream` is the name of the declared variable: it cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define ENCODE_OR_SKIP(stream, spec) \
  Stream stream = Encode(spec);      \
  if (stream.packets.empty()) GTEST_SKIP() << (spec).encoder << " is not available"
// NOLINTEND(bugprone-macro-parentheses)

Bytes ToLengthPrefixed(const Bytes& annexb) {
  // Split at start codes and re-frame with 4-byte lengths.
  std::vector<std::pair<size_t, size_t>> nals;
  size_t i = 0;
  size_t start = SIZE_MAX;
  while (i + 3 <= annexb.size()) {
    if (annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1) {
      if (start != SIZE_MAX) {
        size_t end = i;
        while (end > start && annexb[end - 1] == 0) --end;
        nals.emplace_back(start, end);
      }
      i += 3;
      start = i;
    } else {
      ++i;
    }
  }
  nals.emplace_back(start, annexb.size());
  Bytes out;
  for (auto [b, e] : nals) {
    const auto n = static_cast<uint32_t>(e - b);
    out.insert(out.end(), {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8),
                           static_cast<uint8_t>(n)});
    out.insert(out.end(), annexb.begin() + static_cast<std::ptrdiff_t>(b),
               annexb.begin() + static_cast<std::ptrdiff_t>(e));
  }
  return out;
}

// Frames: position -> planar RGB, collected by a sink.
struct Frames {
  std::map<int64_t, Bytes> by_position;
  std::map<int64_t, std::pair<int, int>> shape;
  FrameSink Sink() {
    return [this](int64_t position, int height, int width) -> Result<uint8_t*> {
      Bytes& b = by_position[position];
      b.assign(static_cast<size_t>(3) * height * width, 0);
      shape[position] = {height, width};
      return b.data();
    };
  }
};

GopRequest Request(const Stream& s, size_t first, size_t end, std::vector<int64_t> wanted,
                   const std::string& key = "seg/cam") {
  GopRequest r;
  r.stream_key = key;
  r.codec = s.codec;
  for (size_t i = first; i < end; ++i) r.packets.push_back({s.packets[i].data(), s.packets[i].size(), int64_t(i)});
  r.wanted = std::move(wanted);
  return r;
}

std::vector<size_t> KeyIndices(const Stream& s) {
  std::vector<size_t> k;
  for (size_t i = 0; i < s.key.size(); ++i) {
    if (s.key[i]) k.push_back(i);
  }
  return k;
}

double MeanLuma(const Bytes& rgb) {
  // BT.601 luma of the planar RGB, averaged; equals the source frame's level within a few units.
  const size_t plane = rgb.size() / 3;
  double sum = 0;
  for (size_t i = 0; i < plane; ++i) sum += 0.299 * rgb[i] + 0.587 * rgb[plane + i] + 0.114 * rgb[2 * plane + i];
  const double full = sum / static_cast<double>(plane);
  return 16.0 + full * 219.0 / 255.0;  // back to limited range
}

// Every frame of every GOP, one DecodeGop call per GOP; each delivered frame shows the
// source frame its packet coded.
void DecodeAllAndCheck(const Stream& s, VideoFrameDecoder& decoder) {
  const std::vector<size_t> keys = KeyIndices(s);
  ASSERT_FALSE(keys.empty());
  ASSERT_EQ(keys[0], 0u);
  for (size_t g = 0; g < keys.size(); ++g) {
    const size_t end = g + 1 < keys.size() ? keys[g + 1] : s.packets.size();
    std::vector<int64_t> wanted;
    for (size_t i = keys[g]; i < end; ++i) wanted.push_back(int64_t(i));
    Frames frames;
    auto outcome = decoder.DecodeGop(Request(s, keys[g], end, wanted), frames.Sink());
    ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
    EXPECT_TRUE(outcome->missing.empty());
    EXPECT_EQ(outcome->delivered, wanted);
    for (int64_t p : wanted) {
      ASSERT_EQ(frames.shape[p], std::make_pair(s.height, s.width));
      EXPECT_NEAR(MeanLuma(frames.by_position[p]), FrameLuma(int(s.source[size_t(p)])) + 3, 2.5)
          << "position " << p << " source frame " << s.source[size_t(p)];
    }
  }
}

TEST(VideoDecodeTest, H264GopsDecodeToTheirSourceFrames) {
  for (int gop : {1, 12, 30}) {
    EncodeSpec spec;
    spec.gop = gop;
    spec.frames = 32;
    ENCODE_OR_SKIP(s, spec);
    for (size_t i = 0; i < s.packets.size(); ++i) {
      auto k = IsKeyframe(VideoCodec::kH264, s.packets[i].data(), s.packets[i].size());
      ASSERT_TRUE(k.ok());
      EXPECT_EQ(*k, s.key[i]) << "gop " << gop << " packet " << i;
    }
    VideoFrameDecoder decoder;
    DecodeAllAndCheck(s, decoder);
    const VideoStats st = decoder.stats();
    EXPECT_EQ(st.frames_decoded, 32);
    EXPECT_EQ(st.frames_delivered, 32);
    EXPECT_EQ(st.gops_started, int64_t(KeyIndices(s).size()));
  }
}

TEST(VideoDecodeTest, LengthPrefixedH264GivesTheSamePixels) {
  EncodeSpec spec;
  ENCODE_OR_SKIP(s, spec);
  Stream avcc = s;
  for (auto& p : avcc.packets) p = ToLengthPrefixed(p);
  ASSERT_FALSE(IsAnnexB(avcc.packets[0].data(), avcc.packets[0].size()));
  for (size_t i = 0; i < avcc.packets.size(); ++i) {
    EXPECT_EQ(IsKeyframe(VideoCodec::kH264, avcc.packets[i].data(), avcc.packets[i].size()).value(), s.key[i]);
  }
  VideoFrameDecoder d1;
  VideoFrameDecoder d2;
  std::vector<int64_t> wanted = {0, 3, 11};
  Frames a;
  Frames b;
  ASSERT_TRUE(d1.DecodeGop(Request(s, 0, 12, wanted), a.Sink()).ok());
  ASSERT_TRUE(d2.DecodeGop(Request(avcc, 0, 12, wanted), b.Sink()).ok());
  EXPECT_EQ(a.by_position, b.by_position);
  // Mixed framing within one GOP (detected per sample).
  Stream mixed = s;
  for (size_t i = 0; i < mixed.packets.size(); i += 2) mixed.packets[i] = avcc.packets[i];
  VideoFrameDecoder d3;
  Frames c;
  ASSERT_TRUE(d3.DecodeGop(Request(mixed, 0, 12, wanted), c.Sink()).ok());
  EXPECT_EQ(a.by_position, c.by_position);
}

TEST(VideoDecodeTest, SessionsContinueAcrossBlocks) {
  EncodeSpec spec;
  spec.frames = 24;
  spec.gop = 12;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoder decoder;
  Frames f;
  // Block 1 wants frame 3 of GOP 0; block 2 frames 3 (again) and 7; block 3 frame 10.
  auto r1 = decoder.DecodeGop(Request(s, 0, 12, {3}), f.Sink());
  ASSERT_TRUE(r1.ok());
  EXPECT_FALSE(r1->session_hit);
  EXPECT_EQ(r1->packets_fed, 4);
  auto r2 = decoder.DecodeGop(Request(s, 0, 12, {3, 7}), f.Sink());
  ASSERT_TRUE(r2.ok());
  EXPECT_TRUE(r2->session_hit);
  EXPECT_EQ(r2->packets_fed, 4);  // 4..7 only
  EXPECT_EQ(r2->delivered, (std::vector<int64_t>{3, 7}));
  auto r3 = decoder.DecodeGop(Request(s, 0, 12, {10}), f.Sink());
  ASSERT_TRUE(r3.ok());
  EXPECT_TRUE(r3->session_hit);
  EXPECT_EQ(r3->packets_fed, 3);
  // Stepping backwards needs a fresh session from the keyframe.
  auto r4 = decoder.DecodeGop(Request(s, 0, 12, {5}), f.Sink());
  ASSERT_TRUE(r4.ok());
  EXPECT_FALSE(r4->session_hit);
  EXPECT_EQ(r4->packets_fed, 6);
  // The second GOP and another stream key are separate sessions.
  ASSERT_TRUE(decoder.DecodeGop(Request(s, 12, 24, {12}), f.Sink()).ok());
  ASSERT_TRUE(decoder.DecodeGop(Request(s, 0, 12, {1}, "other/cam"), f.Sink()).ok());
  VideoStats st = decoder.stats();
  EXPECT_EQ(st.session_hits, 2);
  EXPECT_EQ(st.session_misses, 4);
  EXPECT_EQ(st.gops_started, 4);
  EXPECT_EQ(st.sessions_cached, 3);
  EXPECT_GT(st.bytes_cached, 3 * 64 * 48);
  // Continued frames equal fresh decodes.
  VideoFrameDecoder fresh;
  Frames g;
  ASSERT_TRUE(fresh.DecodeGop(Request(s, 0, 12, {3, 5, 7, 10}), g.Sink()).ok());
  for (int64_t p : {3, 5, 7, 10}) EXPECT_EQ(f.by_position[p], g.by_position[p]) << p;
  decoder.ClearSessions();
  EXPECT_EQ(decoder.stats().bytes_cached, 0);
}

TEST(VideoDecodeTest, CacheIsBoundedInBytes) {
  EncodeSpec spec;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoderOptions none;
  none.session_cache_bytes = 0;
  VideoFrameDecoder decoder(none);
  Frames f;
  ASSERT_TRUE(decoder.DecodeGop(Request(s, 0, 12, {2}), f.Sink()).ok());
  auto r = decoder.DecodeGop(Request(s, 0, 12, {4}), f.Sink());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->session_hit);
  EXPECT_EQ(r->packets_fed, 5);
  EXPECT_EQ(decoder.stats().sessions_cached, 0);
  // A bound that holds one session: the older one is evicted.
  VideoFrameDecoderOptions one;
  VideoFrameDecoder probe;
  ASSERT_TRUE(probe.DecodeGop(Request(s, 0, 12, {2}), f.Sink()).ok());
  one.session_cache_bytes = probe.stats().bytes_cached + 1000;
  VideoFrameDecoder small(one);
  ASSERT_TRUE(small.DecodeGop(Request(s, 0, 12, {2}), f.Sink()).ok());
  ASSERT_TRUE(small.DecodeGop(Request(s, 12, 24, {13}), f.Sink()).ok());
  EXPECT_EQ(small.stats().sessions_cached, 1);
  auto again = small.DecodeGop(Request(s, 0, 12, {3}), f.Sink());
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->session_hit);
}

TEST(VideoDecodeTest, CacheIsBoundedInSessions) {
  EncodeSpec spec;
  spec.frames = 36;
  ENCODE_OR_SKIP(s, spec);
  // max_sessions = 0: nothing is kept, every GOP decodes from its keyframe.
  VideoFrameDecoderOptions none;
  none.max_sessions = 0;
  VideoFrameDecoder d0(none);
  Frames f;
  ASSERT_TRUE(d0.DecodeGop(Request(s, 0, 12, {2}), f.Sink()).ok());
  auto r = d0.DecodeGop(Request(s, 0, 12, {4}), f.Sink());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->session_hit);
  EXPECT_EQ(r->packets_fed, 5);
  EXPECT_EQ(d0.stats().sessions_cached, 0);
  // max_sessions = 2 with bytes to spare: the least recently used of three GOPs goes, and its
  // session is reused (reset) for the next GOP rather than freed.
  VideoFrameDecoderOptions two;
  two.max_sessions = 2;
  VideoFrameDecoder d2(two);
  ASSERT_TRUE(d2.DecodeGop(Request(s, 0, 12, {2}), f.Sink()).ok());
  ASSERT_TRUE(d2.DecodeGop(Request(s, 12, 24, {13}), f.Sink()).ok());
  EXPECT_EQ(d2.stats().sessions_cached, 2);
  EXPECT_EQ(d2.stats().sessions_recycled, 0);
  ASSERT_TRUE(d2.DecodeGop(Request(s, 24, 36, {25}), f.Sink()).ok());
  EXPECT_EQ(d2.stats().sessions_cached, 2);
  EXPECT_EQ(d2.stats().sessions_recycled, 1);
  auto oldest = d2.DecodeGop(Request(s, 0, 12, {3}), f.Sink());  // GOP 0's session was the one reused
  ASSERT_TRUE(oldest.ok());
  EXPECT_FALSE(oldest->session_hit);
  auto kept = d2.DecodeGop(Request(s, 24, 36, {27}), f.Sink());
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->session_hit);
  EXPECT_EQ(kept->packets_fed, 2);
  // The frames equal a fresh decode's.
  VideoFrameDecoder fresh;
  Frames g;
  ASSERT_TRUE(fresh.DecodeGop(Request(s, 0, 12, {2, 3}), g.Sink()).ok());
  ASSERT_TRUE(fresh.DecodeGop(Request(s, 24, 36, {25, 27}), g.Sink()).ok());
  for (int64_t p : {2, 3, 25, 27}) EXPECT_EQ(f.by_position[p], g.by_position[p]) << p;
}

// A session fed through the end of its GOP (ends_gop) can serve its kept frame only: when the
// cache is full it goes (or is reused) before an older one that stopped mid-GOP, which a later
// request for the rest of that GOP continues — a shuffle by blocks ends most blocks mid-GOP.
TEST(VideoDecodeTest, SpentSessionsGoBeforeOnesThatCanContinue) {
  EncodeSpec spec;
  spec.frames = 48;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoderOptions two;
  two.max_sessions = 2;
  VideoFrameDecoder d(two);
  Frames f;
  auto whole = [&](size_t first) {
    GopRequest r = Request(s, first, first + 12, {static_cast<int64_t>(first) + 11});
    r.ends_gop = true;
    return r;
  };
  ASSERT_TRUE(d.DecodeGop(Request(s, 0, 12, {5}), f.Sink()).ok());  // stops mid-GOP
  ASSERT_TRUE(d.DecodeGop(whole(12), f.Sink()).ok());               // spent
  ASSERT_TRUE(d.DecodeGop(whole(24), f.Sink()).ok());               // reuses GOP 1's, not GOP 0's
  EXPECT_EQ(d.stats().sessions_recycled, 1);
  EXPECT_EQ(d.stats().sessions_cached, 2);
  auto rest = d.DecodeGop(Request(s, 0, 12, {6, 9}), f.Sink());
  ASSERT_TRUE(rest.ok());
  EXPECT_TRUE(rest->session_hit);
  EXPECT_EQ(rest->packets_fed, 4);  // 6..9 only
  // Without ends_gop a request fed to its last packet is not known to be spent: plain LRU.
  ASSERT_TRUE(d.DecodeGop(Request(s, 36, 48, {47}), f.Sink()).ok());  // reuses GOP 2's (spent)
  ASSERT_TRUE(d.DecodeGop(Request(s, 12, 24, {13}), f.Sink()).ok());  // reuses GOP 0's (LRU)
  auto gop3 = d.DecodeGop(Request(s, 36, 48, {47}), f.Sink());
  ASSERT_TRUE(gop3.ok());
  EXPECT_TRUE(gop3->session_hit);  // its kept frame
  EXPECT_EQ(gop3->packets_fed, 0);
  // The continued frames equal a fresh decode's.
  VideoFrameDecoder fresh;
  Frames g;
  ASSERT_TRUE(fresh.DecodeGop(Request(s, 0, 12, {5, 6, 9}), g.Sink()).ok());
  for (int64_t p : {5, 6, 9}) EXPECT_EQ(f.by_position[p], g.by_position[p]) << p;
}

// A session checked in behind a position of its GOP that this pass already fed is spent too
// (a pass asks for each sample once: nothing will continue it); BeginPass forgets the marks.
TEST(VideoDecodeTest, SessionsBehindThePassAreSpentUntilTheNextPass) {
  EncodeSpec spec;
  spec.frames = 36;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoderOptions two;
  two.max_sessions = 2;
  VideoFrameDecoder d(two);
  Frames f;
  auto decode = [&](size_t first, int64_t wanted) {
    auto r = d.DecodeGop(Request(s, first, first + 12, {wanted}), f.Sink());
    EXPECT_TRUE(r.ok());
    return r.ok() && r->session_hit;
  };
  EXPECT_FALSE(decode(12, 13));
  EXPECT_FALSE(decode(0, 9));
  EXPECT_FALSE(decode(0, 3));    // GOP 0 again from its keyframe: its session ends behind 9
  EXPECT_FALSE(decode(24, 25));  // reuses GOP 0's session, not the least recently used GOP 1's
  EXPECT_TRUE(decode(12, 14));
  d.BeginPass();
  EXPECT_FALSE(decode(0, 3));    // reuses GOP 2's (least recently used); GOP 0's may continue now
  EXPECT_FALSE(decode(24, 25));  // reuses GOP 1's
  EXPECT_TRUE(decode(0, 4));
}

// Frame-threaded sessions hold frames back; the packets after a wanted frame let it out, so
// the session stays open for the next request, and the frames equal single-threaded ones.
TEST(VideoDecodeTest, FrameThreadingKeepsSessionsOpen) {
  for (const char* encoder : {"libx264", "libx265"}) {
    EncodeSpec spec;
    spec.encoder = encoder;
    spec.frames = 24;
    spec.gop = 12;
    Stream s = Encode(spec);
    if (s.packets.empty()) {
      ADD_FAILURE() << encoder << " missing";
      continue;
    }
    VideoDecoderOptions four;
    four.threads = 4;
    auto session = VideoDecoder::Open(s.codec, four);
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    EXPECT_EQ((*session)->frame_delay(), 3) << encoder;
    VideoDecoderOptions one;
    EXPECT_EQ(VideoDecoder::Open(s.codec, one).value()->frame_delay(), 0);
    VideoDecoderOptions chosen;
    chosen.threads = 0;
    auto automatic = VideoDecoder::Open(s.codec, chosen);
    ASSERT_TRUE(automatic.ok());
    EXPECT_GE((*automatic)->frame_delay(), 0);

    VideoFrameDecoder single;
    Frames want;
    ASSERT_TRUE(single.DecodeGop(Request(s, 0, 12, {3, 7, 11}), want.Sink()).ok());
    VideoFrameDecoderOptions threaded;
    threaded.decoder.threads = 4;
    VideoFrameDecoder decoder(threaded);
    Frames f;
    auto r1 = decoder.DecodeGop(Request(s, 0, 12, {3}), f.Sink());
    ASSERT_TRUE(r1.ok()) << r1.status().ToString();
    EXPECT_EQ(r1->delivered, std::vector<int64_t>{3});
    EXPECT_EQ(r1->packets_fed, 7) << encoder;  // frame 3 comes out when packet 6 goes in
    auto r2 = decoder.DecodeGop(Request(s, 0, 12, {7}), f.Sink());
    ASSERT_TRUE(r2.ok());
    EXPECT_TRUE(r2->session_hit) << encoder;
    EXPECT_EQ(r2->packets_fed, 4);
    // At the end of the GOP no packet follows: the session is flushed to let frame 11 out,
    // then serves it again from its kept frames.
    auto r3 = decoder.DecodeGop(Request(s, 0, 12, {11}), f.Sink());
    ASSERT_TRUE(r3.ok());
    EXPECT_TRUE(r3->session_hit);
    EXPECT_EQ(r3->delivered, std::vector<int64_t>{11});
    auto r4 = decoder.DecodeGop(Request(s, 0, 12, {11}), f.Sink());
    ASSERT_TRUE(r4.ok());
    EXPECT_TRUE(r4->session_hit);
    EXPECT_EQ(r4->packets_fed, 0);
    for (int64_t p : {3, 7, 11}) EXPECT_EQ(f.by_position[p], want.by_position[p]) << encoder << " " << p;
    // Stepping back resets the GOP's own session (its threads and pictures are kept).
    Frames g;
    auto r5 = decoder.DecodeGop(Request(s, 0, 12, {5}), g.Sink());
    ASSERT_TRUE(r5.ok());
    EXPECT_FALSE(r5->session_hit);
    EXPECT_EQ(decoder.stats().sessions_recycled, 1);
    ASSERT_TRUE(single.DecodeGop(Request(s, 0, 12, {5}), want.Sink()).ok());
    EXPECT_EQ(g.by_position[5], want.by_position[5]);
  }
}

TEST(VideoDecodeTest, BFramesMapFramesToTheirPackets) {
  EncodeSpec spec;
  spec.frames = 30;
  spec.gop = 30;
  spec.bframes = 2;
  ENCODE_OR_SKIP(s, spec);
  bool reordered = false;
  for (size_t i = 0; i < s.source.size(); ++i) reordered |= s.source[i] != int64_t(i);
  ASSERT_TRUE(reordered) << "the encoder made no B-frames";
  VideoFrameDecoder decoder;
  DecodeAllAndCheck(s, decoder);
  // A single B-frame from the middle: the session is flushed only if the packets run out.
  VideoFrameDecoder d2;
  Frames f;
  size_t b_index = 1;
  while (b_index < s.source.size() && s.source[b_index] >= s.source[b_index - 1]) ++b_index;
  auto r = d2.DecodeGop(Request(s, 0, s.packets.size(), {int64_t(b_index)}), f.Sink());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->delivered, std::vector<int64_t>{int64_t(b_index)});
  EXPECT_NEAR(MeanLuma(f.by_position[int64_t(b_index)]), FrameLuma(int(s.source[b_index])) + 3, 2.5);
  EXPECT_EQ(d2.stats().sessions_cached, 1);
  // Packets ending at the wanted B-frame: the decoder must be flushed to get it out.
  VideoFrameDecoder d3;
  Frames g;
  auto r3 = d3.DecodeGop(Request(s, 0, b_index + 1, {int64_t(b_index)}), g.Sink());
  ASSERT_TRUE(r3.ok()) << r3.status().ToString();
  EXPECT_EQ(r3->delivered, std::vector<int64_t>{int64_t(b_index)});
  EXPECT_EQ(g.by_position, f.by_position);
  // The flushed session stays cached (for its kept frame, the last one out); asked for
  // another frame, it is reset and decodes the GOP again.
  EXPECT_EQ(d3.stats().sessions_cached, 1);
  Frames h;
  auto again = d3.DecodeGop(Request(s, 0, s.packets.size(), {int64_t(b_index)}), h.Sink());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(h.by_position, f.by_position);
  EXPECT_EQ(d3.stats().sessions_recycled, again->session_hit ? 0 : 1);
}

TEST(VideoDecodeTest, NoKeyframeMeansMissingNeverACorruptFrame) {
  EncodeSpec spec;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoder decoder;
  Frames f;
  auto r = decoder.DecodeGop(Request(s, 2, 12, {2, 5}), f.Sink());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->missing, (std::vector<int64_t>{2, 5}));
  EXPECT_TRUE(f.by_position.empty());
  EXPECT_EQ(decoder.stats().gops_started, 0);
  // Wanted positions that are not packets of the request are missing too.
  auto r2 = decoder.DecodeGop(Request(s, 0, 4, {1, 9}), f.Sink());
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->delivered, std::vector<int64_t>{1});
  EXPECT_EQ(r2->missing, std::vector<int64_t>{9});
  // Without keyframe verification, starting mid-GOP is an error, not a damaged frame.
  GopRequest mid = Request(s, 2, 12, {5});
  mid.verify_keyframe = false;
  Frames g;
  auto r3 = decoder.DecodeGop(mid, g.Sink());
  if (r3.ok()) {
    EXPECT_TRUE(g.by_position.empty()) << "a frame decoded without its references was delivered";
  } else {
    EXPECT_EQ(r3.status().code(), StatusCode::kCorrupt) << r3.status().ToString();
  }
}

TEST(VideoDecodeTest, BadInputIsAnErrorNotACrash) {
  EncodeSpec spec;
  spec.width = 128;
  spec.height = 96;
  ENCODE_OR_SKIP(s, spec);
  Frames f;
  // Missing SPS/PPS: strip the parameter sets from the keyframe.
  {
    Bytes key = s.packets[0];
    // Find the IDR NAL (type 5) and keep from its start code on.
    size_t idr = 0;
    for (size_t i = 0; i + 4 < key.size(); ++i) {
      if (key[i] == 0 && key[i + 1] == 0 && key[i + 2] == 1 && (key[i + 3] & 0x1F) == 5) {
        idr = i;
        break;
      }
    }
    ASSERT_GT(idr, 0u);
    Stream t = s;
    t.packets[0] = Bytes(key.begin() + static_cast<std::ptrdiff_t>(idr), key.end());
    EXPECT_FALSE(IsKeyframe(VideoCodec::kH264, t.packets[0].data(), t.packets[0].size()).value());
    VideoFrameDecoder d;
    GopRequest r = Request(t, 0, 12, {0, 1});
    r.verify_keyframe = false;
    auto out = d.DecodeGop(r, f.Sink());
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(out.status().message().find("position 0"), std::string::npos) << out.status().message();
  }
  // A corrupt packet: garbage in the middle of a P-frame's slice data.
  {
    Stream t = s;
    Bytes& p = t.packets[3];
    for (size_t i = p.size() / 3; i < p.size(); ++i) p[i] = static_cast<uint8_t>(i * 37);
    VideoFrameDecoder d;
    auto out = d.DecodeGop(Request(t, 0, 12, {3, 4}), f.Sink());
    if (out.ok()) {
      // libavcodec may accept garbage that parses; then the frame is whatever it decodes to.
      SUCCEED();
    } else {
      EXPECT_EQ(out.status().code(), StatusCode::kCorrupt) << out.status().ToString();
      EXPECT_NE(out.status().message().find("seg/cam"), std::string::npos);
    }
  }
  // A truncated sample (length-prefixed framing makes the truncation visible).
  {
    Stream t = s;
    t.packets[2] = ToLengthPrefixed(t.packets[2]);
    t.packets[2].resize(t.packets[2].size() / 2);
    VideoFrameDecoder d;
    auto out = d.DecodeGop(Request(t, 0, 12, {2}), f.Sink());
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(out.status().message().find("byte offset"), std::string::npos) << out.status().message();
    // Truncated Annex B: libavcodec either rejects it or decodes what is there; never crashes.
    Stream u = s;
    u.packets[2].resize(u.packets[2].size() / 2);
    auto out2 = d.DecodeGop(Request(u, 0, 12, {2}), f.Sink());
    if (!out2.ok()) {
      EXPECT_EQ(out2.status().code(), StatusCode::kCorrupt) << out2.status().ToString();
    }
  }
  // Unordered positions and a bad size are caller errors.
  {
    VideoFrameDecoder d;
    GopRequest r = Request(s, 0, 4, {2, 1});
    EXPECT_EQ(d.DecodeGop(r, f.Sink()).status().code(), StatusCode::kInvalidArgument);
    r = Request(s, 0, 4, {1});
    std::swap(r.packets[1], r.packets[2]);
    EXPECT_EQ(d.DecodeGop(r, f.Sink()).status().code(), StatusCode::kInvalidArgument);
    r = Request(s, 0, 4, {1});
    r.size = {10, 0};
    EXPECT_EQ(d.DecodeGop(r, f.Sink()).status().code(), StatusCode::kInvalidArgument);
    r.packets.clear();
    EXPECT_EQ(d.DecodeGop(r, f.Sink()).status().code(), StatusCode::kInvalidArgument);
  }
  // A sink error stops decoding and comes back unchanged.
  {
    VideoFrameDecoder d;
    FrameSink failing = [](int64_t, int, int) -> Result<uint8_t*> { return Status::Internal("sink full"); };
    auto out = d.DecodeGop(Request(s, 0, 12, {1}), failing);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("sink full"), std::string::npos);
  }
  // Random bytes as a "keyframe" (verification off): an error or nothing, never a crash.
  {
    std::mt19937 rng(3);
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<Bytes> junk(4);
      for (auto& j : junk) {
        j.resize(8 + rng() % 200);
        for (auto& x : j) x = static_cast<uint8_t>(rng());
        j[0] = 0;
        j[1] = 0;
        j[2] = 0;
        j[3] = 1;
      }
      GopRequest r;
      r.stream_key = "junk";
      r.verify_keyframe = false;
      for (size_t i = 0; i < junk.size(); ++i) r.packets.push_back({junk[i].data(), junk[i].size(), int64_t(i)});
      r.wanted = {0, 1, 2, 3};
      VideoFrameDecoder d;
      auto out = d.DecodeGop(r, f.Sink());
      if (!out.ok()) {
        EXPECT_NE(out.status().code(), StatusCode::kInternal) << out.status().ToString();
      }
    }
  }
}

TEST(VideoDecodeTest, ResizeHappensAtDecodeTime) {
  EncodeSpec spec;
  spec.width = 128;
  spec.height = 96;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoder decoder;
  Frames f;
  GopRequest r = Request(s, 0, 12, {0, 6});
  r.size = {24, 32};
  auto out = decoder.DecodeGop(r, f.Sink());
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  for (int64_t p : {0, 6}) {
    EXPECT_EQ(f.shape[p], std::make_pair(24, 32));
    EXPECT_NEAR(MeanLuma(f.by_position[p]), FrameLuma(int(s.source[size_t(p)])) + 3, 2.5);
  }
  // Above max_pixels: refused.
  VideoFrameDecoderOptions limited;
  limited.decoder.max_pixels = 1000;
  VideoFrameDecoder small(limited);
  auto refused = small.DecodeGop(Request(s, 0, 12, {0}), f.Sink());
  ASSERT_FALSE(refused.ok());
}

TEST(VideoDecodeTest, H265AndAv1Decode) {
  for (const char* encoder : {"libx265", "libaom-av1"}) {
    for (int gop : {1, 12}) {
      EncodeSpec spec;
      spec.encoder = encoder;
      spec.gop = gop;
      spec.frames = 24;
      Stream s = Encode(spec);
      if (s.packets.empty()) {
        ADD_FAILURE() << encoder << " missing";
        continue;
      }
      for (size_t i = 0; i < s.packets.size(); ++i) {
        auto k = IsKeyframe(s.codec, s.packets[i].data(), s.packets[i].size());
        ASSERT_TRUE(k.ok());
        EXPECT_EQ(*k, s.key[i]) << encoder << " gop " << gop << " packet " << i;
      }
      VideoFrameDecoder decoder;
      DecodeAllAndCheck(s, decoder);
      EXPECT_EQ(decoder.stats().frames_delivered, 24) << encoder;
    }
  }
}

TEST(VideoDecodeTest, LowLevelSessionTagsFramesWithPositions) {
  EncodeSpec spec;
  spec.bframes = 2;
  spec.gop = 24;
  ENCODE_OR_SKIP(s, spec);
  auto session = VideoDecoder::Open(VideoCodec::kH264, {});
  ASSERT_TRUE(session.ok());
  std::vector<int64_t> out_order;
  auto cb = [&](const AVFrame&, int64_t position) {
    out_order.push_back(position);
    return Status::OK();
  };
  for (size_t i = 0; i < s.packets.size(); ++i) {
    ASSERT_TRUE((*session)->Feed(s.packets[i].data(), s.packets[i].size(), 100 + int64_t(i), cb).ok());
  }
  EXPECT_EQ((*session)->Feed(s.packets[0].data(), s.packets[0].size(), 5, cb).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*session)->Flush(cb).ok());
  EXPECT_EQ((*session)->Feed(s.packets[0].data(), 1, 1000, cb).code(), StatusCode::kInvalidArgument);
  ASSERT_EQ(out_order.size(), s.packets.size());
  // Output order is presentation order: the source indices of the positions ascend.
  for (size_t i = 1; i < out_order.size(); ++i) {
    EXPECT_LT(s.source[size_t(out_order[i - 1] - 100)], s.source[size_t(out_order[i] - 100)]);
  }
  EXPECT_EQ((*session)->frames_decoded(), int64_t(s.packets.size()));
  EXPECT_GT((*session)->EstimatedBytes(), 0);
}

// --- YUV 4:2:0 output -------------------------------------------------------------------

static_assert(Yuv420ChromaHeight(5) == 3 && Yuv420ChromaWidth(4) == 2);
static_assert(VideoFrameBytes(VideoOutputFormat::kYuv420, 48, 64) == 48 * 64 * 3 / 2);
static_assert(VideoFrameBytes(VideoOutputFormat::kYuv420, 21, 33) == 21 * 33 + 2 * 11 * 17);
static_assert(VideoFrameBytes(VideoOutputFormat::kRgb, 21, 33) == int64_t{3} * 21 * 33);

// YuvFrames: position -> (Y [H, W], UV [2, ceil(H/2), ceil(W/2)]) and what the sink was told.
struct YuvFrames {
  std::map<int64_t, Bytes> y;
  std::map<int64_t, Bytes> uv;
  std::map<int64_t, VideoFrameInfo> info;
  FrameTargetSink Sink() {
    return [this](int64_t position, const VideoFrameInfo& i) -> Result<FrameTarget> {
      // Poisoned, so rows the decoder fails to write show up.
      y[position].assign(static_cast<size_t>(Yuv420LumaBytes(i.height, i.width)), 0xAB);
      uv[position].assign(static_cast<size_t>(Yuv420ChromaBytes(i.height, i.width)), 0xCD);
      info[position] = i;
      return FrameTarget{y[position].data(), uv[position].data()};
    };
  }
};

GopRequest YuvRequest(const Stream& s, size_t first, size_t end, std::vector<int64_t> wanted) {
  GopRequest r = Request(s, first, end, std::move(wanted));
  r.output_format = VideoOutputFormat::kYuv420;
  return r;
}

std::vector<int64_t> AllPositions(const Stream& s) {
  std::vector<int64_t> all;
  for (size_t i = 0; i < s.packets.size(); ++i) all.push_back(int64_t(i));
  return all;
}

// DecodedPlanes: what libavcodec itself hands out for every packet of a one-GOP stream
// (through the low-level session, planes read row by row past their padding), with the
// pixel format and colour metadata of each picture.
struct DecodedPicture {
  int format = -1;
  Bytes y;
  Bytes uv;
  VideoColor color;
};
std::map<int64_t, DecodedPicture> DecodedPlanes(const Stream& s) {
  std::map<int64_t, DecodedPicture> out;
  auto session = VideoDecoder::Open(s.codec, {});
  EXPECT_TRUE(session.ok());
  if (!session.ok()) return out;
  auto take = [&](const AVFrame& f, int64_t position) {
    DecodedPicture& pic = out[position];
    pic.format = f.format;
    pic.color = FrameColor(f);
    const int cw = Yuv420ChromaWidth(f.width);
    const int ch = Yuv420ChromaHeight(f.height);
    for (int r = 0; r < f.height; ++r) {
      const uint8_t* row = f.data[0] + static_cast<ptrdiff_t>(r) * f.linesize[0];
      pic.y.insert(pic.y.end(), row, row + f.width);
    }
    for (int p = 1; p <= 2; ++p) {
      for (int r = 0; r < ch; ++r) {
        const uint8_t* row = f.data[p] + static_cast<ptrdiff_t>(r) * f.linesize[p];
        pic.uv.insert(pic.uv.end(), row, row + cw);
      }
    }
    return Status::OK();
  };
  for (size_t i = 0; i < s.packets.size(); ++i) {
    EXPECT_TRUE((*session)->Feed(s.packets[i].data(), s.packets[i].size(), int64_t(i), take).ok());
  }
  EXPECT_TRUE((*session)->Flush(take).ok());
  return out;
}

TEST(VideoYuvTest, Yuv420PlanesAreLibavcodecsPictures) {
  // H.264 (Annex B and length-prefixed) and AV1 at an odd size (AV1 codes any size; H.264
  // and H.265 4:2:0 sizes are even by construction of their cropping units).
  struct Case {
    const char* encoder;
    int width;
    int height;
    bool avcc;
  };
  for (const Case& c : {Case{"libx264", 64, 48, false}, Case{"libx264", 64, 48, true}, Case{"libx265", 66, 50, false},
                        Case{"libaom-av1", 33, 21, false}}) {
    EncodeSpec spec;
    spec.encoder = c.encoder;
    spec.width = c.width;
    spec.height = c.height;
    spec.gop = 24;
    Stream s = Encode(spec);
    if (s.packets.empty()) {
      ADD_FAILURE() << c.encoder << " missing";
      continue;
    }
    if (c.avcc) {
      for (auto& p : s.packets) p = ToLengthPrefixed(p);
    }
    const std::map<int64_t, DecodedPicture> reference = DecodedPlanes(s);
    ASSERT_EQ(reference.size(), s.packets.size()) << c.encoder;
    VideoFrameDecoder decoder;
    YuvFrames f;
    auto out = decoder.DecodeGop(YuvRequest(s, 0, s.packets.size(), AllPositions(s)), f.Sink());
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(out->delivered, AllPositions(s));
    for (const auto& [position, pic] : reference) {
      ASSERT_EQ(pic.format, AV_PIX_FMT_YUV420P) << c.encoder;
      EXPECT_EQ(f.info[position].height, c.height);
      EXPECT_EQ(f.info[position].width, c.width);
      EXPECT_EQ(f.info[position].color, pic.color);
      EXPECT_EQ(f.y[position], pic.y) << c.encoder << " position " << position;
      EXPECT_EQ(f.uv[position], pic.uv) << c.encoder << " position " << position;
    }
    const VideoStats st = decoder.stats();
    EXPECT_EQ(st.frames_delivered, int64_t(s.packets.size()));
    EXPECT_EQ(st.frames_reformatted, 0);
  }
}

// Lossless H.264 in 4:2:0, 4:2:2 and 4:4:4, 8 and 10 bits: the 4:2:0 planes delivered equal
// the encoder's input exactly (4:2:0 8-bit: copied; the rest: libswscale, whose filters of
// a flat chroma plane and exact 10-bit values keep them), except that libswscale dithers
// when it both filters and drops bits (10-bit 4:4:4 chroma: within 1 level).
TEST(VideoYuvTest, OtherPixelFormatsAreReformattedToYuv420) {
  struct Case {
    AVPixelFormat format;
    int width;
    int height;
    bool flat_chroma;
  };
  const Case cases[] = {
      {AV_PIX_FMT_YUV420P, 64, 48, false},     {AV_PIX_FMT_YUV444P, 64, 48, true},
      {AV_PIX_FMT_YUV444P, 65, 49, true},      {AV_PIX_FMT_YUV422P, 64, 48, false},
      {AV_PIX_FMT_YUV420P10LE, 64, 48, false}, {AV_PIX_FMT_YUV444P10LE, 33, 21, true},
  };
  for (const Case& c : cases) {
    EncodeSpec spec;
    spec.pix_fmt = c.format;
    spec.width = c.width;
    spec.height = c.height;
    spec.lossless = true;
    spec.flat_chroma = c.flat_chroma;
    spec.frames = 6;
    spec.gop = 6;
    const char* name = av_get_pix_fmt_name(c.format);
    Stream s = Encode(spec);
    if (s.packets.empty()) {
      ADD_FAILURE() << "libx264 cannot encode " << name;
      continue;
    }
    const std::map<int64_t, DecodedPicture> reference = DecodedPlanes(s);
    ASSERT_EQ(reference.size(), s.packets.size());
    VideoFrameDecoder decoder;
    YuvFrames f;
    auto out = decoder.DecodeGop(YuvRequest(s, 0, s.packets.size(), AllPositions(s)), f.Sink());
    ASSERT_TRUE(out.ok()) << name << ": " << out.status().ToString();
    const int cw = Yuv420ChromaWidth(c.width);
    const int ch = Yuv420ChromaHeight(c.height);
    for (int64_t p : AllPositions(s)) {
      EXPECT_EQ(reference.at(p).format, c.format) << name;
      const int i = int(s.source[size_t(p)]);
      Bytes y;
      Bytes uv;
      for (int row = 0; row < c.height; ++row) {
        for (int x = 0; x < c.width; ++x) y.push_back(SourceLuma(i, x, row));
      }
      for (int plane = 1; plane <= 2; ++plane) {
        for (int row = 0; row < ch; ++row) {
          for (int x = 0; x < cw; ++x) uv.push_back(SourceChroma(spec, i, plane, x, row));
        }
      }
      EXPECT_EQ(f.y[p], y) << name << " position " << p;
      const bool dithered = c.format == AV_PIX_FMT_YUV444P10LE;
      if (!dithered) {
        EXPECT_EQ(f.uv[p], uv) << name << " position " << p;
        continue;
      }
      ASSERT_EQ(f.uv[p].size(), uv.size());
      int worst = 0;
      for (size_t k = 0; k < uv.size(); ++k) worst = std::max(worst, std::abs(int(f.uv[p][k]) - int(uv[k])));
      EXPECT_LE(worst, 1) << name << " position " << p;
    }
    const bool direct = c.format == AV_PIX_FMT_YUV420P;
    EXPECT_EQ(decoder.stats().frames_reformatted, direct ? 0 : int64_t(s.packets.size())) << name;
  }
}

TEST(VideoYuvTest, ColourMetadataFollowsRerun041) {
  struct Case {
    AVColorSpace space;
    AVColorRange range;
    VideoColor want;
  };
  const Case cases[] = {
      {AVCOL_SPC_UNSPECIFIED, AVCOL_RANGE_UNSPECIFIED, {VideoColorSpace::kUnspecified, VideoColorRange::kUnspecified}},
      {AVCOL_SPC_BT709, AVCOL_RANGE_JPEG, {VideoColorSpace::kBt709, VideoColorRange::kFull}},
      {AVCOL_SPC_BT709, AVCOL_RANGE_MPEG, {VideoColorSpace::kBt709, VideoColorRange::kLimited}},
      {AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG, {VideoColorSpace::kBt601, VideoColorRange::kLimited}},
      // x264 writes the range flag with any colour description: limited when not asked.
      {AVCOL_SPC_BT470BG, AVCOL_RANGE_UNSPECIFIED, {VideoColorSpace::kBt601, VideoColorRange::kLimited}},
      {AVCOL_SPC_BT2020_NCL, AVCOL_RANGE_JPEG, {VideoColorSpace::kBt2020, VideoColorRange::kFull}},
      {AVCOL_SPC_SMPTE240M, AVCOL_RANGE_MPEG, {VideoColorSpace::kUnspecified, VideoColorRange::kLimited}},
  };
  for (const Case& c : cases) {
    EncodeSpec spec;
    spec.colorspace = c.space;
    spec.color_range = c.range;
    spec.frames = 2;
    ENCODE_OR_SKIP(s, spec);
    VideoFrameDecoder decoder;
    YuvFrames f;
    auto out = decoder.DecodeGop(YuvRequest(s, 0, 2, {0, 1}), f.Sink());
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    for (int64_t p : {0, 1}) {
      EXPECT_EQ(f.info[p].color, c.want) << av_color_space_name(c.space) << "/" << av_color_range_name(c.range)
                                         << ": got " << VideoColorSpaceName(f.info[p].color.space) << "/"
                                         << VideoColorRangeName(f.info[p].color.range);
    }
  }
  // The rules themselves, on frames libavcodec does not make: a yuvj format means full
  // range when the range is unspecified (not when it says limited); unknown enum values
  // and BT.2020 constant luminance are unspecified.
  AvFramePtr frame = MakeAvFrame();
  frame->format = AV_PIX_FMT_YUVJ420P;
  frame->color_range = AVCOL_RANGE_UNSPECIFIED;
  EXPECT_EQ(FrameColor(*frame).range, VideoColorRange::kFull);
  frame->color_range = AVCOL_RANGE_MPEG;
  EXPECT_EQ(FrameColor(*frame).range, VideoColorRange::kLimited);
  frame->format = AV_PIX_FMT_YUV420P;
  frame->color_range = AVCOL_RANGE_UNSPECIFIED;
  EXPECT_EQ(FrameColor(*frame).range, VideoColorRange::kUnspecified);
  frame->colorspace = AVCOL_SPC_BT2020_CL;
  EXPECT_EQ(FrameColor(*frame).space, VideoColorSpace::kUnspecified);
  const int bogus = 977;
  std::memcpy(&frame->colorspace, &bogus, sizeof(bogus));
  std::memcpy(&frame->color_range, &bogus, sizeof(bogus));
  EXPECT_EQ(FrameColor(*frame), VideoColor{});
  EXPECT_STREQ(VideoColorSpaceName(VideoColorSpace::kBt2020), "bt2020");
  EXPECT_STREQ(VideoColorRangeName(VideoColorRange::kLimited), "limited");
}

TEST(VideoYuvTest, FullRangeStreamsComeOutAsYuvj420Planes) {
  EncodeSpec spec;
  spec.color_range = AVCOL_RANGE_JPEG;
  spec.frames = 4;
  ENCODE_OR_SKIP(s, spec);
  const std::map<int64_t, DecodedPicture> reference = DecodedPlanes(s);
  ASSERT_EQ(reference.at(0).format, AV_PIX_FMT_YUVJ420P);
  VideoFrameDecoder decoder;
  YuvFrames f;
  ASSERT_TRUE(decoder.DecodeGop(YuvRequest(s, 0, 4, {0, 3}), f.Sink()).ok());
  for (int64_t p : {0, 3}) {
    EXPECT_EQ(f.y[p], reference.at(p).y);
    EXPECT_EQ(f.uv[p], reference.at(p).uv);
    EXPECT_EQ(f.info[p].color.range, VideoColorRange::kFull);
  }
  EXPECT_EQ(decoder.stats().frames_reformatted, 0);
}

TEST(VideoYuvTest, RgbAndYuvRequestsShareSessions) {
  EncodeSpec spec;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoder decoder;
  Frames rgb;
  YuvFrames yuv;
  ASSERT_TRUE(decoder.DecodeGop(Request(s, 0, 12, {3}), rgb.Sink()).ok());
  auto r = decoder.DecodeGop(YuvRequest(s, 0, 12, {3, 7}), yuv.Sink());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->session_hit);
  EXPECT_EQ(r->packets_fed, 4);
  VideoFrameDecoder fresh;
  YuvFrames g;
  ASSERT_TRUE(fresh.DecodeGop(YuvRequest(s, 0, 12, {3, 7}), g.Sink()).ok());
  EXPECT_EQ(yuv.y, g.y);
  EXPECT_EQ(yuv.uv, g.uv);
}

TEST(VideoYuvTest, BadYuvRequestsAreRefused) {
  EncodeSpec spec;
  ENCODE_OR_SKIP(s, spec);
  VideoFrameDecoder decoder;
  YuvFrames f;
  GopRequest resized = YuvRequest(s, 0, 12, {1});
  resized.size = {24, 32};
  auto out = decoder.DecodeGop(resized, f.Sink());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("yuv420p"), std::string::npos) << out.status().message();
  Frames rgb;
  EXPECT_EQ(decoder.DecodeGop(YuvRequest(s, 0, 12, {1}), rgb.Sink()).status().code(), StatusCode::kInvalidArgument);
  FrameTargetSink no_uv = [&f](int64_t position, const VideoFrameInfo& info) -> Result<FrameTarget> {
    Result<FrameTarget> t = f.Sink()(position, info);
    if (t.ok()) t->uv = nullptr;
    return t;
  };
  EXPECT_EQ(decoder.DecodeGop(YuvRequest(s, 0, 12, {1}), no_uv).status().code(), StatusCode::kInternal);
  EXPECT_EQ(ParseVideoOutputFormat("yuv420p").value(), VideoOutputFormat::kYuv420);
  EXPECT_EQ(ParseVideoOutputFormat("rgb").value(), VideoOutputFormat::kRgb);
  EXPECT_EQ(ParseVideoOutputFormat("nv12").status().code(), StatusCode::kInvalidArgument);
  EXPECT_STREQ(VideoOutputFormatName(VideoOutputFormat::kYuv420), "yuv420p");
  // Above max_pixels: refused as for RGB (by libavcodec, before any copy).
  VideoFrameDecoderOptions limited;
  limited.decoder.max_pixels = 1000;
  VideoFrameDecoder small(limited);
  EXPECT_FALSE(small.DecodeGop(YuvRequest(s, 0, 12, {0}), f.Sink()).ok());
}

}  // namespace
}  // namespace rrl::decode
