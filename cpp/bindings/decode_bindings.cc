// cpp/bindings/decode_bindings.cc — decode-layer entry points used by tests and by the
// decoders' direct `decode(raw, ...)` calls (internal).
//
//   _core.decode_encoded_image(data, *, max_pixels=2**28) -> numpy uint8 [C, H, W]
//   _core.decode_raw_image(data, width, height, color_model, channel_datatype,
//                          pixel_format=0, *, max_pixels=2**28) -> numpy uint8 [C, H, W]
//
// `data` is any C-contiguous bytes-like object (bytes, bytearray, memoryview, numpy
// array); it is read in place, without a copy, while the GIL is released. The result owns
// its memory (a capsule frees it when the last numpy reference goes). Failures raise the
// classes of the exception table in module.cc (kTruncated -> RrdTruncatedError, ...).
#include <nanobind/ndarray.h>

#include <cstdint>
#include <memory>

#include "bindings/common.h"
#include "rrloader/decode/image.h"

namespace rrl_bindings {
namespace {

using namespace nb::literals;
using ImageArray = nb::ndarray<nb::numpy, uint8_t, nb::ndim<3>, nb::c_contig>;

// ByteView: a read-only view of a bytes-like object's buffer, held (and the object kept
// alive) until destruction. Construct and destroy with the GIL held; the bytes may be read
// without it. Not thread-safe; one per call.
class ByteView {
 public:
  explicit ByteView(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) throw nb::python_error();
  }
  ~ByteView() { PyBuffer_Release(&view_); }
  ByteView(const ByteView&) = delete;
  ByteView& operator=(const ByteView&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

rrl::decode::ImageLimits Limits(int64_t max_pixels) {
  rrl::decode::ImageLimits limits;
  limits.max_pixels = max_pixels;
  return limits;
}

// ToArray: hands `pixels` over to a numpy array of `shape`; the capsule frees it.
ImageArray ToArray(std::unique_ptr<uint8_t[]> pixels, const rrl::decode::ImageShape& shape) {
  uint8_t* ptr = pixels.get();
  nb::capsule owner(ptr, [](void* p) noexcept { delete[] static_cast<uint8_t*>(p); });
  pixels.release();  // owned by the capsule from here on
  return ImageArray(
      ptr, {static_cast<size_t>(shape.channels), static_cast<size_t>(shape.height), static_cast<size_t>(shape.width)},
      owner);
}

ImageArray DecodeEncodedImage(nb::handle data, int64_t max_pixels, bool palette_indices) {
  ByteView view(data);
  rrl::decode::ImageLimits limits = Limits(max_pixels);
  limits.palette_indices = palette_indices;
  std::unique_ptr<uint8_t[]> pixels;
  rrl::decode::ImageShape shape;
  {
    nb::gil_scoped_release release;
    const rrl::decode::ImageShape probed = Unwrap(rrl::decode::ProbeEncodedImage(view.data(), view.size(), limits));
    pixels.reset(new uint8_t[static_cast<size_t>(probed.num_bytes())]);
    shape = Unwrap(rrl::decode::DecodeEncodedImage(view.data(), view.size(), limits, pixels.get(), probed.num_bytes()));
  }
  return ToArray(std::move(pixels), shape);
}

ImageArray DecodeRawImage(nb::handle data, int64_t width, int64_t height, int color_model, int channel_datatype,
                          int pixel_format, int64_t max_pixels) {
  ByteView view(data);
  const rrl::decode::ImageLimits limits = Limits(max_pixels);
  const rrl::decode::RawImageFormat format{width, height, color_model, channel_datatype, pixel_format};
  std::unique_ptr<uint8_t[]> pixels;
  rrl::decode::ImageShape shape;
  {
    nb::gil_scoped_release release;
    const rrl::decode::ImageShape probed = Unwrap(rrl::decode::ProbeRawImage(view.size(), format, limits));
    pixels.reset(new uint8_t[static_cast<size_t>(probed.num_bytes())]);
    shape =
        Unwrap(rrl::decode::DecodeRawImage(view.data(), view.size(), format, limits, pixels.get(), probed.num_bytes()));
  }
  return ToArray(std::move(pixels), shape);
}

}  // namespace

void BindDecode(nanobind::module_& m) {
  const int64_t default_max_pixels = rrl::decode::ImageLimits{}.max_pixels;
  m.attr("DEFAULT_IMAGE_MAX_PIXELS") = default_max_pixels;
  m.def("decode_encoded_image", &DecodeEncodedImage, "data"_a, nb::kw_only(), "max_pixels"_a = default_max_pixels,
        "palette_indices"_a = false,
        "Decodes a JPEG or PNG (bytes-like) into a uint8 numpy array [C, H, W]; a palette PNG gives its indices "
        "[1, H, W] with palette_indices (internal; GIL released).");
  m.def("decode_raw_image", &DecodeRawImage, "data"_a, "width"_a, "height"_a, "color_model"_a, "channel_datatype"_a,
        "pixel_format"_a = 0, nb::kw_only(), "max_pixels"_a = default_max_pixels,
        "Converts a raw Rerun Image buffer (8-bit L/RGB/RGBA/BGR/BGRA, interleaved) into a uint8 numpy array "
        "[C, H, W] (internal; GIL released).");
}

}  // namespace rrl_bindings
