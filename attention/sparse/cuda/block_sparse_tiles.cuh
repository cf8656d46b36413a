// Device building blocks shared by the block-sparse kernels: 64-row tiles in shared memory,
// WMMA (tensor core) products of such tiles with fp32 accumulation, the causal test, and warp
// reductions. Every kernel uses 4 warps; warp w owns rows 16w..16w+15 of a 64-row tile.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "attention/standard/cuda/vector_io.cuh"

namespace ra::cuda::detail {

constexpr int kTile = 64;  // query rows per CTA tile and keys per inner step
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// to_float / from_float: attention/standard/cuda/vector_io.cuh (ra::cuda).

__device__ inline float warp_max(float x) {
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ inline float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// dst[64][D] (row-major) = rows row0..row0+63 of one head of a [B, S, H, D] tensor; `head` points
// at (batch, token 0, head). 16-byte vectors: D contiguous, token_stride a multiple of 8.
template <typename T, int D>
__device__ inline void load_tile(T* dst, const T* head, int64_t token_stride, int row0) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kPerRow = D / kVec;
  for (int idx = threadIdx.x; idx < kTile * kPerRow; idx += kThreads) {
    const int r = idx / kPerRow, c = (idx % kPerRow) * kVec;
    *reinterpret_cast<uint4*>(dst + r * D + c) =
        *reinterpret_cast<const uint4*>(head + (row0 + r) * token_stride + c);
  }
}

// C[64][64] (fp32, ld 64) = A[64][D] * B[64][D]^T, A and B row-major (ld D). Warp w: rows 16w...
template <typename T, int D>
__device__ inline void mma_abt(float* C, const T* A, const T* B) {
  using namespace nvcuda;
  const int w = threadIdx.x / 32;
  for (int n = 0; n < kTile / 16; ++n) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < D; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // B^T
      wmma::load_matrix_sync(a, A + 16 * w * D + kk, D);
      wmma::load_matrix_sync(b, B + 16 * n * D + kk, D);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(C + 16 * w * kTile + 16 * n, acc, kTile, wmma::mem_row_major);
  }
}

// C[64][D] (fp32, ld D) += op(A) * B with B[64][D] row-major (ld D) and A a [64][64] tile
// (ld 64): op(A) = A for ALayout = row_major, A^T for col_major. Warp w: rows 16w.. of C.
template <typename T, int D, typename ALayout>
__device__ inline void mma_ab_accumulate(float* C, const T* A, const T* B) {
  using namespace nvcuda;
  constexpr bool kTransposed = std::is_same<ALayout, wmma::col_major>::value;
  const int w = threadIdx.x / 32;
  for (int n = 0; n < D / 16; ++n) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(acc, C + 16 * w * D + 16 * n, D, wmma::mem_row_major);
    for (int kk = 0; kk < kTile; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, ALayout> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
      wmma::load_matrix_sync(a, kTransposed ? A + kk * kTile + 16 * w : A + 16 * w * kTile + kk,
                             kTile);
      wmma::load_matrix_sync(b, B + kk * D + 16 * n, D);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(C + 16 * w * D + 16 * n, acc, D, wmma::mem_row_major);
  }
}

// Causal rule inside a diagonal block: key token after query token is masked.
__device__ inline bool causal_masked(bool diagonal, int query_token, int key_token) {
  return diagonal && key_token > query_token;
}

}  // namespace ra::cuda::detail
