// Block-sparse attention forward for Hopper (sm_90a) on warpgroup MMA (wgmma): one CTA of two
// warpgroups per (query block of 128 rows, head, batch), each warpgroup owning 64 query rows. The
// CTA walks its query block's CSR row kN keys at a time, all 256 threads loading the next K/V tile
// with cp.async while this one is computed. S = Q K^T is a wgmma with both operands in 128-byte
// swizzled shared memory; the online softmax (exp2 of log2(e)-prescaled scores) runs on S's fp32
// accumulators in registers; O += P V takes P from registers (S's accumulator layout is the A
// fragment layout) and V MN-major from shared memory. D = 128, block 128, fp16/bf16; results as
// block_sparse_forward.cu (out, fp32 LSE; empty rows give out 0 and lse -inf).
#include <cmath>

#include "attention/sparse/cuda/block_sparse_diagonal.cuh"
#include "attention/sparse/cuda/block_sparse_forward_sm90.h"
#include "attention/sparse/cuda/block_sparse_mma.cuh"
#include "attention/sparse/cuda/block_sparse_tiles.cuh"
#include "attention/sparse/cuda/block_sparse_tiles_sm90.cuh"
#include "attention/sparse/cuda/wgmma_sm90.cuh"

// wgmma exists only in the arch-specific sm_90a target; any other device pass compiles an empty
// kernel (the dispatch never launches it off compute capability 9.0).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RA_SM90A_DEVICE 1
#endif

