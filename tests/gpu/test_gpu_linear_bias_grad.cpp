// token_linear's cuBLASLt weight + bias gradient GEMM against float64 (computed on the GPU): the
// direct call into NaN-poisoned outputs, on the current and on a side stream, and the whole
// autograd path (grad_x, grad_W, grad_bias and y) through token_linear; bf16 and fp16; the
// LongNet-base shapes, a few small ones and odd sizes, where cuBLASLt may have no algorithm and
// the mm + sum fallback must give the same gradients. Skips without a GPU.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "attention/standard/linear_bias_grad_cuda.h"
#include "attention/standard/token_linear.h"
#include "runtime/error.h"
#include "runtime/torch_compat.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

struct Shape {
  int64_t rows, in, out;
};

// [4099, 768] x [768 -> 3072] and [65536, 3072 -> 768]: LongNet-base's fc1 and fc2 (rows odd in
// the first); then small, single-row and odd sizes.
const Shape kShapes[] = {{4099, 768, 3072}, {65536, 3072, 768}, {37, 24, 40},
                         {1, 8, 8},         {333, 72, 136},     {257, 37, 51}};

std::string describe(at::ScalarType dtype, const Shape& s) {
  return std::string(c10::toString(dtype)) + " [" + std::to_string(s.rows) + ", " +
         std::to_string(s.in) + " -> " + std::to_string(s.out) + "]";
}

double tolerance(at::ScalarType dtype) { return dtype == at::kBFloat16 ? 1e-2 : 5e-3; }

TEST(GpuLinearBiasGrad, CublasLtGemmMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(11);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(describe(dtype, s));
      const auto on_gpu = torch::dtype(dtype).device(torch::kCUDA);
      const at::Tensor x = torch::randn({s.rows, s.in}, on_gpu);
      const at::Tensor dy = torch::randn({s.rows, s.out}, on_gpu);
      const at::Tensor dy64 = dy.to(at::kDouble);
      const at::Tensor want_w = dy64.t().mm(x.to(at::kDouble)), want_b = dy64.sum(0);
      for (bool side_stream : {false, true}) {
        SCOPED_TRACE(side_stream ? "side stream" : "current stream");
        at::Tensor dw = torch::full({s.out, s.in}, NAN, on_gpu);
        at::Tensor db = torch::full({s.out}, NAN, on_gpu);
        bool ran = false;
        if (side_stream) {
          // A side stream too: the GEMM takes the current stream and PyTorch's workspace is per
          // stream.
          torch::cuda::synchronize();  // inputs and poison written on the default stream
          const c10::cuda::CUDAStreamGuard guard(at::cuda::getStreamFromPool());
          ran = linear_weight_bias_grad_cuda(dy, x, dw, db);
          torch::cuda::synchronize();
        } else {
          ran = linear_weight_bias_grad_cuda(dy, x, dw, db);
        }
        if (!ran) {
          // Only odd sizes may lack an algorithm; then nothing was written.
          EXPECT_TRUE(s.in % 8 != 0 || s.out % 8 != 0) << "no cuBLASLt algorithm";
          EXPECT_TRUE(torch::isnan(dw).all().item<bool>());
          continue;
        }
        EXPECT_LT(testing::relative_error(dw, want_w), tolerance(dtype));
        EXPECT_LT(testing::relative_error(db, want_b), tolerance(dtype));
      }
    }
  }
}

TEST(GpuLinearBiasGrad, TokenLinearGradientsMatchFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(12);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(describe(dtype, s));
      torch::nn::Linear layer(torch::nn::LinearOptions(s.in, s.out));
      layer->to(torch::kCUDA, dtype);
      const auto on_gpu = torch::dtype(dtype).device(torch::kCUDA);
      // [batch 1, rows, in], as the model calls it.
      const at::Tensor x = torch::randn({1, s.rows, s.in}, on_gpu).requires_grad_();
      const at::Tensor dy = torch::randn({1, s.rows, s.out}, on_gpu);
      ASSERT_TRUE(token_linear_fuses_bias_grad(x.view({s.rows, s.in}), layer->weight, layer->bias));
      const at::Tensor y = token_linear(layer, x);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, s.rows, s.out}));
      const auto grads = torch::autograd::grad({y}, {x, layer->weight, layer->bias}, {dy});

      const at::Tensor x64 = x.detach().to(at::kDouble).view({s.rows, s.in});
      const at::Tensor w64 = layer->weight.detach().to(at::kDouble);
      const at::Tensor b64 = layer->bias.detach().to(at::kDouble);
      const at::Tensor dy64 = dy.to(at::kDouble).view({s.rows, s.out});
      const double tol = tolerance(dtype);
      EXPECT_LT(testing::relative_error(y.view({s.rows, s.out}), at::addmm(b64, x64, w64.t())),
                tol);
      EXPECT_LT(testing::relative_error(grads[0].view({s.rows, s.in}), dy64.mm(w64)), tol);
      EXPECT_LT(testing::relative_error(grads[1], dy64.t().mm(x64)), tol);
      EXPECT_LT(testing::relative_error(grads[2], dy64.sum(0)), tol);
      EXPECT_EQ(grads[1].scalar_type(), dtype);
      EXPECT_EQ(grads[2].scalar_type(), dtype);
    }
  }
}

