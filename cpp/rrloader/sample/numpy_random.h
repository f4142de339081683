// rrloader/sample/numpy_random.h — NumPy's default random generator, number for number.
//
// rerun-sdk 0.41 draws its epoch orders and its emission buffer's picks from
// `np.random.default_rng(entropy)` (SeedSequence -> PCG64 -> Generator). To replay those
// orders natively, without a Python round trip per sample, this file restates the three
// pieces from their definitions:
//   - SeedSequence: numpy's entropy pool (4 x uint32, hashmix/mix) and generate_state;
//   - Pcg64: the 128-bit LCG with the XSL-RR 64-bit output, and numpy's buffered 32-bit
//     draw (the upper half of a 64-bit draw is kept for the next 32-bit request);
//   - NumpyGenerator: the two Generator methods rerun uses, `integers(high)` (int64,
//     low = 0, endpoint = False: Lemire's rejection method, through the 32-bit draw when
//     high - 1 <= 0xFFFFFFFF) and `permutation(n)` (Fisher–Yates with masked rejection).
// Every function names the numpy call it equals; tests/python/test_numpy_random.py checks
// them against numpy itself.
//
// Thread safety: every type here is a value type; a generator is not thread-safe (each
// draw mutates it) — give each thread its own copy.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "rrloader/common/status.h"

namespace rrl::sample {

// Uint128: PCG64's state width (a GCC/Clang extension; `__extension__` keeps -Wpedantic quiet).
__extension__ typedef unsigned __int128 Uint128;

// SeedWordsFromInt: the uint32 words numpy makes of one non-negative Python int
// (`numpy.random.bit_generator._int_to_uint32_array`): little-endian 32-bit words, as few as
// hold the value, and one zero word for 0. Python ints wider than 64 bits are the caller's to
// split (the words simply continue).
std::vector<uint32_t> SeedWordsFromInt(uint64_t value);

// SeedWordsFromInts: the words numpy makes of a list of non-negative ints
// (`_coerce_to_uint32_array([v0, v1, ...])`): each value's words, concatenated. An empty list
// gives no words. `default_rng([epoch, rank, worker])` is `SeedWordsFromInts({epoch, rank, worker})`.
std::vector<uint32_t> SeedWordsFromInts(std::span<const uint64_t> values);

// SeedSequence: `numpy.random.SeedSequence(entropy)` with the default pool size (4), no
// spawn key and nothing spawned, where `entropy_words` are the words of the entropy above.
// Value type; immutable after construction, so const methods may be shared across threads.
class SeedSequence {
 public:
  static constexpr int kPoolSize = 4;

  explicit SeedSequence(std::span<const uint32_t> entropy_words);

  // pool: `SeedSequence(entropy).pool` (the mixed entropy).
  const std::array<uint32_t, kPoolSize>& pool() const { return pool_; }

  // GenerateState32: `SeedSequence(entropy).generate_state(n_words, np.uint32)`.
  std::vector<uint32_t> GenerateState32(size_t n_words) const;

  // GenerateState64: `SeedSequence(entropy).generate_state(n_words, np.uint64)` (pairs of
  // 32-bit words, the first of each pair the low half).
  std::vector<uint64_t> GenerateState64(size_t n_words) const;

 private:
  std::array<uint32_t, kPoolSize> pool_{};
};

// Pcg64State: the fields of `numpy.random.PCG64(...).state` (128-bit values split in halves).
struct Pcg64State {
  uint64_t state_high = 0;
  uint64_t state_low = 0;
  uint64_t inc_high = 0;
  uint64_t inc_low = 0;
  bool has_uint32 = false;
  uint32_t uinteger = 0;
};

// Pcg64: `numpy.random.PCG64`. Value type; not thread-safe (draws mutate it).
class Pcg64 {
 public:
  // Pcg64: `numpy.random.PCG64(entropy)` where `seed` is `SeedSequence(entropy)`: the state
  // seeds pcg_setseq_128_srandom_r with generate_state(4, np.uint64) = [state_hi, state_lo,
  // inc_hi, inc_lo].
  explicit Pcg64(const SeedSequence& seed);
  // FromState: the generator whose `state()` is `state` (numpy: `PCG64().state = ...`), to
  // continue a stream saved earlier.
  static Pcg64 FromState(const Pcg64State& state);

  // Next64: `bit_generator.random_raw()`: one LCG step, XSL-RR output of the new state. Leaves
  // a buffered 32-bit half untouched, as numpy does.
  uint64_t Next64();

  // Next32: numpy's next_uint32: the buffered upper half of the previous 64-bit draw made by
  // Next32 if there is one, else the lower half of a new 64-bit draw (keeping its upper half).
  uint32_t Next32();

  // state: `PCG64.state['state']` plus has_uint32/uinteger.
  Pcg64State state() const;

 private:
  Pcg64() = default;
  void Step();

  Uint128 state_ = 0;
  Uint128 inc_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

// NumpyGenerator: `numpy.random.Generator(PCG64(...))` for the methods rerun uses.
// Value type; not thread-safe (draws mutate it). Copying forks the stream (both copies
// produce the same numbers from then on).
class NumpyGenerator {
 public:
  explicit NumpyGenerator(Pcg64 bit_generator) : bits_(bit_generator) {}

  // FromEntropyWords: `np.random.default_rng(entropy)` where `entropy_words` are the words of
  // the entropy (see SeedWordsFromInts).
  static NumpyGenerator FromEntropyWords(std::span<const uint32_t> entropy_words);
  // FromInts: `np.random.default_rng([v0, v1, ...])`, e.g. `[epoch, rank, worker_id]`.
  static NumpyGenerator FromInts(std::span<const uint64_t> values);
  // FromSeed: `np.random.default_rng(seed)` (also `default_rng(seed=seed)`).
  static NumpyGenerator FromSeed(uint64_t seed);

  // Integers: `int(rng.integers(high))` (dtype int64, low 0, endpoint False) as one scalar
  // call. high == 1 draws nothing and gives 0. kInvalidArgument when high < 1 (numpy: "high <= 0").
  [[nodiscard]] Result<int64_t> Integers(int64_t high);

  // BoundedInclusive: a uniform value in [0, max], drawn exactly as numpy's
  // random_bounded_uint64_fill(off=0, rng=max, cnt=1, use_masked=False) does, which is what
  // `rng.integers(max + 1)` calls: no draw for max == 0; for max <= 0xFFFFFFFF the 32-bit draw
  // (all of it for max == 0xFFFFFFFF, else Lemire's method on 32 bits); above, the 64-bit draw
  // (all of it for max == UINT64_MAX, else Lemire's method on 64 bits).
  uint64_t BoundedInclusive(uint64_t max);

  // Interval: numpy's random_interval(max): a uniform value in [0, max] by masked rejection
  // (32-bit draws while max <= 0xFFFFFFFF, else 64-bit draws); max == 0 draws nothing. This is
  // the draw `Generator.shuffle` and `Generator.permutation` make per position.
  uint64_t Interval(uint64_t max);

  // Permutation: `rng.permutation(n)` for an int n (np.arange(n) shuffled in place:
  // for i = n-1 down to 1, swap i with Interval(i)). kInvalidArgument when n < 0 (numpy would
  // return an empty array for a negative n; here that is a caller bug).
  [[nodiscard]] Result<std::vector<int64_t>> Permutation(int64_t n);

  Pcg64& bit_generator() { return bits_; }
  const Pcg64& bit_generator() const { return bits_; }

 private:
  Pcg64 bits_;
};

}  // namespace rrl::sample
