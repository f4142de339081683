// Tests of still-image decoding (rrloader/decode/image.h). Every image is made here, at
// test time, with TurboJPEG's compressor or libspng's encoder; no binary fixtures.
// Pixel-exact agreement with Pillow is checked by tests/python/test_image_decode.py.
#include "rrloader/decode/image.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "rrloader/decode/spng.h"
#include "rrloader/decode/turbojpeg.h"

namespace rrl::decode {
namespace {

using Bytes = std::vector<uint8_t>;

// Interleaved test pattern: smooth gradients plus a little seeded noise, so JPEG keeps it
// close and every channel differs from the others.
Bytes Pattern(int width, int height, int channels, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(0, 7);
  Bytes px(static_cast<size_t>(width) * height * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        const int v = (x * 255 / std::max(1, width - 1) + y * 97 / std::max(1, height - 1) + 60 * c) % 256;
        px[(static_cast<size_t>(y) * width + x) * channels + c] = static_cast<uint8_t>(std::min(255, v + noise(rng)));
      }
    }
  }
  return px;
}

Bytes EncodeJpeg(const Bytes& px, int width, int height, int pixel_format, int subsamp, int quality, int flags = 0) {
  TjHandle tj = MakeTjCompressor();
  EXPECT_TRUE(tj) << tjGetErrorStr2(nullptr);
  unsigned char* raw = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj.get(), px.data(), width, 0, height, pixel_format, &raw, &size, subsamp, quality,
                             flags | TJFLAG_ACCURATEDCT);
  TjBuffer owned(raw);
  EXPECT_EQ(rc, 0) << tjGetErrorStr2(tj.get());
  return Bytes(raw, raw + size);
}

struct PngSpec {
  int width = 0;
  int height = 0;
  uint8_t color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  uint8_t bit_depth = 8;
  bool interlaced = false;
  std::vector<spng_plte_entry> palette;
  std::vector<uint8_t> palette_alpha;  // tRNS of a palette image
  bool gray_trns = false;              // tRNS of a gray image (key 0)
};

// EncodePng: `rows` are PNG scanlines' pixel bytes as stored (packed for < 8 bits).
Bytes EncodePng(const PngSpec& spec, const Bytes& rows) {
  SpngCtx ctx = MakeSpngEncoder();
  EXPECT_TRUE(ctx);
  EXPECT_EQ(spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1), 0);
  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(spec.width);
  ihdr.height = static_cast<uint32_t>(spec.height);
  ihdr.bit_depth = spec.bit_depth;
  ihdr.color_type = spec.color_type;
  ihdr.interlace_method = spec.interlaced ? SPNG_INTERLACE_ADAM7 : SPNG_INTERLACE_NONE;
  EXPECT_EQ(spng_set_ihdr(ctx.get(), &ihdr), 0);
  if (!spec.palette.empty()) {
    spng_plte plte{};
    plte.n_entries = static_cast<uint32_t>(spec.palette.size());
    for (size_t i = 0; i < spec.palette.size(); ++i) plte.entries[i] = spec.palette[i];
    EXPECT_EQ(spng_set_plte(ctx.get(), &plte), 0);
  }
  if (!spec.palette_alpha.empty() || spec.gray_trns) {
    spng_trns trns{};
    trns.n_type3_entries = static_cast<uint32_t>(spec.palette_alpha.size());
    for (size_t i = 0; i < spec.palette_alpha.size(); ++i) trns.type3_alpha[i] = spec.palette_alpha[i];
    EXPECT_EQ(spng_set_trns(ctx.get(), &trns), 0);
  }
  const int rc = spng_encode_image(ctx.get(), rows.data(), rows.size(), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  EXPECT_EQ(rc, 0) << spng_strerror(rc);
  size_t size = 0;
  int err = 0;
  SpngBuffer buf(spng_get_png_buffer(ctx.get(), &size, &err));
  EXPECT_EQ(err, 0) << spng_strerror(err);
  const auto* p = static_cast<const uint8_t*>(buf.get());
  return p == nullptr ? Bytes{} : Bytes(p, p + size);
}

struct Decoded {
  ImageShape shape;
  Bytes planar;
};

