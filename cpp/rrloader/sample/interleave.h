// rrloader/sample/interleave.h — the epoch order of the decode-once shuffle
// (rrloader.experimental.dataloader.InterleavedShuffle).
//
// The epoch's samples are cut into *runs*: consecutive samples of one segment (by default the
// samples of one GOP of the first video field). Runs are opened in a random order; at most
// `open_runs` are open at once. Emission goes in rounds: each round visits every open run once,
// in a fresh random order, and emits that run's next sample; runs that ended are replaced, at
// the end of the round, by the next unopened runs. So every sample comes out exactly once, each
// run's samples in their natural order (a video decoder continues its GOP session instead of
// decoding from the keyframe again), and any `open_runs` consecutive samples of one round come
// from `open_runs` different runs (a batch is as varied as a uniform shuffle's once
// open_runs >= the batch size). Random draws: numpy's generator (numpy_random.h), so the order
// is a pure function of the runs, open_runs and the generator's seed.
//
// Thread safety: a pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/sample/numpy_random.h"

namespace rrl::sample {

// InterleavedOrder: every sample of the runs in the order above. `run_starts[r]` is run r's
// first sample number and `run_lengths[r]` (>= 1) its sample count; runs are opened in the
// order `generator.Permutation(runs)`, each round visits the open runs in the order
// `generator.Permutation(open)`. kInvalidArgument for mismatched sizes, a run length below 1 or
// open_runs below 1.
[[nodiscard]] Result<std::vector<int64_t>> InterleavedOrder(const std::vector<int64_t>& run_starts,
                                                            const std::vector<int64_t>& run_lengths, int64_t open_runs,
                                                            NumpyGenerator generator);

}  // namespace rrl::sample
