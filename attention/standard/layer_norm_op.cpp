// fast_layer_norm / gelu_layer_norm / add_layer_norm: the autograd function over the one-pass
// kernels (CUDA), the same formulas as ATen ops elsewhere, and the plain ATen forms.
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

// What is normalised: x, GELU(x + bias), or the sum h = residual + x (also an output).
enum class Form : int64_t { kPlain, kGelu, kResidual };

struct ForwardResult {
  at::Tensor y, sum, mean, rstd;  // sum: kResidual only
};

// The GELU form's forward in ATen ops, in at least fp32: y in a's dtype, mean and rstd [rows].
// (The plain and residual forms use the function only where the kernels apply.)
ForwardResult gelu_forward_ops(const at::Tensor& a, const at::Tensor& bias, const at::Tensor& gamma,
                               const at::Tensor& beta, double eps) {
  const auto dtype = at::promote_types(a.scalar_type(), at::kFloat);
  at::Tensor g = a.to(dtype);  // [rows, F]
  g = at::gelu(bias.defined() ? g + bias.to(dtype) : g);
  const at::Tensor mean = g.mean({-1}, /*keepdim=*/true);  // [rows, 1]
  const at::Tensor centered = g - mean;
  const at::Tensor rstd = (centered.pow(2).mean({-1}, true) + eps).rsqrt();  // [rows, 1]
  ForwardResult r;
  r.y = (centered * rstd * gamma.to(dtype) + beta.to(dtype)).to(a.scalar_type());
  r.mean = mean.squeeze(-1), r.rstd = rstd.squeeze(-1);
  return r;
}

struct BackwardResult {
  at::Tensor dx, dgamma, dbeta, dbias;  // dbias with a bias
};

// The GELU form's backward in ATen ops: dxhat = dy gamma; dg = rstd (dxhat - mean(dxhat) - xhat
// mean(dxhat xhat)); dx = dg GELU'(x + bias); dgamma = sum_rows dy xhat; dbeta = sum_rows dy;
// dbias = sum_rows dx.
BackwardResult gelu_backward_ops(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                 const at::Tensor& gamma, const at::Tensor& mean,
                                 const at::Tensor& rstd) {
  const auto dtype = at::promote_types(x.scalar_type(), at::kFloat);
  at::Tensor v = x.to(dtype);
  if (bias.defined()) v = v + bias.to(dtype);
  const at::Tensor grad = dy.to(dtype);
  const at::Tensor m = mean.to(dtype).unsqueeze(-1), r = rstd.to(dtype).unsqueeze(-1);
  const at::Tensor xhat = (at::gelu(v) - m) * r;
  const at::Tensor dxhat = grad * gamma.to(dtype);
  const at::Tensor dg =
      r * (dxhat - dxhat.mean({-1}, true) - xhat * (dxhat * xhat).mean({-1}, true));
  const at::Tensor dx = at::gelu_backward(dg, v);
  BackwardResult out;
  out.dx = dx.to(x.scalar_type());
  out.dgamma = (grad * xhat).sum(0).to(gamma.scalar_type());
  out.dbeta = grad.sum(0).to(gamma.scalar_type());
  if (bias.defined()) out.dbias = dx.sum(0).to(bias.scalar_type());
  return out;
}

#if RA_TORCH_HAS_CUDA
cuda::LayerNormForm cuda_form(Form form) {
  switch (form) {
    case Form::kGelu:
      return cuda::LayerNormForm::kGelu;
    case Form::kResidual:
      return cuda::LayerNormForm::kResidual;
    default:
      return cuda::LayerNormForm::kPlain;
  }
}
#endif

// Function::apply takes no undefined tensors (LibTorch 1.13 reads each input's device): an
// absent bias or residual is passed as an empty tensor.
at::Tensor absent(const at::Tensor& like) { return at::empty({0}, like.options()); }
at::Tensor or_absent(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() ? t : absent(like);
}
at::Tensor present_or_undefined(const at::Tensor& t) { return t.numel() > 0 ? t : at::Tensor(); }

class LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
 public:
  // a: [rows, F] contiguous; bias: [F] (kGelu) or empty; residual: [rows, F] contiguous
  // (kResidual) or empty. Returns {y} or, kResidual, {y, residual + a}.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& a, const at::Tensor& bias_in,
                                                const at::Tensor& residual_in,
                                                const at::Tensor& gamma, const at::Tensor& beta,
                                                double eps, int64_t form_id) {
    const Form form = static_cast<Form>(form_id);
    const at::Tensor bias = present_or_undefined(bias_in);
    const at::Tensor residual = present_or_undefined(residual_in);
    // Named in profiles (a custom function's forward is not an op of its own).
    RECORD_FUNCTION(form == Form::kGelu       ? "ra::gelu_layer_norm"
                    : form == Form::kResidual ? "ra::add_layer_norm"
                                              : "ra::layer_norm",
                    std::vector<c10::IValue>({a}));
    ForwardResult r;
    const bool kernels = layer_norm_kernel_applies(a, gamma, beta);
#if RA_TORCH_HAS_CUDA
    if (kernels) {
      LayerNormCudaForward k =
          layer_norm_forward_cuda(a, bias, residual, gamma, beta, eps, cuda_form(form));
      r = {k.y, k.sum, k.mean, k.rstd};
    } else {
      RA_CHECK(form == Form::kGelu, "LayerNormFunction: only the GELU form runs off the kernels");
      r = gelu_forward_ops(a, bias, gamma, beta, eps);
    }
#else
    RA_CHECK(form == Form::kGelu, "LayerNormFunction: only the GELU form runs off the kernels");
    r = gelu_forward_ops(a, bias, gamma, beta, eps);
#endif
    // The backward recomputes from what was normalised: a (+ bias), or the sum.
    ctx->save_for_backward({form == Form::kResidual ? r.sum : a, bias_in, gamma, r.mean, r.rstd});
    ctx->saved_data["form"] = form_id;
    ctx->saved_data["kernels"] = kernels;
    if (form == Form::kResidual) return {r.y, r.sum};
    return {r.y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &gamma = saved[2], &mean = saved[3], &rstd = saved[4];
    const at::Tensor bias = present_or_undefined(saved[1]);
    const Form form = static_cast<Form>(ctx->saved_data["form"].toInt());
    const at::Tensor dy = grads[0].defined() ? grads[0] : at::zeros_like(x);
    const at::Tensor extra = form == Form::kResidual ? grads[1] : at::Tensor();
    BackwardResult r;
#if RA_TORCH_HAS_CUDA
    if (ctx->saved_data["kernels"].toBool()) {
      LayerNormCudaBackward k =
          layer_norm_backward_cuda(dy, x, bias, extra, gamma, mean, rstd, cuda_form(form));
      r = {k.dx, k.dgamma, k.dbeta, k.dbias};
    } else {
      r = gelu_backward_ops(dy, x, bias, gamma, mean, rstd);
    }
#else
    (void)extra;  // only the GELU form runs off the kernels
    r = gelu_backward_ops(dy, x, bias, gamma, mean, rstd);
#endif
    // The sum's inputs both receive its whole gradient.
    const at::Tensor d_residual = form == Form::kResidual ? r.dx : at::Tensor();
    return {r.dx, r.dbias, d_residual, r.dgamma, r.dbeta, at::Tensor(), at::Tensor()};
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

// [..., F] -> [rows, F] contiguous.
at::Tensor as_rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}).contiguous(); }

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
  const at::Tensor rows = as_rows(x);
  return LayerNormFunction::apply(rows, absent(rows), absent(rows), gamma, beta, eps,
                                  int64_t(Form::kPlain))[0]
      .view(x.sizes());
}

at::Tensor gelu_layer_norm(const at::Tensor& a, const at::Tensor& bias, const at::Tensor& gamma,
                           const at::Tensor& beta, double eps, bool fused) {
  check_affine("gelu_layer_norm", a, gamma, beta);
  RA_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == a.size(-1) &&
                               bias.scalar_type() == a.scalar_type()),
           "gelu_layer_norm: bias ", bias.sizes(), " must be [F = ", a.size(-1), "] of a's dtype");
  if (!fused) {
    return at::layer_norm(at::gelu(bias.defined() ? a + bias : a), {a.size(-1)}, gamma, beta, eps);
  }
  const at::Tensor rows = as_rows(a);
  return LayerNormFunction::apply(rows, or_absent(bias, rows), absent(rows), gamma, beta, eps,
                                  int64_t(Form::kGelu))[0]
      .view(a.sizes());
}

ResidualNorm add_layer_norm(const at::Tensor& residual, const at::Tensor& a,
                            const at::Tensor& gamma, const at::Tensor& beta, double eps,
                            bool fused) {
  check_affine("add_layer_norm", a, gamma, beta);
  RA_CHECK(residual.sizes() == a.sizes() && residual.scalar_type() == a.scalar_type(),
           "add_layer_norm: residual ", residual.sizes(), " ", residual.scalar_type(), " and a ",
           a.sizes(), " ", a.scalar_type(), " must have one shape and dtype");
  if (!fused || !layer_norm_kernel_applies(a, gamma, beta)) {
    at::Tensor sum = residual + a;
    return {sum, at::layer_norm(sum, {a.size(-1)}, gamma, beta, eps)};
  }
  const at::Tensor rows = as_rows(a);
  auto out = LayerNormFunction::apply(rows, absent(rows), as_rows(residual), gamma, beta, eps,
                                      int64_t(Form::kResidual));
  return {out[1].view(a.sizes()), out[0].view(a.sizes())};
}

}  // namespace ra