// Every subset of x, W, b needing a gradient (the fused GEMM runs only when W and b both do;
// otherwise mm or sum), each against float64.
TEST(GpuLinearBiasGrad, GradientSubsets) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(13);
  const auto on_gpu = torch::dtype(at::kBFloat16).device(torch::kCUDA);
  const int64_t rows = 1000, in = 64, out = 96;
  const at::Tensor x0 = torch::randn({rows, in}, on_gpu), dy = torch::randn({rows, out}, on_gpu);
  const at::Tensor w0 = torch::randn({out, in}, on_gpu), b0 = torch::randn({out}, on_gpu);
  const at::Tensor x64 = x0.to(at::kDouble), w64 = w0.to(at::kDouble), dy64 = dy.to(at::kDouble);
  const at::Tensor exact[3] = {dy64.mm(w64), dy64.t().mm(x64), dy64.sum(0)};
  for (int mask = 1; mask < 8; ++mask) {  // bit 0: x, 1: W, 2: b
    SCOPED_TRACE("mask " + std::to_string(mask));
    const at::Tensor x = x0.clone().requires_grad_((mask & 1) != 0);
    const at::Tensor w = w0.clone().requires_grad_((mask & 2) != 0);
    const at::Tensor b = b0.clone().requires_grad_((mask & 4) != 0);
    ASSERT_TRUE(token_linear_fuses_bias_grad(x, w, b));
    const at::Tensor y = linear_with_fused_bias_grad(x, w, b);
    std::vector<at::Tensor> wrt;
    std::vector<int> bits;
    for (int bit = 0; bit < 3; ++bit) {
      if (mask >> bit & 1)
        wrt.push_back(std::vector<at::Tensor>{x, w, b}[bit]), bits.push_back(bit);
    }
    const auto grads = torch::autograd::grad({y}, wrt, {dy});
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_LT(testing::relative_error(grads[i], exact[bits[i]]), 1e-2) << "input " << bits[i];
    }
  }
}

// Operands the fused function does not take keep addmm: fp32, mixed dtypes, no bias, a
// non-contiguous 2-D view, no rows, autocast on. The direct call rejects bad operands with an
// ra::Error.
TEST(GpuLinearBiasGrad, OtherOperandsAreNotSelected) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto bf16 = torch::dtype(at::kBFloat16).device(torch::kCUDA);
  const at::Tensor x = torch::randn({6, 16}, bf16), w = torch::randn({8, 16}, bf16);
  const at::Tensor b = torch::randn({8}, bf16);
  EXPECT_TRUE(token_linear_fuses_bias_grad(x, w, b));
  EXPECT_TRUE(token_linear_fuses_bias_grad(x.to(at::kHalf), w.to(at::kHalf), b.to(at::kHalf)));
  EXPECT_FALSE(token_linear_fuses_bias_grad(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat)));
  EXPECT_FALSE(token_linear_fuses_bias_grad(x, w.to(at::kFloat), b));
  EXPECT_FALSE(token_linear_fuses_bias_grad(x, w, b.to(at::kFloat)));
  EXPECT_FALSE(token_linear_fuses_bias_grad(x, w, at::Tensor()));
  EXPECT_FALSE(token_linear_fuses_bias_grad(torch::randn({6, 32}, bf16).narrow(1, 8, 16), w, b));
  EXPECT_FALSE(token_linear_fuses_bias_grad(x.narrow(0, 0, 0), w, b));
  compat::set_cuda_bf16_autocast(true);
  EXPECT_FALSE(token_linear_fuses_bias_grad(x, w, b));
  compat::set_cuda_bf16_autocast(false);
  EXPECT_THROW(linear_weight_bias_grad_cuda(torch::randn({6, 8}, bf16), x,
                                            torch::empty({8, 8}, bf16), torch::empty({8}, bf16)),
               Error);
}

}  // namespace
}  // namespace ra