namespace ra::cuda::detail {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kD = 128, kBlock = 128, kThreads = 256;

// Shared memory: Q [128 x D], then K[2] and V[2] tiles [kN x D], each 1024-byte aligned (the
// swizzle repeats every 8 rows of 128 bytes and the descriptors assume aligned atoms). kN = 64
// leaves 96 KB, two CTAs per SM (registers capped at 128), so one CTA's softmax overlaps the
// other's MMAs; kN = 128 halves the loop trips but runs one CTA per SM.
template <int kN>
struct Sm90Config {
  static constexpr uint32_t kQBytes = kBlock * kD * 2;
  static constexpr uint32_t kKvTileBytes = kN * kD * 2;
  static constexpr int kMinBlocks = kN == 64 ? 2 : 1;
  // + 1024: the dynamic shared memory base is aligned up to 1024 in the kernel.
  static constexpr size_t kSmemBytes = kQBytes + 4 * kKvTileBytes + 1024;
};

template <typename T, int kN>
__global__ void __launch_bounds__(kThreads, Sm90Config<kN>::kMinBlocks)
    block_sparse_forward_sm90_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                     const T* __restrict__ v, T* __restrict__ out,
                                     float* __restrict__ lse, BlockSparseShape shape,
                                     DeviceBlockLayout layout, float scale_log2) {
#ifdef RA_SM90A_DEVICE
  using C = Sm90Config<kN>;
  constexpr float kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw_s = smem_address(smem_raw);
  const uint32_t q_s = (raw_s + 1023) & ~1023u;
  unsigned char* q_ptr = smem_raw + (q_s - raw_s);  // generic pointer to Q, for the epilogue
  const uint32_t k_s = q_s + C::kQBytes;            // + buffer * kKvTileBytes
  const uint32_t v_s = k_s + 2 * C::kKvTileBytes;

  // Last query blocks first: under a causal layout they have the most key blocks.
  const int q_block = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int q0 = q_block * kBlock;
  const int kv_h = h / (shape.heads / shape.kv_heads);
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int wg_row0 = 64 * wg;                // the warpgroup's first row in the block
  const int row_g = wg_row0 + 16 * warp + g;  // this thread's rows: row_g and row_g + 8
  const T* q_head = q + b * shape.q.batch + h * shape.q.head;
  const T* k_head = k + b * shape.k.batch + kv_h * shape.k.head;
  const T* v_head = v + b * shape.v.batch + kv_h * shape.v.head;

  const CsrKeyTiles<kBlock, kN> key_tiles(layout, q_block);
  const int tiles = key_tiles.count;
  const int diagonal_block = diagonal_key_block(layout, q_block);
  auto load_kv = [&](int i) {
    const uint32_t offset = (i & 1) * C::kKvTileBytes;
    copy_panel_tile_async<T, kN, kThreads>(k_s + offset, k_head, shape.k.token, key_tiles.key0(i));
    copy_panel_tile_async<T, kN, kThreads>(v_s + offset, v_head, shape.v.token, key_tiles.key0(i));
  };

  copy_panel_tile_async<T, kBlock, kThreads>(q_s, q_head, shape.q.token, q0);
  if (tiles > 0) load_kv(0);
  cp_async_commit();

  // Descriptors. Q (A, K-major): the warpgroup's 64 rows of panel kk / 4, 32 bytes per k16 step;
  // 8-row groups 1024 bytes apart. K (B, K-major): the same walk over the tile's kN rows. V (B,
  // MN-major): rows 16kk.. (2048 bytes per k16 step), 8-row groups 1024 bytes apart, the two
  // 64-column panels kN * 128 bytes apart.
  auto q_desc = [&](int kk) {
    return smem_desc_sw128<16, 1024>(q_s + (kk / 4) * (kBlock * 128) + wg_row0 * 128 +
                                     (kk % 4) * 32);
  };
  auto k_desc = [&](uint32_t tile, int kk) {
    return smem_desc_sw128<16, 1024>(tile + (kk / 4) * (kN * 128) + (kk % 4) * 32);
  };
  auto v_desc = [&](uint32_t tile, int kk) {
    return smem_desc_sw128<kN * 128, 1024>(tile + kk * 2048);
  };

  float o[kD / 2];  // O, 64 x 128 per warpgroup: accumulator fragment
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) o[i] = 0.0f;
  // Running max (log2 domain) and this thread's partial row sums, rows row_g and row_g + 8.
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};

  for (int i = 0; i < tiles; ++i) {
    prefetch_next_tile(i, tiles, load_kv);
    fence_proxy_async_shared();  // this thread's cp.async data, visible to wgmma's async proxy
    __syncthreads();
    const int k0 = key_tiles.key0(i);
    const bool diagonal = k0 / kBlock == diagonal_block;
    const int k_off = k0 % kBlock;  // the tile's first key, as an offset in its block
    // On the diagonal a warpgroup whose queries all precede the tile has nothing to add (uniform
    // per warpgroup, as wgmma needs).
    if (!(diagonal && k_off > wg_row0 + 63)) {
      const uint32_t buffer = (i & 1) * C::kKvTileBytes;
      float s[kN / 2];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        wgmma_ss<T, kN>(s, q_desc(kk), k_desc(k_s + buffer, kk), kk > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_registers(s);

      // s[i]: row row_g + 8 * ((i >> 1) & 1), key k_off + 8 * (i >> 2) + 2c + (i & 1).
#pragma unroll
      for (int j = 0; j < kN / 2; ++j) s[j] *= scale_log2;
      if (diagonal) {
#pragma unroll
        for (int j = 0; j < kN / 2; ++j) {
          const int key = k_off + 8 * (j >> 2) + 2 * c + (j & 1);
          if (key > row_g + 8 * ((j >> 1) & 1)) s[j] = -INFINITY;
        }
      }
      float tile_max[2] = {row_max[0], row_max[1]};
#pragma unroll
      for (int j = 0; j < kN / 2; ++j) {
        tile_max[(j >> 1) & 1] = fmaxf(tile_max[(j >> 1) & 1], s[j]);
      }
      float base[2], alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = quad_max(tile_max[r]);
        // A row with no unmasked key yet keeps max -inf: exponentiate against 0, not -inf.
        base[r] = tile_max[r] == -INFINITY ? 0.0f : tile_max[r];
        alpha[r] = exp2f(row_max[r] - base[r]);
        row_max[r] = tile_max[r];
        row_sum[r] *= alpha[r];
      }
#pragma unroll
      for (int j = 0; j < kD / 2; ++j) o[j] *= alpha[(j >> 1) & 1];
      // P in the register A layout: k16 step kk takes S column tiles 2kk and 2kk + 1, i.e.
      // s[8kk..8kk+7]; register r holds s[8kk + 2r] (low half) and s[8kk + 2r + 1].
      uint32_t p[kN / 4];
#pragma unroll
      for (int j = 0; j < kN / 4; ++j) {
        const float p0 = exp2f(s[2 * j] - base[j & 1]);
        const float p1 = exp2f(s[2 * j + 1] - base[j & 1]);
        row_sum[j & 1] += p0 + p1;
        p[j] = pack2<T>(p0, p1);
      }
      fence_registers(o);  // the rescale and P are written before the fence
      fence_registers(p);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        wgmma_rs_tb<T, kD>(o, p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3],
                           v_desc(v_s + buffer, kk), true);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_registers(o);
      fence_registers(p);
    }
    __syncthreads();  // the buffer is refilled by the prefetch of iteration i + 1
  }

  // With no tile at all Q's copy was never waited for: wait, so the staging below cannot race
  // with it. Past this barrier every warp is also past its last wgmma wait, so Q's shared memory
  // is free: each warp stages its own 16 rows there, then writes them out with 16-byte stores.
  cp_async_wait<0>();
  __syncthreads();
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] = quad_sum(row_sum[r]);
    inv[r] = row_sum[r] > 0.0f ? 1.0f / row_sum[r] : 0.0f;
  }
  stage_accumulator_rows<T, kBlock>(o, q_ptr, row_g, c, inv);
  __syncwarp();
  T* out_tile = out + b * shape.out.batch + h * shape.out.head + q0 * shape.out.token;
  store_staged_rows<T, kBlock>(q_ptr, wg_row0 + 16 * warp, lane, out_tile, shape.out.token);
  if (c == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row =
          (static_cast<int64_t>(b) * shape.q_len + q0 + row_g + 8 * r) * shape.heads + h;
      lse[row] = row_sum[r] > 0.0f ? (row_max[r] + log2f(row_sum[r])) * kLn2 : -INFINITY;
    }
  }
