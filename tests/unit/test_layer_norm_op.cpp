// layer_norm_op: the fused GELU + LayerNorm autograd function (on CPU its forward and backward
// are the ATen-op form of the formulas the CUDA kernels implement) against autograd of the
// two-op form LayerNorm(GELU(a)), in float64 and float32; fast_layer_norm off the kernels is
// at::layer_norm; and a model with the fused norms against the same model without them.
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

struct Result {
  at::Tensor y, da, dgamma, dbeta;
};

Result run(const at::Tensor& a0, const at::Tensor& gamma0, const at::Tensor& beta0,
           const at::Tensor& dy, bool fused) {
  at::Tensor a = a0.clone().requires_grad_(), gamma = gamma0.clone().requires_grad_(),
             beta = beta0.clone().requires_grad_();
  at::Tensor y = gelu_layer_norm(a, gamma, beta, 1e-5, fused);
  y.backward(dy);
  return {y.detach(), a.grad(), gamma.grad(), beta.grad()};
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
      const Result fused = run(a, gamma, beta, dy, true), plain = run(a, gamma, beta, dy, false);
      EXPECT_LT(testing::relative_error(fused.y, plain.y), tol);
      EXPECT_LT(testing::relative_error(fused.da, plain.da), tol);
      EXPECT_LT(testing::relative_error(fused.dgamma, plain.dgamma), tol);
      EXPECT_LT(testing::relative_error(fused.dbeta, plain.dbeta), tol);
    }
  }
}

TEST(GeluLayerNorm, KernelDoesNotApplyOnCpuAndShapesAreChecked) {
  auto a = torch::randn({4, 16}).to(torch::kBFloat16);
  auto w = torch::ones({16}).to(torch::kBFloat16), b = torch::zeros({16}).to(torch::kBFloat16);
  EXPECT_FALSE(layer_norm_kernel_applies(a, w, b));
  EXPECT_THROW(gelu_layer_norm(a, torch::ones({8}), b, 1e-5, true), Error);
  EXPECT_THROW(fast_layer_norm(a, w, torch::zeros({8}), 1e-5), Error);
}

TEST(FastLayerNorm, OffTheKernelsIsAtenLayerNorm) {
  auto x = torch::randn({3, 5, 24}, torch::kDouble);
  auto w = torch::randn({24}, torch::kDouble), b = torch::randn({24}, torch::kDouble);
  EXPECT_TRUE(torch::equal(fast_layer_norm(x, w, b, 1e-5), at::layer_norm(x, {24}, w, b, 1e-5)));
}

TEST(GeluLayerNorm, ModelWithFusedNormsMatchesTheAtenModel) {
  auto make = [](bool fused) {
    torch::manual_seed(7);
    ModelConfig config = testing::tiny_model_config(/*num_layers=*/2, /*checkpointing=*/true);
    config.fused_norms = fused;
    LongNetLM model(config, [&] {
      AttentionSpec spec;
      spec.attention = config.attention;
      return make_attention("standard", spec);
    });
    model->to(torch::kDouble);
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

}  // namespace
}  // namespace ra