Result<Decoded> Decode(const Bytes& data, const ImageLimits& limits = {}) {
  RRL_ASSIGN_OR_RETURN(ImageShape probed, ProbeEncodedImage(data.data(), data.size(), limits));
  Decoded d;
  d.planar.assign(static_cast<size_t>(probed.num_bytes()), 0);
  RRL_ASSIGN_OR_RETURN(d.shape,
                       DecodeEncodedImage(data.data(), data.size(), limits, d.planar.data(), probed.num_bytes()));
  EXPECT_EQ(d.shape.channels, probed.channels);
  EXPECT_EQ(d.shape.height, probed.height);
  EXPECT_EQ(d.shape.width, probed.width);
  return d;
}

Status DecodeStatus(const Bytes& data, const ImageLimits& limits = {}) {
  // Decode straight into a generous buffer so a failing probe does not hide the decoder.
  Bytes out(1 << 20);
  auto r = DecodeEncodedImage(data.data(), data.size(), limits, out.data(), static_cast<int64_t>(out.size()));
  return r.status();
}

// Planar value of channel c at (y, x).
uint8_t At(const Decoded& d, int c, int y, int x) {
  return d.planar[(static_cast<size_t>(c) * d.shape.height + y) * d.shape.width + x];
}

// MeanAbsDiff between a decoded planar image and interleaved source pixels.
double MeanAbsDiff(const Decoded& d, const Bytes& interleaved, const std::vector<int>& order = {0, 1, 2, 3}) {
  const int c_n = d.shape.channels;
  double sum = 0;
  for (int c = 0; c < c_n; ++c) {
    for (int y = 0; y < d.shape.height; ++y) {
      for (int x = 0; x < d.shape.width; ++x) {
        const int src = interleaved[(static_cast<size_t>(y) * d.shape.width + x) * c_n + order[c]];
        sum += std::abs(src - At(d, c, y, x));
      }
    }
  }
  return sum / static_cast<double>(d.planar.size());
}

// ---- JPEG -----------------------------------------------------------------------------

TEST(Jpeg, GrayIsOneChannel) {
  const Bytes px = Pattern(33, 20, 1);
  auto d = Decode(EncodeJpeg(px, 33, 20, TJPF_GRAY, TJSAMP_GRAY, 95));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->shape.channels, 1);
  EXPECT_EQ(d->shape.height, 20);
  EXPECT_EQ(d->shape.width, 33);
  EXPECT_LT(MeanAbsDiff(*d, px), 3.0);
}

TEST(Jpeg, ColorIsRgbForEverySubsampling) {
  for (int subsamp : {TJSAMP_444, TJSAMP_422, TJSAMP_420, TJSAMP_440, TJSAMP_411}) {
    SCOPED_TRACE(subsamp);
    const Bytes px = Pattern(64, 48, 3, 7);
    auto d = Decode(EncodeJpeg(px, 64, 48, TJPF_RGB, subsamp, 95));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->shape.channels, 3);
    EXPECT_LT(MeanAbsDiff(*d, px), 12.0);
  }
}

TEST(Jpeg, FlatColorDecodesToItsRgbValue) {
  Bytes px(size_t{16} * 16 * 3);
  for (size_t i = 0; i < px.size(); i += 3) {
    px[i] = 200;
    px[i + 1] = 30;
    px[i + 2] = 90;
  }
  auto d = Decode(EncodeJpeg(px, 16, 16, TJPF_RGB, TJSAMP_444, 100));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  // Channel order is R, G, B (within YCbCr round-off).
  EXPECT_NEAR(At(*d, 0, 5, 5), 200, 2);
  EXPECT_NEAR(At(*d, 1, 5, 5), 30, 2);
  EXPECT_NEAR(At(*d, 2, 5, 5), 90, 2);
}

TEST(Jpeg, ProgressiveEqualsBaselineWithTheSameTables) {
  // The same quantised coefficients, entropy-coded differently: identical pixels.
  const Bytes px = Pattern(41, 23, 3, 3);
  auto base = Decode(EncodeJpeg(px, 41, 23, TJPF_RGB, TJSAMP_420, 80));
  auto prog = Decode(EncodeJpeg(px, 41, 23, TJPF_RGB, TJSAMP_420, 80, TJFLAG_PROGRESSIVE));
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  ASSERT_TRUE(prog.ok()) << prog.status().ToString();
  EXPECT_EQ(base->planar, prog->planar);
}

