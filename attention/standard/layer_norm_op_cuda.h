// Torch boundary of the one-pass LayerNorm kernels (compiled only with a CUDA LibTorch): shapes
// are checked by layer_norm_op.cpp before these are called.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace ra {

// a: [rows, F] contiguous CUDA fp16/bf16; gamma, beta: [F] same dtype. -> y = LayerNorm(a) (of
// GELU(a) with gelu) [rows, F], and the per-row mean and rstd [rows] fp32 the backward needs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_forward_cuda(const at::Tensor& a,
                                                                       const at::Tensor& gamma,
                                                                       const at::Tensor& beta,
                                                                       double eps, bool gelu);

// dy, a: [rows, F]; gamma: [F]; mean, rstd: [rows] fp32. -> da [rows, F], dgamma, dbeta [F]
// (gamma's dtype; summed in fp32).
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_backward_cuda(
    const at::Tensor& dy, const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& mean,
    const at::Tensor& rstd, bool gelu);

}  // namespace ra
