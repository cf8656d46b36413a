// token_linear and the autograd function that folds the bias gradient into the dW GEMM.
#include "attention/standard/token_linear.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <tuple>

#include "runtime/error.h"
#include "runtime/torch_compat.h"
#if RA_TORCH_HAS_CUDA
#include "attention/standard/linear_bias_grad_cuda.h"
#endif

namespace ra {
namespace {

#if RA_TORCH_HAS_CUDA
// Once per process: the fallback is correct, only slower, and would repeat on every backward.
void warn_bias_grad_fallback(const std::string& why) {
  static std::once_flag once;
  std::call_once(once, [&] {
    std::fprintf(stderr,
                 "ringattn: warning: token_linear computes dW and dbias with mm + sum instead of "
                 "one cuBLASLt GEMM (shown once): %s\n",
                 why.c_str());
  });
}
#endif

// dy: [rows, out] contiguous, x: [rows, in] -> grad_weight [out, in], grad_bias [out].
std::tuple<at::Tensor, at::Tensor> weight_and_bias_grads(const at::Tensor& dy,
                                                         const at::Tensor& x) {
#if RA_TORCH_HAS_CUDA
  const auto dtype = x.scalar_type();
  if (dy.is_cuda() && dy.scalar_type() == dtype && (dtype == at::kHalf || dtype == at::kBFloat16) &&
      x.is_contiguous() && x.size(0) > 0) {
    at::Tensor grad_weight = at::empty({dy.size(1), x.size(1)}, dy.options());
    at::Tensor grad_bias = at::empty({dy.size(1)}, dy.options());
    try {
      if (linear_weight_bias_grad_cuda(dy, x, grad_weight, grad_bias)) {
        return {grad_weight, grad_bias};
      }
      warn_bias_grad_fallback(detail::concat("no cuBLASLt algorithm for dy ", dy.sizes(), ", x ",
                                             x.sizes(), " (", dtype, ")"));
    } catch (const Error& e) {
      warn_bias_grad_fallback(e.what());
    }
  }
#endif
  return {at::mm(dy.t(), x), dy.sum(0)};
}

class LinearBiasGradFunction : public torch::autograd::Function<LinearBiasGradFunction> {
 public:
  // x2d: [rows, in]; weight: [out, in]; bias: [out].
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x2d,
                            const at::Tensor& weight, const at::Tensor& bias) {
    ctx->save_for_backward({x2d, weight});
    return at::addmm(bias, x2d, weight.t());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2d = saved[0], &weight = saved[1];
    const at::Tensor dy = grads[0].contiguous();  // [rows, out]
    at::Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) grad_x = at::mm(dy, weight);
    const bool want_weight = ctx->needs_input_grad(1), want_bias = ctx->needs_input_grad(2);
    if (want_weight && want_bias) {
      std::tie(grad_weight, grad_bias) = weight_and_bias_grads(dy, x2d);
    } else if (want_weight) {
      grad_weight = at::mm(dy.t(), x2d);
    } else if (want_bias) {
      grad_bias = dy.sum(0);
    }
    return {grad_x, grad_weight, grad_bias};
  }
};

}  // namespace

bool token_linear_fuses_bias_grad(const at::Tensor& x2d, const at::Tensor& weight,
                                  const at::Tensor& bias) {
#if RA_TORCH_HAS_CUDA
  const auto dtype = x2d.scalar_type();
  return x2d.is_cuda() && (dtype == at::kHalf || dtype == at::kBFloat16) && x2d.dim() == 2 &&
         x2d.size(0) > 0 && x2d.is_contiguous() && bias.defined() &&
         weight.scalar_type() == dtype && bias.scalar_type() == dtype &&
         weight.device() == x2d.device() && bias.device() == x2d.device() &&
         weight.is_contiguous() && bias.is_contiguous() && !compat::cuda_bf16_autocast_enabled();
#else
  (void)x2d, (void)weight, (void)bias;
  return false;
#endif
}

at::Tensor linear_with_fused_bias_grad(const at::Tensor& x2d, const at::Tensor& weight,
                                       const at::Tensor& bias) {
  RA_CHECK(x2d.dim() == 2 && weight.dim() == 2 && bias.dim() == 1 &&
               x2d.size(1) == weight.size(1) && bias.size(0) == weight.size(0),
           "linear_with_fused_bias_grad: x2d ", x2d.sizes(), ", weight ", weight.sizes(),
           " and bias ", bias.sizes(), " must be [rows, in], [out, in] and [out]");
  return LinearBiasGradFunction::apply(x2d, weight, bias);
}

at::Tensor token_linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  const at::Tensor& bias = layer->bias;
  if (!bias.defined() || x.dim() < 2) return at::linear(x, layer->weight, bias);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = layer->weight.size(0);
  const at::Tensor x2d = x.reshape({-1, x.size(-1)});
  // Without a backward ahead, addmm is the same single GEMM with less bookkeeping.
  const bool backward_ahead =
      at::GradMode::is_enabled() &&
      (x.requires_grad() || layer->weight.requires_grad() || bias.requires_grad());
  if (backward_ahead && token_linear_fuses_bias_grad(x2d, layer->weight, bias)) {
    return linear_with_fused_bias_grad(x2d, layer->weight, bias).view(sizes);
  }
  return at::addmm(bias, x2d, layer->weight.t()).view(sizes);
}

}  // namespace ra
