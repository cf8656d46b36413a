// How the forward and dQ kernels walk a query block's row of the layout: its key tiles in CSR
// order, and which key block its causal diagonal sits in (DeviceBlockLayout::diagonal_col, or the
// query block itself on one device). Inside that block keys are masked by their offset in the
// block against the query's offset in its block, so the rule holds wherever the buffer keeps the
// block.
#pragma once

#include "attention/sparse/cuda/block_sparse_kernels.h"

namespace ra::cuda::detail {

// -1 when nothing is masked for this query block.
__device__ __forceinline__ int diagonal_key_block(const DeviceBlockLayout& layout, int q_block) {
  if (!layout.causal) return -1;
  return layout.diagonal_col != nullptr ? layout.diagonal_col[q_block] : q_block;
}

// The key tiles of query block q_block's CSR row, kTileKeys keys each (kBlock / kTileKeys tiles
// per active key block, in layout order): how many, and the first key token of tile i in the
// k/v buffer.
template <int kBlock, int kTileKeys>
struct CsrKeyTiles {
  static constexpr int kPerBlock = kBlock / kTileKeys;
  const int* col_indices;
  int first, count;

  __device__ __forceinline__ CsrKeyTiles(const DeviceBlockLayout& layout, int q_block)
      : col_indices(layout.col_indices),
        first(layout.row_offsets[q_block]),
        count((layout.row_offsets[q_block + 1] - first) * kPerBlock) {}
  __device__ __forceinline__ int key0(int i) const {
    return col_indices[first + i / kPerBlock] * kBlock + (i % kPerBlock) * kTileKeys;
  }
};

}  // namespace ra::cuda::detail
