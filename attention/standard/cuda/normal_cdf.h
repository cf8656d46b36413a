// The standard normal CDF Phi(a) and density phi(a) for the GELU kernels (gelu(a) = a Phi(a),
// gelu'(a) = Phi(a) + a phi(a)), from one exponential: Abramowitz & Stegun 7.1.26,
//   1 - Phi(|a|) = 0.5 (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-a^2 / 2),
//   t = 1 / (1 + p |a| / sqrt(2)),
// absolute error <= 7.5e-8 in Phi (half the formula's erf bound), and exp(-a^2 / 2) is also what
// phi needs. The kernels are bound by their instruction issue, so the pieces are arranged for few
// operations: h = 1/2 - (1 - Phi(|a|)) = |Phi(a) - 1/2| is one fma from the polynomial (its 0.5
// folded into the coefficients), then Phi(a) = 1/2 + sign(a) h, gelu(a) = a / 2 + |a| h and
// gelu'(a) = 1/2 + sign(a) h + a phi(a), with no select. Rounding h adds 2^-25 absolute error to
// Phi (tests/unit/test_normal_cdf.cpp: within 4e-7 of float64). On the device t and the
// exponential are one MUFU instruction each (the flush-to-zero forms: the plain ones wrap the
// MUFU op in subnormal range fixes; a subnormal exp(-a^2 / 2), |a| > 13.2, is a tail below float
// resolution). Host and device (the unit test runs it on the CPU). The kernels call gelu and
// gelu_and_slope; normal_cdf_pdf exposes Phi and phi for the unit test's accuracy bounds.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define RA_HOST_DEVICE __host__ __device__
#else
#define RA_HOST_DEVICE
#endif

namespace ra::cuda {

constexpr float kInvSqrt2Pi = 0.39894228040143268f;  // phi(a) = kInvSqrt2Pi exp(-a^2 / 2)

// h = 1/2 - (1 - Phi(|a|)) and e = exp(-a^2 / 2).
struct NormalHalfSpan {
  float h;
  float e;
};

RA_HOST_DEVICE inline NormalHalfSpan normal_half_span(float a) {
  constexpr float kPOverSqrt2 = 0.3275911f * 0.70710678118654752f;  // t = 1 / (1 + kP |a| / sqrt 2)
  // A&S's a1..a5 times 0.5.
  constexpr float kA1 = 0.127414796f, kA2 = -0.142248368f, kA3 = 0.7107068705f,
                  kA4 = -0.7265760135f, kA5 = 0.5307027145f;
#if defined(__CUDA_ARCH__)
  constexpr float kMinusHalfLog2e =
      -0.72134752044448170f;  // exp(-a^2 / 2) = 2^(a^2 (-log2(e) / 2))
  float t, e;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(t) : "f"(std::fma(std::fabs(a), kPOverSqrt2, 1.f)));
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(a * a * kMinusHalfLog2e));
#else
  const float t = 1.f / std::fma(std::fabs(a), kPOverSqrt2, 1.f);
  const float e = std::exp(-0.5f * a * a);
#endif
  const float poly = t * (kA1 + t * (kA2 + t * (kA3 + t * (kA4 + t * kA5))));
  return {std::fma(-poly, e, 0.5f), e};
}

struct NormalCdfPdf {
  float cdf;  // Phi(a)
  float pdf;  // phi(a)
};

RA_HOST_DEVICE inline NormalCdfPdf normal_cdf_pdf(float a) {
  const NormalHalfSpan n = normal_half_span(a);
  return {0.5f + std::copysign(n.h, a), kInvSqrt2Pi * n.e};
}

// gelu(a) = a / 2 + |a| h from a's pieces (shared by gelu and gelu_and_slope, so the backward's
// recompute is bitwise the forward's value).
RA_HOST_DEVICE inline float gelu_from(float a, const NormalHalfSpan& n) {
  return std::fma(std::fabs(a), n.h, 0.5f * a);
}

RA_HOST_DEVICE inline float gelu(float a) { return gelu_from(a, normal_half_span(a)); }

// gelu(a) and scale x gelu'(a) (the backward recomputes the value and needs the slope times
// the row's 1 / std: folded in, that product costs no multiply).
RA_HOST_DEVICE inline void gelu_and_slope(float a, float scale, float& value, float& slope) {
  const NormalHalfSpan n = normal_half_span(a);
  value = gelu_from(a, n);
  slope = std::fma(a * (kInvSqrt2Pi * scale), n.e,
                   std::fma(std::copysign(n.h, a), scale, 0.5f * scale));
}

}  // namespace ra::cuda
