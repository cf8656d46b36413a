// Which key block a query block's causal diagonal sits in (DeviceBlockLayout::diagonal_col, or
// the query block itself on one device), for the forward and backward kernels. Inside that block
// keys are masked by their offset in the block against the query's offset in its block, so the
// rule holds wherever the buffer keeps the block.
#pragma once

#include "attention/sparse/cuda/block_sparse_kernels.h"

namespace ra::cuda::detail {

// -1 when nothing is masked for this query block.
__device__ __forceinline__ int diagonal_key_block(const DeviceBlockLayout& layout, int q_block) {
  if (!layout.causal) return -1;
  return layout.diagonal_col != nullptr ? layout.diagonal_col[q_block] : q_block;
}

}  // namespace ra::cuda::detail