#endif  // RA_SM90A_DEVICE
}

template <typename T, int kN>
cudaError_t launch(const void* q, const void* k, const void* v, void* out, float* lse,
                   const BlockSparseShape& shape, const DeviceBlockLayout& layout, float scale,
                   cudaStream_t stream) {
  using C = Sm90Config<kN>;
  auto kernel = block_sparse_forward_sm90_kernel<T, kN>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (err != cudaSuccess) return err;
  dim3 grid(shape.q_len / kBlock, shape.heads, shape.batch);
  kernel<<<grid, kThreads, C::kSmemBytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), lse, shape, layout, scale * kLog2e);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch(const void* q, const void* k, const void* v, void* out, float* lse,
                   const BlockSparseShape& shape, const DeviceBlockLayout& layout, float scale,
                   cudaStream_t stream, int key_tile) {
  return key_tile == 128 ? launch<T, 128>(q, k, v, out, lse, shape, layout, scale, stream)
                         : launch<T, 64>(q, k, v, out, lse, shape, layout, scale, stream);
}

}  // namespace

bool sm90_forward_supports(const BlockSparseShape& shape) {
  return shape.head_dim == kD && shape.block_size == kBlock;
}

cudaError_t block_sparse_forward_sm90(SparseDType dtype, const void* q, const void* k,
                                      const void* v, void* out, float* lse,
                                      const BlockSparseShape& shape,
                                      const DeviceBlockLayout& layout, float scale,
                                      cudaStream_t stream, int key_tile) {
  if (block_sparse_unsupported(shape) != nullptr || !sm90_forward_supports(shape)) {
    return cudaErrorInvalidValue;
  }
  if (dtype == SparseDType::kBFloat16) {
    return launch<__nv_bfloat16>(q, k, v, out, lse, shape, layout, scale, stream, key_tile);
  }
  return launch<__half>(q, k, v, out, lse, shape, layout, scale, stream, key_tile);
}

}  // namespace ra::cuda::detail
