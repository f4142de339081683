// rrloader/engine/emitter.h — the last stage of an iteration: which decoded samples are
// handed out, and in which order.
//
// Between the decoder and the consumer, per sample and natively:
//  1. Incomplete samples (a field missing) are dropped when `skip_incomplete` is set
//     (rerun-sdk 0.41's iterable always drops them; the seed API's `skip_incomplete=True`).
//     More than `max_consecutive_skips` in a row stops the iteration: the block that saw it
//     is the last one and says so (the front ends raise their own error: a field that is
//     never present would otherwise silently empty the epoch).
//  2. With an emission buffer (rerun 0.41's `BlockShuffle(buffer_size=...)`), the samples
//     that remain pass through rerun 0.41's shuffle buffer (sample/emission_buffer.h),
//     driven by numpy's generator seeded like 0.41's (`default_rng([epoch, rank, worker])`),
//     so the order equals 0.41's sample for sample. A buffered sample's bytes are copied out
//     of its decoded block into buffers of its own when it enters the buffer, so a decoded
//     block is freed as soon as it has been read, and the buffer costs exactly the bytes of
//     the samples it holds (reported in EmitStats::buffered_bytes; bounded by buffer_size
//     samples); emitted samples are handed out from those buffers without another copy.
//  3. With an explicit emission order (a rerun 0.41 manifest's `emit_rank`), samples are
//     handed out in that order instead: each sample waits, copied out of its block like a
//     buffered one, until every sample before it in the order has arrived. A block whose
//     samples are all handed out as it arrives (in any order among themselves) passes
//     through without a copy; only the samples that wait are copied.
//  4. Required fields (a manifest replay's strictness): the first sample lacking one stops
//     the iteration, after what was emitted before it arrived; EmitStats says which sample
//     and which fields (the front end raises its error).
// Without a buffer or an order, and with nothing dropped, blocks pass through untouched.
//
// Thread safety: not thread-safe; the Pipeline's decode thread owns it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "rrloader/engine/buffer_pool.h"
#include "rrloader/engine/engine.h"
#include "rrloader/sample/emission_buffer.h"

namespace rrl::engine {

struct EmitOptions {
  bool skip_incomplete = false;
  int64_t max_consecutive_skips = -1;  // -1: no limit
  int64_t buffer_size = 0;             // 0: no emission buffer; else >= 2
  int64_t min_fill = -1;               // -1: buffer_size / 2 (0.41's default)
  // buffer_seed: the numpy SeedSequence entropy of the buffer's generator (0.41: [epoch,
  // rank, worker id]).
  std::vector<uint64_t> buffer_seed;
  // emit_order: an explicit emission order, or empty. emit_order[k] is the position, in the
  // iteration's fetch order, of the k-th sample to hand out: a permutation of 0..n-1 where n
  // is the number of samples of the iteration (the Pipeline checks n). Excludes the buffer
  // and skip_incomplete. What waits is bounded by the order itself (a manifest baked from a
  // buffer of B samples holds fewer than B plus one fetch block); EmitStats::buffered_bytes
  // reports it.
  std::vector<int64_t> emit_order;
  // required: per field (spec order), whether a sample lacking it stops the iteration
  // (EmitStats::required_missing); empty: none. Excludes skip_incomplete.
  std::vector<uint8_t> required;
  // Resuming a buffer (a saved state, see EmitSnapshot): the ids (order positions) it held, in
  // its order, its phase and its generator's state then (instead of buffer_seed). Those
  // samples must come first in the order; they are stored, not pushed.
  std::optional<sample::Pcg64State> restore_rng;
  std::vector<int64_t> restore_held;
  bool restore_awaiting_extra = false;
};

// EmitSnapshot: with an emission buffer, the emit stage's state before it made an output
// block, and what it was fed while making it: enough for the consumer to work out the state
// after any number of the block's samples by replaying the buffer (rerun 0.41's algorithm,
// with numpy's generator restored from `rng`), to save an exact resume point.
struct EmitSnapshot {
  std::vector<int64_t> held;    // order positions in the buffer, in its order
  bool awaiting_extra = false;  // the buffer's phase
  sample::Pcg64State rng;       // its generator
  std::vector<int64_t> pushes;  // positions pushed while making the block, in order
  bool finished = false;        // the block is (or ends with) the drain after the input ended
};

class Emitter {
 public:
  // Make: kInvalidArgument for a buffer_size of 1 or below 0, or a min_fill outside
  // [1, buffer_size] (0.41's rules); for an emit_order that is not a permutation or comes
  // with a buffer or skip_incomplete; for `required` not of num_fields entries or with
  // skip_incomplete.
  [[nodiscard]] static Result<std::unique_ptr<Emitter>> Make(const EmitOptions& options, size_t num_fields,
                                                             std::shared_ptr<BufferPool> buffers);

