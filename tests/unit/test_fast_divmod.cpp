// FastDivmod (attention/standard/cuda/fast_divmod.h) against / and % on the CPU: every divisor
// up to 4096 and the dilated plans' typical ones (powers of two, 3 x 2^k, segment lengths up to
// 2^30), over dividends at the edges (0, multiples and their neighbours, 2^31 - 1) and at random.
#include "attention/standard/cuda/fast_divmod.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace ra::cuda {
namespace {

void expect_exact(uint32_t d, uint32_t x) {
  const FastDivmod f(d);
  uint32_t q = 0, r = 0;
  f.divmod(x, q, r);
  ASSERT_EQ(q, x / d) << "x = " << x << ", d = " << d;
  ASSERT_EQ(r, x % d) << "x = " << x << ", d = " << d;
}

TEST(FastDivmod, MatchesIntegerDivision) {
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 4096; ++d) divisors.push_back(d);
  for (uint32_t k = 12; k < 31; ++k) {
    for (uint32_t d : {1u << k, 3u << (k - 2), (1u << k) - 1, (1u << k) + 1}) divisors.push_back(d);
  }
  divisors.push_back((1u << 31) - 1);
  std::mt19937 rng(17);
  std::uniform_int_distribution<uint32_t> any(0, (1u << 31) - 1);
  for (uint32_t d : divisors) {
    for (uint32_t x : {0u, 1u, d - 1, d, d + 1, (1u << 31) - 1, (1u << 31) - d}) {
      expect_exact(d, x);
    }
    // Multiples near the top of the range and their neighbours.
    const uint32_t top = ((1u << 31) - 1) / d * d;
    for (uint32_t x : {top, top - 1, top - d, top - d + 1}) expect_exact(d, x);
    for (int i = 0; i < 200; ++i) expect_exact(d, any(rng));
  }
}

}  // namespace
}  // namespace ra::cuda
