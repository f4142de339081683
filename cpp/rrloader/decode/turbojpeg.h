// rrloader/decode/turbojpeg.h — RAII ownership of libjpeg-turbo's TurboJPEG handles (internal).
//
// Every TurboJPEG object we create is held by one of these unique_ptrs, so each exit path
// of a decoder (including early error returns) frees it. Written against the TurboJPEG 2.1
// API that Debian 12 ships (tjInitDecompress/tjDecompress2/tjDestroy); the 3.0 API (tj3*)
// is not assumed.
//
// Thread safety: a handle must be used by one thread at a time; distinct handles are
// independent. TurboJPEG keeps its last global error string in thread-local storage.
#pragma once

#include <turbojpeg.h>

#include <memory>

namespace rrl::decode {

// TjHandleDeleter: destroys a tjhandle (a `void*`); null is allowed.
struct TjHandleDeleter {
  void operator()(void* handle) const noexcept {
    if (handle != nullptr) tjDestroy(handle);
  }
};

// TjHandle: an owned TurboJPEG compressor or decompressor instance.
using TjHandle = std::unique_ptr<void, TjHandleDeleter>;

// MakeTjDecompressor: a new decompressor, or null when TurboJPEG could not allocate one
// (tjGetErrorStr2(nullptr) then says why).
[[nodiscard]] inline TjHandle MakeTjDecompressor() {
  return TjHandle(tjInitDecompress());
}

// MakeTjCompressor: a new compressor (tests and the fuzz corpus use it), or null.
[[nodiscard]] inline TjHandle MakeTjCompressor() {
  return TjHandle(tjInitCompress());
}

// TjBufferDeleter / TjBuffer: a buffer TurboJPEG allocated (e.g. the output of
// tjCompress2), which must be released with tjFree rather than free/delete.
struct TjBufferDeleter {
  void operator()(unsigned char* buffer) const noexcept { tjFree(buffer); }
};
using TjBuffer = std::unique_ptr<unsigned char, TjBufferDeleter>;

}  // namespace rrl::decode
