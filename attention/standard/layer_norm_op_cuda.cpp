// layer_norm_forward_cuda / _backward_cuda: allocate, fill the kernel params, launch.
#include "attention/standard/layer_norm_op_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "attention/standard/kernel_scalar_kind.h"
#include "runtime/error.h"

namespace ra {
namespace {

const void* pointer_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

LayerNormCudaForward layer_norm_forward_cuda(const at::Tensor& a, const at::Tensor& bias,
                                             const at::Tensor& residual, const at::Tensor& gamma,
                                             const at::Tensor& beta, double eps,
                                             cuda::LayerNormForm form) {
  const int64_t rows = a.size(0);
  LayerNormCudaForward out;
  out.y = at::empty_like(a);
  if (residual.defined()) out.sum = at::empty_like(a);
  out.mean = at::empty({rows}, a.options().dtype(at::kFloat));
  out.rstd = at::empty({rows}, a.options().dtype(at::kFloat));
  cuda::LayerNormForwardParams p;
  p.a = a.data_ptr();
  p.bias = pointer_or_null(bias);
  p.residual = pointer_or_null(residual);
  p.sum = out.sum.defined() ? out.sum.data_ptr() : nullptr;
  p.gamma = gamma.data_ptr();
  p.beta = beta.data_ptr();
  p.y = out.y.data_ptr();
  p.mean = out.mean.data_ptr<float>();
  p.rstd = out.rstd.data_ptr<float>();
  p.rows = rows;
  p.features = int(a.size(1));
  p.eps = float(eps);
  p.form = form;
  cuda::launch_layer_norm_forward(p, *kernel_scalar_kind(a.scalar_type()),
                                  at::cuda::getCurrentCUDAStream(a.device().index()));
  return out;
}

LayerNormCudaBackward layer_norm_backward_cuda(const at::Tensor& dy, const at::Tensor& x,
                                               const at::Tensor& bias, const at::Tensor& extra_grad,
                                               const at::Tensor& gamma, const at::Tensor& mean,
                                               const at::Tensor& rstd, cuda::LayerNormForm form) {
  const int64_t rows = x.size(0), features = x.size(1);
  const at::Tensor grad = dy.contiguous();
  const at::Tensor extra = extra_grad.defined() ? extra_grad.contiguous() : extra_grad;
  LayerNormCudaBackward out;
  out.dx = at::empty_like(x);
  cuda::LayerNormBackwardParams p;
  p.blocks = cuda::layer_norm_backward_blocks(rows, int(features), form, int(x.device().index()));
  // Rows 0, 1 (and 2 with a bias) of the per-block partial sums: dgamma, dbeta, dbias.
  const int64_t sums = bias.defined() ? 3 : 2;
  at::Tensor partial = at::empty({sums, p.blocks, features}, x.options().dtype(at::kFloat));
  p.dy = grad.data_ptr();
  p.x = x.data_ptr();
  p.bias = pointer_or_null(bias);
  p.gamma = gamma.data_ptr();
  p.mean = mean.data_ptr<float>();
  p.rstd = rstd.data_ptr<float>();
  p.extra_grad = pointer_or_null(extra);
  p.dx = out.dx.data_ptr();
  p.dgamma_partial = partial[0].data_ptr<float>();
  p.dbeta_partial = partial[1].data_ptr<float>();
  p.dbias_partial = bias.defined() ? partial[2].data_ptr<float>() : nullptr;
  p.rows = rows;
  p.features = int(features);
  p.form = form;
  cuda::launch_layer_norm_backward(p, *kernel_scalar_kind(x.scalar_type()),
                                   at::cuda::getCurrentCUDAStream(x.device().index()));
  const at::Tensor totals = partial.sum(1).to(gamma.scalar_type());  // [sums, F]
  out.dgamma = totals[0];
  out.dbeta = totals[1];
  if (bias.defined()) out.dbias = totals[2];
  return out;
}

}  // namespace ra
