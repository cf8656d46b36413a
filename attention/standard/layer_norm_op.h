// LayerNorm over the last dim with affine gamma, beta as ringattn's one-pass ops:
//   fast_layer_norm(x)              = LayerNorm(x)
//   gelu_layer_norm(a, bias)        = LayerNorm(GELU(a + bias))  (the FFN: fc1's bias, its
//                                     activation and MAGNETO's sub-LN)
//   add_layer_norm(residual, a)     = {h = residual + a, LayerNorm(h)}  (a residual add and the
//                                     pre-LN that reads it)
// On CUDA fp16/bf16 with F % 8 == 0 and F <= 8192 each pass is one kernel
// (attention/standard/cuda/layer_norm.h): ATen's LayerNorm backward reads its inputs twice, and
// an unfused GELU, bias gradient or residual add each add a pass. The autograd function saves
// the input (a, not GELU(a + bias); h for the residual form) and the per-row mean and rstd.
// Elsewhere fast_layer_norm and add_layer_norm are ATen ops, and the fused gelu_layer_norm runs
// the kernels' formulas as ATen ops (which the CPU tests check against autograd of the unfused
// form).
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// x: [..., F]; gamma, beta: [F]. Returns LayerNorm(x) in x's dtype and shape.
at::Tensor fast_layer_norm(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps);

// a: [..., F]; bias: [F] or undefined (none); gamma, beta: [F]. Returns LayerNorm(GELU(a +
// bias)) in a's dtype and shape; fused = false runs the ATen ops.
at::Tensor gelu_layer_norm(const at::Tensor& a, const at::Tensor& bias, const at::Tensor& gamma,
                           const at::Tensor& beta, double eps, bool fused);

struct ResidualNorm {
  at::Tensor sum;     // residual + a, [..., F]
  at::Tensor normed;  // LayerNorm(sum), [..., F]
};

// residual, a: [..., F] of one shape and dtype; gamma, beta: [F]. fused = false runs the ATen ops.
ResidualNorm add_layer_norm(const at::Tensor& residual, const at::Tensor& a,
                            const at::Tensor& gamma, const at::Tensor& beta, double eps,
                            bool fused);

// Whether the kernels take these operands (CUDA build, CUDA tensors, fp16/bf16 x with gamma and
// beta of the same dtype, F % 8 == 0 and F <= 8192).
bool layer_norm_kernel_applies(const at::Tensor& x, const at::Tensor& gamma,
                               const at::Tensor& beta);

}  // namespace ra
