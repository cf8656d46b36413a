// Division by a divisor fixed for a whole launch, as a multiply-high, an add and a shift (the
// round-up method of Granlund and Montgomery, "Division by invariant integers using
// multiplication", 1994): an integer division is ~20 instructions on the GPU, and the dilated
// kernels place every (token, head) in every branch (segment, rate, heads) per element. Exact
// for dividends in [0, 2^31) and divisors in [1, 2^31). Host and device (tests/unit/
// test_fast_divmod.cpp checks it against / and % on the CPU).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RA_FAST_DIVMOD_HD __host__ __device__
#else
#define RA_FAST_DIVMOD_HD
#endif

namespace ra::cuda {

struct FastDivmod {
  uint32_t divisor = 1, multiplier = 0, shift = 0;

  FastDivmod() = default;
  // p = ceil(log2 d), m = floor(2^32 (2^p - d) / d) + 1; then x / d = (umulhi(x, m) + x) >> p
  // (the add stays below 2^32 for x < 2^31).
  RA_FAST_DIVMOD_HD explicit FastDivmod(uint32_t d) : divisor(d) {
    while ((uint64_t(1) << shift) < d) ++shift;
    multiplier = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }

  RA_FAST_DIVMOD_HD uint32_t div(uint32_t x) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(x, multiplier);
#else
    const uint32_t high = uint32_t((uint64_t(x) * multiplier) >> 32);
#endif
    return (high + x) >> shift;
  }
  // quotient = x / d, remainder = x - quotient * d.
  RA_FAST_DIVMOD_HD void divmod(uint32_t x, uint32_t& quotient, uint32_t& remainder) const {
    quotient = div(x);
    remainder = x - quotient * divisor;
  }
};

}  // namespace ra::cuda
