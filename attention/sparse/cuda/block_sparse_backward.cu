// Block-sparse attention backward on the GPU, with the final out and lse (flash identity):
//   delta = rowsum(dO * O);  P = exp(S * scale - lse);  dS = P * (dO V^T - delta) * scale
//   dQ = dS K  (one CTA per query tile, walking the CSR row: no atomics)
//   dK = dS^T Q, dV = P^T dO  (one CTA per key tile and k/v head, walking the CSC column over
//   the query heads that share the k/v head: no atomics)
#include <cmath>

#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "attention/sparse/cuda/block_sparse_tiles.cuh"

namespace ra::cuda {
namespace {

using namespace detail;

// One warp per (batch, token, head) row: delta = sum_d dout * out in fp32.
template <typename T>
__global__ void delta_kernel(const T* __restrict__ out, const T* __restrict__ dout,
                             float* __restrict__ delta, BlockSparseShape shape) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rows = static_cast<int64_t>(shape.batch) * shape.seq_len * shape.heads;
  if (row >= rows) return;
  const int h = row % shape.heads;
  const int64_t s = (row / shape.heads) % shape.seq_len, b = row / shape.heads / shape.seq_len;
  const int64_t offset = b * shape.out.batch + s * shape.out.token + h * shape.out.head;
  float sum = 0.0f;
  for (int d = lane; d < shape.head_dim; d += 32) {
    sum += to_float(out[offset + d]) * to_float(dout[offset + d]);
  }
  sum = warp_sum(sum);
  if (lane == 0) delta[row] = sum;
}

// P and dS of a 64x64 tile from S and dP (fp32, ld 64), for elements first, first + stride, ...
// below `end` (a warp's rows or the whole tile).
template <typename T>
__device__ inline void probabilities_and_score_grads(const float* S, const float* dP, T* Ps, T* dSs,
                                                     const float* lse_rows, const float* delta_rows,
                                                     int q0, int k0, bool diagonal, float scale,
                                                     int first, int end, int stride) {
  for (int i = first; i < end; i += stride) {
    const int r = i / kTile, c = i % kTile;
    const float p =
        causal_masked(diagonal, q0 + r, k0 + c) ? 0.0f : __expf(S[i] * scale - lse_rows[r]);
    Ps[i] = from_float<T>(p);
    dSs[i] = from_float<T>(p * (dP[i] - delta_rows[r]) * scale);
  }
}

// Shared memory of both backward kernels: the Q, dO, K, V tiles, P and dS (for the tensor
// cores), S and dP (fp32), two fp32 [64][D] accumulators (dQ; or dK and dV) and per-row lse
// and delta.
template <typename T, int D>
struct BackwardTiles {
  static constexpr size_t kBytes = 4 * kTile * D * sizeof(T) + 2 * kTile * kTile * sizeof(T) +
                                   2 * kTile * kTile * sizeof(float) +
                                   2 * kTile * D * sizeof(float) + 2 * kTile * sizeof(float);
  T *Qs, *dOs, *Ks, *Vs, *Ps, *dSs;
  float *Ss, *dPs, *acc0, *acc1, *lse_rows, *delta_rows;

  __device__ explicit BackwardTiles(unsigned char* smem) {
    Qs = reinterpret_cast<T*>(smem);
    dOs = Qs + kTile * D;
    Ks = dOs + kTile * D;
    Vs = Ks + kTile * D;
    Ps = Vs + kTile * D;
    dSs = Ps + kTile * kTile;
    Ss = reinterpret_cast<float*>(dSs + kTile * kTile);
    dPs = Ss + kTile * kTile;
    acc0 = dPs + kTile * kTile;
    acc1 = acc0 + kTile * D;
    lse_rows = acc1 + kTile * D;
    delta_rows = lse_rows + kTile;
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
              const T* __restrict__ dout, const float* __restrict__ lse,
              const float* __restrict__ delta, T* __restrict__ dq, BlockSparseShape shape,
              DeviceBlockLayout layout, float scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  const BackwardTiles<T, D> t(smem);
  T *Qs = t.Qs, *dOs = t.dOs, *Ks = t.Ks, *Vs = t.Vs, *Ps = t.Ps, *dSs = t.dSs;
  float *Ss = t.Ss, *dPs = t.dPs, *dQs = t.acc0, *lse_rows = t.lse_rows, *delta_rows = t.delta_rows;

  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const int kv_h = h / (shape.heads / shape.kv_heads);
  const int bs = shape.block_size, q_block = q0 / bs;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile<T, D>(Qs, q + b * shape.q.batch + h * shape.q.head, shape.q.token, q0);
  load_tile<T, D>(dOs, dout + b * shape.out.batch + h * shape.out.head, shape.out.token, q0);
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) dQs[i] = 0.0f;
  for (int r = threadIdx.x; r < kTile; r += kThreads) {
    const int64_t row = (static_cast<int64_t>(b) * shape.seq_len + q0 + r) * shape.heads + h;
    lse_rows[r] = lse[row];
    delta_rows[r] = delta[row];
  }
  const T* k_head = k + b * shape.k.batch + kv_h * shape.k.head;
  const T* v_head = v + b * shape.v.batch + kv_h * shape.v.head;
  __syncthreads();

