// rrloader/engine/buffer_pool.h — reusable output buffers for decoded blocks.
//
// A block's field buffer is large (a block of 128 samples of three 640x480 RGB frames is
// 354 MB) and short-lived: Python views it until the samples are collated, then frees it.
// A fresh allocation of that size is a fresh mapping, and the kernel faults in and clears
// every 4 KiB page on first touch, which cost as much as a fifth of decoding 640x480 H.264.
// Buffers released by their last owner return here instead, so the next block writes into
// pages that are already mapped.
//
// Ownership: Allocate returns a shared_ptr whose deleter gives the memory back to the pool
// (or frees it when the pool is full or gone): the pool may be destroyed before its buffers.
// Thread safety: thread-safe (one mutex around the idle list).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

namespace rrl::engine {

// kDefaultBufferPoolBytes: idle buffers kept for reuse, at most 512 MiB (in steady state the
// pool holds the one or two blocks the consumer has just released).
inline constexpr int64_t kDefaultBufferPoolBytes = int64_t{512} << 20;

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  // Make: a pool keeping at most `capacity_bytes` of idle buffers (0: none, every buffer is
  // freed when released).
  static std::shared_ptr<BufferPool> Make(int64_t capacity_bytes = kDefaultBufferPoolBytes);

  // Allocate: a buffer of at least `bytes` (>= 1) bytes, uninitialised: an idle one of
  // between `bytes` and `bytes` + 1/8 when there is one, else a new one.
  std::shared_ptr<uint8_t[]> Allocate(int64_t bytes);

  // ReleaseIdle: frees every idle buffer (an iteration's end: kept across the pause between
  // epochs they would be RSS that nothing uses, and how many there are depends on timing).
  void ReleaseIdle();

  int64_t idle_bytes() const;
  int64_t reused() const;     // allocations served by an idle buffer
  int64_t allocated() const;  // allocations that needed new memory

 private:
  explicit BufferPool(int64_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}
  void Release(uint8_t* data, int64_t bytes);

  const int64_t capacity_bytes_;
  mutable std::mutex mu_;
  std::multimap<int64_t, std::unique_ptr<uint8_t[]>> idle_;  // by size
  int64_t idle_bytes_ = 0;
  int64_t reused_ = 0;
  int64_t allocated_ = 0;
};

}  // namespace rrl::engine
