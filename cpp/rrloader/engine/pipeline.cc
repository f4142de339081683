// rrloader/engine/pipeline.cc
#include "rrloader/engine/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <deque>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace rrl::engine {

namespace {

// ReleaseFreeHeapMemory: hands the heap's free pages back to the OS. An iteration's decode
// frees its frames (libavcodec's and the blocks') into glibc's per-thread arenas, which keep
// them: measured on three 640x480 H.264 cameras, InterleavedShuffle, 3,000 samples per
// iteration, the process's RSS was 2.2-3.2 GiB after each iteration and 1.7-2.4 GiB after
// malloc_trim(0) (it walks every arena; tens of milliseconds, once per iteration).
void ReleaseFreeHeapMemory() {
#if defined(__GLIBC__)
  (void)malloc_trim(0);
#endif
}

}  // namespace

std::vector<int64_t> RampCuts(const std::vector<int64_t>& ends, int64_t first_block_size, int64_t block_size) {
  first_block_size = std::max<int64_t>(first_block_size, 1);
  std::vector<int64_t> cuts;
  cuts.reserve(ends.size() + 8);
  // Cut at c = first_block_size, 2c, 4c, ... (positions from the order's start) while c is
  // below 2 x block_size, whichever caller block c falls in: so the ramp goes on past a short
  // first block (a resume inside a block leaves its remainder) instead of leaving the next
  // whole block to wait for.
  int64_t c = first_block_size;
  const int64_t ramp_end = 2 * std::max<int64_t>(block_size, 1);
  for (const int64_t e : ends) {
    for (; c < e && c < ramp_end; c *= 2) {
      if (cuts.empty() || c > cuts.back()) cuts.push_back(c);
    }
    if (cuts.empty() || e > cuts.back()) cuts.push_back(e);
  }
  return cuts;
}

int64_t PieceEnd(int64_t begin, int64_t end, int64_t max_samples) {
  if (max_samples <= 0 || end - begin <= max_samples) return end;
  const int64_t pieces = (end - begin + max_samples - 1) / max_samples;
  return begin + (end - begin + pieces - 1) / pieces;
}

Result<std::unique_ptr<Pipeline>> Pipeline::Make(std::shared_ptr<const Engine> engine, std::vector<int64_t> order,
                                                 PipelineOptions options) {
  options.block_size = std::max<int64_t>(options.block_size, 1);
  options.first_block_size = std::max<int64_t>(options.first_block_size, 1);
  options.fetch_ahead = std::max(options.fetch_ahead, 1);
  const auto total = static_cast<int64_t>(order.size());
  std::vector<int64_t> ends = options.block_ends;
  if (ends.empty()) {
    for (int64_t e = options.block_size; e < total + options.block_size; e += options.block_size) {
      ends.push_back(std::min(e, total));
    }
    if (total == 0) ends.clear();
  }
  for (size_t k = 0; k < ends.size(); ++k) {
    if (ends[k] <= (k == 0 ? 0 : ends[k - 1]) || ends[k] > total) {
      return Status::InvalidArgument("fetch block ends must increase strictly within the order's " +
                                     std::to_string(total) + " samples (end " + std::to_string(k) + " is " +
                                     std::to_string(ends[k]) + ")");
    }
  }
  if (options.positions.empty()) {
    options.positions.resize(order.size());
    for (size_t i = 0; i < order.size(); ++i) options.positions[i] = static_cast<int64_t>(i);
  } else if (options.positions.size() != order.size()) {
    return Status::InvalidArgument("positions must be as many as the order's samples");
  }
  if (!ends.empty() && ends.back() != total) {
    return Status::InvalidArgument("the last fetch block must end at the order's length " + std::to_string(total));
  }
  if (!options.emit.emit_order.empty() && static_cast<int64_t>(options.emit.emit_order.size()) != total) {
    return Status::InvalidArgument("the emission order has " + std::to_string(options.emit.emit_order.size()) +
                                   " entries for an order of " + std::to_string(total) + " samples");
  }
  std::vector<int64_t> cuts = RampCuts(ends, options.first_block_size, options.block_size);
  auto emitter = Emitter::Make(options.emit, engine->fields().size(), engine->buffers());
  if (!emitter.ok()) return emitter.status();
  return std::unique_ptr<Pipeline>(
      new Pipeline(std::move(engine), std::move(order), std::move(cuts), std::move(options), std::move(*emitter)));
}

