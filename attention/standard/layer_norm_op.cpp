// fast_layer_norm / gelu_layer_norm: the autograd function over the one-pass kernels (CUDA), the
// same formulas as ATen ops elsewhere, and the plain ATen forms.
#include "attention/standard/layer_norm_op.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>

#include "runtime/error.h"
#if RA_TORCH_HAS_CUDA
#include "attention/standard/cuda/layer_norm.h"
#include "attention/standard/layer_norm_op_cuda.h"
#endif

namespace ra {
namespace {

// The GELU + LayerNorm forward in ATen ops, in at least fp32: y, and the per-row mean and rstd
// [rows]. (A plain LayerNorm uses the function only where the kernels apply.)
std::tuple<at::Tensor, at::Tensor, at::Tensor> gelu_forward_ops(const at::Tensor& a,
                                                                const at::Tensor& gamma,
                                                                const at::Tensor& beta,
                                                                double eps) {
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
std::tuple<at::Tensor, at::Tensor, at::Tensor> gelu_backward_ops(const at::Tensor& dy,
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

class LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
 public:
  // a: [rows, F] contiguous.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                            const at::Tensor& gamma, const at::Tensor& beta, double eps,
                            bool gelu) {
    // Named in profiles (a custom function's forward is not an op of its own).
    RECORD_FUNCTION(gelu ? "ra::gelu_layer_norm" : "ra::layer_norm", std::vector<c10::IValue>({a}));
    at::Tensor y, mean, rstd;
#if RA_TORCH_HAS_CUDA
    if (layer_norm_kernel_applies(a, gamma, beta)) {
      std::tie(y, mean, rstd) = layer_norm_forward_cuda(a, gamma, beta, eps, gelu);
    } else {
      RA_CHECK(gelu, "LayerNormFunction: a plain LayerNorm runs here only on the kernels");
      std::tie(y, mean, rstd) = gelu_forward_ops(a, gamma, beta, eps);
    }
#else
    RA_CHECK(gelu, "LayerNormFunction: a plain LayerNorm runs here only on the kernels");
    std::tie(y, mean, rstd) = gelu_forward_ops(a, gamma, beta, eps);
#endif
    ctx->save_for_backward({a, gamma, beta, mean, rstd});
    ctx->saved_data["gelu"] = gelu;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &a = saved[0], &gamma = saved[1], &beta = saved[2], &mean = saved[3],
                     &rstd = saved[4];
    const bool gelu = ctx->saved_data["gelu"].toBool();
    at::Tensor da, dgamma, dbeta;
#if RA_TORCH_HAS_CUDA
    if (layer_norm_kernel_applies(a, gamma, beta)) {
      std::tie(da, dgamma, dbeta) = layer_norm_backward_cuda(grads[0], a, gamma, mean, rstd, gelu);
    } else {
      std::tie(da, dgamma, dbeta) = gelu_backward_ops(grads[0], a, gamma, mean, rstd);
    }
#else
    (void)gelu, (void)beta;  // only GELU + LayerNorm runs without the kernels
    std::tie(da, dgamma, dbeta) = gelu_backward_ops(grads[0], a, gamma, mean, rstd);
#endif
    return {da, dgamma, dbeta, at::Tensor(), at::Tensor()};
  }
};

void check_affine(const char* op, const at::Tensor& x, const at::Tensor& gamma,
                  const at::Tensor& beta) {
  const int64_t features = x.size(-1);
  RA_CHECK(gamma.defined() && beta.defined() && gamma.dim() == 1 && beta.dim() == 1 &&
               gamma.size(0) == features && beta.size(0) == features,
           op, ": gamma ", gamma.sizes(), " and beta ", beta.sizes(), " must be [F = ", features,
           "]");
}

at::Tensor apply_function(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                          double eps, bool gelu) {
  const int64_t features = x.size(-1);
  const at::Tensor rows = x.reshape({-1, features}).contiguous();  // [rows, F]
  return LayerNormFunction::apply(rows, gamma, beta, eps, gelu).view(x.sizes());
}

}  // namespace

bool layer_norm_kernel_applies(const at::Tensor& x, const at::Tensor& gamma,
                               const at::Tensor& beta) {
#if RA_TORCH_HAS_CUDA
  const auto dtype = x.scalar_type();
  const int64_t features = x.size(-1);
  return x.is_cuda() && (dtype == at::kHalf || dtype == at::kBFloat16) && gamma.defined() &&
         beta.defined() && gamma.scalar_type() == dtype && beta.scalar_type() == dtype &&
         gamma.is_cuda() && beta.is_cuda() && gamma.is_contiguous() && beta.is_contiguous() &&
         features % 8 == 0 && features <= cuda::kLayerNormMaxFeatures;
#else
  (void)x, (void)gamma, (void)beta;
  return false;
#endif
}

at::Tensor fast_layer_norm(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps) {
  check_affine("fast_layer_norm", x, gamma, beta);
  if (!layer_norm_kernel_applies(x, gamma, beta)) {
    return at::layer_norm(x, {x.size(-1)}, gamma, beta, eps);
  }
  return apply_function(x, gamma, beta, eps, /*gelu=*/false);
}

at::Tensor gelu_layer_norm(const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps, bool fused) {
  check_affine("gelu_layer_norm", a, gamma, beta);
  if (!fused) return at::layer_norm(at::gelu(a), {a.size(-1)}, gamma, beta, eps);
  return apply_function(a, gamma, beta, eps, /*gelu=*/true);
}

}  // namespace ra