  // Process: one decoded block in (in iteration order, `positions` set: each sample's
  // position in the order, the ids of the buffer); the blocks to hand out now are appended
  // to `out` (one: without a buffer the block itself, with one the samples it emitted
  // meanwhile, with their EmitSnapshot).
  [[nodiscard]] Status Process(Block block, std::vector<Block>* out);
  // Finish: the input ended; what the buffer still holds, in its drain order.
  [[nodiscard]] Status Finish(std::vector<Block>* out);
  // stopped: the skip limit was exceeded; Process and Finish hand out nothing more.
  bool stopped() const { return stopped_; }

 private:
  Emitter(const EmitOptions& options, size_t num_fields, std::shared_ptr<BufferPool> buffers);

  // Admit: sample i of `block` into the buffer (copied out); what the buffer emits, if any,
  // goes to `emitted`. A sample the buffer was restored with is only stored.
  [[nodiscard]] Status Admit(const Block& block, size_t i, std::vector<int64_t>* emitted, std::vector<int64_t>* pushes);
  EmitSnapshot Snapshot() const;
  // ProcessOrdered: Process under an explicit emit_order.
  [[nodiscard]] Status ProcessOrdered(Block block, std::vector<Block>* out);
  // LacksRequired: whether sample i of `block` lacks a required field; if so records it in
  // `stats` and stops the emitter.
  bool LacksRequired(const Block& block, size_t i, EmitStats* stats);
  // Hold: sample i of `block` copied into the store under `id`.
  void Hold(const Block& block, size_t i, int64_t id);

  // Stored: one buffered sample, its bytes copied out of its block.
  struct Stored {
    int64_t global = 0;
    int32_t segment_pos = 0;
    int64_t value = 0;
    int64_t bytes = 0;
    std::vector<std::shared_ptr<uint8_t[]>> data;   // per field
    std::vector<std::vector<int64_t>> shapes;       // per field
    std::vector<uint8_t> valid;                     // per field
    std::vector<uint8_t> color_space, color_range;  // per field (YUV video fields)
  };
  Stored Store(const Block& block, size_t i);
  // Gather: an output block of the stored samples `ids`, in that order (they leave the store).
  Block Gather(const std::vector<int64_t>& ids, EmitStats stats, EmitSnapshot snapshot);
  // Drop: counts sample i of `block` as incomplete; false when that exceeds the limit.
  bool Drop(const Block& block, size_t i, EmitStats* stats);

  EmitOptions options_;
  size_t num_fields_;
  std::shared_ptr<BufferPool> buffers_;
  std::optional<sample::EmissionBuffer> buffer_;
  std::vector<decode::DType> dtypes_;  // per field, from the first block
  std::vector<bool> yuv_;              // per field, from the first block
  std::unordered_map<int64_t, Stored> stored_;
  int64_t stored_bytes_ = 0;
  std::unordered_map<int64_t, bool> restoring_;  // restored held ids not stored yet
  int64_t next_id_ = 0;                          // explicit order: the next fetch position
  size_t next_emit_ = 0;                         // explicit order: the next entry of emit_order to hand out
  int64_t consecutive_ = 0;
  int64_t total_skipped_ = 0;
  std::vector<int64_t> total_by_field_;
  std::vector<int64_t> first_skipped_;  // see EmitStats::first_skipped
  bool stopped_ = false;
};

}  // namespace rrl::engine
