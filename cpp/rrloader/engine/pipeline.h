// rrloader/engine/pipeline.h — fetch ahead of decode, decode ahead of the consumer.
//
// A Pipeline walks a list of global sample numbers in fetch blocks: the caller's explicit
// `block_ends` (rerun 0.41's fetch blocks, which follow its shuffle strategy's blocks), or
// else blocks of `block_size`. The first blocks ramp up (RampCuts): the order is cut at
// `first_block_size`, then at twice that, and so on while below 2 x `block_size` (16, 16,
// 32, 64, then the 128s that follow), besides the caller's block ends — also when the first
// caller block is short (a resume inside a block starts with its remainder), so the ramp
// goes on into the next one. The first samples then wait for a small block's fetch and
// decode, not a full one's (a block of 128 samples with two 640x480 JPEGs each is ~0.6 s of
// decoding on one core), and every caller block still starts where the caller's does.
// Cutting a block never changes the samples or their order. One thread
// fetches blocks (dataframe queries) into a queue of at most `fetch_ahead` blocks; another
// decodes them on the engine's pool into a queue bounded by `max_ready_bytes` (at least one
// block is always admitted, so a single huge block cannot stall the pipeline). The decode
// thread starts a block only when one of the previous block's size would fit the queue, so
// no finished block waits outside it: at most the consumer's block, the queued ones and one
// being decoded are in memory. Both threads run at the engine's thread_nice. Next() hands
// blocks out in order. So the fetch of block N+1 runs while block N decodes, and both run
// while the consumer (Python) works on block N-1. The decode thread also runs the emit stage
// (emitter.h: incomplete samples dropped, the emission buffer) on every decoded block, so
// what Next() hands out are the emit stage's blocks.
//
// Errors travel in order: the block that failed is where Next() reports the error, after the
// blocks before it. Destruction (or Cancel) stops both threads promptly and joins them;
// destruction then returns the heap's free pages to the OS (glibc's malloc_trim: decoded
// frames freed into the decode threads' arenas would otherwise stay in the RSS after an epoch).
//
// Remote datasets of many segments (Engine::PrefetchesSegments): a third thread asks the
// dataset for the segments (their manifests) of the samples ahead of the fetch thread — up to
// kSegmentLookaheadSamples past the last block fetched, a block's worth of samples per request
// (Engine::PrefetchSegments) — so that a shuffled block over many segments does not wait for
// one round of manifest calls before its chunks are asked for. It starts once the first block
// has been fetched (the first block's calls, on a new connection, run alone: see
// kSegmentLookaheadMinSegments), and stops with the fetch thread; destruction waits for its
// call in flight (one batched round, under one remote_timeout_s), as for the fetch thread's.
// It mostly waits on the network, so it takes no CPU slot of the engine's thread budget. Its
// first failed round ends it (later rounds would each wait out a deadline, and so would
// destruction). Errors are not cached: a block that needs a manifest this thread is fetching
// waits for that call and reports its error (named); one that failed earlier is asked for
// again by the block that needs it.
// Before each manifest round it fetches the chunks of the next kChunkLookaheadBlocks blocks
// past the one the fetch thread is fetching (Engine::PrefetchChunks, the missing ones only: the
// first round all of them, later rounds the samples the window moved on by), and holds them
// until the fetch thread has fetched past them: their round trips overlap the fetch thread's
// work (a sequential read needs about one new segment per block, so it otherwise waits for one
// round trip per block). After kChunkLookaheadIdleRounds rounds
// in a row that found everything cached (a dataset that fits the cache, read once) it stops
// fetching chunks: the rounds would only repeat the fetch thread's lookups on the same cores.
//
// Fork: destroyed in a forked child (whose copy has no threads), it abandons them.
//
// Thread safety: Next() and Cancel() may be called from one consumer thread at a time; the
// worker threads are private.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "rrloader/engine/emitter.h"
#include "rrloader/engine/engine.h"

