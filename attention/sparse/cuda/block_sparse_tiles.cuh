// Warp-level tile building blocks of the block-sparse kernels: [rows][D] fp16/bf16 tiles in
// shared memory with an XOR swizzle (16-byte chunk c of row r stored at chunk c ^ (r % 8), so
// the 8 rows an ldmatrix reads, or a warp's cp.async writes, hit distinct banks), cp.async tile
// copies, and the two products of attention on m16n8k16 fragments: S = A B^T with both operands
// in shared memory, and O += P B with P from the fp32 accumulators of the first product (FA2
// register reuse). A warp owns 16 rows (one m-tile) or 16 * kMT rows of A / P / the accumulators.
#pragma once

#include <cstdint>

#include "attention/sparse/cuda/block_sparse_mma.cuh"

namespace ra::cuda::detail {

// Element offset of (row, 16-byte chunk) in a swizzled tile whose rows are D elements.
template <int D>
__device__ inline int tile_offset(int row, int chunk) {
  static_assert(D % 64 == 0, "rows must be whole 128-byte lines for the 8-row swizzle");
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// cp.async rows row0.. row0+Rows-1 of one head of a [B, S, H, D] tensor (`head` points at token 0)
// into the swizzled tile at shared address `dst`. All Threads threads of the CTA take part.
template <typename T, int D, int Rows, int Threads>
__device__ inline void copy_tile_async(uint32_t dst, const T* head, int64_t token_stride,
                                       int row0) {
  constexpr int kChunks = D / 8;
  static_assert((Rows * kChunks) % Threads == 0, "whole copy rounds");
#pragma unroll
  for (int it = 0; it < Rows * kChunks / Threads; ++it) {
    const int i = it * Threads + static_cast<int>(threadIdx.x);
    const int r = i / kChunks, c = i % kChunks;
    cp_async_16(dst + 2 * tile_offset<D>(r, c), head + (row0 + r) * token_stride + c * 8);
  }
}

// A operand (16x16, rows row0.., columns 16kk..) of a swizzled tile. ldmatrix matrices: rows
// 0-7 / 8-15 x columns 0-7, then the same for columns 8-15 = registers a0a1, a2a3, a4a5, a6a7.
template <int D>
__device__ inline void load_a(uint32_t (&a)[4], uint32_t tile, int row0, int kk) {
  const int lane = threadIdx.x & 31;
  const int row = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  ldmatrix_x4(a, tile + 2 * tile_offset<D>(row, 2 * kk + (lane >> 4)));
}

// B operands of two n-tiles (tile rows n0..n0+15 are the n index, columns 16kk.. the k index):
// b[0], b[1] for rows n0..n0+7, b[2], b[3] for rows n0+8..n0+15.
template <int D>
__device__ inline void load_b_rows(uint32_t (&b)[4], uint32_t tile, int n0, int kk) {
  const int lane = threadIdx.x & 31;
  const int row = n0 + (lane & 7) + (lane >> 4) * 8;
  ldmatrix_x4(b, tile + 2 * tile_offset<D>(row, 2 * kk + ((lane >> 3) & 1)));
}

// B operands of two n-tiles when the tile is [k][n] (rows 16kk.. are the k index, columns
// 16p.. the n index): transposed on load. b[0], b[1] for columns 16p..+7, b[2], b[3] for +8..+15.
template <int D>
__device__ inline void load_b_cols(uint32_t (&b)[4], uint32_t tile, int kk, int p) {
  const int lane = threadIdx.x & 31;
  const int row = 16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8;
  ldmatrix_x4_trans(b, tile + 2 * tile_offset<D>(row, 2 * p + (lane >> 4)));
}

// acc[m][N/8][4] += A B^T for kMT m-tiles (a warp's 16 * kMT rows share every B load): A = rows
// a_row0 + 16m.. of tile a, B = rows 0..N-1 of tile b, both [.][K].
template <typename T, int K, int N, int kMT>
__device__ inline void gemm_abt(float (&acc)[kMT][N / 8][4], uint32_t a_tile, int a_row0,
                                uint32_t b_tile) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t a[kMT][4];
#pragma unroll
    for (int m = 0; m < kMT; ++m) load_a<K>(a[m], a_tile, a_row0 + 16 * m, kk);
#pragma unroll
    for (int p = 0; p < N / 16; ++p) {
      uint32_t b[4];
      load_b_rows<K>(b, b_tile, 16 * p, kk);
#pragma unroll
      for (int m = 0; m < kMT; ++m) {
        mma_16816<T>(acc[m][2 * p], a[m], b[0], b[1]);
        mma_16816<T>(acc[m][2 * p + 1], a[m], b[2], b[3]);
      }
    }
  }
}

