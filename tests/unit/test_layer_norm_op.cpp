// layer_norm_op: the fused GELU + LayerNorm autograd function (on CPU its forward and backward
// are the ATen-op form of the formulas the CUDA kernels implement) against autograd of the
// unfused ops LayerNorm(GELU(a + bias)), in float64 and float32; fast_layer_norm and
// add_layer_norm off the kernels are the ATen ops (the kernels are tested on the GPU:
// tests/gpu/test_gpu_layer_norm.cpp); and a model with the fused norms against the same model
// without them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/factory.h"
#include "attention/standard/layer_norm_op.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "tests/support/dense_reference.h"
#include "tests/support/tiny_model.h"

namespace ra {
namespace {

// A float64 model on the "standard" attention, the same weights for the same config. LayerNorm
// gains and all biases start as ones and zeros: perturbed, a LayerNorm applied with another one's
// parameters (or a bias left out) changes the result.
LongNetLM make_float64_model(const ModelConfig& config) {
  LongNetLM model = testing::make_standard_model(config, torch::kDouble);
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  for (auto& p : model->parameters()) {
    if (p.dim() == 1) p.add_(0.3 * torch::randn_like(p));
  }
  return model;
}

struct Result {
  at::Tensor y, da, dbias, dgamma, dbeta;
};

Result run(const at::Tensor& a0, const at::Tensor& bias0, const at::Tensor& gamma0,
           const at::Tensor& beta0, const at::Tensor& dy, bool fused) {
  at::Tensor a = a0.clone().requires_grad_(), gamma = gamma0.clone().requires_grad_(),
             beta = beta0.clone().requires_grad_();
  at::Tensor bias = bias0.defined() ? bias0.clone().requires_grad_() : bias0;
  at::Tensor y = gelu_layer_norm(a, bias, gamma, beta, 1e-5, fused);
  y.backward(dy);
  return {y.detach(), a.grad(), bias.defined() ? bias.grad() : at::Tensor(), gamma.grad(),
          beta.grad()};
}

TEST(GeluLayerNorm, FusedFunctionEqualsTheTwoOpForm) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tol = dtype == torch::kDouble ? 1e-10 : 1e-5;
    for (auto shape : std::vector<std::vector<int64_t>>{{1, 8}, {3, 5, 24}, {2, 7, 64}}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " shape " +
                   c10::str(at::IntArrayRef(shape)));
      torch::manual_seed(3);
      const int64_t F = shape.back();
      at::Tensor a = 2 * torch::randn(shape, dtype);  // both GELU regimes
      at::Tensor gamma = 1 + 0.5 * torch::randn({F}, dtype), beta = torch::randn({F}, dtype);
      at::Tensor dy = torch::randn(shape, dtype);
      for (const at::Tensor& bias : {at::Tensor(), 0.5 * torch::randn({F}, dtype)}) {
        SCOPED_TRACE(bias.defined() ? "with bias" : "no bias");
        const Result fused = run(a, bias, gamma, beta, dy, true),
                     plain = run(a, bias, gamma, beta, dy, false);
        EXPECT_LT(testing::relative_error(fused.y, plain.y), tol);
        EXPECT_LT(testing::relative_error(fused.da, plain.da), tol);
        EXPECT_LT(testing::relative_error(fused.dgamma, plain.dgamma), tol);
        EXPECT_LT(testing::relative_error(fused.dbeta, plain.dbeta), tol);
        if (bias.defined()) {
          EXPECT_LT(testing::relative_error(fused.dbias, plain.dbias), tol);
        }
      }
    }
  }
}

// h = r + a feeds the LayerNorm and (like a residual stream) a use of its own; r and a get h's
// whole gradient. Off the kernels fused = true is the same ATen ops.
TEST(AddLayerNorm, OffTheKernelsEqualsTheUnfusedOps) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tol = dtype == torch::kDouble ? 1e-10 : 1e-5;
    for (auto shape : std::vector<std::vector<int64_t>>{{1, 8}, {3, 5, 24}}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " shape " +
                   c10::str(at::IntArrayRef(shape)));
      torch::manual_seed(4);
      const int64_t F = shape.back();
      const at::Tensor r0 = torch::randn(shape, dtype), a0 = torch::randn(shape, dtype) + 1;
      const at::Tensor gamma0 = 1 + 0.5 * torch::randn({F}, dtype),
                       beta0 = torch::randn({F}, dtype);
      const at::Tensor dy = torch::randn(shape, dtype), dh = torch::randn(shape, dtype);
      std::vector<std::vector<at::Tensor>> results;
      for (bool fused : {true, false}) {
        at::Tensor r = r0.clone().requires_grad_(), a = a0.clone().requires_grad_(),
                   gamma = gamma0.clone().requires_grad_(), beta = beta0.clone().requires_grad_();
        const ResidualNorm out = add_layer_norm(r, a, gamma, beta, 1e-5, fused);
        ((out.normed * dy).sum() + (out.sum * dh).sum()).backward();
        results.push_back(
            {out.sum.detach(), out.normed.detach(), r.grad(), a.grad(), gamma.grad(), beta.grad()});
      }
      for (size_t i = 0; i < results[0].size(); ++i) {
        EXPECT_LT(testing::relative_error(results[0][i], results[1][i]), tol) << "item " << i;
      }
    }
  }
}