TEST(Jpeg, OddAndTinySizes) {
  for (auto [w, h] : {std::pair{1, 1}, std::pair{17, 9}, std::pair{9, 17}, std::pair{1, 31}}) {
    SCOPED_TRACE(std::to_string(w) + "x" + std::to_string(h));
    const Bytes px = Pattern(w, h, 3);
    auto d = Decode(EncodeJpeg(px, w, h, TJPF_RGB, TJSAMP_420, 90));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->shape.width, w);
    EXPECT_EQ(d->shape.height, h);
  }
}

TEST(Jpeg, CmykIsFourChannelsInvertedLikePillow) {
  Bytes px(size_t{16} * 8 * 4);
  for (size_t i = 0; i < px.size(); i += 4) {
    px[i] = 10;
    px[i + 1] = 80;
    px[i + 2] = 160;
    px[i + 3] = 240;
  }
  auto d = Decode(EncodeJpeg(px, 16, 8, TJPF_CMYK, TJSAMP_444, 100));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->shape.channels, 4);
  EXPECT_NEAR(At(*d, 0, 3, 3), 255 - 10, 2);
  EXPECT_NEAR(At(*d, 1, 3, 3), 255 - 80, 2);
  EXPECT_NEAR(At(*d, 2, 3, 3), 255 - 160, 2);
  EXPECT_NEAR(At(*d, 3, 3, 3), 255 - 240, 2);
}

TEST(Jpeg, EveryTruncationIsTruncated) {
  const Bytes full = EncodeJpeg(Pattern(24, 16, 3), 24, 16, TJPF_RGB, TJSAMP_420, 90, TJFLAG_PROGRESSIVE);
  ASSERT_TRUE(Decode(full).ok());
  for (size_t n = 1; n < full.size(); ++n) {
    const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const Status st = DecodeStatus(cut);
    ASSERT_EQ(st.code(), StatusCode::kTruncated) << "prefix " << n << ": " << st.ToString();
  }
}

TEST(Jpeg, TruncationMessageSaysWhere) {
  Bytes data = EncodeJpeg(Pattern(24, 16, 3), 24, 16, TJPF_RGB, TJSAMP_420, 90);
  data.resize(data.size() - 40);
  const Status st = DecodeStatus(data);
  EXPECT_EQ(st.code(), StatusCode::kTruncated);
  EXPECT_NE(st.message().find("entropy-coded data"), std::string::npos) << st.message();
}

// Offset of the first byte after the first marker segment `marker` (its payload start).
size_t FindSegment(const Bytes& jpeg, uint8_t marker) {
  for (size_t i = 2; i + 1 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xFF && jpeg[i + 1] == marker) return i + 4;
  }
  return 0;
}

TEST(Jpeg, UnsupportedFramesAreNamed) {
  const Bytes good = EncodeJpeg(Pattern(16, 16, 3), 16, 16, TJPF_RGB, TJSAMP_444, 90);
  const size_t sof = FindSegment(good, 0xC0);
  ASSERT_GT(sof, 0u);
  {
    Bytes twelve_bit = good;
    twelve_bit[sof] = 12;
    const Status st = DecodeStatus(twelve_bit);
    EXPECT_EQ(st.code(), StatusCode::kUnsupported);
    EXPECT_NE(st.message().find("12-bit"), std::string::npos) << st.message();
  }
  {
    Bytes lossless = good;
    lossless[sof - 3] = 0xC3;
    const Status st = DecodeStatus(lossless);
    EXPECT_EQ(st.code(), StatusCode::kUnsupported);
    EXPECT_NE(st.message().find("lossless"), std::string::npos) << st.message();
  }
  {
    Bytes dnl = good;
    dnl[sof + 1] = 0;
    dnl[sof + 2] = 0;
    EXPECT_EQ(DecodeStatus(dnl).code(), StatusCode::kUnsupported);
  }
}

