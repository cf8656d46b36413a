// Shared-memory tiles of the Hopper (wgmma) block-sparse kernels: the 128-byte-swizzled panel
// layout that wgmma descriptors read (wgmma_sm90.cuh), the cp.async copy of a head's rows into
// it, and the epilogue that writes an accumulator out through it. Rows are 128 elements (D = 128,
// 256 bytes) split into two 64-column panels.
#pragma once

#include <cstdint>

#include "attention/sparse/cuda/block_sparse_mma.cuh"

namespace ra::cuda::detail {

// Byte offset of (row, 16-byte chunk) in a [Rows x 128] tile stored as two 64-column panels of
// 128-byte rows ([2][Rows][64]): chunk c of a row lives in panel c / 8 at chunk (c % 8) ^ (row %
// 8). This is the canonical 128B-swizzle layout wgmma reads, K-major and MN-major alike.
template <int Rows>
__device__ __forceinline__ uint32_t panel_offset(int row, int chunk) {
  return (chunk >> 3) * (Rows * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// cp.async rows row0..row0+Rows-1 of one head of a [B, S, H, 128] tensor (`head` points at token
// 0) into the panel tile at shared address dst. All kThreads threads of the CTA take part: thread
// t copies chunk t % 16 of rows t / 16 + (kThreads / 16) * it, so 16 consecutive threads read one
// 256-byte row and the thread's swizzled offset is the same in every round.
template <typename T, int Rows, int kThreads>
__device__ __forceinline__ void copy_panel_tile_async(uint32_t dst, const T* head,
                                                      int64_t token_stride, int row0) {
  constexpr int kChunks = 128 / 8, kRowsPerRound = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && Rows % kRowsPerRound == 0 && kRowsPerRound % 8 == 0,
                "whole rounds, each a whole number of swizzle atoms");
  const int r = threadIdx.x / kChunks, c = threadIdx.x % kChunks;
  const uint32_t to = dst + panel_offset<Rows>(r, c);
  const T* from = head + (row0 + r) * token_stride + c * 8;
#pragma unroll
  for (int it = 0; it < Rows / kRowsPerRound; ++it) {
    cp_async_16(to + it * kRowsPerRound * 128, from + it * kRowsPerRound * token_stride);
  }
}

// Epilogue, step 1: this thread's part of a warp's 16 rows of an m64n128 fp32 accumulator (rows
// row and row + 8, columns 8 j + 2 c and + 1), times scale[r] for row + 8 r, as T into the panel
// tile at `staged` (free shared memory by then).
template <typename T, int Rows>
__device__ __forceinline__ void stage_accumulator_rows(const float (&acc)[64],
                                                       unsigned char* staged, int row, int c,
                                                       const float (&scale)[2]) {
#pragma unroll
  for (int j = 0; j < 128 / 8; ++j) {  // column tile j = 16-byte chunk j of the row
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      *reinterpret_cast<uint32_t*>(staged + panel_offset<Rows>(row + 8 * r, j) + 4 * c) =
          pack2<T>(acc[4 * j + 2 * r] * scale[r], acc[4 * j + 2 * r + 1] * scale[r]);
    }
  }
}

// Epilogue, step 2 (after __syncwarp): the warp's staged rows [row0, row0 + 16) to rows row0... of
// `tile` (token stride in elements), with 16-byte stores: two full 256-byte rows per round.
template <typename T, int Rows>
__device__ __forceinline__ void store_staged_rows(const unsigned char* staged, int row0, int lane,
                                                  T* tile, int64_t token_stride) {
#pragma unroll
  for (int it = 0; it < 16 * (128 / 8) / 32; ++it) {
    const int idx = it * 32 + lane, row = row0 + idx / (128 / 8), chunk = idx % (128 / 8);
    *reinterpret_cast<uint4*>(tile + row * token_stride + chunk * 8) =
        *reinterpret_cast<const uint4*>(staged + panel_offset<Rows>(row, chunk));
  }
}

}  // namespace ra::cuda::detail