TEST(GeluLayerNorm, KernelDoesNotApplyOnCpuAndShapesAreChecked) {
  auto a = torch::randn({4, 16}).to(torch::kBFloat16);
  auto w = torch::ones({16}).to(torch::kBFloat16), b = torch::zeros({16}).to(torch::kBFloat16);
  EXPECT_FALSE(layer_norm_kernel_applies(a, w, b));
  EXPECT_THROW(gelu_layer_norm(a, at::Tensor(), torch::ones({8}), b, 1e-5, true), Error);
  EXPECT_THROW(gelu_layer_norm(a, torch::zeros({8}).to(torch::kBFloat16), w, b, 1e-5, true), Error);
  EXPECT_THROW(fast_layer_norm(a, w, torch::zeros({8}), 1e-5), Error);
  EXPECT_THROW(add_layer_norm(a, torch::randn({4, 8}).to(torch::kBFloat16), w, b, 1e-5, true),
               Error);
}

TEST(FastLayerNorm, OffTheKernelsIsAtenLayerNorm) {
  auto x = torch::randn({3, 5, 24}, torch::kDouble);
  auto w = torch::randn({24}, torch::kDouble), b = torch::randn({24}, torch::kDouble);
  EXPECT_TRUE(torch::equal(fast_layer_norm(x, w, b, 1e-5), at::layer_norm(x, {24}, w, b, 1e-5)));
}

// Every block checkpointed, the first of three (the others pass the residual stream as two
// addends: add_layer_norm across blocks), and none.
TEST(GeluLayerNorm, ModelWithFusedNormsMatchesTheAtenModel) {
  for (int64_t checkpoint_layers : {int64_t(-1), int64_t(1), int64_t(0)}) {
    SCOPED_TRACE("checkpoint_layers " + std::to_string(checkpoint_layers));
    auto make = [&](bool fused) {
      ModelConfig config = testing::tiny_model_config(/*num_layers=*/3, /*checkpointing=*/true);
      config.checkpoint_layers = checkpoint_layers;
      config.fused_norms = fused;
      LongNetLM model = make_float64_model(config);
      model->train();
      return model;
    };
    LongNetLM plain = make(false), fused = make(true);
    torch::manual_seed(11);
    auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
    auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);
    auto loss_plain = plain->loss_sum(plain->hidden_states(tokens, 64), targets);
    auto loss_fused = fused->loss_sum(fused->hidden_states(tokens, 64), targets);
    loss_plain.backward();
    loss_fused.backward();
    EXPECT_NEAR(loss_fused.item<double>(), loss_plain.item<double>(), 1e-10);
    auto p = plain->named_parameters(), f = fused->named_parameters();
    for (const auto& item : p) {
      EXPECT_LT(testing::relative_error(f[item.key()].grad(), item.value().grad()), 1e-10)
          << item.key();
    }
  }
}

// The model's forward with the residual stream passed as two addends between blocks equals the
// blocks' own forward applied one after the other (eval mode: no checkpointing).
TEST(GeluLayerNorm, ResidualStreamBetweenBlocksEqualsBlockByBlockForward) {
  LongNetLM model =
      make_float64_model(testing::tiny_model_config(/*num_layers=*/3, /*checkpointing=*/false));
  model->eval();
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  at::Tensor x = model->embed->forward(tokens);
  for (size_t i = 0; i < model->blocks->size(); ++i) {
    x = model->blocks->ptr<DecoderBlockImpl>(i)->forward(x, 64);
  }
  at::Tensor want = model->final_ln->forward(x);
  EXPECT_LT(testing::relative_error(model->hidden_states(tokens, 64), want), 1e-12);
}

}  // namespace
}  // namespace ra
