// gelu_layer_norm: the two-op form, and the fused autograd function (kernels on CUDA, the same
// formulas as ATen ops elsewhere).
#include "runtime/gelu_layer_norm.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "runtime/error.h"
#if RA_TORCH_HAS_CUDA
#include "attention/standard/cuda/gelu_layer_norm.h"
#include "runtime/gelu_layer_norm_cuda.h"
#endif

namespace ra {
namespace {

// The forward in ATen ops, in at least fp32: y, and the per-row mean and rstd [rows].
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_ops(const at::Tensor& a,
                                                           const at::Tensor& gamma,
                                                           const at::Tensor& beta, double eps) {
  const auto dtype = at::promote_types(a.scalar_type(), at::kFloat);
  const at::Tensor g = at::gelu(a.to(dtype));              // [rows, F]
  const at::Tensor mean = g.mean({-1}, /*keepdim=*/true);  // [rows, 1]
  const at::Tensor centered = g - mean;
  const at::Tensor rstd = (centered.pow(2).mean({-1}, true) + eps).rsqrt();  // [rows, 1]
  const at::Tensor y = centered * rstd * gamma.to(dtype) + beta.to(dtype);
  return {y.to(a.scalar_type()), mean.squeeze(-1), rstd.squeeze(-1)};
}

// The backward in ATen ops: dxhat = dy gamma; dg = rstd (dxhat - mean(dxhat) - xhat
// mean(dxhat xhat)); da = dg GELU'(a); dgamma = sum_rows dy xhat; dbeta = sum_rows dy.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_ops(const at::Tensor& dy,
                                                            const at::Tensor& a,
                                                            const at::Tensor& gamma,
                                                            const at::Tensor& mean,
                                                            const at::Tensor& rstd) {
  const auto dtype = at::promote_types(a.scalar_type(), at::kFloat);
  const at::Tensor x = a.to(dtype), grad = dy.to(dtype);
  const at::Tensor m = mean.to(dtype).unsqueeze(-1), r = rstd.to(dtype).unsqueeze(-1);
  const at::Tensor xhat = (at::gelu(x) - m) * r;
  const at::Tensor dxhat = grad * gamma.to(dtype);
  const at::Tensor dg =
      r * (dxhat - dxhat.mean({-1}, true) - xhat * (dxhat * xhat).mean({-1}, true));
  const at::Tensor da = at::gelu_backward(dg, x);
  return {da.to(a.scalar_type()), (grad * xhat).sum(0).to(gamma.scalar_type()),
          grad.sum(0).to(gamma.scalar_type())};
}

class GeluLayerNormFunction : public torch::autograd::Function<GeluLayerNormFunction> {
 public:
  // a: [rows, F] contiguous.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                            const at::Tensor& gamma, const at::Tensor& beta, double eps) {
    at::Tensor y, mean, rstd;
#if RA_TORCH_HAS_CUDA
    if (gelu_layer_norm_kernel_applies(a, gamma, beta)) {
      std::tie(y, mean, rstd) = gelu_layer_norm_forward_cuda(a, gamma, beta, eps);
    } else {
      std::tie(y, mean, rstd) = forward_ops(a, gamma, beta, eps);
    }
#else
    std::tie(y, mean, rstd) = forward_ops(a, gamma, beta, eps);
#endif
    ctx->save_for_backward({a, gamma, beta, mean, rstd});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &a = saved[0], &gamma = saved[1], &beta = saved[2], &mean = saved[3],
                     &rstd = saved[4];
    at::Tensor da, dgamma, dbeta;
#if RA_TORCH_HAS_CUDA
    if (gelu_layer_norm_kernel_applies(a, gamma, beta)) {
      std::tie(da, dgamma, dbeta) = gelu_layer_norm_backward_cuda(grads[0], a, gamma, mean, rstd);
    } else {
      std::tie(da, dgamma, dbeta) = backward_ops(grads[0], a, gamma, mean, rstd);
    }
#else
    std::tie(da, dgamma, dbeta) = backward_ops(grads[0], a, gamma, mean, rstd);
#endif
    return {da, dgamma, dbeta, at::Tensor()};
  }
};

}  // namespace

bool gelu_layer_norm_kernel_applies(const at::Tensor& a, const at::Tensor& gamma,
                                    const at::Tensor& beta) {
#if RA_TORCH_HAS_CUDA
  const auto dtype = a.scalar_type();
  const int64_t features = a.size(-1);
  return a.is_cuda() && (dtype == at::kHalf || dtype == at::kBFloat16) &&
         gamma.scalar_type() == dtype && beta.scalar_type() == dtype && gamma.is_cuda() &&
         beta.is_cuda() && gamma.is_contiguous() && beta.is_contiguous() && features % 8 == 0 &&
         features <= cuda::kGeluLayerNormMaxFeatures;
#else
  (void)a, (void)gamma, (void)beta;
  return false;
#endif
}

at::Tensor gelu_layer_norm(const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps, bool fused) {
  const int64_t features = a.size(-1);
  RA_CHECK(
      gamma.dim() == 1 && beta.dim() == 1 && gamma.size(0) == features && beta.size(0) == features,
      "gelu_layer_norm: gamma ", gamma.sizes(), " and beta ", beta.sizes(),
      " must be [F = ", features, "]");
  if (!fused) return at::layer_norm(at::gelu(a), {features}, gamma, beta, eps);
  const at::Tensor rows = a.reshape({-1, features}).contiguous();  // [rows, F]
  return GeluLayerNormFunction::apply(rows, gamma, beta, eps).view(a.sizes());
}

}  // namespace ra
