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

// out [A0, A1, A2, D] (fp32 or the blocks' dtype) and lse [A0, A1, A2] fp32 written with the
// merge of blocks outs[i] [A0, A1, A2, D] (one dtype: fp16, bf16 or fp32) by their lses[i]
// [A0, A1, A2] fp32 (at most 8), in fp32, out rounded once.
bool try_merge_rows_cuda(const at::Tensor& out, const at::Tensor& lse,
                         const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& lses);

// dst [A0, A1, A2, D] (or stacked K/V [2, B, h, n, D]) = (accumulate ? dst : 0) + the sum of
// srcs, each of dst's shape and one dtype (fp16, bf16 or fp32), in fp32 with one rounding per
// element to dst's dtype: fp32, or the sources' (then not accumulate, at most 8 sources).
bool try_sum_rows_cuda(const at::Tensor& dst, const std::vector<at::Tensor>& srcs, bool accumulate);

}  // namespace ra