namespace rrl::engine {

struct PipelineOptions {
  int64_t block_size = 128;  // the steady-state block (the datasets' fetch size) without block_ends
  // block_ends: explicit fetch blocks, as their cumulative ends within the order (strictly
  // increasing, the last one the order's length); empty: blocks of block_size.
  std::vector<int64_t> block_ends;
  int64_t first_block_size = 16;                 // the first block's first cut (see above)
  int fetch_ahead = 2;                           // fetched blocks waiting for decode
  int64_t max_ready_bytes = int64_t{256} << 20;  // decoded bytes waiting for the consumer (256 MiB)
  // max_piece_bytes: > 0 cuts every fetch block further into pieces of about this many decoded
  // bytes (at least kMinPieceSamples samples each), sized from the bytes per sample of the last
  // decoded piece; 0: no such cuts. The block in decoding, the consumer's and the queued ones
  // are then pieces: the memory a pipeline holds follows max_ready_bytes, not the fetch size.
  int64_t max_piece_bytes = 0;
  EmitOptions emit;  // the emit stage
  // positions: each order entry's position (the emit stage's sample ids, reported with every
  // handed-out sample); empty: 0, 1, 2, ... A resumed iteration passes the positions its
  // samples had in the epoch's order. Distinct.
  std::vector<int64_t> positions;
};

// RampCuts: the fetch blocks a Pipeline walks — every one of `ends` (increasing block ends,
// exclusive, in samples of the order) plus the ramp's cuts at first_block_size x 1, 2, 4, ...
// below 2 x block_size (see above). Increasing, without repeats.
// kMinPieceSamples: the fewest samples max_piece_bytes cuts a piece to (pieces that are too
// small cost more per sample in fetch and pool hand-offs than they save in memory).
inline constexpr int64_t kMinPieceSamples = 8;
// kSegmentLookaheadSamples: how far past the fetch thread's block the segment thread goes.
inline constexpr int64_t kSegmentLookaheadSamples = 8192;
// kChunkLookaheadBlocks: how many blocks past the one the fetch thread is fetching the segment
// thread fetches the chunks of (and holds them until the fetch thread has fetched past them).
inline constexpr int64_t kChunkLookaheadBlocks = 4;
// kChunkLookaheadIdleRounds: chunk rounds in a row that find every chunk cached after which
// the segment thread stops fetching chunks ahead (manifests go on).
inline constexpr int kChunkLookaheadIdleRounds = 4;

// PieceEnd: where the next piece of [begin, end) ends, for pieces of at most `max_samples`
// samples of nearly equal size (so that no tiny remainder follows); `end` when max_samples <= 0.
[[nodiscard]] int64_t PieceEnd(int64_t begin, int64_t end, int64_t max_samples);

[[nodiscard]] std::vector<int64_t> RampCuts(const std::vector<int64_t>& ends, int64_t first_block_size,
                                            int64_t block_size);

class Pipeline {
 public:
  // Make: kInvalidArgument for block ends that do not cut the order, or emit options the
  // Emitter refuses; the threads start here.
  [[nodiscard]] static Result<std::unique_ptr<Pipeline>> Make(std::shared_ptr<const Engine> engine,
                                                              std::vector<int64_t> order, PipelineOptions options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Next: the next block to hand out; nullopt-valued Result when the list is exhausted.
  [[nodiscard]] Result<std::optional<Block>> Next();
  void Cancel();

 private:
  Pipeline(std::shared_ptr<const Engine> engine, std::vector<int64_t> order, std::vector<int64_t> cuts,
           PipelineOptions options, std::unique_ptr<Emitter> emitter);
  void FetchLoop();
  void DecodeLoop();
  void SegmentLoop();  // see the file comment
  void StopSegmentThread();
  // Queue: appends emit-stage output to ready_ (waiting for room); false when cancelled.
  bool Queue(Result<Block> block);

  std::shared_ptr<const Engine> engine_;
  std::vector<int64_t> order_;
  std::vector<int64_t> cuts_;  // every fetch block's end (the caller's, cut further by the ramp)
  PipelineOptions options_;
  std::unique_ptr<Emitter> emitter_;  // the decode thread's
  int64_t decoded_ = 0;               // the decode thread's: order entries decoded so far
  // The last decoded piece's bytes per sample (0: none yet): the decode thread writes it, the
  // fetch thread sizes the next pieces from it.
  std::atomic<int64_t> bytes_per_sample_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool cancelled_ = false;
  std::deque<Result<FetchedBlock>> fetched_;
  bool fetch_done_ = false;
  std::deque<Result<Block>> ready_;
  int64_t ready_bytes_ = 0;
  bool decode_done_ = false;

  pid_t owner_pid_ = 0;  // see ThreadPool: a forked child must not join these threads
  std::thread fetch_thread_;
  std::thread decode_thread_;
  // The segment thread's state (only with Engine::PrefetchesSegments).
  bool looks_ahead_ = false;  // set before the threads start, then read-only
  std::mutex ahead_mu_;
  std::condition_variable ahead_cv_;
  int64_t fetched_end_ = 0;   // guarded by ahead_mu_: the end of the last block the fetch thread fetched
  int64_t fetching_end_ = 0;  // guarded by ahead_mu_: the end of the block the fetch thread is fetching
  bool ahead_stop_ = false;   // guarded by ahead_mu_
  std::thread segment_thread_;
};

}  // namespace rrl::engine
