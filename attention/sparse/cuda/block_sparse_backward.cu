// Block-sparse attention backward on the GPU, with the final out and lse (flash identity):
//   delta = rowsum(dO * O);  P = exp(S * scale - lse);  dS = P * (dO V^T - delta) * scale
//   dQ = dS K  (one CTA per query block, walking the CSR row: no atomics)
//   dK = dS^T Q, dV = P^T dO  (one CTA per key block and k/v head, walking the CSC column over
//   the query heads that share the k/v head: no atomics)
// Both on FA2-style warp tiles (block_sparse_tiles.cuh): one warp per 16 rows of the output
// (queries for dQ, keys for dK/dV), products transposed so that P / dS come out of the first
// product in the accumulator layout the second consumes as its A operand; the streamed tiles
// are cp.async double-buffered. On compute capability 9.0, D 128 / block 128 takes dQ and dK/dV
// from the wgmma kernels of block_sparse_backward_sm90.cu instead (block_sparse_backward_choice),
// optionally (kWgmmaFusedDq) dQ from inside the dK/dV kernel, with fp32 atomics.
#include <cmath>
#include <cstring>

#include "attention/sparse/cuda/block_sparse_backward_sm90.h"
#include "attention/sparse/cuda/block_sparse_diagonal.cuh"
#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "attention/sparse/cuda/block_sparse_tiles.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/env_switch.h"

namespace ra::cuda {
namespace {

using namespace detail;

constexpr float kLog2e = 1.4426950408889634f;

// delta = sum_d dout * out in fp32 per (batch, token, head) row, 16-byte loads: D / 8 lanes per
// row, so a warp does 32 / (D / 8) rows with every lane loading (one row per warp left half the
// lanes idle and paid three 64-bit divisions per 32 loaded bytes; this is 0.25 ms of a 6 ms
// backward at low density). Index: uint32_t where the row count fits, else int64_t.
template <typename T, int D, typename Index>
__global__ void __launch_bounds__(256)
    delta_kernel(const T* __restrict__ out, const T* __restrict__ dout, float* __restrict__ delta,
                 BlockSparseShape shape, Index rows) {
  constexpr int kLanesPerRow = D / 8, kRowsPerWarp = 32 / kLanesPerRow;
  const int lane = threadIdx.x % 32;
  const Index row =
      (Index(blockIdx.x) * blockDim.x + threadIdx.x) / 32 * kRowsPerWarp + lane / kLanesPerRow;
  const int sub = lane % kLanesPerRow;
  float sum = 0.0f;
  if (row < rows) {
    const Index heads = Index(shape.heads), q_len = Index(shape.q_len);
    const Index token = row / heads, b = token / q_len;
    const int h = int(row - token * heads);
    const int64_t s = int64_t(token - b * q_len);
    const int64_t offset =
        int64_t(b) * shape.out.batch + s * shape.out.token + int64_t(h) * shape.out.head + 8 * sub;
    float o[8], d[8];
    load8(out + offset, o);
    load8(dout + offset, d);
#pragma unroll
    for (int i = 0; i < 8; ++i) sum += o[i] * d[i];
  }
  // Butterfly within each row's lane group (kLanesPerRow is a power of two).
#pragma unroll
  for (int o = kLanesPerRow / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (sub == 0 && row < rows) delta[row] = sum;
}

// dQ: the query tile is one layout block (kBlock rows, kBlock / 16 warps); keys 64 at a time.
template <typename T, int D, int kBlock>
struct DqConfig {
  static constexpr int kWarps = kBlock / 16, kThreads = 32 * kWarps;
  static constexpr int kN = 64;
  static constexpr uint32_t kKvTileBytes = kN * D * sizeof(T);
  static constexpr size_t kSmemBytes = (2 * kBlock + 4 * kN) * D * sizeof(T);  // Q, dO, K/V[2]
};

template <typename T, int D, int kBlock>
__global__ void __launch_bounds__(DqConfig<T, D, kBlock>::kThreads)
    dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
              const T* __restrict__ dout, const float* __restrict__ lse,
              const float* __restrict__ delta, T* __restrict__ dq, BlockSparseShape shape,
              DeviceBlockLayout layout, float scale) {
  using C = DqConfig<T, D, kBlock>;
  constexpr int kN = C::kN;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  const uint32_t q_s = smem_address(Qs);
  const uint32_t do_s = q_s + kBlock * D * sizeof(T);
  const uint32_t k_s = do_s + kBlock * D * sizeof(T);  // + buffer * kKvTileBytes
  const uint32_t v_s = k_s + 2 * C::kKvTileBytes;

  // Last query blocks first: under a causal layout they have the most key blocks, so the long
  // CTAs start early and the short ones fill the tail.
  const int q_block = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int q0 = q_block * kBlock;
  const int kv_h = h / (shape.heads / shape.kv_heads);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int row_first = q0 + 16 * w;
  const T* k_head = k + b * shape.k.batch + kv_h * shape.k.head;
  const T* v_head = v + b * shape.v.batch + kv_h * shape.v.head;

  const CsrKeyTiles<kBlock, kN> key_tiles(layout, q_block);
  const int tiles = key_tiles.count;
  auto load_kv = [&](int i) {
    const uint32_t offset = (i & 1) * C::kKvTileBytes;
    copy_tile_async<T, D, kN, C::kThreads>(k_s + offset, k_head, shape.k.token, key_tiles.key0(i));
    copy_tile_async<T, D, kN, C::kThreads>(v_s + offset, v_head, shape.v.token, key_tiles.key0(i));
  };

  copy_tile_async<T, D, kBlock, C::kThreads>(q_s, q + b * shape.q.batch + h * shape.q.head,
                                             shape.q.token, q0);
  copy_tile_async<T, D, kBlock, C::kThreads>(do_s, dout + b * shape.out.batch + h * shape.out.head,
                                             shape.out.token, q0);
  if (tiles > 0) load_kv(0);
  cp_async_commit();
  float lse2[2], dlt[2];  // rows g and g + 8 of the warp; lse in the log2 domain
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row =
        (static_cast<int64_t>(b) * shape.q_len + row_first + g + 8 * r) * shape.heads + h;
    lse2[r] = lse[row] * kLog2e;
    dlt[r] = delta[row];
  }
  const float scale_log2 = scale * kLog2e;
  cp_async_wait<0>();
  __syncthreads();

