// Torch boundary of the block-sparse CUDA kernels (compiled only with a CUDA build of LibTorch):
// checks the tensors, uploads the layout once, and wraps forward/backward in an autograd
// function. Single device; the sequence-parallel form runs through block_sparse_attention.h.
#pragma once

#include <ATen/core/Tensor.h>

#include "attention/attention.h"
#include "attention/sparse/block_layout.h"

namespace ra {

// The BlockLayout's CSR and CSC arrays as int32 tensors on one CUDA device.
struct SparseDeviceLayout {
  at::Tensor row_offsets, col_indices, col_offsets, row_indices;
  bool causal = false;
  int64_t block_size = 0;
};

SparseDeviceLayout upload_layout(const BlockLayout& layout, const at::Device& device);

// q: [B, S, H, D]; k, v: [B, S, H_kv, D]; CUDA float16/bfloat16, D 64 or 128, block size 64 or
// 128, S = the layout's sequence. out: [B, S, H, D] (q's dtype), lse: [B, S, H] float32.
AttentionResult block_sparse_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const SparseDeviceLayout& layout,
                                            double scale);

}  // namespace ra
