// The one-pass LayerNorm kernels (attention/standard/layer_norm_op.h) against float64 ATen on the
// CPU: LayerNorm(a), LayerNorm(GELU(a + bias)) and {h = r + a, LayerNorm(h)}, the outputs and the
// gradients of every input (a, bias, r, gamma, beta; h gets a gradient of its own, as a residual
// stream does); bf16 and fp16; F from 8 to the 8192 limit (including a partly filled last warp),
// one row to many rows per block; no output may hold a NaN. And the model with the fused norms
// (fc1's bias in the GELU op, residual adds in the LayerNorms, across blocks too) in bf16 on the
// GPU against float64: no less accurate than the same model on ATen's ops. Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "attention/factory.h"
#include "attention/standard/layer_norm_op.h"
#include "runtime/model.h"
#include "tests/support/dense_reference.h"
#include "tests/support/tiny_model.h"

namespace ra {
namespace {

enum class Form { kPlain, kGelu, kResidual };

struct Inputs {
  at::Tensor a, bias, r, gamma, beta;
};

// The op under test (kernels on the GPU) or, with fused = false on float64 CPU tensors, the ATen
// reference. Returns {y} or {y, h}.
std::vector<at::Tensor> norm(const Inputs& in, Form form, bool fused) {
  switch (form) {
    case Form::kGelu:
      return {gelu_layer_norm(in.a, in.bias, in.gamma, in.beta, 1e-5, fused)};
    case Form::kResidual: {
      const ResidualNorm out = add_layer_norm(in.r, in.a, in.gamma, in.beta, 1e-5, fused);
      return {out.normed, out.sum};
    }
    default:
      return {fused ? fast_layer_norm(in.a, in.gamma, in.beta, 1e-5)
                    : at::layer_norm(in.a, {in.a.size(-1)}, in.gamma, in.beta, 1e-5)};
  }
}

// The inputs that take part in `form`, in a fixed order.
std::vector<at::Tensor> leaves(const Inputs& in, Form form) {
  if (form == Form::kGelu) return {in.a, in.bias, in.gamma, in.beta};
  if (form == Form::kResidual) return {in.a, in.r, in.gamma, in.beta};
  return {in.a, in.gamma, in.beta};
}

const char* name(Form form) {
  return form == Form::kGelu ? "gelu " : form == Form::kResidual ? "residual " : "plain ";
}

TEST(GpuLayerNorm, KernelsMatchFloat64Aten) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  for (Form form : {Form::kGelu, Form::kPlain, Form::kResidual}) {
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
      for (int64_t F : {8, 264, 768, 3072, 8192}) {
        // 65537 rows: every block of the narrow forms walks many rows with its prefetch (4099
        // rows leave one or two per block where F is small).
        for (int64_t rows : {1, 37, 4099, 65537}) {
          if (rows > 4099 && F > 768) continue;
          SCOPED_TRACE(std::string(name(form)) + c10::toString(dtype) + " F=" + std::to_string(F) +
                       " rows=" + std::to_string(rows));
          const auto on_gpu = torch::dtype(dtype).device(torch::kCUDA);
          // An offset mean, so a kernel that skips the centring fails.
          Inputs in{(2 * torch::randn({rows, F}, on_gpu) + 0.5).requires_grad_(),
                    (0.5 * torch::randn({F}, on_gpu)).requires_grad_(),
                    (2 * torch::randn({rows, F}, on_gpu) - 0.5).requires_grad_(),
                    (1 + 0.5 * torch::randn({F}, on_gpu)).requires_grad_(),
                    torch::randn({F}, on_gpu).requires_grad_()};
          ASSERT_TRUE(layer_norm_kernel_applies(in.a, in.gamma, in.beta));
          const std::vector<at::Tensor> outs = norm(in, form, /*fused=*/true);
          std::vector<at::Tensor> seeds;  // dy (and dh)
          for (const at::Tensor& out : outs) seeds.push_back(torch::randn_like(out));
          const auto grads = torch::autograd::grad(outs, leaves(in, form), seeds);
          for (const at::Tensor& t : outs) {
            ASSERT_FALSE(torch::isnan(t.to(at::kFloat)).any().item<bool>());
          }
          for (const at::Tensor& t : grads) {
            ASSERT_FALSE(torch::isnan(t.to(at::kFloat)).any().item<bool>());
          }

          auto to64 = [](const at::Tensor& t) {
            return t.detach().cpu().to(at::kDouble).requires_grad_();
          };
          const Inputs in64{to64(in.a), to64(in.bias), to64(in.r), to64(in.gamma), to64(in.beta)};
          const std::vector<at::Tensor> want = norm(in64, form, /*fused=*/false);
          std::vector<at::Tensor> seeds64;
          for (const at::Tensor& s : seeds) seeds64.push_back(s.cpu().to(at::kDouble));
          const auto want_grads = torch::autograd::grad(want, leaves(in64, form), seeds64);
          const double tol = dtype == at::kBFloat16 ? 1e-2 : 5e-3;
          for (size_t i = 0; i < outs.size(); ++i) {
            EXPECT_LT(testing::relative_error(outs[i], want[i]), tol) << "output " << i;
          }
          for (size_t i = 0; i < grads.size(); ++i) {
            EXPECT_LT(testing::relative_error(grads[i], want_grads[i]), tol) << "gradient " << i;
          }
        }
      }
    }
  }
}