  float acc[D / 8][4] = {};
  for (int i = 0; i < tiles; ++i) {
    prefetch_next_tile(i, tiles, load_kv);
    __syncthreads();
    const int k0 = key_tiles.key0(i);
    // Looked up per tile, not held across the loop: D 128, b 64 sits at the register limit.
    const bool diagonal = k0 / kBlock == diagonal_key_block(layout, q_block);
    const int k_off = k0 % kBlock;             // offsets in the blocks decide the causal mask
    if (!(diagonal && k_off > 16 * w + 15)) {  // else every key follows the warp's queries
      const uint32_t buffer = (i & 1) * C::kKvTileBytes;
      float s[kN / 8][4] = {}, dp[kN / 8][4] = {};
      gemm_abt<T, D, kN>(s, q_s, 16 * w, k_s + buffer);
      gemm_abt<T, D, kN>(dp, do_s, 16 * w, v_s + buffer);
#pragma unroll
      for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1;
          const int key = k_off + 8 * j + 2 * c + (e & 1), query = 16 * w + g + 8 * r;
          const float p = diagonal && key > query ? 0.0f : exp2f(s[j][e] * scale_log2 - lse2[r]);
          s[j][e] = p * (dp[j][e] - dlt[r]) * scale;  // dS
        }
      }
      gemm_pb<T, kN, D>(acc, s, k_s + buffer);
    }
    __syncthreads();
  }
  const float one[2] = {1.0f, 1.0f};
  // Q rows of this warp are read only by this warp: stage dQ there.
  store_rows<T, D>(Qs, 16 * w, acc, one,
                   dq + b * shape.q.batch + h * shape.q.head + q0 * shape.q.token, shape.q.token);
}

// dK/dV: the key tile is one layout block (kBlock rows, kBlock / 16 warps); queries kM at a
// time (32 for D = 128 keeps dK and dV, 2 x 64 fp32 registers, beside S^T and dP^T).
template <typename T, int D, int kBlock>
struct DkdvConfig {
  static constexpr int kWarps = kBlock / 16, kThreads = 32 * kWarps;
  static constexpr int kM = D == 64 ? 64 : 32;
  static constexpr uint32_t kQTileBytes = kM * D * sizeof(T);
  // K, V, Q[2], dO[2], then lse[2][kM] and delta[2][kM] in fp32.
  static constexpr size_t kSmemBytes =
      (2 * kBlock + 4 * kM) * D * sizeof(T) + 4 * kM * sizeof(float);
  static_assert(2 * kM <= kThreads, "one thread per lse / delta value");
};