TEST(Jpeg, CorruptHeadersAndDataAreCorrupt) {
  const Bytes good = EncodeJpeg(Pattern(32, 32, 3), 32, 32, TJPF_RGB, TJSAMP_420, 90);
  {
    // A scan that names a component the frame does not have.
    Bytes bad = good;
    const size_t sos = FindSegment(good, 0xDA);
    ASSERT_GT(sos, 0u);
    bad[sos + 1] = 0x7E;
    const Status st = DecodeStatus(bad);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
    EXPECT_NE(st.message().find("JPEG 32x32"), std::string::npos) << st.message();
  }
  {
    // A marker segment with a length below 2.
    Bytes bad = good;
    const size_t dqt = FindSegment(good, 0xDB);
    bad[dqt - 2] = 0;
    bad[dqt - 1] = 1;
    EXPECT_EQ(DecodeStatus(bad).code(), StatusCode::kCorrupt);
  }
  {
    // Entropy-coded data replaced by noise (0xFF avoided, so no markers appear): libjpeg
    // warns about it, which we report as corrupt rather than returning garbage pixels.
    Bytes bad = good;
    const size_t sos = FindSegment(good, 0xDA);
    const size_t sos_len = (size_t{good[sos - 2]} << 8) | good[sos - 1];
    std::mt19937 rng(5);
    for (size_t i = sos - 2 + sos_len; i + 2 < bad.size(); ++i) bad[i] = static_cast<uint8_t>(rng() % 255);
    EXPECT_EQ(DecodeStatus(bad).code(), StatusCode::kCorrupt);
  }
  {
    Bytes two_soi = good;
    two_soi.insert(two_soi.begin() + 2, {0xFF, 0xD8});
    EXPECT_EQ(DecodeStatus(two_soi).code(), StatusCode::kCorrupt);
  }
}

TEST(Jpeg, HugeHeaderIsRejectedBeforeAllocation) {
  Bytes data = EncodeJpeg(Pattern(16, 16, 3), 16, 16, TJPF_RGB, TJSAMP_444, 90);
  const size_t sof = FindSegment(data, 0xC0);
  data[sof + 1] = data[sof + 2] = data[sof + 3] = data[sof + 4] = 0xFF;  // 65535 x 65535
  auto probe = ProbeEncodedImage(data.data(), data.size(), ImageLimits{});
  EXPECT_EQ(probe.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(probe.status().message().find("65535x65535"), std::string::npos) << probe.status().message();
  EXPECT_EQ(DecodeStatus(data).code(), StatusCode::kUnsupported);
}

TEST(Jpeg, PixelLimitIsApplied) {
  const Bytes data = EncodeJpeg(Pattern(20, 10, 3), 20, 10, TJPF_RGB, TJSAMP_444, 90);
  ImageLimits tight;
  tight.max_pixels = 199;
  EXPECT_EQ(DecodeStatus(data, tight).code(), StatusCode::kUnsupported);
  tight.max_pixels = 200;
  EXPECT_TRUE(Decode(data, tight).ok());
}

// ---- PNG ------------------------------------------------------------------------------

TEST(Png, EightBitLayoutsAreExact) {
  struct Case {
    uint8_t color_type;
    int channels;
  };
  for (Case c : {Case{SPNG_COLOR_TYPE_GRAYSCALE, 1}, Case{SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 2},
                 Case{SPNG_COLOR_TYPE_TRUECOLOR, 3}, Case{SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 4}}) {
    for (bool interlaced : {false, true}) {
      SCOPED_TRACE(std::to_string(c.color_type) + (interlaced ? " interlaced" : ""));
      PngSpec spec;
      spec.width = 19;
      spec.height = 11;
      spec.color_type = c.color_type;
      spec.interlaced = interlaced;
      const Bytes px = Pattern(19, 11, c.channels, c.color_type);
      auto d = Decode(EncodePng(spec, px));
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      EXPECT_EQ(d->shape.channels, c.channels);
      EXPECT_EQ(MeanAbsDiff(*d, px), 0.0);
    }
  }
}

TEST(Png, LowBitGrayIsScaledToFullRange) {
  for (int depth_int : {1, 2, 4}) {
    SCOPED_TRACE(depth_int);
    const auto depth = static_cast<uint8_t>(depth_int);
    const int w = 13;
    const int h = 3;
    const int max = (1 << depth) - 1;
    const int per_byte = 8 / depth;
    const int row_bytes = (w + per_byte - 1) / per_byte;
    Bytes rows(static_cast<size_t>(row_bytes) * h, 0);
    std::vector<int> values;
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        const int v = (x + y) % (max + 1);
        values.push_back(v);
        const int shift = 8 - depth * (x % per_byte + 1);
        rows[static_cast<size_t>(y) * row_bytes + x / per_byte] |= static_cast<uint8_t>(v << shift);
      }
    }
    PngSpec spec;
    spec.width = w;
    spec.height = h;
    spec.color_type = SPNG_COLOR_TYPE_GRAYSCALE;
    spec.bit_depth = depth;
    auto d = Decode(EncodePng(spec, rows));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_EQ(d->shape.channels, 1);
    for (int i = 0; i < w * h; ++i) ASSERT_EQ(d->planar[i], values[i] * 255 / max) << i;
  }
}

