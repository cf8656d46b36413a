// column_sums_cuda: x [rows, cols] -> the sums over rows [cols] (a bias gradient), through the
// column-sum kernel (attention/standard/cuda/column_sums.h). CUDA LibTorch builds only.
#pragma once

#include <ATen/ATen.h>

namespace ra {

// Whether the kernel takes x: a contiguous 2-D fp16/bf16 CUDA tensor, 16-byte aligned, with
// cols % 8 == 0 and cols <= 8192 (else use x.sum(0)).
bool column_sums_kernel_applies(const at::Tensor& x);

// x.sum(0) in x's dtype, accumulated in fp32 (one rounding at the end).
at::Tensor column_sums_cuda(const at::Tensor& x);

}  // namespace ra
