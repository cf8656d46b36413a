// Torch side of attention/standard/cuda/row_accumulate.h: the per-block merge and gradient sums
// of the sequence-parallel path on 4-D views, where the kernels take them. Each returns false,
// having done nothing, where they do not (CPU, other dtypes, unaligned views): the caller's torch
// ops run. CUDA LibTorch builds only.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace ra {

// acc_out [A0, A1, A2, D] fp32, acc_lse [A0, A1, A2] fp32 (updated in place) and one block's
// out [A0, A1, A2, D] (fp16, bf16 or fp32) and lse [A0, A1, A2] fp32; any strides with a dense D.
bool try_merge_block_cuda(const at::Tensor& acc_out, const at::Tensor& acc_lse,
                          const at::Tensor& out, const at::Tensor& lse);

// dst [A0, A1, A2, D] (or stacked K/V [2, B, h, n, D]) fp32 = (accumulate ? dst : 0) + the sum
// of srcs, each of dst's shape and one dtype (fp16, bf16 or fp32), in fp32 with one rounding per
// element.
bool try_sum_rows_cuda(const at::Tensor& dst, const std::vector<at::Tensor>& srcs, bool accumulate);

}  // namespace ra