template <typename T, int D, int kBlock>
__global__ void __launch_bounds__(DkdvConfig<T, D, kBlock>::kThreads)
    dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                const T* __restrict__ dout, const float* __restrict__ lse,
                const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv,
                BlockSparseShape shape, DeviceBlockLayout layout, float scale) {
  using C = DkdvConfig<T, D, kBlock>;
  constexpr int kM = C::kM;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = Ks + kBlock * D;
  const uint32_t k_s = smem_address(Ks), v_s = smem_address(Vs);
  const uint32_t q_s = v_s + kBlock * D * sizeof(T);  // + buffer * kQTileBytes
  const uint32_t do_s = q_s + 2 * C::kQTileBytes;
  float* rows_s = reinterpret_cast<float*>(smem + (2 * kBlock + 4 * kM) * D * sizeof(T));
  // rows_s[buffer * 2 * kM + i]: lse of query i of the tile; + kM: its delta.

  const int k_block = blockIdx.x, kv_h = blockIdx.y, b = blockIdx.z;
  const int k0 = k_block * kBlock;
  const int group = shape.heads / shape.kv_heads;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int key_row0 = 16 * w;  // this warp's first key, as an offset in the block

  // Tiles (query head, query block, kM-query sub-tile) of this key block's column.
  const CscQueryTiles<kBlock, kM> query_tiles(layout, k_block, kv_h, group);
  const int tiles = query_tiles.count;
  auto load_q = [&](int i) {
    const int h = query_tiles.head(i), q0 = query_tiles.query0(i), buffer = i & 1;
    copy_tile_async<T, D, kM, C::kThreads>(
        q_s + buffer * C::kQTileBytes, q + b * shape.q.batch + h * shape.q.head, shape.q.token, q0);
    copy_tile_async<T, D, kM, C::kThreads>(do_s + buffer * C::kQTileBytes,
                                           dout + b * shape.out.batch + h * shape.out.head,
                                           shape.out.token, q0);
    const int t = threadIdx.x;
    if (t < 2 * kM) {
      const int64_t row = (static_cast<int64_t>(b) * shape.q_len + q0 + t % kM) * shape.heads + h;
      cp_async_4(smem_address(rows_s + buffer * 2 * kM + t), t < kM ? lse + row : delta + row);
    }
  };

  copy_tile_async<T, D, kBlock, C::kThreads>(k_s, k + b * shape.k.batch + kv_h * shape.k.head,
                                             shape.k.token, k0);
  copy_tile_async<T, D, kBlock, C::kThreads>(v_s, v + b * shape.v.batch + kv_h * shape.v.head,
                                             shape.v.token, k0);
  if (tiles > 0) load_q(0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  const float scale_log2 = scale * kLog2e;

  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  for (int i = 0; i < tiles; ++i) {
    prefetch_next_tile(i, tiles, load_q);
    __syncthreads();
    const int q0 = query_tiles.query0(i);
    const bool diagonal = diagonal_key_block(layout, q0 / kBlock) == k_block;
    const int q_off = q0 % kBlock;  // the tile's first query, as an offset in its block
    // On the diagonal a warp whose 16 keys all follow the tile's queries has nothing to add.
    if (!(diagonal && q_off + kM - 1 < key_row0)) {
      const int buffer = i & 1;
      const uint32_t q_tile = q_s + buffer * C::kQTileBytes,
                     do_tile = do_s + buffer * C::kQTileBytes;
      const float* lse_rows = rows_s + buffer * 2 * kM;
      const float* delta_rows = lse_rows + kM;
      // Transposed products: rows are the warp's keys, columns the tile's queries.
      float st[kM / 8][4] = {}, dpt[kM / 8][4] = {};
      gemm_abt<T, D, kM>(st, k_s, 16 * w, q_tile);
      gemm_abt<T, D, kM>(dpt, v_s, 16 * w, do_tile);
#pragma unroll
      for (int j = 0; j < kM / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 8 * j + 2 * c + (e & 1);
          const int key = key_row0 + g + 8 * (e >> 1);
          const float p = diagonal && key > q_off + col
                              ? 0.0f
                              : exp2f(st[j][e] * scale_log2 - lse_rows[col] * kLog2e);
          st[j][e] = p;                                           // P^T
          dpt[j][e] = p * (dpt[j][e] - delta_rows[col]) * scale;  // dS^T
        }
      }
      gemm_pb<T, kM, D>(dv_acc, st, do_tile);
      gemm_pb<T, kM, D>(dk_acc, dpt, q_tile);
    }
    __syncthreads();
  }
  const float one[2] = {1.0f, 1.0f};
  // K and V rows of this warp are read only by this warp: stage dK and dV there.
  store_rows<T, D>(Ks, 16 * w, dk_acc, one,
                   dk + b * shape.k.batch + kv_h * shape.k.head + k0 * shape.k.token,
                   shape.k.token);
  store_rows<T, D>(Vs, 16 * w, dv_acc, one,
                   dv + b * shape.v.batch + kv_h * shape.v.head + k0 * shape.v.token,
                   shape.v.token);
}

