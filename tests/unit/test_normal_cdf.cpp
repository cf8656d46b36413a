// normal_cdf_pdf and the GELU kernels' gelu and gelu_and_slope (attention/standard/cuda/
// normal_cdf.h) on the CPU against float64 erfc/exp on a dense grid over [-12, 12]: Phi within
// 4e-7 absolute (the formula's 7.5e-8 plus the float rounding of its Horner sum and of h, a few
// ulps of 1), phi within 1e-7 absolute (exp(-a^2 / 2) of a float a^2: relative error grows with
// a^2, as any float evaluation's), and GELU and its derivative within 4e-7 of the scale
// max(1, |a|). bf16 and fp16, the kernels' types, resolve 4e-3 and 5e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "attention/standard/cuda/normal_cdf.h"

namespace ra {
namespace {

TEST(NormalCdf, MatchesFloat64OverTheGrid) {
  double worst_cdf = 0, worst_pdf = 0, worst_gelu = 0, worst_slope = 0, worst_scaled = 0;
  for (int i = -120000; i <= 120000; ++i) {
    const float a = float(i) * 1e-4f;
    const double x = a;
    const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0));
    const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    const cuda::NormalCdfPdf got = cuda::normal_cdf_pdf(a);
    const double scale = std::max(1.0, std::fabs(x));
    worst_cdf = std::max(worst_cdf, std::fabs(got.cdf - cdf));
    worst_pdf = std::max(worst_pdf, std::fabs(got.pdf - pdf));
    float value = 0.f, slope = 0.f;
    cuda::gelu_and_slope(a, 1.f, value, slope);
    float scaled_value = 0.f, scaled_slope = 0.f;  // the kernels pass 1 / std as the scale
    cuda::gelu_and_slope(a, 0.37f, scaled_value, scaled_slope);
    ASSERT_EQ(scaled_value, value);
    worst_scaled = std::max(worst_scaled, std::fabs(scaled_slope - 0.37 * (cdf + x * pdf)) / scale);
    ASSERT_EQ(value, cuda::gelu(a)) << "a = " << a;  // the forward and the backward's recompute
    worst_gelu = std::max(worst_gelu, std::fabs(double(value) - x * cdf) / scale);
    worst_slope = std::max(worst_slope, std::fabs(double(slope) - (cdf + x * pdf)) / scale);
  }
  EXPECT_LT(worst_cdf, 4e-7);
  EXPECT_LT(worst_pdf, 1e-7);
  EXPECT_LT(worst_gelu, 4e-7);
  EXPECT_LT(worst_slope, 4e-7);
  EXPECT_LT(worst_scaled, 0.37 * 4e-7);
  // The far tails are exact to float resolution, not just small.
  EXPECT_EQ(cuda::normal_cdf_pdf(40.f).cdf, 1.f);
  EXPECT_EQ(cuda::normal_cdf_pdf(-40.f).cdf, 0.f);
  EXPECT_GT(cuda::normal_cdf_pdf(-5.f).cdf, 0.f);
  EXPECT_EQ(cuda::gelu(40.f), 40.f);
  EXPECT_EQ(cuda::gelu(-40.f), 0.f);
}

}  // namespace
}  // namespace ra