TEST(GpuLayerNorm, OperandsTheKernelDoesNotTakeFallBackToOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto on_gpu = torch::dtype(at::kBFloat16).device(torch::kCUDA);
  const Inputs in{torch::randn({5, 20}, on_gpu), torch::randn({20}, on_gpu),  // F % 8 != 0
                  torch::randn({5, 20}, on_gpu), torch::ones({20}, on_gpu),
                  torch::zeros({20}, on_gpu)};
  EXPECT_FALSE(layer_norm_kernel_applies(in.a, in.gamma, in.beta));
  auto to64 = [](const at::Tensor& t) { return t.cpu().to(at::kDouble); };
  const Inputs in64{to64(in.a), to64(in.bias), to64(in.r), to64(in.gamma), to64(in.beta)};
  for (Form form : {Form::kGelu, Form::kPlain, Form::kResidual}) {
    const auto got = norm(in, form, true), want = norm(in64, form, false);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LT(testing::relative_error(got[i], want[i]), 1e-2) << name(form) << i;
    }
  }
}

// A LongNet model whose first of three blocks is checkpointed (chunked FFN) and whose other two
// pass the residual stream between them, with head dim 64 and widths the kernels take.
LongNetLM make_model(bool fused_norms) {
  torch::manual_seed(7);
  ModelConfig config = testing::tiny_model_config(/*num_layers=*/3, /*checkpointing=*/true);
  config.embed_dim = 128, config.num_heads = 2, config.ffn_dim = 256;
  config.attention.segment_lengths = {16, 64};
  config.loss_chunk_tokens = 24, config.ffn_chunk_tokens = 24;
  config.checkpoint_layers = 1;
  config.fused_norms = fused_norms;
  LongNetLM model(config, [&] {
    AttentionSpec spec;
    spec.attention = config.attention;
    return make_attention("standard", spec);
  });
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);  // LayerNorm gains and biases off their ones and zeros
  for (auto& p : model->parameters()) {
    if (p.dim() == 1) p.add_(0.3 * torch::randn_like(p));
  }
  model->train();
  return model;
}

TEST(GpuLayerNorm, FusedModelIsAsAccurateAsTheAtenModel) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  LongNetLM fused = make_model(true), aten = make_model(false), exact = make_model(false);
  fused->to(torch::kCUDA, torch::kBFloat16);
  aten->to(torch::kCUDA, torch::kBFloat16);
  exact->to(torch::kDouble);
  torch::manual_seed(11);
  const at::Tensor tokens = torch::randint(0, 50, {2, 64}, torch::kLong);
  const at::Tensor targets = torch::randint(-1, 50, {2, 64}, torch::kLong);
  auto loss_of = [&](LongNetLM& m, const torch::Device& device) {
    at::Tensor loss =
        m->loss_sum(m->hidden_states(tokens.to(device), 64), targets.to(device), targets);
    loss.backward();
    return loss.item<double>();
  };
  const double loss_fused = loss_of(fused, torch::kCUDA), loss_aten = loss_of(aten, torch::kCUDA);
  const double loss_exact = loss_of(exact, torch::kCPU);
  ASSERT_TRUE(std::isfinite(loss_fused));
  const double loss_error_aten = std::fabs(loss_aten - loss_exact) / std::fabs(loss_exact);
  EXPECT_LE(std::fabs(loss_fused - loss_exact) / std::fabs(loss_exact),
            1.5 * loss_error_aten + 1e-3);
  auto f = fused->named_parameters(), a = aten->named_parameters();
  for (const auto& item : exact->named_parameters()) {
    const at::Tensor& want = item.value().grad();
    const double error_fused = testing::relative_error(f[item.key()].grad(), want);
    const double error_aten = testing::relative_error(a[item.key()].grad(), want);
    EXPECT_LE(error_fused, 1.5 * error_aten + 2e-3)
        << item.key() << " (ATen: " << error_aten << ")";
    EXPECT_LT(error_fused, 0.25) << item.key();
  }
}

}  // namespace
}  // namespace ra