  for (int a = layout.row_offsets[q_block]; a < layout.row_offsets[q_block + 1]; ++a) {
    const int k_block = layout.col_indices[a];
    const bool diagonal = layout.causal && k_block == q_block;
    for (int k0 = k_block * bs; k0 < (k_block + 1) * bs; k0 += kTile) {
      if (diagonal && k0 > q0 + kTile - 1) continue;
      load_tile<T, D>(Ks, k_head, shape.k.token, k0);
      load_tile<T, D>(Vs, v_head, shape.v.token, k0);
      __syncthreads();
      mma_abt<T, D>(Ss, Qs, Ks);
      mma_abt<T, D>(dPs, dOs, Vs);
      __syncwarp();
      probabilities_and_score_grads<T>(Ss, dPs, Ps, dSs, lse_rows, delta_rows, q0, k0, diagonal,
                                       scale, 16 * w * kTile + lane, (16 * w + 16) * kTile, 32);
      __syncwarp();
      mma_ab_accumulate<T, D, nvcuda::wmma::row_major>(dQs, dSs, Ks);
      __syncthreads();
    }
  }
  T* dq_head = dq + b * shape.q.batch + h * shape.q.head;
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) {
    dq_head[(q0 + i / D) * shape.q.token + i % D] = from_float<T>(dQs[i]);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                const T* __restrict__ dout, const float* __restrict__ lse,
                const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv,
                BlockSparseShape shape, DeviceBlockLayout layout, float scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  const BackwardTiles<T, D> t(smem);
  T *Qs = t.Qs, *dOs = t.dOs, *Ks = t.Ks, *Vs = t.Vs, *Ps = t.Ps, *dSs = t.dSs;
  float *Ss = t.Ss, *dPs = t.dPs, *dKs = t.acc0, *dVs = t.acc1, *lse_rows = t.lse_rows,
        *delta_rows = t.delta_rows;

  const int k0 = blockIdx.x * kTile, kv_h = blockIdx.y, b = blockIdx.z;
  const int group = shape.heads / shape.kv_heads;
  const int bs = shape.block_size, k_block = k0 / bs;
  load_tile<T, D>(Ks, k + b * shape.k.batch + kv_h * shape.k.head, shape.k.token, k0);
  load_tile<T, D>(Vs, v + b * shape.v.batch + kv_h * shape.v.head, shape.v.token, k0);
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) dKs[i] = dVs[i] = 0.0f;
  __syncthreads();