PngSpec PaletteSpec(int w, int h, bool with_alpha) {
  PngSpec spec;
  spec.width = w;
  spec.height = h;
  spec.color_type = SPNG_COLOR_TYPE_INDEXED;
  for (int i = 0; i < 40; ++i) {
    spec.palette.push_back(spng_plte_entry{static_cast<uint8_t>(i * 6), static_cast<uint8_t>(255 - i * 3),
                                           static_cast<uint8_t>(i * 5 % 256), 0});
  }
  if (with_alpha) spec.palette_alpha = {0, 128, 255, 7};  // shorter than the palette: the rest are opaque
  return spec;
}

TEST(Png, PaletteIsExpandedToRgbOrRgba) {
  for (bool with_alpha : {false, true}) {
    for (bool interlaced : {false, true}) {
      SCOPED_TRACE(std::string(with_alpha ? "tRNS" : "no tRNS") + (interlaced ? " interlaced" : ""));
      PngSpec spec = PaletteSpec(15, 6, with_alpha);
      spec.interlaced = interlaced;
      Bytes idx(size_t{15} * 6);
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<uint8_t>(i % 40);
      auto d = Decode(EncodePng(spec, idx));
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      ASSERT_EQ(d->shape.channels, with_alpha ? 4 : 3);
      for (int y = 0; y < 6; ++y) {
        for (int x = 0; x < 15; ++x) {
          const int i = idx[static_cast<size_t>(y) * 15 + x];
          ASSERT_EQ(At(*d, 0, y, x), spec.palette[i].red);
          ASSERT_EQ(At(*d, 1, y, x), spec.palette[i].green);
          ASSERT_EQ(At(*d, 2, y, x), spec.palette[i].blue);
          if (with_alpha) {
            const int a = i < static_cast<int>(spec.palette_alpha.size()) ? spec.palette_alpha[i] : 255;
            ASSERT_EQ(At(*d, 3, y, x), a);
          }
        }
      }
    }
  }
}

TEST(Png, TransparencyKeyOfGrayImageIsIgnored) {
  // Pillow keeps a gray tRNS key in .info and returns "L": one channel.
  PngSpec spec;
  spec.width = 8;
  spec.height = 8;
  spec.color_type = SPNG_COLOR_TYPE_GRAYSCALE;
  spec.gray_trns = true;
  const Bytes px = Pattern(8, 8, 1);
  auto d = Decode(EncodePng(spec, px));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->shape.channels, 1);
  EXPECT_EQ(MeanAbsDiff(*d, px), 0.0);
}

TEST(Png, SixteenBitIsUnsupported) {
  PngSpec spec;
  spec.width = 4;
  spec.height = 4;
  spec.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  spec.bit_depth = 16;
  const Status st = DecodeStatus(EncodePng(spec, Bytes(size_t{4} * 4 * 6, 9)));
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("16-bit PNG is not supported"), std::string::npos) << st.message();
}

TEST(Png, EveryTruncationIsTruncated) {
  PngSpec spec;
  spec.width = 30;
  spec.height = 20;
  spec.color_type = SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
  const Bytes full = EncodePng(spec, Pattern(30, 20, 4));
  ASSERT_TRUE(Decode(full).ok());
  for (size_t n = 1; n < full.size(); ++n) {
    const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const Status st = DecodeStatus(cut);
    ASSERT_EQ(st.code(), StatusCode::kTruncated) << "prefix " << n << " of " << full.size() << ": " << st.ToString();
  }
}