Pipeline::Pipeline(std::shared_ptr<const Engine> engine, std::vector<int64_t> order, std::vector<int64_t> cuts,
                   PipelineOptions options, std::unique_ptr<Emitter> emitter)
    : engine_(std::move(engine)),
      order_(std::move(order)),
      cuts_(std::move(cuts)),
      options_(std::move(options)),
      emitter_(std::move(emitter)) {
  owner_pid_ = getpid();
  engine_->BeginVideoPass();
  looks_ahead_ = engine_->PrefetchesSegments();
  fetch_thread_ = std::thread([this] { FetchLoop(); });
  decode_thread_ = std::thread([this] { DecodeLoop(); });
  if (looks_ahead_) segment_thread_ = std::thread([this] { SegmentLoop(); });
}

Pipeline::~Pipeline() {
  if (getpid() != owner_pid_) {
    std::vector<std::thread> threads;
    threads.push_back(std::move(fetch_thread_));
    threads.push_back(std::move(decode_thread_));
    if (segment_thread_.joinable()) threads.push_back(std::move(segment_thread_));
    (void)AbandonThreadsAfterFork(owner_pid_, &threads);
    return;
  }
  Cancel();
  fetch_thread_.join();
  decode_thread_.join();
  // A call in flight is waited for, as the fetch thread's is: a detached thread could call
  // into Python while the interpreter shuts down. Its batch has one deadline (remote_timeout_s).
  if (segment_thread_.joinable()) segment_thread_.join();
  // The iteration is over (or abandoned): what its stages freed goes back to the OS, so that
  // memory between epochs stays what the caches hold, not the allocator's high-water mark.
  fetched_.clear();
  ready_.clear();
  // So do the released block buffers the pool keeps for the next blocks: between epochs they
  // are memory nothing uses, and how many are idle at an iteration's end (0 to the pool's
  // bound, half of the ready bytes) depends on when the consumer dropped its samples.
  engine_->buffers()->ReleaseIdle();
  ReleaseFreeHeapMemory();
}

void Pipeline::Cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
  StopSegmentThread();
}

void Pipeline::StopSegmentThread() {
  if (!looks_ahead_) return;
  {
    std::lock_guard<std::mutex> lock(ahead_mu_);
    ahead_stop_ = true;
  }
  ahead_cv_.notify_all();
}

void Pipeline::FetchLoop() {
  NameThisThread("rrl-fetch");
  LowerThreadPriority(engine_->options().thread_nice);
  engine_->budget()->ThreadStarted();
  int64_t begin = 0;
  bool stop = false;
  // The latest-at setup of each (segment, column) seen, for the blocks after: a shuffled
  // block over many segments looks up about one (segment, column) per sample.
  LatestAtMemo memo;
  for (size_t c = 0; c < cuts_.size() && !stop;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return cancelled_ || static_cast<int>(fetched_.size()) < options_.fetch_ahead; });
      if (cancelled_) break;
    }
    // The next piece of this fetch block: sized from the bytes per sample decoded last (read
    // here, after the wait, so that it is as fresh as can be).
    int64_t max_samples = 0;
    const int64_t per_sample = bytes_per_sample_.load(std::memory_order_relaxed);
    if (options_.max_piece_bytes > 0 && per_sample > 0) {
      max_samples = std::max(kMinPieceSamples, options_.max_piece_bytes / per_sample);
    }
    const int64_t end = PieceEnd(begin, cuts_[c], max_samples);
    std::vector<int64_t> ids(order_.begin() + begin, order_.begin() + end);
    begin = end;
    if (begin == cuts_[c]) ++c;
    if (looks_ahead_) {  // the segment thread fetches the chunks of the blocks after this one
      {
        std::lock_guard<std::mutex> lock(ahead_mu_);
        fetching_end_ = end;
      }
      ahead_cv_.notify_all();
    }
    Result<FetchedBlock> fb = engine_->Fetch(ids, &memo);
    stop = !fb.ok();              // the error is reported in order; nothing after it is fetched
    if (looks_ahead_ && !stop) {  // the segment thread goes on from the block just fetched
      {
        std::lock_guard<std::mutex> lock(ahead_mu_);
        fetched_end_ = end;
      }
      ahead_cv_.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fetched_.push_back(std::move(fb));
    }
    cv_.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fetch_done_ = true;
  }
  cv_.notify_all();
  StopSegmentThread();  // nothing more to fetch, or an error: nothing to ask for ahead
  engine_->budget()->ThreadExited();
}

