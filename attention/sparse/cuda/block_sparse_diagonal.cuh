// How the kernels walk the layout: a query block's key tiles in CSR order (forward, dQ), a key
// block's query tiles in CSC order (dK/dV), and which key block its causal diagonal sits in
// (DeviceBlockLayout::diagonal_col, or the query block itself on one device). Inside that block
// keys are masked by their offset in the block against the query's offset in its block, so the rule
// holds wherever the buffer keeps the block.
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

// The query tiles of key block k_block's CSC column for kv head kv_h, kTileQueries queries each,
// over the `group` query heads that share the kv head: tile i is query head head(i) and starts
// at query token query0(i) (kBlock / kTileQueries tiles per active query block, in layout order).
template <int kBlock, int kTileQueries>
struct CscQueryTiles {
  static constexpr int kPerBlock = kBlock / kTileQueries;
  const int* row_indices;
  int first, per_head, count, kv_h, group;

  __device__ __forceinline__ CscQueryTiles(const DeviceBlockLayout& layout, int k_block, int kv_h,
                                           int group)
      : row_indices(layout.row_indices),
        first(layout.col_offsets[k_block]),
        per_head((layout.col_offsets[k_block + 1] - first) * kPerBlock),
        count(group * per_head),
        kv_h(kv_h),
        group(group) {}
  __device__ __forceinline__ int head(int i) const { return kv_h * group + i / per_head; }
  __device__ __forceinline__ int query0(int i) const {
    const int rest = i % per_head;
    return row_indices[first + rest / kPerBlock] * kBlock + (rest % kPerBlock) * kTileQueries;
  }
};

}  // namespace ra::cuda::detail
