// token_linear (one addmm with the bias in the GEMM) against Linear::forward: values and
// gradients for 3-D and 2-D inputs, a strided input view, and a layer without bias. The fused
// bias-gradient autograd function against at::linear for every subset of inputs needing a
// gradient (its mm + sum backward: the cuBLASLt GEMM itself is tests/gpu's), and the operands
// token_linear hands to it (none on the CPU).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/standard/token_linear.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

TEST(TokenLinear, EqualsLinearForwardAndGradients) {
  torch::manual_seed(3);
  for (bool bias : {true, false}) {
    torch::nn::Linear layer(torch::nn::LinearOptions(12, 20).bias(bias));
    layer->to(at::kDouble);
    const at::Tensor wide = torch::randn({2, 7, 24}, torch::dtype(at::kDouble));
    for (const at::Tensor& input : {torch::randn({2, 7, 12}, torch::dtype(at::kDouble)),
                                    torch::randn({5, 12}, torch::dtype(at::kDouble)),
                                    wide.narrow(2, 6, 12)}) {  // strided rows
      SCOPED_TRACE(std::string(bias ? "bias " : "no bias ") + std::to_string(input.dim()) + "-D" +
                   (input.is_contiguous() ? "" : " strided"));
      at::Tensor x1 = input.detach().clone().requires_grad_(),
                 x2 = input.detach().clone().requires_grad_();
      at::Tensor got = token_linear(layer, x1), want = layer->forward(x2);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_LT(testing::relative_error(got, want), 1e-14);
      const at::Tensor g = torch::randn_like(want);
      std::vector<at::Tensor> wrt_got{x1, layer->weight}, wrt_want{x2, layer->weight};
      if (bias) wrt_got.push_back(layer->bias), wrt_want.push_back(layer->bias);
      auto dgot = torch::autograd::grad({got}, wrt_got, {g});
      auto dwant = torch::autograd::grad({want}, wrt_want, {g});
      for (size_t i = 0; i < dgot.size(); ++i) {
        EXPECT_LT(testing::relative_error(dgot[i], dwant[i]), 1e-14) << "gradient " << i;
      }
    }
  }
}

// The autograd function directly: y and the gradients of whichever of x, W, b require one equal
// at::linear's (float64: to rounding; bf16 on the CPU: both within bf16 of float64).
TEST(TokenLinear, FusedBiasGradFunctionEqualsLinearGradients) {
  torch::manual_seed(5);
  for (at::ScalarType dtype : {at::kDouble, at::kBFloat16}) {
    const at::Tensor x0 = torch::randn({37, 24}, torch::dtype(dtype));
    const at::Tensor w0 = torch::randn({40, 24}, torch::dtype(dtype));
    const at::Tensor b0 = torch::randn({40}, torch::dtype(dtype));
    const at::Tensor g = torch::randn({37, 40}, torch::dtype(dtype));
    for (int mask = 1; mask < 8; ++mask) {  // bit 0: x, 1: W, 2: b need a gradient
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " mask " + std::to_string(mask));
      auto leaf = [&](const at::Tensor& t, int bit) {
        return t.detach().clone().requires_grad_((mask >> bit & 1) != 0);
      };
      const at::Tensor x1 = leaf(x0, 0), w1 = leaf(w0, 1), b1 = leaf(b0, 2);
      const at::Tensor x2 = leaf(x0, 0), w2 = leaf(w0, 1), b2 = leaf(b0, 2);
      const at::Tensor got = linear_with_fused_bias_grad(x1, w1, b1);
      const at::Tensor want = at::linear(x2, w2, b2);
      std::vector<at::Tensor> wrt_got, wrt_want;
      for (int bit = 0; bit < 3; ++bit) {
        if (mask >> bit & 1) {
          wrt_got.push_back(std::vector<at::Tensor>{x1, w1, b1}[bit]);
          wrt_want.push_back(std::vector<at::Tensor>{x2, w2, b2}[bit]);
        }
      }
      const auto dgot = torch::autograd::grad({got}, wrt_got, {g});
      const auto dwant = torch::autograd::grad({want}, wrt_want, {g});
      if (dtype == at::kDouble) {
        EXPECT_LT(testing::relative_error(got, want), 1e-14);
        for (size_t i = 0; i < dgot.size(); ++i) {
          EXPECT_LT(testing::relative_error(dgot[i], dwant[i]), 1e-14) << "gradient " << i;
        }
        continue;
      }
      // bf16: both against the float64 gradients of the same bf16 values.
      const at::Tensor x64 = x0.to(at::kDouble), w64 = w0.to(at::kDouble), g64 = g.to(at::kDouble);
      const at::Tensor exact[3] = {g64.mm(w64), g64.t().mm(x64), g64.sum(0)};
      EXPECT_LT(testing::relative_error(got, want.to(at::kDouble)), 1e-2);
      size_t i = 0;
      for (int bit = 0; bit < 3; ++bit) {
        if (!(mask >> bit & 1)) continue;
        EXPECT_EQ(dgot[i].scalar_type(), at::kBFloat16);
        EXPECT_LT(testing::relative_error(dgot[i], exact[bit]), 1e-2) << "gradient " << bit;
        EXPECT_LT(testing::relative_error(dwant[i], exact[bit]), 1e-2) << "gradient " << bit;
        ++i;
      }
    }
  }
}

// The fused function takes only CUDA fp16/bf16 operands of one dtype with a bias: on the CPU
// token_linear always keeps addmm, in every dtype, and still matches Linear::forward.
TEST(TokenLinear, CpuOperandsKeepTheAddmmPath) {
  torch::manual_seed(7);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat, at::kDouble}) {
    SCOPED_TRACE(c10::toString(dtype));
    const at::Tensor x2d = torch::randn({6, 16}).to(dtype);
    const at::Tensor w = torch::randn({8, 16}).to(dtype), b = torch::randn({8}).to(dtype);
    EXPECT_FALSE(token_linear_fuses_bias_grad(x2d, w, b));
    EXPECT_FALSE(token_linear_fuses_bias_grad(x2d, w, at::Tensor()));
  }
  torch::nn::Linear layer(torch::nn::LinearOptions(16, 8));
  layer->to(at::kBFloat16);
  const at::Tensor x = torch::randn({2, 3, 16}).to(at::kBFloat16).requires_grad_();
  const at::Tensor y = token_linear(layer, x);
  EXPECT_LT(testing::relative_error(y, layer->forward(x)), 1e-2);
  EXPECT_EQ(y.grad_fn()->name(), "ViewBackward0");  // addmm's output, viewed to [2, 3, 8]
  EXPECT_EQ(y.grad_fn()->next_edges()[0].function->name(), "AddmmBackward0");
}

}  // namespace
}  // namespace ra