TEST(Png, CorruptChecksumsAndDataAreCorrupt) {
  PngSpec spec;
  spec.width = 30;
  spec.height = 20;
  const Bytes good = EncodePng(spec, Pattern(30, 20, 3));
  {
    Bytes bad = good;
    bad[8 + 8 + 13] ^= 0x55;  // IHDR's CRC
    const Status st = DecodeStatus(bad);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
  }
  {
    Bytes bad = good;
    bad[8 + 8 + 8] = 7;  // IHDR color type 7 does not exist (CRC now wrong too)
    EXPECT_EQ(DecodeStatus(bad).code(), StatusCode::kCorrupt);
  }
  {
    // Damage inside IDAT: a CRC mismatch of a critical chunk.
    Bytes bad = good;
    bad[good.size() / 2] ^= 0xFF;
    const Status st = DecodeStatus(bad);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
    EXPECT_NE(st.message().find("PNG 30x20 RGB 8-bit"), std::string::npos) << st.message();
  }
}

TEST(Png, HugeHeaderIsRejectedBeforeAllocation) {
  // libspng's encoder would not write a 10^10-pixel header without the pixels, so encode
  // a 1x1 image and patch IHDR's width, height and CRC by hand.
  PngSpec spec;
  spec.width = 1;
  spec.height = 1;
  spec.color_type = SPNG_COLOR_TYPE_GRAYSCALE;
  Bytes png = EncodePng(spec, Bytes{0});
  auto put32 = [&](size_t at, uint32_t v) {
    png[at] = static_cast<uint8_t>(v >> 24);
    png[at + 1] = static_cast<uint8_t>(v >> 16);
    png[at + 2] = static_cast<uint8_t>(v >> 8);
    png[at + 3] = static_cast<uint8_t>(v);
  };
  put32(16, 100000);
  put32(20, 100000);
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 12; i < 12 + 4 + 13; ++i) {
    crc ^= png[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  put32(29, ~crc);
  auto probe = ProbeEncodedImage(png.data(), png.size(), ImageLimits{});
  EXPECT_EQ(probe.status().code(), StatusCode::kUnsupported) << probe.status().ToString();
  EXPECT_NE(probe.status().message().find("100000x100000"), std::string::npos) << probe.status().message();
}

// ---- format detection and output buffer ------------------------------------------------

TEST(Encoded, UnknownEmptyAndSignaturePrefixes) {
  const Bytes gif = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
  const Status st = DecodeStatus(gif);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("47 49 46 38"), std::string::npos) << st.message();
  EXPECT_EQ(DecodeStatus(Bytes{}).code(), StatusCode::kCorrupt);
  EXPECT_EQ(DecodeStatus(Bytes{0x89, 'P', 'N'}).code(), StatusCode::kTruncated);
  EXPECT_EQ(DecodeStatus(Bytes{0xFF, 0xD8}).code(), StatusCode::kTruncated);
}

