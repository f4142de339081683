// rrloader/sample/numpy_random.cc — see numpy_random.h. The constants are the published
// ones of O'Neill's seed_seq_fe (numpy's SeedSequence) and of PCG's 128-bit LCG.
#include "rrloader/sample/numpy_random.h"

#include <string>
#include <utility>

namespace rrl::sample {

namespace {

// SeedSequence hashing constants (numpy/random/bit_generator.pyx).
constexpr uint32_t kInitA = 0x43b0d7e5u;
constexpr uint32_t kMultA = 0x931e8875u;
constexpr uint32_t kInitB = 0x8b51f9ddu;
constexpr uint32_t kMultB = 0x58f38dedu;
constexpr uint32_t kMixMultL = 0xca01f9ddu;
constexpr uint32_t kMixMultR = 0x4973f715u;
constexpr int kXShift = 16;  // half a 32-bit word

// PCG's default 128-bit multiplier.
constexpr Uint128 kPcgMultiplier = (Uint128{0x2360ed051fc65da4ull} << 64) | Uint128{0x4385df649fccf645ull};

// HashMix: hash one word with the running constant (which advances on every call).
uint32_t HashMix(uint32_t value, uint32_t* hash_const) {
  value ^= *hash_const;
  *hash_const *= kMultA;
  value *= *hash_const;
  value ^= value >> kXShift;
  return value;
}

uint32_t Mix(uint32_t x, uint32_t y) {
  uint32_t result = kMixMultL * x - kMixMultR * y;
  result ^= result >> kXShift;
  return result;
}

uint64_t RotateRight64(uint64_t value, unsigned rot) {
  return (value >> rot) | (value << ((64u - rot) & 63u));
}

}  // namespace

std::vector<uint32_t> SeedWordsFromInt(uint64_t value) {
  std::vector<uint32_t> words;
  do {
    words.push_back(static_cast<uint32_t>(value & 0xFFFFFFFFu));
    value >>= 32;
  } while (value != 0);
  return words;
}

std::vector<uint32_t> SeedWordsFromInts(std::span<const uint64_t> values) {
  std::vector<uint32_t> words;
  for (uint64_t v : values) {
    for (uint32_t w : SeedWordsFromInt(v)) words.push_back(w);
  }
  return words;
}

SeedSequence::SeedSequence(std::span<const uint32_t> entropy_words) {
  // numpy's mix_entropy: seed the pool with the first kPoolSize words (zeros past the end),
  // mix every pool word into every other one, then fold in the words that did not fit.
  uint32_t hash_const = kInitA;
  for (size_t i = 0; i < pool_.size(); ++i) {
    pool_[i] = HashMix(i < entropy_words.size() ? entropy_words[i] : 0u, &hash_const);
  }
  for (size_t src = 0; src < pool_.size(); ++src) {
    for (size_t dst = 0; dst < pool_.size(); ++dst) {
      if (src != dst) pool_[dst] = Mix(pool_[dst], HashMix(pool_[src], &hash_const));
    }
  }
  for (size_t src = pool_.size(); src < entropy_words.size(); ++src) {
    for (size_t dst = 0; dst < pool_.size(); ++dst) {
      pool_[dst] = Mix(pool_[dst], HashMix(entropy_words[src], &hash_const));
    }
  }
}

std::vector<uint32_t> SeedSequence::GenerateState32(size_t n_words) const {
  std::vector<uint32_t> state(n_words);
  uint32_t hash_const = kInitB;
  for (size_t i = 0; i < n_words; ++i) {
    uint32_t value = pool_[i % pool_.size()];
    value ^= hash_const;
    hash_const *= kMultB;
    value *= hash_const;
    value ^= value >> kXShift;
    state[i] = value;
  }
  return state;
}

std::vector<uint64_t> SeedSequence::GenerateState64(size_t n_words) const {
  // numpy views the 32-bit words as little-endian uint64: the first word is the low half.
  const std::vector<uint32_t> halves = GenerateState32(2 * n_words);
  std::vector<uint64_t> state(n_words);
  for (size_t i = 0; i < n_words; ++i) {
    state[i] = uint64_t{halves[2 * i]} | (uint64_t{halves[2 * i + 1]} << 32);
  }
  return state;
}

Pcg64::Pcg64(const SeedSequence& seed) {
  const std::vector<uint64_t> words = seed.GenerateState64(4);
  const Uint128 init_state = (Uint128{words[0]} << 64) | words[1];
  const Uint128 init_seq = (Uint128{words[2]} << 64) | words[3];
  // pcg_setseq_128_srandom_r: the increment must be odd; the initial state is mixed in
  // between two steps.
  state_ = 0;
  inc_ = (init_seq << 1) | 1u;
  Step();
  state_ += init_state;
  Step();
}

void Pcg64::Step() {
  state_ = state_ * kPcgMultiplier + inc_;
}

uint64_t Pcg64::Next64() {
  Step();
  // XSL-RR: xor the halves, rotate by the top 6 bits.
  const auto high = static_cast<uint64_t>(state_ >> 64);
  const auto low = static_cast<uint64_t>(state_);
  return RotateRight64(high ^ low, static_cast<unsigned>(state_ >> 122));
}

uint32_t Pcg64::Next32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t next = Next64();
  has_uint32_ = true;
  uinteger_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next & 0xFFFFFFFFu);
}

