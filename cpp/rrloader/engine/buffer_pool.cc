// rrloader/engine/buffer_pool.cc
#include "rrloader/engine/buffer_pool.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace rrl::engine {

std::shared_ptr<BufferPool> BufferPool::Make(int64_t capacity_bytes) {
  return std::shared_ptr<BufferPool>(new BufferPool(std::max<int64_t>(capacity_bytes, 0)));
}

std::shared_ptr<uint8_t[]> BufferPool::Allocate(int64_t bytes) {
  bytes = std::max<int64_t>(bytes, 1);
  std::unique_ptr<uint8_t[]> buffer;
  int64_t size = bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = idle_.lower_bound(bytes);
    if (it != idle_.end() && it->first <= bytes + bytes / 8) {
      size = it->first;
      buffer = std::move(it->second);
      idle_.erase(it);
      idle_bytes_ -= size;
      ++reused_;
    } else {
      ++allocated_;
    }
  }
  if (buffer == nullptr) buffer.reset(new uint8_t[static_cast<size_t>(size)]);
  std::weak_ptr<BufferPool> pool = weak_from_this();
  return std::shared_ptr<uint8_t[]>(buffer.release(), [pool, size](uint8_t* data) {
    if (auto p = pool.lock()) {
      p->Release(data, size);
    } else {
      delete[] data;
    }
  });
}

void BufferPool::Release(uint8_t* data, int64_t bytes) {
  std::unique_ptr<uint8_t[]> owned(data);
  std::vector<std::unique_ptr<uint8_t[]>> dropped;  // freed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes > capacity_bytes_) return;  // `owned` frees it
    idle_.emplace(bytes, std::move(owned));
    idle_bytes_ += bytes;
    // Over capacity: drop the smallest buffers first (blocks of one size recur; the
    // largest are the most expensive to fault in again).
    while (idle_bytes_ > capacity_bytes_ && !idle_.empty()) {
      auto smallest = idle_.begin();
      idle_bytes_ -= smallest->first;
      dropped.push_back(std::move(smallest->second));
      idle_.erase(smallest);
    }
  }
}

void BufferPool::ReleaseIdle() {
  std::multimap<int64_t, std::unique_ptr<uint8_t[]>> dropped;  // freed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped.swap(idle_);
    idle_bytes_ = 0;
  }
}

int64_t BufferPool::idle_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_bytes_;
}

int64_t BufferPool::reused() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reused_;
}

int64_t BufferPool::allocated() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocated_;
}

}  // namespace rrl::engine