template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

template <typename T, int D, int kBlock>
cudaError_t launch_backward(const void* q, const void* k, const void* v, const void* out,
                            const void* dout, const float* lse, float* delta, void* dq, void* dk,
                            void* dv, const BlockSparseShape& shape,
                            const DeviceBlockLayout& layout, float scale, cudaStream_t stream,
                            SparseBackwardKernel kernels, float* dq_workspace) {
  const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k),
          *vt = static_cast<const T*>(v), *dot = static_cast<const T*>(dout);
  const int64_t rows = static_cast<int64_t>(shape.batch) * shape.q_len * shape.heads;
  constexpr int kDeltaThreads = 256, kDeltaRowsPerBlock = kDeltaThreads / 32 * (32 / (D / 8));
  static_assert(D % 8 == 0 && 32 % (D / 8) == 0, "delta_kernel: D / 8 lanes must divide a warp");
  const int64_t delta_blocks = (rows + kDeltaRowsPerBlock - 1) / kDeltaRowsPerBlock;
  if (rows < (int64_t(1) << 27)) {  // thread indices (<= 32 per row) stay below 2^32
    delta_kernel<T, D, uint32_t><<<static_cast<unsigned>(delta_blocks), kDeltaThreads, 0, stream>>>(
        static_cast<const T*>(out), dot, delta, shape, uint32_t(rows));
  } else {
    delta_kernel<T, D, int64_t><<<static_cast<unsigned>(delta_blocks), kDeltaThreads, 0, stream>>>(
        static_cast<const T*>(out), dot, delta, shape, rows);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  constexpr SparseDType dtype =
      std::is_same_v<T, __nv_bfloat16> ? SparseDType::kBFloat16 : SparseDType::kFloat16;
  if (kernels == SparseBackwardKernel::kWgmmaFusedDq) {
    return block_sparse_dkdv_dq_sm90(dtype, q, k, v, dout, lse, delta, dq, dk, dv, dq_workspace,
                                     shape, layout, scale, stream);
  }
  const bool overlap = kernels != SparseBackwardKernel::kWgmmaSync;
  if (kernels == SparseBackwardKernel::kWgmma || kernels == SparseBackwardKernel::kWgmmaSync) {
    err = block_sparse_dq_sm90(dtype, q, k, v, dout, lse, delta, dq, shape, layout, scale, stream,
                               overlap);
    if (err != cudaSuccess) return err;
  } else {
    using Dq = DqConfig<T, D, kBlock>;
    if ((err = allow_smem(dq_kernel<T, D, kBlock>, Dq::kSmemBytes)) != cudaSuccess) return err;
    dq_kernel<T, D, kBlock>
        <<<dim3(shape.q_len / kBlock, shape.heads, shape.batch), Dq::kThreads, Dq::kSmemBytes,
           stream>>>(qt, kt, vt, dot, lse, delta, static_cast<T*>(dq), shape, layout, scale);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }

  if (kernels != SparseBackwardKernel::kMma) {
    return block_sparse_dkdv_sm90(dtype, q, k, v, dout, lse, delta, dk, dv, shape, layout, scale,
                                  stream, overlap);
  }
  using Kv = DkdvConfig<T, D, kBlock>;
  if ((err = allow_smem(dkdv_kernel<T, D, kBlock>, Kv::kSmemBytes)) != cudaSuccess) return err;
  dkdv_kernel<T, D, kBlock><<<dim3(shape.kv_len / kBlock, shape.kv_heads, shape.batch),
                              Kv::kThreads, Kv::kSmemBytes, stream>>>(
      qt, kt, vt, dot, lse, delta, static_cast<T*>(dk), static_cast<T*>(dv), shape, layout, scale);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t launch_backward(const void* q, const void* k, const void* v, const void* out,
                            const void* dout, const float* lse, float* delta, void* dq, void* dk,
                            void* dv, const BlockSparseShape& shape,
                            const DeviceBlockLayout& layout, float scale, cudaStream_t stream,
                            SparseBackwardKernel kernels, float* dq_workspace) {
  return shape.block_size == 64
             ? launch_backward<T, D, 64>(q, k, v, out, dout, lse, delta, dq, dk, dv, shape, layout,
                                         scale, stream, kernels, dq_workspace)
             : launch_backward<T, D, 128>(q, k, v, out, dout, lse, delta, dq, dk, dv, shape, layout,
                                          scale, stream, kernels, dq_workspace);
}

}  // namespace

