// The one-pass LayerNorm kernels (attention/standard/layer_norm_op.h) against float64 ATen on the
// CPU: LayerNorm(a) and LayerNorm(GELU(a)), y and the gradients of a, gamma, beta; bf16 and fp16;
// F from 8 to the 8192 limit (including a partly filled last warp), one row to many rows per
// block; no output may hold a NaN. Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/standard/layer_norm_op.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

// The op under test (kernels on the GPU) or, on float64 CPU tensors, the ATen reference.
at::Tensor norm(const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& beta, bool gelu,
                bool fused) {
  if (gelu) return gelu_layer_norm(a, gamma, beta, 1e-5, fused);
  return fused ? fast_layer_norm(a, gamma, beta, 1e-5)
               : at::layer_norm(a, {a.size(-1)}, gamma, beta, 1e-5);
}

TEST(GpuLayerNorm, KernelsMatchFloat64Aten) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  for (bool gelu : {true, false}) {
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
      for (int64_t F : {8, 264, 768, 3072, 8192}) {
        for (int64_t rows : {1, 37, 4099}) {
          SCOPED_TRACE(std::string(gelu ? "gelu " : "plain ") + c10::toString(dtype) +
                       " F=" + std::to_string(F) + " rows=" + std::to_string(rows));
          const auto on_gpu = torch::dtype(dtype).device(torch::kCUDA);
          // An offset mean, so a kernel that skips the centring fails.
          at::Tensor a = (2 * torch::randn({rows, F}, on_gpu) + 0.5).requires_grad_();
          at::Tensor gamma = (1 + 0.5 * torch::randn({F}, on_gpu)).requires_grad_();
          at::Tensor beta = torch::randn({F}, on_gpu).requires_grad_();
          at::Tensor dy = torch::randn({rows, F}, on_gpu);
          ASSERT_TRUE(layer_norm_kernel_applies(a, gamma, beta));
          at::Tensor y = norm(a, gamma, beta, gelu, /*fused=*/true);
          auto grads = torch::autograd::grad({y}, {a, gamma, beta}, {dy});
          for (const at::Tensor& t : {y, grads[0], grads[1], grads[2]}) {
            ASSERT_FALSE(torch::isnan(t.to(at::kFloat)).any().item<bool>());
          }

          auto to64 = [](const at::Tensor& t) {
            return t.detach().cpu().to(at::kDouble).requires_grad_();
          };
          at::Tensor a64 = to64(a), gamma64 = to64(gamma), beta64 = to64(beta);
          at::Tensor want = norm(a64, gamma64, beta64, gelu, /*fused=*/false);
          auto want_grads =
              torch::autograd::grad({want}, {a64, gamma64, beta64}, {dy.cpu().to(at::kDouble)});
          const double tol = dtype == at::kBFloat16 ? 1e-2 : 5e-3;
          EXPECT_LT(testing::relative_error(y, want), tol);
          EXPECT_LT(testing::relative_error(grads[0], want_grads[0]), tol);
          EXPECT_LT(testing::relative_error(grads[1], want_grads[1]), tol);
          EXPECT_LT(testing::relative_error(grads[2], want_grads[2]), tol);
        }
      }
    }
  }
}

TEST(GpuLayerNorm, OperandsTheKernelDoesNotTakeFallBackToOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto on_gpu = torch::dtype(at::kBFloat16).device(torch::kCUDA);
  at::Tensor a = torch::randn({5, 20}, on_gpu);  // F % 8 != 0
  at::Tensor gamma = torch::ones({20}, on_gpu), beta = torch::zeros({20}, on_gpu);
  EXPECT_FALSE(layer_norm_kernel_applies(a, gamma, beta));
  for (bool gelu : {true, false}) {
    at::Tensor want = norm(a.cpu().to(at::kDouble), gamma.cpu().to(at::kDouble),
                           beta.cpu().to(at::kDouble), gelu, false);
    EXPECT_LT(testing::relative_error(norm(a, gamma, beta, gelu, true), want), 1e-2);
  }
}

}  // namespace
}  // namespace ra
