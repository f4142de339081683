// rrloader/sample/sample_index.h — the sample space of an epoch and its order.
//
// A SampleIndex maps a global sample number g in [0, total) to (segment, index value):
// segments in order, each contributing `num_samples` values `index_start + k * step`
// (step = 1 on integer timelines, the fixed-rate grid's ns_per_sample on time timelines).
// The epoch order is a pure function of (seed, epoch, shuffle); a shard of it is a pure
// function of (rank, world size) and then (worker, worker count). Ranges are half-open
// here ([begin, end) positions), unlike the public API's inclusive windows.
//
// Thread safety: immutable after construction; every method is const and reentrant.
#pragma once

#include <cstdint>
#include <vector>

#include "rrloader/common/status.h"

namespace rrl::sample {

// SegmentSamples: one segment's part of the sample space.
struct SegmentSamples {
  int32_t segment = 0;      // the caller's segment number (e.g. position in the dataset)
  int64_t index_start = 0;  // value of the first sample (already window-trimmed)
  int64_t num_samples = 0;  // > 0
};

class SampleIndex {
 public:
  // Make: kInvalidArgument when a count is not positive or step < 1.
  [[nodiscard]] static Result<SampleIndex> Make(std::vector<SegmentSamples> segments, int64_t step);

  int64_t total() const { return offsets_.empty() ? 0 : offsets_.back(); }
  int64_t step() const { return step_; }
  const std::vector<SegmentSamples>& segments() const { return segments_; }

  // Locate: global sample g → (position in segments(), index value). kInvalidArgument
  // naming g and the total when g is outside [0, total).
  [[nodiscard]] Status Locate(int64_t g, int32_t* segment_pos, int64_t* value) const;

 private:
  std::vector<SegmentSamples> segments_;
  std::vector<int64_t> offsets_;  // exclusive prefix sums: offsets_[i] = end of segment i
  int64_t step_ = 1;
};

// EpochOrder: 0..total-1, permuted when `shuffle` (Fisher–Yates driven by a counter-based
// generator keyed by (seed, epoch), so every process computes the same order).
std::vector<int64_t> EpochOrder(int64_t total, uint64_t seed, uint64_t epoch, bool shuffle);

// ShardBounds: the [begin, end) positions of part `part` of `count` equal parts of a list of
// `n` items (sizes differ by at most one; every item in exactly one part).
std::pair<int64_t, int64_t> ShardBounds(int64_t n, int64_t part, int64_t count);

}  // namespace rrl::sample