Pcg64 Pcg64::FromState(const Pcg64State& state) {
  Pcg64 p;
  p.state_ = (Uint128{state.state_high} << 64) | state.state_low;
  p.inc_ = (Uint128{state.inc_high} << 64) | state.inc_low;
  p.has_uint32_ = state.has_uint32;
  p.uinteger_ = state.uinteger;
  return p;
}

Pcg64State Pcg64::state() const {
  return Pcg64State{static_cast<uint64_t>(state_ >> 64),
                    static_cast<uint64_t>(state_),
                    static_cast<uint64_t>(inc_ >> 64),
                    static_cast<uint64_t>(inc_),
                    has_uint32_,
                    uinteger_};
}

NumpyGenerator NumpyGenerator::FromEntropyWords(std::span<const uint32_t> entropy_words) {
  return NumpyGenerator(Pcg64(SeedSequence(entropy_words)));
}

NumpyGenerator NumpyGenerator::FromInts(std::span<const uint64_t> values) {
  return FromEntropyWords(SeedWordsFromInts(values));
}

NumpyGenerator NumpyGenerator::FromSeed(uint64_t seed) {
  return FromEntropyWords(SeedWordsFromInt(seed));
}

uint64_t NumpyGenerator::BoundedInclusive(uint64_t max) {
  if (max == 0) return 0;
  if (max <= 0xFFFFFFFFu) {
    if (max == 0xFFFFFFFFu) return bits_.Next32();
    // Lemire's nearly-divisionless method on 32 bits: the high word of draw * range is the
    // value; the low word tells when the draw fell in the biased tail and must be redrawn.
    const uint32_t range = static_cast<uint32_t>(max) + 1u;
    uint64_t product = uint64_t{bits_.Next32()} * range;
    auto leftover = static_cast<uint32_t>(product);
    if (leftover < range) {
      const uint32_t threshold = (0xFFFFFFFFu - static_cast<uint32_t>(max)) % range;  // 2^32 mod range
      while (leftover < threshold) {
        product = uint64_t{bits_.Next32()} * range;
        leftover = static_cast<uint32_t>(product);
      }
    }
    return product >> 32;
  }
  if (max == UINT64_MAX) return bits_.Next64();
  const uint64_t range = max + 1;
  Uint128 product = Uint128{bits_.Next64()} * range;
  auto leftover = static_cast<uint64_t>(product);
  if (leftover < range) {
    const uint64_t threshold = (UINT64_MAX - max) % range;  // 2^64 mod range
    while (leftover < threshold) {
      product = Uint128{bits_.Next64()} * range;
      leftover = static_cast<uint64_t>(product);
    }
  }
  return static_cast<uint64_t>(product >> 64);
}

Result<int64_t> NumpyGenerator::Integers(int64_t high) {
  if (high < 1) return Status::InvalidArgument("integers(high): high must be >= 1, got " + std::to_string(high));
  return static_cast<int64_t>(BoundedInclusive(static_cast<uint64_t>(high) - 1));
}

uint64_t NumpyGenerator::Interval(uint64_t max) {
  if (max == 0) return 0;
  // The smallest all-ones mask covering max; draws above max are rejected.
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  uint64_t value = 0;
  if (max <= 0xFFFFFFFFu) {
    do {
      value = bits_.Next32() & mask;
    } while (value > max);
  } else {
    do {
      value = bits_.Next64() & mask;
    } while (value > max);
  }
  return value;
}

Result<std::vector<int64_t>> NumpyGenerator::Permutation(int64_t n) {
  if (n < 0) return Status::InvalidArgument("permutation(n): n must be >= 0, got " + std::to_string(n));
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i >= 1; --i) {
    const auto j = static_cast<size_t>(Interval(static_cast<uint64_t>(i)));
    std::swap(out[static_cast<size_t>(i)], out[j]);
  }
  return out;
}

}  // namespace rrl::sample