TEST(Encoded, OutputTooSmallIsInvalidArgument) {
  const Bytes data = EncodeJpeg(Pattern(8, 8, 3), 8, 8, TJPF_RGB, TJSAMP_444, 90);
  Bytes out(8 * 8 * 3 - 1);
  auto r = DecodeEncodedImage(data.data(), data.size(), {}, out.data(), static_cast<int64_t>(out.size()));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(Encoded, RandomBytesNeverSucceedOrCrash) {
  std::mt19937 rng(11);
  const Bytes jpeg = EncodeJpeg(Pattern(16, 16, 3), 16, 16, TJPF_RGB, TJSAMP_420, 75);
  PngSpec spec;
  spec.width = 16;
  spec.height = 16;
  const Bytes png = EncodePng(spec, Pattern(16, 16, 3));
  for (int i = 0; i < 300; ++i) {
    Bytes data = (i % 2 == 0) ? jpeg : png;
    // Keep the signature, mutate a few bytes after it.
    for (int k = 0; k < 4; ++k) data[8 + rng() % (data.size() - 8)] = static_cast<uint8_t>(rng());
    Bytes out(size_t{16} * 16 * 4);
    auto r = DecodeEncodedImage(data.data(), data.size(), {}, out.data(), static_cast<int64_t>(out.size()));
    if (!r.ok()) {
      EXPECT_NE(r.status().code(), StatusCode::kInternal) << r.status().ToString();
    }
  }
}

// ---- raw --------------------------------------------------------------------------------

RawImageFormat Raw(int64_t w, int64_t h, int color_model, int datatype = 6, int pixel_format = 0) {
  return RawImageFormat{w, h, color_model, datatype, pixel_format};
}

TEST(Raw, LayoutsAndChannelOrder) {
  struct Case {
    int color_model;
    int channels;
    std::vector<int> order;
  };
  for (const Case& c : {Case{1, 1, {0}}, Case{2, 3, {0, 1, 2}}, Case{3, 4, {0, 1, 2, 3}}, Case{4, 3, {2, 1, 0}},
                        Case{5, 4, {2, 1, 0, 3}}}) {
    SCOPED_TRACE(c.color_model);
    const Bytes px = Pattern(7, 5, c.channels, 9);
    const RawImageFormat f = Raw(7, 5, c.color_model);
    auto probed = ProbeRawImage(px.size(), f, {});
    ASSERT_TRUE(probed.ok()) << probed.status().ToString();
    Decoded d;
    d.planar.resize(static_cast<size_t>(probed->num_bytes()));
    auto shape = DecodeRawImage(px.data(), px.size(), f, {}, d.planar.data(), probed->num_bytes());
    ASSERT_TRUE(shape.ok()) << shape.status().ToString();
    d.shape = *shape;
    EXPECT_EQ(d.shape.channels, c.channels);
    EXPECT_EQ(MeanAbsDiff(d, px, c.order), 0.0);
  }
}

TEST(Raw, WrongBufferSizesAreCorrupt) {
  for (size_t size : {size_t{0}, (size_t{7} * 5 * 3) - 1, (size_t{7} * 5 * 3) + 1, size_t{7} * 5}) {
    auto r = ProbeRawImage(size, Raw(7, 5, 2), {});
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << size;
    EXPECT_NE(r.status().message().find("needs 105 bytes"), std::string::npos) << r.status().message();
  }
}

TEST(Raw, UnsupportedFormatsAreNamed) {
  auto u16 = ProbeRawImage(size_t{7} * 5 * 6, Raw(7, 5, 2, /*U16*/ 8), {});
  EXPECT_EQ(u16.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(u16.status().message().find("U16"), std::string::npos) << u16.status().message();
  auto nv12 = ProbeRawImage(6 * 4 * 3 / 2, Raw(6, 4, 0, 0, /*NV12*/ 26), {});
  EXPECT_EQ(nv12.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(nv12.status().message().find("NV12"), std::string::npos) << nv12.status().message();
  auto unset = ProbeRawImage(35, Raw(7, 5, 0), {});
  EXPECT_EQ(unset.status().code(), StatusCode::kUnsupported);
  auto unknown = ProbeRawImage(35, Raw(7, 5, 9), {});
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(unknown.status().message().find("unknown (9)"), std::string::npos) << unknown.status().message();
}

TEST(Raw, DimensionsAndLimits) {
  EXPECT_EQ(ProbeRawImage(0, Raw(-1, 5, 1), {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ProbeRawImage(0, Raw(int64_t{1} << 32, 1, 1), {}).status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(ProbeRawImage(0, Raw(100000, 100000, 1), {}).status().code(), StatusCode::kUnsupported);
  ImageLimits tight;
  tight.max_pixels = 34;
  EXPECT_EQ(ProbeRawImage(35, Raw(7, 5, 1), tight).status().code(), StatusCode::kUnsupported);
  auto empty = ProbeRawImage(0, Raw(0, 0, 2), {});
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(empty->num_bytes(), 0);
}

TEST(Raw, OutputTooSmallIsInvalidArgument) {
  const Bytes px(size_t{7} * 5 * 3, 1);
  Bytes out(7 * 5 * 3 - 1);
  auto r = DecodeRawImage(px.data(), px.size(), Raw(7, 5, 2), {}, out.data(), static_cast<int64_t>(out.size()));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rrl::decode
