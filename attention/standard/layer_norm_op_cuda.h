// Torch boundary of the one-pass LayerNorm kernels (compiled only with a CUDA LibTorch): shapes
// are checked by layer_norm_op.cpp before these are called.
#pragma once

#include <ATen/core/Tensor.h>

#include "attention/standard/cuda/layer_norm.h"

namespace ra {

struct LayerNormCudaForward {
  at::Tensor y;           // [rows, F]
  at::Tensor sum;         // [rows, F], kResidual: h = residual + a
  at::Tensor mean, rstd;  // [rows] fp32, for the backward
};

// a: [rows, F] contiguous CUDA fp16/bf16; bias: [F] (kGelu) or undefined; residual: [rows, F]
// (kResidual) or undefined; gamma, beta: [F]; all of a's dtype.
LayerNormCudaForward layer_norm_forward_cuda(const at::Tensor& a, const at::Tensor& bias,
                                             const at::Tensor& residual, const at::Tensor& gamma,
                                             const at::Tensor& beta, double eps,
                                             cuda::LayerNormForm form);

struct LayerNormCudaBackward {
  at::Tensor dx;                    // [rows, F]
  at::Tensor dgamma, dbeta, dbias;  // [F] in gamma's dtype (summed in fp32); dbias with a bias
};

// dy, x: [rows, F] (x = a, or the sum h for kResidual); bias: the forward's (kGelu) or
// undefined; extra_grad: [rows, F] (kResidual) or undefined; mean, rstd: [rows] fp32.
LayerNormCudaBackward layer_norm_backward_cuda(const at::Tensor& dy, const at::Tensor& x,
                                               const at::Tensor& bias, const at::Tensor& extra_grad,
                                               const at::Tensor& gamma, const at::Tensor& mean,
                                               const at::Tensor& rstd, cuda::LayerNormForm form);

}  // namespace ra
