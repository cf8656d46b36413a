// token_linear: a Linear layer applied to every token of x [..., in] as ONE GEMM with the bias in
// its epilogue (at::addmm on the 2-D view). at::linear on 3-D inputs runs mm and then a
// broadcasting bias add_, a separate pass over the whole output: at 256K tokens per GPU those
// adds took 13% of a LongNet-base training step on H100 (ring_train --profile-step).
// The backward has the mirror-image cost: addmm's autograd sums dY for the bias gradient in its
// own reduction kernel (~20 ms of an ~870 ms LongNet-base step). On CUDA fp16/bf16 token_linear
// therefore runs an autograd function whose backward computes dW and dbias in ONE cuBLASLt GEMM
// (BGRADB epilogue, attention/standard/linear_bias_grad_cuda.h); elsewhere it keeps addmm.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/linear.h>

namespace ra {

// x: [..., in] -> [..., out]; same values as layer->forward(x).
at::Tensor token_linear(const torch::nn::Linear& layer, const at::Tensor& x);

// Whether token_linear takes the fused bias-gradient function for these operands: a CUDA
// LibTorch, x2d [rows > 0, in] contiguous CUDA fp16/bf16, weight [out, in] and bias [out]
// contiguous of the same dtype and device, autocast off (it would change the dtypes inside).
bool token_linear_fuses_bias_grad(const at::Tensor& x2d, const at::Tensor& weight,
                                  const at::Tensor& bias);

// The autograd function itself: y = bias + x2d weight^T (at::addmm). Its backward computes
// grad_x = dY weight (at::mm) and, when both are needed, grad_weight and grad_bias in one
// cuBLASLt GEMM for CUDA fp16/bf16 operands, mm + sum otherwise (also after a cuBLASLt failure,
// with a one-time warning); gradients no input needs are skipped. Exposed for tests.
at::Tensor linear_with_fused_bias_grad(const at::Tensor& x2d, const at::Tensor& weight,
                                       const at::Tensor& bias);

}  // namespace ra
