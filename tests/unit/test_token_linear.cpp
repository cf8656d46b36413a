// token_linear (one addmm with the bias in the GEMM) against Linear::forward: values and
// gradients for 3-D and 2-D inputs, a strided input view, and a layer without bias.
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

}  // namespace
}  // namespace ra
