// Torch boundary of token_linear's cuBLASLt weight + bias gradient GEMM (compiled only with a
// CUDA LibTorch; token_linear.cpp selects the operands it takes).
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// dy: [rows, out], x: [rows, in]: contiguous CUDA fp16/bf16 of one dtype, rows > 0.
// grad_weight: [out, in], grad_bias: [out]: contiguous, dy's dtype and device (contents ignored).
// Writes grad_weight = dy^T x and grad_bias = dy summed over rows (fp32 accumulation) with ONE
// cublasLtMatmul whose BGRADB epilogue reduces dy while the GEMM streams it, on the current
// stream. Returns false, writing nothing, when cuBLASLt has no algorithm for these operands;
// throws ra::Error (file:line, cuBLAS status) when a cuBLASLt call fails.
bool linear_weight_bias_grad_cuda(const at::Tensor& dy, const at::Tensor& x,
                                  const at::Tensor& grad_weight, const at::Tensor& grad_bias);

}  // namespace ra
