// layer_norm_forward_cuda / _backward_cuda: allocate, pick the stream, launch.
#include "attention/standard/layer_norm_op_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "attention/standard/cuda/layer_norm.h"
#include "attention/standard/kernel_scalar_kind.h"
#include "runtime/error.h"

namespace ra {

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_forward_cuda(const at::Tensor& a,
                                                                       const at::Tensor& gamma,
                                                                       const at::Tensor& beta,
                                                                       double eps, bool gelu) {
  const int64_t rows = a.size(0), features = a.size(1);
  at::Tensor y = at::empty_like(a);
  at::Tensor mean = at::empty({rows}, a.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, a.options().dtype(at::kFloat));
  cuda::launch_layer_norm_forward(
      a.data_ptr(), gamma.data_ptr(), beta.data_ptr(), y.data_ptr(), mean.data_ptr<float>(),
      rstd.data_ptr<float>(), rows, int(features), float(eps), gelu,
      *kernel_scalar_kind(a.scalar_type()), at::cuda::getCurrentCUDAStream(a.device().index()));
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_backward_cuda(
    const at::Tensor& dy, const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& mean,
    const at::Tensor& rstd, bool gelu) {
  const int64_t rows = a.size(0), features = a.size(1);
  const at::Tensor grad = dy.contiguous();
  at::Tensor da = at::empty_like(a);
  const int blocks =
      cuda::layer_norm_backward_blocks(rows, int(features), gelu, int(a.device().index()));
  at::Tensor partial = at::empty({2, blocks, features}, a.options().dtype(at::kFloat));
  cuda::launch_layer_norm_backward(
      grad.data_ptr(), a.data_ptr(), gamma.data_ptr(), mean.data_ptr<float>(),
      rstd.data_ptr<float>(), da.data_ptr(), partial[0].data_ptr<float>(),
      partial[1].data_ptr<float>(), rows, int(features), blocks, gelu,
      *kernel_scalar_kind(a.scalar_type()), at::cuda::getCurrentCUDAStream(a.device().index()));
  at::Tensor sums = partial.sum(1);  // [2, F] fp32
  return {da, sums[0].to(gamma.scalar_type()), sums[1].to(gamma.scalar_type())};
}

}  // namespace ra
