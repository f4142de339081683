// rrloader/sample/sample_index.cc — sample space, epoch order and shards.
#include "rrloader/sample/sample_index.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace rrl::sample {

namespace {

__extension__ typedef unsigned __int128 U128;  // NOLINT: GCC/Clang 128-bit product
__extension__ typedef __int128 I128;           // NOLINT

// SplitMix64: a small, well-mixed 64-bit generator; good enough to drive a shuffle and
// trivially reproducible in any language from (seed, epoch).
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// UniformBelow: an unbiased integer in [0, bound) (Lemire's multiply-and-reject).
uint64_t UniformBelow(uint64_t* state, uint64_t bound) {
  U128 m = static_cast<U128>(SplitMix64(state)) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<U128>(SplitMix64(state)) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

}  // namespace

Result<SampleIndex> SampleIndex::Make(std::vector<SegmentSamples> segments, int64_t step) {
  if (step < 1) return Status::InvalidArgument("sample step must be >= 1, got " + std::to_string(step));
  SampleIndex s;
  s.step_ = step;
  int64_t acc = 0;
  for (const auto& seg : segments) {
    if (seg.num_samples <= 0) {
      return Status::InvalidArgument("segment " + std::to_string(seg.segment) + " has no samples");
    }
    acc += seg.num_samples;
    s.offsets_.push_back(acc);
  }
  s.segments_ = std::move(segments);
  return s;
}

Status SampleIndex::Locate(int64_t g, int32_t* segment_pos, int64_t* value) const {
  if (g < 0 || g >= total()) {
    return Status::InvalidArgument("Index " + std::to_string(g) + " out of range [0, " + std::to_string(total()) + ")");
  }
  const auto it = std::upper_bound(offsets_.begin(), offsets_.end(), g);
  const auto pos = static_cast<size_t>(it - offsets_.begin());
  const int64_t begin = pos == 0 ? 0 : offsets_[pos - 1];
  *segment_pos = static_cast<int32_t>(pos);
  *value = segments_[pos].index_start + (g - begin) * step_;
  return Status::OK();
}

std::vector<int64_t> EpochOrder(int64_t total, uint64_t seed, uint64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(total, 0)));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle || order.size() < 2) return order;
  uint64_t state = seed * 0xD1B54A32D192ED03ull ^ (epoch + 0x8CB92BA72F3D8DD7ull);
  SplitMix64(&state);
  for (size_t i = order.size() - 1; i > 0; --i) {
    const auto j = static_cast<size_t>(UniformBelow(&state, i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::pair<int64_t, int64_t> ShardBounds(int64_t n, int64_t part, int64_t count) {
  if (count <= 0 || part < 0 || part >= count) return {0, 0};
  const auto bound = [&](int64_t p) { return static_cast<int64_t>((static_cast<I128>(n) * p) / count); };
  return {bound(part), bound(part + 1)};
}

}  // namespace rrl::sample
