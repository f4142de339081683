// rrloader/sample/emission_buffer.h — rerun 0.41's post-decode shuffle buffer, push-based.
//
// rerun-sdk 0.41's `BlockShuffle(buffer_size=..., min_fill=...)` passes each worker's decoded
// samples through `ShuffleBuffer.shuffle(samples, rng=np.random.default_rng([epoch, rank,
// worker_id]))`. Which samples enter depends on decoding (incomplete samples are dropped before
// the buffer), so the engine runs the buffer itself, as samples complete, over sample ids; the
// samples stay with the engine, keyed by id.
//
// The reference is a generator loop:
//     for item in items:
//         buffer.append(item)
//         if len(buffer) < buffer_size:
//             buffer.append(next(items))   # if the input has one more
//         if len(buffer) >= min_fill:
//             yield pick(buffer)           # j = rng.integers(len(buffer)); swap j with last; pop
//     while buffer: yield pick(buffer)
// Restated as a state machine over pushed ids: a push in state kAwaitingItem appends and, below
// capacity, moves to kAwaitingExtra without emitting (the reference is waiting on its extra
// pull); otherwise (and for every push in kAwaitingExtra) it emits one pick when at least
// min_fill ids are held, then returns to kAwaitingItem. When the input ends while the extra pull
// is pending, the reference picks once if min_fill is met and then drains; that pick is the
// drain's first pick (same rng.integers(len(buffer)) call), so Finish is a drain in both states.
//
// Bounds: at most buffer_size ids are held, counting the one just pushed; between calls at most
// buffer_size - 1.
//
// Thread safety: value type; not thread-safe (one per worker stream).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/sample/numpy_random.h"

namespace rrl::sample {

class EmissionBuffer {
 public:
  // Make: `ShuffleBuffer(buffer_size, min_fill=min_fill)` drawing from `generator` (rerun passes
  // `np.random.default_rng([epoch, rank, worker_id])`). kInvalidArgument, with the value, when
  // buffer_size < 2 or min_fill is outside [1, buffer_size]. min_fill defaults to buffer_size / 2.
  [[nodiscard]] static Result<EmissionBuffer> Make(int64_t buffer_size, std::optional<int64_t> min_fill,
                                                   NumpyGenerator generator);

  // Restore: a buffer in the state a running one had: `held` ids in their order (at most
  // buffer_size - 1), `awaiting_extra` its phase (the next push is the reference's extra pull),
  // `generator` its generator then. Errors as Make, and kInvalidArgument for too many ids.
  [[nodiscard]] static Result<EmissionBuffer> Restore(int64_t buffer_size, std::optional<int64_t> min_fill,
                                                      NumpyGenerator generator, std::vector<int64_t> held,
                                                      bool awaiting_extra);

  // Push: the next input id; returns the id emitted at this step, or nullopt when the reference
  // would not yield yet. kInvalidArgument after Finish.
  [[nodiscard]] Result<std::optional<int64_t>> Push(int64_t id);

  // Finish: the input has ended; returns every id still held, in the order the reference yields
  // them. The buffer is empty afterwards and accepts no more pushes. kInvalidArgument when
  // called twice.
  [[nodiscard]] Result<std::vector<int64_t>> Finish();

  int64_t buffer_size() const { return buffer_size_; }
  int64_t min_fill() const { return min_fill_; }
  // size: the ids held now.
  int64_t size() const { return static_cast<int64_t>(held_.size()); }
  bool finished() const { return state_ == State::kFinished; }
  // held / awaiting_extra / generator: the state Restore takes back.
  const std::vector<int64_t>& held() const { return held_; }
  bool awaiting_extra() const { return state_ == State::kAwaitingExtra; }
  const NumpyGenerator& generator() const { return generator_; }

 private:
  enum class State {
    kAwaitingItem,   // the next push is the reference's `for item in items` item
    kAwaitingExtra,  // the next push is the reference's `next(items)` extra pull
    kFinished,
  };

  EmissionBuffer(int64_t buffer_size, int64_t min_fill, NumpyGenerator generator);

  // Pick: remove and return a uniformly drawn held id (swap with the last, pop), as `_pick`.
  int64_t Pick();

  int64_t buffer_size_;
  int64_t min_fill_;
  NumpyGenerator generator_;
  std::vector<int64_t> held_;
  State state_ = State::kAwaitingItem;
};

// EmitOrder: `ShuffleBuffer(buffer_size, min_fill=min_fill).emit_order(n, rng=generator)`: the
// input positions 0..n-1 in the order they are emitted. Errors as EmissionBuffer::Make, and
// kInvalidArgument for n < 0.
[[nodiscard]] Result<std::vector<int64_t>> EmitOrder(int64_t n, int64_t buffer_size, std::optional<int64_t> min_fill,
                                                     NumpyGenerator generator);

}  // namespace rrl::sample