// Same with A already in registers (a[m][kk] = load_a(..., a_row0 + 16m, kk)).
template <typename T, int K, int N, int kMT>
__device__ inline void gemm_abt(float (&acc)[kMT][N / 8][4], const uint32_t (&a)[kMT][K / 16][4],
                                uint32_t b_tile) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
    for (int p = 0; p < N / 16; ++p) {
      uint32_t b[4];
      load_b_rows<K>(b, b_tile, 16 * p, kk);
#pragma unroll
      for (int m = 0; m < kMT; ++m) {
        mma_16816<T>(acc[m][2 * p], a[m][kk], b[0], b[1]);
        mma_16816<T>(acc[m][2 * p + 1], a[m][kk], b[2], b[3]);
      }
    }
  }
}

// One m-tile (16 rows): acc[N/8][4] += A B^T.
template <typename T, int K, int N>
__device__ inline void gemm_abt(float (&acc)[N / 8][4], uint32_t a_tile, int a_row0,
                                uint32_t b_tile) {
  gemm_abt<T, K, N, 1>(*reinterpret_cast<float(*)[1][N / 8][4]>(&acc), a_tile, a_row0, b_tile);
}

// acc[m][D/8][4] += P B: P (16 x K per m-tile) is an fp32 accumulator of gemm_abt, rounded to T
// and used in place as the A operand (its C layout for columns 16kk..16kk+15 is the A layout);
// B = rows 0..K-1 of a [K][D] tile.
template <typename T, int K, int D, int kMT>
__device__ inline void gemm_pb(float (&acc)[kMT][D / 8][4], const float (&p)[kMT][K / 8][4],
                               uint32_t b_tile) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t a[kMT][4];
#pragma unroll
    for (int m = 0; m < kMT; ++m) {
      a[m][0] = pack2<T>(p[m][2 * kk][0], p[m][2 * kk][1]);
      a[m][1] = pack2<T>(p[m][2 * kk][2], p[m][2 * kk][3]);
      a[m][2] = pack2<T>(p[m][2 * kk + 1][0], p[m][2 * kk + 1][1]);
      a[m][3] = pack2<T>(p[m][2 * kk + 1][2], p[m][2 * kk + 1][3]);
    }
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      uint32_t b[4];
      load_b_cols<D>(b, b_tile, kk, n);
#pragma unroll
      for (int m = 0; m < kMT; ++m) {
        mma_16816<T>(acc[m][2 * n], a[m], b[0], b[1]);
        mma_16816<T>(acc[m][2 * n + 1], a[m], b[2], b[3]);
      }
    }
  }
}

// One m-tile: acc[D/8][4] += P B.
template <typename T, int K, int D>
__device__ inline void gemm_pb(float (&acc)[D / 8][4], const float (&p)[K / 8][4],
                               uint32_t b_tile) {
  gemm_pb<T, K, D, 1>(*reinterpret_cast<float(*)[1][D / 8][4]>(&acc),
                      *reinterpret_cast<const float(*)[1][K / 8][4]>(&p), b_tile);
}

// Writes a warp's accumulator rows (16 x D, row r scaled by row_scale[r >= 8]) to rows
// row0..row0+15 of the swizzled tile `tile` (which only this warp reads), then copies them to
// global memory with 16-byte stores (`dst` = the global row of tile row 0).
template <typename T, int D>
__device__ inline void store_rows(T* tile, int row0, const float (&acc)[D / 8][4],
                                  const float (&row_scale)[2], T* dst, int64_t token_stride) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    *reinterpret_cast<uint32_t*>(tile + tile_offset<D>(row0 + g, j) + 2 * c) =
        pack2<T>(acc[j][0] * row_scale[0], acc[j][1] * row_scale[0]);
    *reinterpret_cast<uint32_t*>(tile + tile_offset<D>(row0 + g + 8, j) + 2 * c) =
        pack2<T>(acc[j][2] * row_scale[1], acc[j][3] * row_scale[1]);
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int i = lane; i < 16 * kChunks; i += 32) {
    const int r = i / kChunks, ch = i % kChunks;
    *reinterpret_cast<uint4*>(dst + (row0 + r) * token_stride + ch * 8) =
        *reinterpret_cast<const uint4*>(tile + tile_offset<D>(row0 + r, ch));
  }
}

__device__ inline float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ inline float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace ra::cuda::detail
