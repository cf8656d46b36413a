// The one-pass LayerNorm kernels (attention/standard/layer_norm_op.h) against float64 ATen on the
// CPU: LayerNorm(a), LayerNorm(GELU(a + bias)) and {h = r + a, LayerNorm(h)}, the outputs and the
// gradients of every input (a, bias, r, gamma, beta; h gets a gradient of its own, as a residual
// stream does); bf16 and fp16; F from 8 to the 8192 limit (including a partly filled last warp),
// one row to many rows per block; no output may hold a NaN. Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/standard/layer_norm_op.h"
#include "tests/support/dense_reference.h"

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
        for (int64_t rows : {1, 37, 4099}) {
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

}  // namespace
}  // namespace ra
