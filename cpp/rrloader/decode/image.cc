// rrloader/decode/image.cc — JPEG (TurboJPEG), PNG (libspng) and raw Rerun images to
// planar [C, H, W] uint8.
//
// The reference is Pillow + torchvision's pil_to_tensor for the same bytes, pixel for
// pixel (tests/python/test_image_decode.py checks it):
//   JPEG  1 component -> 1 channel (L); 3 -> 3 (RGB, accurate "islow" IDCT and fancy
//         upsampling, libjpeg's defaults, which Pillow uses too); 4 (CMYK or YCCK) -> 4
//         channels inverted, because Pillow always reads 4-component JPEGs as "CMYK;I"
//         (Adobe's inverted polarity).
//   PNG   gray -> 1 (1/2/4-bit gray scaled to 0..255, like Pillow's "L" and pil_to_tensor's
//         255 * mode "1"); gray+alpha -> 2; RGB -> 3; RGBA -> 4; tRNS of non-palette
//         images is ignored (Pillow keeps it in .info only). Gamma, sRGB and ICC chunks
//         are never applied (Pillow does not apply them either).
// Our own choices, where Pillow differs or has no answer:
//   - palette PNGs are expanded to RGB, or RGBA when they carry tRNS (Pillow returns
//     palette indices; we equal its .convert("RGB") / .convert("RGBA")), unless
//     ImageLimits::palette_indices asks for Pillow's indices (one byte per pixel, 1/2/4-bit
//     indices unpacked);
//   - 16-bit PNGs, 12-bit and lossless/hierarchical JPEGs are kUnsupported;
//   - a JPEG without its end-of-image marker, or a PNG without IEND, is kTruncated (Pillow
//     accepts a PNG missing IEND; we never hand out an image from a blob cut short);
//   - any libjpeg warning ("Corrupt JPEG data: ...") is kCorrupt: Pillow silences them and
//     returns whatever pixels were reconstructed, which for training data is silent garbage;
//   - progressive JPEGs with more than 500 scans are kUnsupported (TurboJPEG's scan limit,
//     a known denial-of-service shape).
#include "rrloader/decode/image.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "rrloader/decode/pixels.h"
#include "rrloader/decode/spng.h"
#include "rrloader/decode/turbojpeg.h"

