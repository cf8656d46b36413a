// token_linear (one addmm with the bias in the GEMM) and token_linears (several layers of one
// input, one backward node) against Linear::forward: values and gradients for 3-D and 2-D
// inputs, a strided input view, layers without bias, and outputs that get no gradient.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/standard/token_linear.h"
#include "runtime/error.h"
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

// The q, k, v form: three layers (one without bias, different widths) of one input; x's gradient
// is the sum over the layers (accumulated in the GEMMs), each parameter's its own.
TEST(TokenLinear, SeveralLayersOfOneInputEqualLinearForwardAndGradients) {
  torch::manual_seed(4);
  std::vector<torch::nn::Linear> layers = {
      torch::nn::Linear(torch::nn::LinearOptions(12, 20)),
      torch::nn::Linear(torch::nn::LinearOptions(12, 8).bias(false)),
      torch::nn::Linear(torch::nn::LinearOptions(12, 16))};
  std::vector<at::Tensor> params;
  for (auto& layer : layers) {
    layer->to(at::kDouble);
    for (const at::Tensor& p : layer->parameters()) params.push_back(p);
  }
  const at::Tensor input = torch::randn({3, 5, 12}, torch::dtype(at::kDouble));
  // A frozen parameter (the last layer's bias) gets no gradient, and skipping it must not shift
  // which of the others are computed (autograd numbers only the tensor inputs: the middle
  // layer has no bias, so the last layer's weight is input 4, its bias 5).
  layers[2]->bias.requires_grad_(false);
  params.pop_back();
  // used: which outputs the loss reads (an unused one must contribute no gradient).
  for (const std::vector<bool>& used : {std::vector<bool>{true, true, true}, {true, false, true}}) {
    SCOPED_TRACE(used[1] ? "all outputs used" : "the second output unused");
    at::Tensor x1 = input.detach().clone().requires_grad_(),
               x2 = input.detach().clone().requires_grad_();
    const std::vector<at::Tensor> got = token_linears(layers, x1);
    ASSERT_EQ(got.size(), layers.size());
    at::Tensor loss_got = at::zeros({}, input.options()), loss_want = loss_got.clone();
    for (size_t i = 0; i < layers.size(); ++i) {
      const at::Tensor want = layers[i]->forward(x2);
      ASSERT_EQ(got[i].sizes(), want.sizes());
      EXPECT_LT(testing::relative_error(got[i], want), 1e-14) << "output " << i;
      if (!used[i]) continue;
      const at::Tensor g = torch::randn_like(want);
      loss_got = loss_got + (got[i] * g).sum(), loss_want = loss_want + (want * g).sum();
    }
    std::vector<at::Tensor> wrt_got{x1}, wrt_want{x2};
    for (const at::Tensor& p : params) wrt_got.push_back(p), wrt_want.push_back(p);
    auto dgot = torch::autograd::grad({loss_got}, wrt_got, {}, {}, false, /*allow_unused=*/true);
    auto dwant = torch::autograd::grad({loss_want}, wrt_want, {}, {}, false, true);
    for (size_t i = 0; i < dgot.size(); ++i) {
      ASSERT_EQ(dgot[i].defined(), dwant[i].defined()) << "gradient " << i;
      if (dgot[i].defined()) {
        EXPECT_LT(testing::relative_error(dgot[i], dwant[i]), 1e-14) << "gradient " << i;
      }
    }
  }
}

TEST(TokenLinear, SeveralLayersNeedOneToThreeLayersOfTheInputWidth) {
  torch::nn::Linear narrow(torch::nn::LinearOptions(4, 6)), wide(torch::nn::LinearOptions(12, 6));
  const at::Tensor x = torch::randn({2, 3, 12});
  EXPECT_THROW(token_linears({}, x), Error);
  EXPECT_THROW(token_linears({wide, wide, wide, wide}, x), Error);
  EXPECT_THROW(token_linears({wide, narrow}, x), Error);
}

}  // namespace
}  // namespace ra
