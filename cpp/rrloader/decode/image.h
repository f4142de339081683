// rrloader/decode/image.h — still-image decoding into planar [C, H, W] uint8 tensors.
//
// Encoded images (Rerun's EncodedImage:blob) are JPEG (libjpeg-turbo's TurboJPEG API) or
// PNG (libspng), detected from their magic bytes. Raw images (Rerun's Image:buffer with its
// Image:format) are 8-bit L, RGB, RGBA, BGR or BGRA pixel buffers, converted to L/RGB/RGBA.
// Channel counts and values follow what Pillow + torchvision's pil_to_tensor give for the
// same bytes, pixel for pixel (L -> 1, RGB -> 3, CMYK JPEG -> 4 as Pillow's inverted CMYK,
// gray+alpha -> 2, RGBA -> 4), except where noted in image.cc (palette PNGs are expanded
// to RGB/RGBA).
//
// Thread safety: every function is reentrant and may run concurrently on any threads;
// codec handles are created per call and never shared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "rrloader/common/status.h"

namespace rrl::decode {

// ImageLimits: safety limits applied before any pixel is decoded, and the one output choice.
struct ImageLimits {
  // max_pixels: width * height above this is rejected as unsupported (default 2^28, i.e.
  // ~268 MP, ~805 MB as RGB), so a hostile header cannot make us allocate gigabytes.
  int64_t max_pixels = int64_t{1} << 28;
  // palette_indices: a palette PNG gives its palette indices as one channel (Pillow's mode
  // "P", what rerun-sdk 0.41's ImageDecoder returns) instead of the colours as RGB/RGBA
  // (default false, the seed API's rule).
  bool palette_indices = false;
};

// ImageShape: channels, height and width of a decoded image.
struct ImageShape {
  int channels = 0;
  int height = 0;
  int width = 0;
  int64_t num_bytes() const { return int64_t{channels} * height * width; }
};

// ProbeEncodedImage: the shape DecodeEncodedImage will produce, reading headers only (a
// JPEG's marker segments up to its frame header; a PNG's chunks up to its first IDAT).
// Errors: kCorrupt for an empty blob or bad headers, kTruncated when the data ends inside
// them, kUnsupported for other formats (the message shows the first bytes), 16-bit PNGs,
// 12-bit/lossless/hierarchical JPEGs and images above `limits`. A successful probe does not
// promise a successful decode (the image data is not read).
[[nodiscard]] Result<ImageShape> ProbeEncodedImage(const uint8_t* data, size_t size, const ImageLimits& limits);

// DecodeEncodedImage: decodes a JPEG or PNG into `out` as planar C×H×W uint8 (row-major
// within each plane). `out_capacity` must be at least the probed shape's num_bytes()
// (else kInvalidArgument, before anything is decoded). Returns the shape written.
// kTruncated: the data ends before the JPEG end-of-image marker or the PNG IEND chunk.
// kCorrupt: invalid headers, checksums or compressed data, including anything libjpeg
// only warns about (Pillow would return the damaged pixels). kUnsupported: as for
// ProbeEncodedImage, plus progressive JPEGs of more than 500 scans. On error `out` holds
// unspecified bytes. Channel rules (Pillow's) are listed in image.cc.
[[nodiscard]] Result<ImageShape> DecodeEncodedImage(const uint8_t* data, size_t size, const ImageLimits& limits,
                                                    uint8_t* out, int64_t out_capacity);

// RawImageFormat: Rerun's ImageFormat struct fields that matter for 8-bit images.
struct RawImageFormat {
  int64_t width = 0;
  int64_t height = 0;
  int color_model = 0;       // Rerun ColorModel enum value (L, RGB, RGBA, BGR, BGRA)
  int channel_datatype = 0;  // Rerun ChannelDatatype enum value (only U8 is supported)
  int pixel_format = 0;      // Rerun PixelFormat enum value; 0 = not set (must be 0 here)
};

// ProbeRawImage: the output shape for a raw buffer of `size` bytes in `format`. Errors:
// kUnsupported for a set pixel_format, a channel datatype other than U8, a color model
// other than L/RGB/RGBA/BGR/BGRA, or more pixels than `limits` allow (messages name what
// was found); kInvalidArgument for negative dimensions; kCorrupt when `size` is not
// exactly width * height * channels. A 0-pixel image is valid (0 bytes).
[[nodiscard]] Result<ImageShape> ProbeRawImage(size_t size, const RawImageFormat& format, const ImageLimits& limits);

// DecodeRawImage: converts an interleaved 8-bit buffer into planar C×H×W (BGR(A) is
// reordered to RGB(A)). Errors as ProbeRawImage, plus kInvalidArgument when
// `out_capacity` is below the shape's num_bytes().
[[nodiscard]] Result<ImageShape> DecodeRawImage(const uint8_t* data, size_t size, const RawImageFormat& format,
                                                const ImageLimits& limits, uint8_t* out, int64_t out_capacity);

}  // namespace rrl::decode
