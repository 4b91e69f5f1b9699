//===- Random.h - Portable, seedable random numbers for data generation ---===//
//
// std::mt19937_64's output sequence is fixed by the C++ standard, but the
// std::*_distribution adaptors are not: libstdc++ and libc++ give different
// numbers. The generators therefore draw only through the helpers below so
// that a seed names the same data set on every platform.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <random>
#include <sstream>
#include <string>

namespace fwp::train {

/// SplitMix64 finaliser: turns (seed, stream) into well-separated seeds.
inline uint64_t mixSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  uint64_t next() { return engine_(); }

  /// Uniform integer in [lo, hi] (inclusive), by rejection: no modulo bias.
  int64_t uniformInt(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    if (span == 0) // the full 64-bit range
      return static_cast<int64_t>(next());
    const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t r;
    do {
      r = next();
    } while (r >= limit);
    return lo + static_cast<int64_t>(r % span);
  }

  /// Uniform double in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// The engine's full state as text (std::mt19937_64's stream format).
  std::string state() const {
    std::ostringstream out;
    out << engine_;
    return out.str();
  }
  void setState(const std::string &text) {
    std::istringstream in(text);
    in >> engine_;
  }

private:
  std::mt19937_64 engine_;
};

} // namespace fwp::train
