// LayerNorm over the last dim with affine gamma, beta as ringattn's one-pass ops:
// fast_layer_norm(x) = LayerNorm(x), and gelu_layer_norm(a) = LayerNorm(GELU(a)) (the FFN's
// activation followed by MAGNETO's sub-LN). On CUDA fp16/bf16 with F % 8 == 0 and F <= 8192 each
// pass is one kernel (attention/standard/cuda/layer_norm.h): ATen's LayerNorm backward reads its
// inputs twice, and an unfused GELU adds a pass each way. The autograd function saves the input
// (a, not GELU(a)) and the per-row mean and rstd. Elsewhere fast_layer_norm is at::layer_norm,
// and the fused gelu_layer_norm runs the kernels' formulas as ATen ops (which the CPU tests
// check against autograd of the two-op form).
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// x: [..., F]; gamma, beta: [F]. Returns LayerNorm(x) in x's dtype and shape.
at::Tensor fast_layer_norm(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps);

// a: [..., F]; gamma, beta: [F]. Returns LayerNorm(GELU(a)) in a's dtype and shape; fused =
// false runs the two ATen ops.
at::Tensor gelu_layer_norm(const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps, bool fused);

// Whether the kernels take these operands (CUDA build, CUDA tensors, fp16/bf16 x with gamma and
// beta of the same dtype, F % 8 == 0 and F <= 8192).
bool layer_norm_kernel_applies(const at::Tensor& x, const at::Tensor& gamma,
                               const at::Tensor& beta);

}  // namespace ra
