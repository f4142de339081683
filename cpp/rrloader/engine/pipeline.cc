// rrloader/engine/pipeline.cc
#include "rrloader/engine/pipeline.h"

#include <unistd.h>

#include <algorithm>

namespace rrl::engine {

Pipeline::Pipeline(std::shared_ptr<const Engine> engine, std::vector<int64_t> order, PipelineOptions options)
    : engine_(std::move(engine)), order_(std::move(order)), options_(options) {
  options_.block_size = std::max<int64_t>(options_.block_size, 1);
  options_.first_block_size = std::clamp<int64_t>(options_.first_block_size, 1, options_.block_size);
  options_.fetch_ahead = std::max(options_.fetch_ahead, 1);
  owner_pid_ = getpid();
  fetch_thread_ = std::thread([this] { FetchLoop(); });
  decode_thread_ = std::thread([this] { DecodeLoop(); });
}

Pipeline::~Pipeline() {
  if (getpid() != owner_pid_) {
    std::vector<std::thread> threads;
    threads.push_back(std::move(fetch_thread_));
    threads.push_back(std::move(decode_thread_));
    (void)AbandonThreadsAfterFork(owner_pid_, &threads);
    return;
  }
  Cancel();
  fetch_thread_.join();
  decode_thread_.join();
}

void Pipeline::Cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
}

void Pipeline::FetchLoop() {
  LowerThreadPriority(engine_->options().thread_nice);
  const auto total = static_cast<int64_t>(order_.size());
  // Block ends: first_block_size, then doubling (16, 32, 64, ...) until the next multiple of
  // block_size, then every block_size — so after the ramp, blocks start at multiples of
  // block_size and batches of a divisor of it never straddle two blocks.
  const int64_t bs = options_.block_size;
  auto next_end = [&](int64_t end) { return std::min(2 * end, (end / bs + 1) * bs); };
  for (int64_t begin = 0, end = options_.first_block_size; begin < total; begin = end, end = next_end(end)) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return cancelled_ || static_cast<int>(fetched_.size()) < options_.fetch_ahead; });
      if (cancelled_) break;
    }
    end = std::min(end, total);
    std::vector<int64_t> ids(order_.begin() + begin, order_.begin() + end);
    Result<FetchedBlock> fb = engine_->Fetch(ids);
    const bool failed = !fb.ok();
    {
      std::lock_guard<std::mutex> lock(mu_);
      fetched_.push_back(std::move(fb));
    }
    cv_.notify_all();
    if (failed) break;  // the error is reported in order; nothing after it is fetched
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fetch_done_ = true;
  }
  cv_.notify_all();
}

void Pipeline::DecodeLoop() {
  LowerThreadPriority(engine_->options().thread_nice);
  int64_t last_bytes = 0;  // the previous block's size: the estimate of the next one's
  while (true) {
    Result<FetchedBlock> fb = Status::Internal("unset");
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Decode only when the result is likely to fit next to the blocks already waiting: a
      // decoded block that cannot be queued would sit here, one more block in memory.
      cv_.wait(lock,
               [&] { return cancelled_ || ready_.empty() || ready_bytes_ + last_bytes <= options_.max_ready_bytes; });
      cv_.wait(lock, [&] { return cancelled_ || !fetched_.empty() || fetch_done_; });
      if (cancelled_ || (fetched_.empty() && fetch_done_)) break;
      fb = std::move(fetched_.front());
      fetched_.pop_front();
    }
    cv_.notify_all();  // the fetcher may go on
    Result<Block> block = fb.ok() ? engine_->Decode(std::move(*fb)) : Result<Block>(fb.status());
    const bool failed = !block.ok();
    const int64_t bytes = block.ok() ? block->stats.bytes_out : 0;
    last_bytes = bytes;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return cancelled_ || ready_.empty() || ready_bytes_ + bytes <= options_.max_ready_bytes; });
      if (cancelled_) break;
      ready_.push_back(std::move(block));
      ready_bytes_ += bytes;
    }
    cv_.notify_all();
    if (failed) break;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    decode_done_ = true;
  }
  cv_.notify_all();
}

Result<std::optional<Block>> Pipeline::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return cancelled_ || !ready_.empty() || decode_done_; });
  if (ready_.empty()) {
    if (cancelled_) return Status::InvalidArgument("the pipeline was cancelled");
    return std::optional<Block>();
  }
  Result<Block> b = std::move(ready_.front());
  ready_.pop_front();
  if (b.ok()) ready_bytes_ -= b->stats.bytes_out;
  lock.unlock();
  cv_.notify_all();
  if (!b.ok()) return b.status();
  return std::optional<Block>(std::move(*b));
}

}  // namespace rrl::engine