namespace rrl::decode {
namespace {

constexpr uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
constexpr uint8_t kJpegMagic[3] = {0xFF, 0xD8, 0xFF};

enum class EncodedFormat { kJpeg, kPng };

std::string Dims(int64_t width, int64_t height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

// HexPrefix: the first bytes of an unrecognised blob, for error messages.
std::string HexPrefix(const uint8_t* data, size_t size) {
  std::string out;
  const size_t n = std::min<size_t>(size, 8);
  for (size_t i = 0; i < n; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof(buf), "%02x", data[i]);
    if (i > 0) out += ' ';
    out += buf;
  }
  return out;
}

bool IsPrefixOf(const uint8_t* data, size_t size, const uint8_t* magic, size_t magic_size) {
  return size < magic_size && std::memcmp(data, magic, size) == 0;
}

Result<EncodedFormat> DetectFormat(const uint8_t* data, size_t size) {
  // An empty blob is not "cut short" in any meaningful sense: nothing of an image was
  // written, so it is corrupt rather than truncated.
  if (size == 0 || data == nullptr) return Status::Corrupt("encoded image is empty (0 bytes)");
  if (size >= sizeof(kJpegMagic) && std::memcmp(data, kJpegMagic, sizeof(kJpegMagic)) == 0) {
    return EncodedFormat::kJpeg;
  }
  if (size >= sizeof(kPngMagic) && std::memcmp(data, kPngMagic, sizeof(kPngMagic)) == 0) return EncodedFormat::kPng;
  if (IsPrefixOf(data, size, kJpegMagic, sizeof(kJpegMagic)) || IsPrefixOf(data, size, kPngMagic, sizeof(kPngMagic))) {
    return Status::Truncated("encoded image of " + std::to_string(size) +
                             " bytes ends inside the JPEG/PNG signature (truncated)");
  }
  return Status::Unsupported("encoded image is neither JPEG nor PNG (first bytes: " + HexPrefix(data, size) + ", " +
                             std::to_string(size) + " bytes)");
}

Status CheckPixelLimit(const char* what, int64_t width, int64_t height, const ImageLimits& limits) {
  // width and height are at most 2^31 here, so the product cannot overflow int64.
  const int64_t pixels = width * height;
  if (pixels > limits.max_pixels) {
    return Status::Unsupported(std::string(what) + " " + Dims(width, height) + " has " + std::to_string(pixels) +
                               " pixels, above the limit of " + std::to_string(limits.max_pixels) +
                               " (ImageLimits::max_pixels)");
  }
  return Status::OK();
}

Status CheckOutput(const ImageShape& shape, const uint8_t* out, int64_t out_capacity) {
  if (out_capacity < shape.num_bytes() || (out == nullptr && shape.num_bytes() > 0)) {
    return Status::InvalidArgument("output buffer of " + std::to_string(out_capacity) + " bytes is too small for a " +
                                   std::to_string(shape.channels) + "x" + std::to_string(shape.height) + "x" +
                                   std::to_string(shape.width) + " image (" + std::to_string(shape.num_bytes()) +
                                   " bytes)");
  }
  return Status::OK();
}

// InterleavedToPlanar: HWC -> CHW. `order[c]` is the source channel of output channel c
// (BGR input uses {2, 1, 0}); `invert` stores 255 - v (Pillow's inverted CMYK). The
// channel count is a template parameter so the inner loop is unrolled.
template <int kChannels>
void InterleavedToPlanarN(const uint8_t* src, int64_t pixels, const int* order, bool invert, uint8_t* dst) {
  if (kChannels == 3 && !invert && order[0] == 0 && order[1] == 1 && order[2] == 2) {
    DeinterleaveRgb(src, pixels, dst, dst + pixels, dst + 2 * pixels);  // RGB: JPEG's usual case
    return;
  }
  if (!invert && order[0] == 0 && order[1] == 1 && (kChannels < 3 || order[2] == 2) &&
      (kChannels < 4 || order[3] == 3)) {
    // The common case (RGB/RGBA in channel order) in one pass over the source, with the
    // channel offsets known at compile time so the compiler can vectorize the shuffles.
    uint8_t* d[kChannels];
    for (int c = 0; c < kChannels; ++c) d[c] = dst + c * pixels;
    for (int64_t i = 0; i < pixels; ++i) {
      for (int c = 0; c < kChannels; ++c) d[c][i] = src[i * kChannels + c];
    }
    return;
  }
  for (int c = 0; c < kChannels; ++c) {
    const uint8_t* s = src + order[c];
    uint8_t* d = dst + c * pixels;
    if (invert) {
      for (int64_t i = 0; i < pixels; ++i) d[i] = static_cast<uint8_t>(255 - s[i * kChannels]);
    } else {
      for (int64_t i = 0; i < pixels; ++i) d[i] = s[i * kChannels];
    }
  }
}

void InterleavedToPlanar(const uint8_t* src, int channels, int64_t pixels, const int* order, bool invert,
                         uint8_t* dst) {
  switch (channels) {
    case 1: InterleavedToPlanarN<1>(src, pixels, order, invert, dst); break;
    case 2: InterleavedToPlanarN<2>(src, pixels, order, invert, dst); break;
    case 3: InterleavedToPlanarN<3>(src, pixels, order, invert, dst); break;
    default: InterleavedToPlanarN<4>(src, pixels, order, invert, dst); break;
  }
}

constexpr int kIdentityOrder[4] = {0, 1, 2, 3};

// Scratch: an uninitialised interleaved buffer, or `out` itself for one channel (where
// interleaved and planar coincide). The buffer is per thread and kept between calls (up to
// kKeptScratchBytes): a fresh multi-megabyte allocation per image costs the kernel a page
// fault and a page clear per 4 KiB, as much as the deinterleave itself.
constexpr size_t kKeptScratchBytes = size_t{64} << 20;

struct Scratch {
  std::unique_ptr<uint8_t[]> owned;  // only for images larger than the kept buffer
  uint8_t* data = nullptr;
};

Scratch InterleavedBuffer(const ImageShape& shape, uint8_t* out) {
  thread_local std::unique_ptr<uint8_t[]> kept;
  thread_local size_t kept_size = 0;
  Scratch s;
  const auto need = static_cast<size_t>(shape.num_bytes());
  if (shape.channels == 1) {
    s.data = out;
  } else if (need <= kKeptScratchBytes) {
    if (kept_size < need) {
      kept.reset(new uint8_t[need]);
      kept_size = need;
    }
    s.data = kept.get();
  } else {
    s.owned.reset(new uint8_t[need]);
    s.data = s.owned.get();
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// JPEG

// JpegStructure: what our own marker walk learns. TurboJPEG 2.1 reports neither the
// component count nor the frame type, and its header call rejects valid files whose
// chroma sampling it cannot name; more importantly it cannot tell a file cut short from a
// complete one, which the walk to the end-of-image marker does.
struct JpegStructure {
  int width = 0;
  int height = 0;
  int components = 0;
  int precision = 0;
  uint8_t sof_marker = 0;
  bool saw_eoi = false;
};

bool IsSofMarker(uint8_t m) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

const char* JpegProcessName(uint8_t sof) {
  switch (sof) {
    case 0xC0: return "baseline";
    case 0xC1: return "extended sequential";
    case 0xC2: return "progressive";
    case 0xC3: return "lossless";
    case 0xC5: return "differential sequential (hierarchical)";
    case 0xC6: return "differential progressive (hierarchical)";
    case 0xC7: return "differential lossless (hierarchical)";
    case 0xC9: return "arithmetic sequential";
    case 0xCA: return "arithmetic progressive";
    case 0xCB: return "arithmetic lossless";
    case 0xCD: return "arithmetic differential sequential (hierarchical)";
    case 0xCE: return "arithmetic differential progressive (hierarchical)";
    case 0xCF: return "arithmetic differential lossless (hierarchical)";
    default: return "unknown";
  }
}

std::string JpegTruncatedMessage(size_t size, const char* where) {
  return "JPEG data ends at byte " + std::to_string(size) + " " + where + " (truncated)";
}

// WalkJpeg: parses the marker segments from SOI up to the frame header, and with
// `to_eoi` on through every scan to the end-of-image marker. Marker synchronisation
// mirrors libjpeg's (bytes before a 0xFF are skipped, 0xFF fill bytes are skipped), so
// the frame header we read is the one libjpeg reads.
Result<JpegStructure> WalkJpeg(const uint8_t* data, size_t size, bool to_eoi) {
  JpegStructure js;
  bool have_sof = false;
  bool in_scan = false;  // after an SOS header: entropy-coded data until the next marker
  size_t pos = 2;        // after SOI (checked by DetectFormat)
  while (true) {
    // Find the next marker.
    uint8_t marker = 0;
    while (true) {
      if (in_scan) {
        const void* ff = pos < size ? std::memchr(data + pos, 0xFF, size - pos) : nullptr;
        if (ff == nullptr) return Status::Truncated(JpegTruncatedMessage(size, "inside entropy-coded data"));
        pos = static_cast<size_t>(static_cast<const uint8_t*>(ff) - data);
      } else {
        while (pos < size && data[pos] != 0xFF) ++pos;
      }
      while (pos < size && data[pos] == 0xFF) ++pos;
      if (pos >= size) {
        return Status::Truncated(JpegTruncatedMessage(size, in_scan ? "inside entropy-coded data" : "before a marker"));
      }
      const uint8_t code = data[pos++];
      // 0xFF00 is a stuffed data byte; RSTn separate restart intervals inside a scan.
      if (code == 0x00) continue;
      if (in_scan && code >= 0xD0 && code <= 0xD7) continue;
      marker = code;
      break;
    }
    if (marker == 0xD9) {  // EOI
      if (!in_scan) return Status::Corrupt("JPEG end-of-image marker before any scan (no image data)");
      js.saw_eoi = true;
      return js;
    }
    if (marker == 0xD8) {
      return Status::Corrupt("JPEG has a second start-of-image marker at byte " + std::to_string(pos - 2));
    }
    if ((marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) continue;  // no length field
    if (pos + 2 > size) return Status::Truncated(JpegTruncatedMessage(size, "inside a marker length"));
    const size_t length = (size_t{data[pos]} << 8) | data[pos + 1];
    if (length < 2) {
      return Status::Corrupt("JPEG marker 0xFF" + HexPrefix(&marker, 1) + " at byte " + std::to_string(pos - 2) +
                             " has an invalid length " + std::to_string(length));
    }
    if (pos + length > size) {
      return Status::Truncated(JpegTruncatedMessage(size, "inside a marker segment"));
    }
    const uint8_t* seg = data + pos + 2;
    const size_t seg_len = length - 2;
    if (IsSofMarker(marker)) {
      if (have_sof) return Status::Corrupt("JPEG has two frame (SOF) headers");
      if (seg_len < 6) return Status::Corrupt("JPEG frame header is too short");
      js.sof_marker = marker;
      js.precision = seg[0];
      js.height = (seg[1] << 8) | seg[2];
      js.width = (seg[3] << 8) | seg[4];
      js.components = seg[5];
      if (seg_len != 6 + size_t{3} * static_cast<size_t>(js.components)) {
        return Status::Corrupt("JPEG frame header length " + std::to_string(length) + " does not match its " +
                               std::to_string(js.components) + " components");
      }
      have_sof = true;
      if (!to_eoi) return js;
    } else if (marker == 0xDA) {  // SOS
      if (!have_sof) return Status::Corrupt("JPEG scan (SOS) before the frame header (SOF)");
      in_scan = true;
    }
    pos += length;
  }
}

// JpegShape: validates what we support and gives the output shape.
Result<ImageShape> JpegShape(const JpegStructure& js, const ImageLimits& limits) {
  const std::string what = "JPEG " + Dims(js.width, js.height);
  switch (js.sof_marker) {
    case 0xC0:
    case 0xC1:
    case 0xC2:
    case 0xC9:
    case 0xCA: break;
    default:
      return Status::Unsupported(what + ": the " + std::string(JpegProcessName(js.sof_marker)) +
                                 " JPEG process (SOF marker 0xFF" + HexPrefix(&js.sof_marker, 1) +
                                 ") is not supported");
  }
  if (js.precision != 8) {
    return Status::Unsupported(what + ": " + std::to_string(js.precision) +
                               "-bit JPEG samples are not supported (only 8-bit)");
  }
  if (js.height == 0) {
    return Status::Unsupported(what + ": a height defined by a DNL marker is not supported");
  }
  if (js.width == 0) return Status::Corrupt(what + ": the frame header says the width is 0");
  if (js.components != 1 && js.components != 3 && js.components != 4) {
    return Status::Unsupported(what + ": " + std::to_string(js.components) +
                               " color components are not supported (1, 3 or 4)");
  }
  RRL_RETURN_IF_ERROR(CheckPixelLimit("JPEG", js.width, js.height, limits));
  return ImageShape{js.components, js.height, js.width};
}

Result<ImageShape> DecodeJpeg(const uint8_t* data, size_t size, const ImageLimits& limits, uint8_t* out,
                              int64_t out_capacity) {
  RRL_ASSIGN_OR_RETURN(JpegStructure js, WalkJpeg(data, size, /*to_eoi=*/true));
  RRL_ASSIGN_OR_RETURN(ImageShape shape, JpegShape(js, limits));
  RRL_RETURN_IF_ERROR(CheckOutput(shape, out, out_capacity));
  const std::string what = "JPEG " + Dims(shape.width, shape.height) + " (" + std::to_string(shape.channels) +
                           (shape.channels == 1 ? " component)" : " components)");

  TjHandle tj = MakeTjDecompressor();
  if (!tj) return Status::Internal("TurboJPEG: cannot create a decompressor: " + std::string(tjGetErrorStr2(nullptr)));
  const int pixel_format = shape.channels == 1 ? TJPF_GRAY : shape.channels == 3 ? TJPF_RGB : TJPF_CMYK;
  Scratch scratch = InterleavedBuffer(shape, out);
  // Default decompression is libjpeg's accurate integer IDCT with fancy upsampling (what
  // Pillow uses). STOPONWARNING: a warning means damaged data (see the file comment).
  // LIMITSCANS: at most 500 progressive scans.
  const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  // The destination is exactly width x height x channels; TurboJPEG writes at most that,
  // since it never scales above the requested size (and our walk read the same SOF).
  if (tjDecompress2(tj.get(), data, static_cast<unsigned long>(size), scratch.data, shape.width, /*pitch=*/0,
                    shape.height, pixel_format, flags) != 0) {
    const std::string message = tjGetErrorStr2(tj.get());
    if (message.find("more than 500 scans") != std::string::npos) {
      return Status::Unsupported(what + ": progressive JPEG with more than 500 scans (TurboJPEG's scan limit)");
    }
    const bool warning = tjGetErrorCode(tj.get()) == TJERR_WARNING;
    return Status::Corrupt(what + ": " + (warning ? "damaged data: " : "") + message);
  }
  if (shape.channels > 1) {
    // Pillow reads every 4-component JPEG as inverted ("CMYK;I", Adobe's convention).
    InterleavedToPlanar(scratch.data, shape.channels, int64_t{shape.height} * shape.width, kIdentityOrder,
                        /*invert=*/shape.channels == 4, out);
  }
  return shape;
}

// ---------------------------------------------------------------------------------------
// PNG

// Ancillary chunks libspng keeps in memory (text, ICC profile, EXIF, ...) are capped, each
// and in total, so a hostile file cannot make it allocate much. The cap does not apply to
// image data (IDAT), which is streamed (checked: a 100-byte cap still decodes a PNG with
// 12 KB IDAT chunks). libspng requires chunk cap <= total cap <= 2^31 - 1.
constexpr size_t kPngChunkBytesLimit = size_t{64} << 20;

const char* PngColorTypeName(int color_type) {
  switch (color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE: return "gray";
    case SPNG_COLOR_TYPE_TRUECOLOR: return "RGB";
    case SPNG_COLOR_TYPE_INDEXED: return "palette";
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: return "gray+alpha";
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: return "RGBA";
    default: return "invalid color type";
  }
}

Status PngError(const std::string& what, int err) {
  std::string message = what + ": " + spng_strerror(err);
  switch (err) {
    case SPNG_IO_EOF:
    case SPNG_EOF: return Status::Truncated(message + " (truncated)");
    case SPNG_EUSER_WIDTH:
    case SPNG_EUSER_HEIGHT:
    case SPNG_ECHUNK_LIMITS: return Status::Unsupported(message + " (decoder safety limit)");
    case SPNG_ECHUNK_UNKNOWN_CRITICAL: return Status::Unsupported(message);
    case SPNG_EMEM:
    case SPNG_EINVAL:
    case SPNG_EINTERNAL:
    case SPNG_EBUFSIZ:
    case SPNG_EBADSTATE:
    case SPNG_EFMT:
    case SPNG_EFLAGS:
    case SPNG_EOPSTATE:
    case SPNG_ENOSRC:
    case SPNG_ENODST:
    case SPNG_ECTXTYPE: return Status::Internal(message);
    default: return Status::Corrupt(message);
  }
}

// PngPlan: the libspng output format that yields Pillow's channel layout.
struct PngPlan {
  ImageShape shape;
  int spng_format = 0;
  int decode_flags = 0;
  int unpack_bits = 0;  // palette indices of 1/2/4 bits, packed by libspng: unpack them
  std::string what;     // "PNG 17x9 RGB 8-bit", for messages
};

Result<PngPlan> PlanPng(spng_ctx* ctx, const uint8_t* data, size_t size, const ImageLimits& limits) {
  int err = spng_set_png_buffer(ctx, data, size);
  if (err == 0) err = spng_set_chunk_limits(ctx, kPngChunkBytesLimit, kPngChunkBytesLimit);
  if (err != 0) return PngError("PNG", err);
  spng_ihdr ihdr{};
  err = spng_get_ihdr(ctx, &ihdr);
  if (err != 0) return PngError("PNG header", err);
  PngPlan plan;
  plan.what = "PNG " + Dims(ihdr.width, ihdr.height) + " " + PngColorTypeName(ihdr.color_type) + " " +
              std::to_string(ihdr.bit_depth) + "-bit" + (ihdr.interlace_method != 0 ? " interlaced" : "");
  if (ihdr.bit_depth == 16) {
    return Status::Unsupported("16-bit PNG is not supported; rrloader decodes 1/2/4/8-bit PNGs (" + plan.what + ")");
  }
  RRL_RETURN_IF_ERROR(CheckPixelLimit("PNG", ihdr.width, ihdr.height, limits));
  int channels = 0;
  switch (ihdr.color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
      channels = 1;
      plan.spng_format = SPNG_FMT_G8;  // scales 1/2/4-bit gray to 0..255
      break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
      channels = 2;
      plan.spng_format = SPNG_FMT_PNG;  // 8-bit gray+alpha as stored
      break;
    case SPNG_COLOR_TYPE_TRUECOLOR:
      channels = 3;
      plan.spng_format = SPNG_FMT_RGB8;
      break;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
      channels = 4;
      plan.spng_format = SPNG_FMT_RGBA8;
      break;
    case SPNG_COLOR_TYPE_INDEXED: {
      if (limits.palette_indices) {
        channels = 1;
        plan.spng_format = SPNG_FMT_PNG;  // the indices as stored
        if (ihdr.bit_depth < 8) plan.unpack_bits = ihdr.bit_depth;
        break;
      }
      spng_trns trns{};
      err = spng_get_trns(ctx, &trns);
      if (err == 0) {
        channels = 4;
        plan.spng_format = SPNG_FMT_RGBA8;
        plan.decode_flags = SPNG_DECODE_TRNS;
      } else if (err == SPNG_ECHUNKAVAIL) {
        channels = 3;
        plan.spng_format = SPNG_FMT_RGB8;
      } else {
        return PngError(plan.what, err);
      }
      break;
    }
    default: return Status::Corrupt(plan.what + ": invalid color type " + std::to_string(ihdr.color_type));
  }
  plan.shape = ImageShape{channels, static_cast<int>(ihdr.height), static_cast<int>(ihdr.width)};
  return plan;
}

// CheckPngEnd: after libspng accepted everything up to IEND, confirms IEND's CRC is
// present too (libspng stops reading at IEND's type field, so a file missing its last 4
// bytes would otherwise pass). The chunk lengths were validated by libspng already.
Status CheckPngEnd(const uint8_t* data, size_t size, const std::string& what) {
  static constexpr uint8_t kIendCrc[4] = {0xAE, 0x42, 0x60, 0x82};
  size_t pos = sizeof(kPngMagic);
  while (pos + 8 <= size) {
    const size_t length = (size_t{data[pos]} << 24) | (size_t{data[pos + 1]} << 16) | (size_t{data[pos + 2]} << 8) |
                          size_t{data[pos + 3]};
    if (std::memcmp(data + pos + 4, "IEND", 4) == 0) {
      if (pos + 12 > size) return Status::Truncated(what + ": the file ends inside the IEND chunk (truncated)");
      if (length != 0 || std::memcmp(data + pos + 8, kIendCrc, 4) != 0) {
        return Status::Corrupt(what + ": invalid IEND chunk");
      }
      return Status::OK();
    }
    pos += 12 + length;
  }
  return Status::Truncated(what + ": no IEND chunk before the end of the data (truncated)");
}

// DecodePackedIndices: a 1/2/4-bit palette PNG as one byte per pixel (its indices,
// most significant bits first within a byte, as PNG packs them).
Result<ImageShape> DecodePackedIndices(spng_ctx* ctx, const PngPlan& plan, size_t decoded_size, const uint8_t* data,
                                       size_t size, uint8_t* out) {
  const ImageShape shape = plan.shape;
  const int bits = plan.unpack_bits;
  const size_t row_bytes = (static_cast<size_t>(shape.width) * static_cast<size_t>(bits) + 7) / 8;
  if (decoded_size != row_bytes * static_cast<size_t>(shape.height)) {
    return Status::Internal(plan.what + ": libspng decodes " + std::to_string(decoded_size) + " bytes, expected " +
                            std::to_string(row_bytes * static_cast<size_t>(shape.height)));
  }
  std::vector<uint8_t> packed(decoded_size);
  int err = spng_decode_image(ctx, packed.data(), decoded_size, plan.spng_format, plan.decode_flags);
  if (err != 0) return PngError(plan.what, err);
  err = spng_decode_chunks(ctx);
  if (err != 0) return PngError(plan.what + " (after the image data)", err);
  RRL_RETURN_IF_ERROR(CheckPngEnd(data, size, plan.what));
  const int per_byte = 8 / bits;
  const auto mask = static_cast<uint8_t>((1 << bits) - 1);
  for (int y = 0; y < shape.height; ++y) {
    const uint8_t* row = packed.data() + static_cast<size_t>(y) * row_bytes;
    uint8_t* dst = out + static_cast<int64_t>(y) * shape.width;
    for (int x = 0; x < shape.width; ++x) {
      const int shift = 8 - bits * (x % per_byte + 1);
      dst[x] = static_cast<uint8_t>((row[x / per_byte] >> shift) & mask);
    }
  }
  return shape;
}

Result<ImageShape> DecodePng(const uint8_t* data, size_t size, const ImageLimits& limits, uint8_t* out,
                             int64_t out_capacity) {
  SpngCtx ctx = MakeSpngDecoder();
  if (!ctx) return Status::Internal("libspng: cannot create a decoder context");
  RRL_ASSIGN_OR_RETURN(PngPlan plan, PlanPng(ctx.get(), data, size, limits));
  const ImageShape shape = plan.shape;
  RRL_RETURN_IF_ERROR(CheckOutput(shape, out, out_capacity));
  size_t decoded_size = 0;
  int err = spng_decoded_image_size(ctx.get(), plan.spng_format, &decoded_size);
  if (err != 0) return PngError(plan.what, err);
  if (plan.unpack_bits != 0) return DecodePackedIndices(ctx.get(), plan, decoded_size, data, size, out);
  if (decoded_size != static_cast<size_t>(shape.num_bytes())) {
    return Status::Internal(plan.what + ": libspng decodes " + std::to_string(decoded_size) + " bytes, expected " +
                            std::to_string(shape.num_bytes()));
  }
  Scratch scratch = InterleavedBuffer(shape, out);
  err = spng_decode_image(ctx.get(), scratch.data, decoded_size, plan.spng_format, plan.decode_flags);
  if (err != 0) return PngError(plan.what, err);
  // Read on through the chunks after the image data up to IEND, so a file cut short after
  // its last IDAT is reported instead of silently accepted.
  err = spng_decode_chunks(ctx.get());
  if (err != 0) return PngError(plan.what + " (after the image data)", err);
  RRL_RETURN_IF_ERROR(CheckPngEnd(data, size, plan.what));
  if (shape.channels > 1) {
    InterleavedToPlanar(scratch.data, shape.channels, int64_t{shape.height} * shape.width, kIdentityOrder,
                        /*invert=*/false, out);
  }
  return shape;
}

// ---------------------------------------------------------------------------------------
// Raw (Rerun Image archetype)

// Rerun's enum values (rerun-sdk 0.41: rerun/encodings/{color_model,channel_datatype,
// pixel_format}.py, confirmed by the Image:format struct it writes to an .rrd).
constexpr int kColorModelL = 1;
constexpr int kColorModelRGB = 2;
constexpr int kColorModelRGBA = 3;
constexpr int kColorModelBGR = 4;
constexpr int kColorModelBGRA = 5;
constexpr int kChannelDatatypeU8 = 6;

std::string ColorModelName(int v) {
  switch (v) {
    case kColorModelL: return "L";
    case kColorModelRGB: return "RGB";
    case kColorModelRGBA: return "RGBA";
    case kColorModelBGR: return "BGR";
    case kColorModelBGRA: return "BGRA";
    case 0: return "unset (0)";
    default: return "unknown (" + std::to_string(v) + ")";
  }
}

std::string ChannelDatatypeName(int v) {
  switch (v) {
    case 6: return "U8";
    case 7: return "I8";
    case 8: return "U16";
    case 9: return "I16";
    case 10: return "U32";
    case 11: return "I32";
    case 12: return "U64";
    case 13: return "I64";
    case 33: return "F16";
    case 34: return "F32";
    case 35: return "F64";
    case 0: return "unset (0)";
    default: return "unknown (" + std::to_string(v) + ")";
  }
}

std::string PixelFormatName(int v) {
  switch (v) {
    case 20: return "Y_U_V12_LimitedRange";
    case 26: return "NV12";
    case 27: return "YUY2";
    case 30: return "Y8_FullRange";
    case 39: return "Y_U_V24_LimitedRange";
    case 40: return "Y_U_V24_FullRange";
    case 41: return "Y8_LimitedRange";
    case 44: return "Y_U_V12_FullRange";
    case 49: return "Y_U_V16_LimitedRange";
    case 50: return "Y_U_V16_FullRange";
    case 128: return "BayerRGGB8";
    case 129: return "BayerBGGR8";
    case 130: return "BayerGBRG8";
    case 131: return "BayerGRBG8";
    default: return "unknown (" + std::to_string(v) + ")";
  }
}

// RawChannels: channel count and the source channel of each output channel.
struct RawLayout {
  int channels = 0;
  int order[4] = {0, 1, 2, 3};
};

Result<RawLayout> RawLayoutOf(const RawImageFormat& f) {
  // Rerun: a set pixel_format takes precedence over color_model and channel_datatype.
  if (f.pixel_format != 0) {
    return Status::Unsupported("raw image " + Dims(f.width, f.height) + " with pixel_format " +
                               PixelFormatName(f.pixel_format) +
                               " is not supported; only 8-bit L/RGB/RGBA/BGR/BGRA without a pixel_format are");
  }
  if (f.channel_datatype != kChannelDatatypeU8) {
    return Status::Unsupported("raw image " + Dims(f.width, f.height) + " " + ColorModelName(f.color_model) +
                               " with channel datatype " + ChannelDatatypeName(f.channel_datatype) +
                               " is not supported; only U8 is");
  }
  RawLayout l;
  switch (f.color_model) {
    case kColorModelL: l.channels = 1; break;
    case kColorModelRGB: l.channels = 3; break;
    case kColorModelRGBA: l.channels = 4; break;
    case kColorModelBGR:
      l.channels = 3;
      l.order[0] = 2;
      l.order[2] = 0;
      break;
    case kColorModelBGRA:
      l.channels = 4;
      l.order[0] = 2;
      l.order[2] = 0;
      break;
    default:
      return Status::Unsupported("raw image " + Dims(f.width, f.height) + " with color model " +
                                 ColorModelName(f.color_model) + " is not supported; only L, RGB, RGBA, BGR, BGRA are");
  }
  return l;
}

Result<ImageShape> RawShape(size_t size, const RawImageFormat& f, const ImageLimits& limits, RawLayout* layout_out) {
  if (f.width < 0 || f.height < 0) {
    return Status::InvalidArgument("raw image has negative dimensions " + Dims(f.width, f.height));
  }
  constexpr int64_t kMaxSide = std::numeric_limits<int>::max();
  if (f.width > kMaxSide || f.height > kMaxSide) {
    return Status::Unsupported("raw image " + Dims(f.width, f.height) + " has a side above 2^31 - 1 pixels");
  }
  RRL_ASSIGN_OR_RETURN(RawLayout layout, RawLayoutOf(f));
  RRL_RETURN_IF_ERROR(CheckPixelLimit("raw image", f.width, f.height, limits));
  const ImageShape shape{layout.channels, static_cast<int>(f.height), static_cast<int>(f.width)};
  if (static_cast<uint64_t>(shape.num_bytes()) != static_cast<uint64_t>(size)) {
    return Status::Corrupt("raw image " + Dims(f.width, f.height) + " " + ColorModelName(f.color_model) + " U8 needs " +
                           std::to_string(shape.num_bytes()) + " bytes, the buffer has " + std::to_string(size));
  }
  if (layout_out != nullptr) *layout_out = layout;
  return shape;
}

}  // namespace

Result<ImageShape> ProbeEncodedImage(const uint8_t* data, size_t size, const ImageLimits& limits) {
  RRL_ASSIGN_OR_RETURN(EncodedFormat format, DetectFormat(data, size));
  if (format == EncodedFormat::kJpeg) {
    RRL_ASSIGN_OR_RETURN(JpegStructure js, WalkJpeg(data, size, /*to_eoi=*/false));
    return JpegShape(js, limits);
  }
  SpngCtx ctx = MakeSpngDecoder();
  if (!ctx) return Status::Internal("libspng: cannot create a decoder context");
  RRL_ASSIGN_OR_RETURN(PngPlan plan, PlanPng(ctx.get(), data, size, limits));
  return plan.shape;
}

Result<ImageShape> DecodeEncodedImage(const uint8_t* data, size_t size, const ImageLimits& limits, uint8_t* out,
                                      int64_t out_capacity) {
  RRL_ASSIGN_OR_RETURN(EncodedFormat format, DetectFormat(data, size));
  if (format == EncodedFormat::kJpeg) return DecodeJpeg(data, size, limits, out, out_capacity);
  return DecodePng(data, size, limits, out, out_capacity);
}

Result<ImageShape> ProbeRawImage(size_t size, const RawImageFormat& format, const ImageLimits& limits) {
  return RawShape(size, format, limits, nullptr);
}

Result<ImageShape> DecodeRawImage(const uint8_t* data, size_t size, const RawImageFormat& format,
                                  const ImageLimits& limits, uint8_t* out, int64_t out_capacity) {
  RawLayout layout;
  RRL_ASSIGN_OR_RETURN(ImageShape shape, RawShape(size, format, limits, &layout));
  RRL_RETURN_IF_ERROR(CheckOutput(shape, out, out_capacity));
  if (shape.num_bytes() == 0) return shape;
  if (data == nullptr) return Status::InvalidArgument("raw image buffer is null");
  const int64_t pixels = int64_t{shape.height} * shape.width;
  if (shape.channels == 1) {
    std::memcpy(out, data, static_cast<size_t>(pixels));
  } else {
    InterleavedToPlanar(data, shape.channels, pixels, layout.order, /*invert=*/false, out);
  }
  return shape;
}

}  // namespace rrl::decode
