// gelu_layer_norm: y = LayerNorm(GELU(a)) over the last dim with affine gamma, beta: the FFN's
// activation followed by MAGNETO's sub-LN, as one differentiable op. fused = false runs the two
// ATen ops. fused = true runs an autograd function that saves a (not GELU(a)) and the per-row
// mean and rstd, and recomputes GELU(a) in backward; on CUDA fp16/bf16 with F % 8 == 0 and
// F <= 8192 each pass is one kernel (attention/standard/cuda/gelu_layer_norm.h), elsewhere the
// same formulas run as ATen ops (which the CPU tests check against autograd of the two-op form).
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// a: [..., F]; gamma, beta: [F]. Returns y in a's dtype and shape.
at::Tensor gelu_layer_norm(const at::Tensor& a, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps, bool fused);

// Whether the fused kernels take these operands (CUDA build, CUDA tensors, fp16/bf16 a with
// gamma and beta of the same dtype, F % 8 == 0 and F <= 8192).
bool gelu_layer_norm_kernel_applies(const at::Tensor& a, const at::Tensor& gamma,
                                    const at::Tensor& beta);

}  // namespace ra
