// The standard normal CDF Phi(a) and density phi(a) for the GELU kernels (gelu(a) = a Phi(a),
// gelu'(a) = Phi(a) + a phi(a)), from one exponential: Abramowitz & Stegun 7.1.26,
//   1 - Phi(|a|) = 0.5 (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-a^2 / 2),
//   t = 1 / (1 + p |a| / sqrt(2)),
// absolute error <= 7.5e-8 in Phi (half the formula's erf bound; ~3e-7 with float rounding, a
// few ulps of 1: tests/unit/test_normal_cdf.cpp), and exp(-a^2 / 2) is also what phi needs. ~16
// instructions with two MUFU ops, where erff alone is ~22 plus the exp for phi: the GELU LayerNorm
// kernels are bound by their arithmetic, not memory. The negative tail is computed directly (no 1 +
// erf cancellation). Host and device (the unit test runs it on the CPU; the device build uses the
// fast reciprocal and exponential, ~2 ulp each).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define RA_HOST_DEVICE __host__ __device__
#else
#define RA_HOST_DEVICE
#endif

namespace ra::cuda {

struct NormalCdfPdf {
  float cdf;  // Phi(a)
  float pdf;  // phi(a)
};

RA_HOST_DEVICE inline NormalCdfPdf normal_cdf_pdf(float a) {
  constexpr float kInvSqrt2 = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;
  constexpr float kP = 0.3275911f, kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f,
                  kA4 = -1.453152027f, kA5 = 1.061405429f;
  const float z = std::fabs(a) * kInvSqrt2;
#if defined(__CUDA_ARCH__)
  const float t = __fdividef(1.f, 1.f + kP * z);
  const float e = __expf(-z * z);  // exp(-a^2 / 2)
#else
  const float t = 1.f / (1.f + kP * z);
  const float e = std::exp(-z * z);
#endif
  const float poly = t * (kA1 + t * (kA2 + t * (kA3 + t * (kA4 + t * kA5))));
  const float tail = 0.5f * poly * e;  // 1 - Phi(|a|)
  return {a >= 0.f ? 1.f - tail : tail, kInvSqrt2Pi * e};
}

}  // namespace ra::cuda
