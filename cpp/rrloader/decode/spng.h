// rrloader/decode/spng.h — RAII ownership of libspng contexts and buffers (internal).
//
// Every spng_ctx we create is held by SpngCtx, so each exit path of a decoder frees it.
// Written against libspng 0.7 (Debian 12).
//
// Thread safety: a context must be used by one thread at a time; distinct contexts are
// independent.
#pragma once

#include <spng.h>

#include <cstdlib>
#include <memory>

namespace rrl::decode {

// SpngCtxDeleter: frees a decoder or encoder context; null is allowed.
struct SpngCtxDeleter {
  void operator()(spng_ctx* ctx) const noexcept { spng_ctx_free(ctx); }
};

// SpngCtx: an owned libspng context.
using SpngCtx = std::unique_ptr<spng_ctx, SpngCtxDeleter>;

// MakeSpngDecoder: a new decoder context, or null when libspng could not allocate one.
[[nodiscard]] inline SpngCtx MakeSpngDecoder() {
  return SpngCtx(spng_ctx_new(0));
}

// MakeSpngEncoder: a new encoder context (tests and the fuzz corpus use it), or null.
[[nodiscard]] inline SpngCtx MakeSpngEncoder() {
  return SpngCtx(spng_ctx_new(SPNG_CTX_ENCODER));
}

// SpngBuffer: memory libspng hands over to the caller (spng_get_png_buffer), which it
// allocated with malloc and which the caller releases with free.
struct SpngBufferDeleter {
  void operator()(void* buffer) const noexcept { std::free(buffer); }
};
using SpngBuffer = std::unique_ptr<void, SpngBufferDeleter>;

}  // namespace rrl::decode