void Pipeline::SegmentLoop() {
  NameThisThread("rrl-lookahead");
  const auto n = static_cast<int64_t>(order_.size());
  const int64_t block_size = std::max<int64_t>(options_.block_size, 1);
  bool chunks_ahead = true;
  int idle_rounds = 0;     // chunk rounds in a row that found every chunk cached
  std::vector<char> seen;  // segment numbers asked for
  int64_t pos = 0;         // manifests asked for up to here
  int64_t chunk_pos = 0;   // chunks asked for up to here
  // The chunks fetched ahead, by the end of their samples, held until the fetch thread has
  // fetched past them (a small chunk cache could evict them before): at most
  // kChunkLookaheadBlocks blocks' chunks.
  std::deque<std::pair<int64_t, std::vector<std::shared_ptr<const chunk::Chunk>>>> held;
  while (true) {
    int64_t chunk_end = 0;
    int64_t passed = 0;
    {
      std::unique_lock<std::mutex> lock(ahead_mu_);
      auto chunk_limit = [&] { return std::min(n, fetching_end_ + kChunkLookaheadBlocks * block_size); };
      auto segment_limit = [&] { return std::min(n, fetched_end_ + kSegmentLookaheadSamples); };
      ahead_cv_.wait(lock, [&] {
        return ahead_stop_ ||
               (fetched_end_ > 0 && ((chunks_ahead && std::max(chunk_pos, fetching_end_) < chunk_limit()) ||
                                     std::max(pos, fetched_end_) < segment_limit()));
      });
      if (ahead_stop_) break;
      chunk_pos = std::max(chunk_pos, fetching_end_);  // never behind the fetch thread
      pos = std::max(pos, fetched_end_);
      if (chunks_ahead && chunk_pos < chunk_limit()) chunk_end = chunk_limit();
      passed = fetched_end_;
    }
    while (!held.empty() && held.front().first <= passed) held.pop_front();
    // A failed round (a server that stopped answering, say) ends the look-ahead: every further
    // round would wait out its own deadline, and the pipeline's destruction waits for the one
    // in flight. The blocks that need the segments or chunks ask for them and report the error.
    if (chunk_end > 0) {  // first the chunks of the blocks after the fetch thread's, in one round
      std::vector<std::shared_ptr<const chunk::Chunk>> keep;
      if (!engine_->PrefetchChunks(std::vector<int64_t>(order_.begin() + chunk_pos, order_.begin() + chunk_end), &keep)
               .ok()) {
        break;
      }
      // Once everything is cached (a dataset that fits the cache, after its first pass), the
      // rounds would only repeat the fetch thread's lookups on the same cores: stop them.
      idle_rounds = keep.empty() ? idle_rounds + 1 : 0;
      if (idle_rounds >= kChunkLookaheadIdleRounds) chunks_ahead = false;
      held.emplace_back(chunk_end, std::move(keep));
      chunk_pos = chunk_end;
      continue;
    }
    const int64_t end = std::min(n, pos + block_size);
    if (!engine_->PrefetchSegments(std::vector<int64_t>(order_.begin() + pos, order_.begin() + end), &seen).ok()) {
      break;
    }
    pos = end;
  }
}

bool Pipeline::Queue(Result<Block> block) {
  const int64_t bytes = block.ok() ? block->stats.bytes_out : 0;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return cancelled_ || ready_.empty() || ready_bytes_ + bytes <= options_.max_ready_bytes; });
    if (cancelled_) return false;
    ready_.push_back(std::move(block));
    ready_bytes_ += bytes;
  }
  cv_.notify_all();
  return true;
}

void Pipeline::DecodeLoop() {
  NameThisThread("rrl-decode");
  LowerThreadPriority(engine_->options().thread_nice);
  engine_->budget()->ThreadStarted();
  int64_t last_bytes = 0;  // the previous block's size: the estimate of the next one's
  bool failed = false;
  while (!failed && !emitter_->stopped()) {
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
    if (!block.ok()) {
      failed = true;
      (void)Queue(block.status());
      break;
    }
    last_bytes = block->stats.bytes_out;
    if (!block->global.empty()) {
      bytes_per_sample_.store(std::max<int64_t>(1, last_bytes / static_cast<int64_t>(block->global.size())),
                              std::memory_order_relaxed);
    }
    const auto begin = options_.positions.begin() + static_cast<std::ptrdiff_t>(decoded_);
    block->positions.assign(begin, begin + static_cast<std::ptrdiff_t>(block->global.size()));
    decoded_ += static_cast<int64_t>(block->global.size());
    std::vector<Block> out;
    Status st = Status::OK();
    {
      ThreadBudget::Busy busy(engine_->budget());
      st = emitter_->Process(std::move(*block), &out);
    }
    bool cancelled = false;
    for (auto& b : out) cancelled = cancelled || !Queue(std::move(b));
    if (!st.ok()) {
      failed = true;
      (void)Queue(st);
    }
    if (cancelled) break;
  }
  if (!failed) {
    bool cancelled = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled = cancelled_;
    }
    if (!cancelled) {
      std::vector<Block> out;
      Status st = emitter_->Finish(&out);
      for (auto& b : out) {
        if (!Queue(std::move(b))) break;
      }
      if (!st.ok()) (void)Queue(st);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    decode_done_ = true;
  }
  cv_.notify_all();
  engine_->budget()->ThreadExited();
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