  for (int h = kv_h * group; h < (kv_h + 1) * group; ++h) {
    const T* q_head = q + b * shape.q.batch + h * shape.q.head;
    const T* dout_head = dout + b * shape.out.batch + h * shape.out.head;
    for (int a = layout.col_offsets[k_block]; a < layout.col_offsets[k_block + 1]; ++a) {
      const int q_block = layout.row_indices[a];
      const bool diagonal = layout.causal && k_block == q_block;
      for (int q0 = q_block * bs; q0 < (q_block + 1) * bs; q0 += kTile) {
        if (diagonal && k0 > q0 + kTile - 1) continue;
        load_tile<T, D>(Qs, q_head, shape.q.token, q0);
        load_tile<T, D>(dOs, dout_head, shape.out.token, q0);
        for (int r = threadIdx.x; r < kTile; r += kThreads) {
          const int64_t row = (static_cast<int64_t>(b) * shape.seq_len + q0 + r) * shape.heads + h;
          lse_rows[r] = lse[row];
          delta_rows[r] = delta[row];
        }
        __syncthreads();
        mma_abt<T, D>(Ss, Qs, Ks);  // rows: queries
        mma_abt<T, D>(dPs, dOs, Vs);
        __syncthreads();
        probabilities_and_score_grads<T>(Ss, dPs, Ps, dSs, lse_rows, delta_rows, q0, k0, diagonal,
                                         scale, threadIdx.x, kTile * kTile, kThreads);
        __syncthreads();
        // Rows of dK and dV are keys: the transposed tiles (col_major views of P and dS).
        mma_ab_accumulate<T, D, nvcuda::wmma::col_major>(dVs, Ps, dOs);
        mma_ab_accumulate<T, D, nvcuda::wmma::col_major>(dKs, dSs, Qs);
        __syncthreads();
      }
    }
  }
  T* dk_head = dk + b * shape.k.batch + kv_h * shape.k.head;
  T* dv_head = dv + b * shape.v.batch + kv_h * shape.v.head;
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) {
    dk_head[(k0 + i / D) * shape.k.token + i % D] = from_float<T>(dKs[i]);
    dv_head[(k0 + i / D) * shape.v.token + i % D] = from_float<T>(dVs[i]);
  }
}

template <typename T, int D>
cudaError_t launch_backward(const void* q, const void* k, const void* v, const void* out,
                            const void* dout, const float* lse, float* delta, void* dq, void* dk,
                            void* dv, const BlockSparseShape& shape,
                            const DeviceBlockLayout& layout, float scale, cudaStream_t stream) {
  const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k),
          *vt = static_cast<const T*>(v), *dot = static_cast<const T*>(dout);
  const int64_t rows = static_cast<int64_t>(shape.batch) * shape.seq_len * shape.heads;
  const int64_t delta_blocks = (rows * 32 + kThreads - 1) / kThreads;
  delta_kernel<T><<<static_cast<unsigned>(delta_blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(out), dot, delta, shape);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  constexpr size_t dq_smem = BackwardTiles<T, D>::kBytes;
  err = cudaFuncSetAttribute(dq_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, dq_smem);
  if (err != cudaSuccess) return err;
  dq_kernel<T, D>
      <<<dim3(shape.seq_len / kTile, shape.heads, shape.batch), kThreads, dq_smem, stream>>>(
          qt, kt, vt, dot, lse, delta, static_cast<T*>(dq), shape, layout, scale);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  constexpr size_t kv_smem = BackwardTiles<T, D>::kBytes;
  err =
      cudaFuncSetAttribute(dkdv_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kv_smem);
  if (err != cudaSuccess) return err;
  dkdv_kernel<T, D>
      <<<dim3(shape.seq_len / kTile, shape.kv_heads, shape.batch), kThreads, kv_smem, stream>>>(
          qt, kt, vt, dot, lse, delta, static_cast<T*>(dk), static_cast<T*>(dv), shape, layout,
          scale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t block_sparse_backward(SparseDType dtype, const void* q, const void* k, const void* v,
                                  const void* out, const void* dout, const float* lse, float* delta,
                                  void* dq, void* dk, void* dv, const BlockSparseShape& shape,
                                  const DeviceBlockLayout& layout, float scale,
                                  cudaStream_t stream) {
  if (block_sparse_unsupported(shape) != nullptr) return cudaErrorInvalidValue;
  const bool d64 = shape.head_dim == 64;
  if (dtype == SparseDType::kBFloat16) {
    return d64 ? launch_backward<__nv_bfloat16, 64>(q, k, v, out, dout, lse, delta, dq, dk, dv,
                                                    shape, layout, scale, stream)
               : launch_backward<__nv_bfloat16, 128>(q, k, v, out, dout, lse, delta, dq, dk, dv,
                                                     shape, layout, scale, stream);
  }
  return d64 ? launch_backward<__half, 64>(q, k, v, out, dout, lse, delta, dq, dk, dv, shape,
                                           layout, scale, stream)
             : launch_backward<__half, 128>(q, k, v, out, dout, lse, delta, dq, dk, dv, shape,
                                            layout, scale, stream);
}

}  // namespace ra::cuda