SparseBackwardKernel block_sparse_backward_choice(const BlockSparseShape& shape) {
  const char* env =
      env_switch("RA_SPARSE_BACKWARD", {"mma", "wgmma", "wgmma_sync", "wgmma_dkdv", "wgmma_fused"});
  if (env != nullptr && std::strcmp(env, "mma") == 0) return SparseBackwardKernel::kMma;
  if (!detail::sm90_backward_supports(shape)) return SparseBackwardKernel::kMma;
  if (!current_device_runs_sm90a()) return SparseBackwardKernel::kMma;
  if (env != nullptr && std::strcmp(env, "wgmma_sync") == 0)
    return SparseBackwardKernel::kWgmmaSync;
  if (env != nullptr && std::strcmp(env, "wgmma_dkdv") == 0)
    return SparseBackwardKernel::kWgmmaDkdv;
  if (env != nullptr && std::strcmp(env, "wgmma") == 0) return SparseBackwardKernel::kWgmma;
  return SparseBackwardKernel::kWgmmaFusedDq;
}

size_t block_sparse_backward_workspace_bytes(const BlockSparseShape& shape,
                                             SparseBackwardKernel kernels) {
  return kernels == SparseBackwardKernel::kWgmmaFusedDq
             ? detail::block_sparse_fused_dq_workspace_bytes(shape)
             : 0;
}

cudaError_t block_sparse_backward(SparseDType dtype, const void* q, const void* k, const void* v,
                                  const void* out, const void* dout, const float* lse, float* delta,
                                  void* dq, void* dk, void* dv, const BlockSparseShape& shape,
                                  const DeviceBlockLayout& layout, float scale,
                                  SparseBackwardKernel kernels, float* dq_workspace,
                                  cudaStream_t stream) {
  if (block_sparse_unsupported(shape) != nullptr) return cudaErrorInvalidValue;
  // Only D 128 / block 128 gets a wgmma choice (sm90_backward_supports).
  if (kernels != SparseBackwardKernel::kMma && !detail::sm90_backward_supports(shape)) {
    return cudaErrorInvalidValue;
  }
  const bool d64 = shape.head_dim == 64;
  if (dtype == SparseDType::kBFloat16) {
    return d64 ? launch_backward<__nv_bfloat16, 64>(q, k, v, out, dout, lse, delta, dq, dk, dv,
                                                    shape, layout, scale, stream,
                                                    SparseBackwardKernel::kMma, nullptr)
               : launch_backward<__nv_bfloat16, 128>(q, k, v, out, dout, lse, delta, dq, dk, dv,
                                                     shape, layout, scale, stream, kernels,
                                                     dq_workspace);
  }
  return d64 ? launch_backward<__half, 64>(q, k, v, out, dout, lse, delta, dq, dk, dv, shape,
                                           layout, scale, stream, SparseBackwardKernel::kMma,
                                           nullptr)
             : launch_backward<__half, 128>(q, k, v, out, dout, lse, delta, dq, dk, dv, shape,
                                            layout, scale, stream, kernels, dq_workspace);
}

}  // namespace ra::cuda
