// The block-sparse backward for Hopper (sm_90a) on warpgroup MMA (wgmma), D = 128, block 128,
// fp16/bf16, results as the mma.sync kernels of block_sparse_backward.cu (delta = rowsum(dO * O)
// precomputed there). The dQ and dK/dV kernels use no atomics (each gradient row is written by
// one CTA); the fused variant (kFusedDq) computes dQ inside the dK/dV kernel instead, adding it
// into an fp32 workspace with reductions (5 tile products per query tile and key block, not 7).
// dK/dV: one CTA of two warpgroups per (key block of 128, kv head, batch), each warpgroup owning
// 64 keys, walking the key block's CSC column (over the query heads that share the kv head) 64
// queries at a time. Per query tile, transposed so that P^T and dS^T come out of the first
// products in the accumulator layout that the second ones take as their register A operand:
//   S^T = K Q^T, dP^T = V dO^T        (SS: K/V rows and the Q/dO tile K-major in shared memory)
//   P^T = exp2(S^T * scale_log2 - lse2), dS^T = P^T (dP^T - delta) * scale
//   dV += P^T dO, dK += dS^T Q        (RS: the Q/dO tile read MN-major, the same bytes)
// The Q/dO tiles and their lse/delta are cp.async double-buffered. dQ: see dq_sm90_kernel.
#include <cmath>

#include "attention/sparse/cuda/block_sparse_backward_sm90.h"
#include "attention/sparse/cuda/block_sparse_diagonal.cuh"
#include "attention/sparse/cuda/block_sparse_mma.cuh"
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
constexpr int kM = 64;  // queries per tile
constexpr uint32_t kKvBytes = kBlock * kD * 2, kTileBytes = kM * kD * 2;
// dK/dV. Shared memory: K, V [128 x D], Q[2], dO[2] [kM x D] (each 1024-byte aligned for the
// swizzle atoms), then lse/delta [2][2][kM] fp32; + 1024: the base is aligned up in the kernel.
// 130 KB, one CTA per SM: dK and dV take 128 fp32 registers per thread beside S^T and dP^T.
constexpr uint32_t kRowsOffset = 2 * kKvBytes + 4 * kTileBytes;
constexpr size_t kSmemBytes = kRowsOffset + 4 * kM * sizeof(float) + 1024;
// Fused dQ: dS^T of the query tile, [128 keys x kM queries] in 16-bit, one 128-byte swizzled row
// per key (kM = 64 queries), after lse/delta at the next 1024-byte boundary. 147 KB.
constexpr uint32_t kDsOffset = kRowsOffset + 1024, kDsBytes = kBlock * kM * 2;
constexpr size_t kFusedSmemBytes = kDsOffset + kDsBytes + 1024;
static_assert(4 * kM * sizeof(float) <= 1024, "lse/delta fit below the dS^T tile");
// The fused dQ workspace: per (batch, head, kM-query tile) one kM x 128 fp32 tile in wgmma
// accumulator fragment order (see dkdv_sm90_kernel), kM * kD floats.
constexpr int kDqTileFloats = kM * kD;

// kFusedDq: also dQ_partial = dS K per query tile (dS^T staged in shared memory; warpgroup wg
// computes dQ columns 64 wg.. over all 128 keys of the block as one m64n64 SS wgmma with both
// operands MN-major), added into dq_work with red.global.add.v4.f32 in fragment order: the
// value of register 4 n + r of thread t (of 128) of warpgroup wg goes to float
//   tile * kDqTileFloats + wg * 4096 + n * 512 + 4 t + r,
// tile = (b * heads + h) * (q_len / kM) + q0 / kM, so each wgmma fragment is 16 contiguous
// bytes per thread and a warp's reductions cover 512 contiguous bytes.

// *address += (a, b, c, d), a fire-and-forget fp32 reduction of 16 aligned bytes (PTX 8.1,
// sm_90): the order of the adds of different CTAs is not fixed, so the sum is not bitwise
// deterministic run to run.
__device__ __forceinline__ void red_add_v4(float* address, float a, float b, float c, float d) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(address), "f"(a), "f"(b),
               "f"(c), "f"(d)
               : "memory");
}

// kOverlap: S^T and dP^T in separate wgmma groups, P^T computed while dP^T runs and dS^T while
// dV runs; else each product group is waited for before its results are used. kFusedDq: see
// above; dq_work is unused (may be null) without it.
template <typename T, bool kOverlap, bool kFusedDq>
__global__ void __launch_bounds__(kThreads, 1)
    dkdv_sm90_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                     const T* __restrict__ dout, const float* __restrict__ lse,
                     const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv,
                     float* __restrict__ dq_work, BlockSparseShape shape, DeviceBlockLayout layout,
                     float scale, float scale_log2) {
#ifdef RA_SM90A_DEVICE
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw_s = smem_address(smem_raw);
  const uint32_t k_s = (raw_s + 1023) & ~1023u;
  unsigned char* k_ptr = smem_raw + (k_s - raw_s);  // generic pointers, for the epilogue
  unsigned char* v_ptr = k_ptr + kKvBytes;
  const uint32_t v_s = k_s + kKvBytes;
  const uint32_t q_s = v_s + kKvBytes;         // + buffer * kTileBytes
  const uint32_t do_s = q_s + 2 * kTileBytes;  // + buffer * kTileBytes
  float* rows_s = reinterpret_cast<float*>(k_ptr + kRowsOffset);
  // rows_s[buffer * 2 * kM + i]: lse of query i of the tile; + kM: its delta.
  const uint32_t ds_s = k_s + kDsOffset;  // fused dQ: dS^T [128 keys x kM queries]
  unsigned char* ds_ptr = k_ptr + kDsOffset;

  // Low key blocks first: under a causal layout their columns hold the most query blocks.
  const int k_block = blockIdx.x, kv_h = blockIdx.y, b = blockIdx.z;
  const int k0 = k_block * kBlock;
  const int group = shape.heads / shape.kv_heads;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int wg_row0 = 64 * wg;                // the warpgroup's first key in the block
  const int key_g = wg_row0 + 16 * warp + g;  // this thread's keys: key_g and key_g + 8

  // Tiles (query head, query block, kM-query sub-tile) of this key block's column.
  const CscQueryTiles<kBlock, kM> query_tiles(layout, k_block, kv_h, group);
  const int tiles = query_tiles.count;
  auto load_q = [&](int i) {
    const int h = query_tiles.head(i), q0 = query_tiles.query0(i), buffer = i & 1;
    copy_panel_tile_async<T, kM, kThreads>(
        q_s + buffer * kTileBytes, q + b * shape.q.batch + h * shape.q.head, shape.q.token, q0);
    copy_panel_tile_async<T, kM, kThreads>(do_s + buffer * kTileBytes,
                                           dout + b * shape.out.batch + h * shape.out.head,
                                           shape.out.token, q0);
    const int t = threadIdx.x;
    if (t < 2 * kM) {
      const int64_t row = (static_cast<int64_t>(b) * shape.q_len + q0 + t % kM) * shape.heads + h;
      cp_async_4(smem_address(rows_s + buffer * 2 * kM + t), t < kM ? lse + row : delta + row);
    }
  };

  copy_panel_tile_async<T, kBlock, kThreads>(k_s, k + b * shape.k.batch + kv_h * shape.k.head,
                                             shape.k.token, k0);
  copy_panel_tile_async<T, kBlock, kThreads>(v_s, v + b * shape.v.batch + kv_h * shape.v.head,
                                             shape.v.token, k0);
  if (tiles > 0) load_q(0);
  cp_async_commit();

  // Descriptors. K, V (A, K-major): the warpgroup's 64 rows of panel kk / 4, 32 bytes per k16
  // step, 8-row groups 1024 bytes apart. Q / dO tile as B K-major (S^T, dP^T: N = the kM
  // queries): the same walk over the tile's rows. As B MN-major (dK, dV: K = the queries, N = D):
  // rows 16kk.. (2048 bytes per k16 step), 8-row groups 1024 bytes apart, the two 64-column
  // panels kM * 128 bytes apart. These are the forward's Q, K and V descriptors.
  auto kv_desc = [&](uint32_t block, int kk) {
    return smem_desc_sw128<16, 1024>(block + (kk / 4) * (kBlock * 128) + wg_row0 * 128 +
                                     (kk % 4) * 32);
  };
  auto tile_kmajor = [&](uint32_t tile, int kk) {
    return smem_desc_sw128<16, 1024>(tile + (kk / 4) * (kM * 128) + (kk % 4) * 32);
  };
  auto tile_mnmajor = [&](uint32_t tile, int kk) {
    return smem_desc_sw128<kM * 128, 1024>(tile + kk * 2048);
  };
  // Fused dQ = dS K, warpgroup wg: A = dS (M = the kM queries, K = keys) is the dS^T tile read
  // MN-major: keys 16kk.. (2048 bytes per k16 step), 8-key groups 1024 bytes apart, one 64-query
  // panel (LBO unused). B = K (K = keys, N = D columns 64 wg..) MN-major: panel wg of the K
  // block, the same walk over its rows.
  auto ds_desc = [&](int kk) { return smem_desc_sw128<kDsBytes, 1024>(ds_s + kk * 2048); };
  auto k_mnmajor = [&](int kk) {
    return smem_desc_sw128<kBlock * 128, 1024>(k_s + wg * (kBlock * 128) + kk * 2048);
  };

  float dk_acc[kD / 2], dv_acc[kD / 2];  // 64 x 128 per warpgroup: accumulator fragments
#pragma unroll
  for (int j = 0; j < kD / 2; ++j) dk_acc[j] = dv_acc[j] = 0.0f;

  for (int i = 0; i < tiles; ++i) {
    prefetch_next_tile(i, tiles, load_q);
    fence_proxy_async_shared();  // this thread's cp.async data, visible to wgmma's async proxy
    __syncthreads();
    const int q0 = query_tiles.query0(i);
    const bool diagonal = diagonal_key_block(layout, q0 / kBlock) == k_block;
    const int q_off = q0 % kBlock;  // the tile's first query, as an offset in its block
    // On the diagonal a warpgroup whose keys all follow the tile's queries has nothing to add
    // (uniform per warpgroup, as wgmma needs).
    const bool skipped = diagonal && wg_row0 > q_off + kM - 1;
    // P^T and dS^T (register A operands of dV and dK): here, so that the fused dQ variant can
    // leave dV/dK in flight under its dQ product and pin them after the one wait for both.
    uint32_t p[kM / 4], ds[kM / 4];
    if (!skipped) {
      const int buffer = i & 1;
      const uint32_t q_tile = q_s + buffer * kTileBytes, do_tile = do_s + buffer * kTileBytes;
      const float* lse_rows = rows_s + buffer * 2 * kM;
      const float* delta_rows = lse_rows + kM;
      float st[kM / 2], dpt[kM / 2];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        wgmma_ss<T, kM>(st, kv_desc(k_s, kk), tile_kmajor(q_tile, kk), kk > 0);
      }
      if constexpr (kOverlap) wgmma_commit();  // S^T alone: P^T is computed while dP^T runs
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        wgmma_ss<T, kM>(dpt, kv_desc(v_s, kk), tile_kmajor(do_tile, kk), kk > 0);
      }
      wgmma_commit();
      if constexpr (kOverlap) {
        wgmma_wait<1>();
      } else {
        wgmma_wait<0>();
      }
      fence_registers(st);

      // st[x], dpt[x]: key key_g + 8 * ((x >> 1) & 1), query q_off + 8 * (x >> 2) + 2c + (x & 1).
      // Register j of P^T / dS^T packs x = 2j, 2j + 1, so k16 step kk of the second products
      // takes registers 4kk..4kk+3 (queries 16kk..16kk+15), the register A fragment layout.
#pragma unroll
      for (int j = 0; j < kM / 4; ++j) {
        const int key = key_g + 8 * (j & 1);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = 8 * (j >> 1) + 2 * c + e;
          st[2 * j + e] = diagonal && key > q_off + col  // P^T, in place
                              ? 0.0f
                              : exp2f(st[2 * j + e] * scale_log2 - lse_rows[col] * kLog2e);
        }
        p[j] = pack2<T>(st[2 * j], st[2 * j + 1]);
      }
      fence_registers(p);  // P^T is written before the fence
      if constexpr (kOverlap) {
        // dV += P^T dO runs while dS^T is computed; waiting for all but it completes dP^T.
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kM / 16; ++kk) {
          wgmma_rs_tb<T, kD>(dv_acc, p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3],
                             tile_mnmajor(do_tile, kk), true);
        }
        wgmma_commit();
        wgmma_wait<1>();
      }
      fence_registers(dpt);
#pragma unroll
      for (int j = 0; j < kM / 4; ++j) {
        float dsv[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = 8 * (j >> 1) + 2 * c + e;
          dsv[e] = st[2 * j + e] * (dpt[2 * j + e] - delta_rows[col]) * scale;
        }
        ds[j] = pack2<T>(dsv[0], dsv[1]);
      }
      fence_registers(ds);  // dS^T is written before the fence
      if constexpr (kFusedDq) {
        // dS^T to shared memory for the dQ product: register j holds keys key_g + 8 (j & 1),
        // queries 8 (j >> 1) + 2c, + 1: chunk j >> 1 of the key's 128-byte row, swizzled by the
        // key's index mod 8 (= g). Conflict-free: the warp's 8 keys hit 8 different chunks.
#pragma unroll
        for (int j = 0; j < kM / 4; ++j) {
          const int key = key_g + 8 * (j & 1);
          *reinterpret_cast<uint32_t*>(ds_ptr + key * 128 + (((j >> 1) ^ (key & 7)) << 4) + 4 * c) =
              ds[j];
        }
        fence_proxy_async_shared();  // visible to the dQ wgmma after the barrier below
      }
      wgmma_fence();
      if constexpr (!kOverlap) {
#pragma unroll
        for (int kk = 0; kk < kM / 16; ++kk) {
          wgmma_rs_tb<T, kD>(dv_acc, p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3],
                             tile_mnmajor(do_tile, kk), true);
        }
      }
#pragma unroll
      for (int kk = 0; kk < kM / 16; ++kk) {
        wgmma_rs_tb<T, kD>(dk_acc, ds[4 * kk], ds[4 * kk + 1], ds[4 * kk + 2], ds[4 * kk + 3],
                           tile_mnmajor(q_tile, kk), true);
      }
      wgmma_commit();
      if constexpr (!kFusedDq) {  // the fused variant waits after its dQ product
        wgmma_wait<0>();
        fence_registers(dv_acc);
        fence_registers(dk_acc);
        fence_registers(p);
        fence_registers(ds);
      }
    }
    if constexpr (kFusedDq) {
      if (skipped) {
        // Its keys' dS^T is 0 (all after the tile's queries): zeros, so the dQ product below
        // runs all 128 keys on every tile without branching between wgmmas.
#pragma unroll
        for (int j = 0; j < kM / 4; ++j) {
          const int key = key_g + 8 * (j & 1);
          *reinterpret_cast<uint32_t*>(ds_ptr + key * 128 + (((j >> 1) ^ (key & 7)) << 4) + 4 * c) =
              0u;
        }
        fence_proxy_async_shared();
      }
      // Both warpgroups' dS^T is in shared memory (each thread fenced its stores).
      __syncthreads();
      float dq_acc[kM / 2];  // dQ_partial, kM queries x D columns 64 wg..: accumulator fragment
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlock / 16; ++kk) {
        wgmma_ss_tt<T, 64>(dq_acc, ds_desc(kk), k_mnmajor(kk), kk > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();  // dQ and this tile's dV/dK: P^T and dS^T are free after it
      fence_registers(dq_acc);
      fence_registers(dv_acc);
      fence_registers(dk_acc);
      fence_registers(p);
      fence_registers(ds);
      // Fire-and-forget fp32 adds in fragment order (see kFusedDq above), 16 bytes each.
      const int h = query_tiles.head(i);
      float* work = dq_work +
                    ((static_cast<int64_t>(b) * shape.heads + h) * (shape.q_len / kM) + q0 / kM) *
                        kDqTileFloats +
                    wg * 4096 + 4 * (threadIdx.x % 128);
#pragma unroll
      for (int n = 0; n < kM / 8; ++n) {
        red_add_v4(work + n * 512, dq_acc[4 * n], dq_acc[4 * n + 1], dq_acc[4 * n + 2],
                   dq_acc[4 * n + 3]);
      }
    }
    __syncthreads();  // the buffer is refilled by the prefetch of iteration i + 1
  }

  // With no tile at all K/V's copy was never waited for: wait, so the staging below cannot race
  // with it. Past this barrier every warp is past its last wgmma wait, so K and V's shared memory
  // is free: each warp stages its own 16 rows of dK (dV) there, then writes them out with 16-byte
  // stores.
  cp_async_wait<0>();
  __syncthreads();
  constexpr float kUnscaled[2] = {1.0f, 1.0f};
  stage_accumulator_rows<T, kBlock>(dk_acc, k_ptr, key_g, c, kUnscaled);
  stage_accumulator_rows<T, kBlock>(dv_acc, v_ptr, key_g, c, kUnscaled);
  __syncwarp();
  const int warp_row0 = wg_row0 + 16 * warp;
  T* dk_tile = dk + b * shape.k.batch + kv_h * shape.k.head + k0 * shape.k.token;
  T* dv_tile = dv + b * shape.v.batch + kv_h * shape.v.head + k0 * shape.v.token;
  store_staged_rows<T, kBlock>(k_ptr, warp_row0, lane, dk_tile, shape.k.token);
  store_staged_rows<T, kBlock>(v_ptr, warp_row0, lane, dv_tile, shape.v.token);
#endif  // RA_SM90A_DEVICE
}

// dQ: one CTA of two warpgroups per (query block of 128, head, batch), each warpgroup owning 64
// queries, walking the query block's CSR row kN = 64 keys at a time (so every dQ row is written
// once). Per key tile: S = Q K^T, dP = dO V^T (SS, all K-major), P = exp2(S * scale_log2 - lse2),
// dS = P (dP - delta) * scale, dQ += dS K (RS, the K tile read MN-major). The forward's structure
// and descriptors, with dO beside Q and no online softmax. Shared memory: Q, dO [128 x D], then
// K[2], V[2] [kN x D]; 129 KB, one CTA per SM.
constexpr int kN = 64;  // keys per tile
constexpr uint32_t kDqKvTileBytes = kN * kD * 2;
constexpr size_t kDqSmemBytes = 2 * kKvBytes + 4 * kDqKvTileBytes + 1024;

// kOverlap: S and dP in separate wgmma groups, P computed while dP runs.
template <typename T, bool kOverlap>
__global__ void __launch_bounds__(kThreads, 1)
    dq_sm90_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   const T* __restrict__ dout, const float* __restrict__ lse,
                   const float* __restrict__ delta, T* __restrict__ dq, BlockSparseShape shape,
                   DeviceBlockLayout layout, float scale, float scale_log2) {
#ifdef RA_SM90A_DEVICE
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw_s = smem_address(smem_raw);
  const uint32_t q_s = (raw_s + 1023) & ~1023u;
  unsigned char* q_ptr = smem_raw + (q_s - raw_s);  // generic pointer to Q, for the epilogue
  const uint32_t do_s = q_s + kKvBytes;
  const uint32_t k_s = do_s + kKvBytes;  // + buffer * kDqKvTileBytes
  const uint32_t v_s = k_s + 2 * kDqKvTileBytes;

  // Last query blocks first: under a causal layout they have the most key blocks.
  const int q_block = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int q0 = q_block * kBlock;
  const int kv_h = h / (shape.heads / shape.kv_heads);
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int wg_row0 = 64 * wg;                // the warpgroup's first row in the block
  const int row_g = wg_row0 + 16 * warp + g;  // this thread's rows: row_g and row_g + 8
  const T* k_head = k + b * shape.k.batch + kv_h * shape.k.head;
  const T* v_head = v + b * shape.v.batch + kv_h * shape.v.head;

  const CsrKeyTiles<kBlock, kN> key_tiles(layout, q_block);
  const int tiles = key_tiles.count;
  const int diagonal_block = diagonal_key_block(layout, q_block);
  auto load_kv = [&](int i) {
    const uint32_t offset = (i & 1) * kDqKvTileBytes;
    copy_panel_tile_async<T, kN, kThreads>(k_s + offset, k_head, shape.k.token, key_tiles.key0(i));
    copy_panel_tile_async<T, kN, kThreads>(v_s + offset, v_head, shape.v.token, key_tiles.key0(i));
  };

  copy_panel_tile_async<T, kBlock, kThreads>(q_s, q + b * shape.q.batch + h * shape.q.head,
                                             shape.q.token, q0);
  copy_panel_tile_async<T, kBlock, kThreads>(do_s, dout + b * shape.out.batch + h * shape.out.head,
                                             shape.out.token, q0);
  if (tiles > 0) load_kv(0);
  cp_async_commit();
  float lse2[2], dlt[2];  // rows row_g and row_g + 8; lse in the log2 domain
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row =
        (static_cast<int64_t>(b) * shape.q_len + q0 + row_g + 8 * r) * shape.heads + h;
    lse2[r] = lse[row] * kLog2e;
    dlt[r] = delta[row];
  }

  // Descriptors. Q, dO (A, K-major): the warpgroup's 64 rows of panel kk / 4, 32 bytes per k16
  // step; 8-row groups 1024 bytes apart. K, V tile (B, K-major): the same walk over the tile's kN
  // rows. K tile as B MN-major (dQ: K = the keys, N = D): rows 16kk.. (2048 bytes per k16 step),
  // 8-row groups 1024 bytes apart, the two 64-column panels kN * 128 bytes apart.
  auto row_desc = [&](uint32_t block, int kk) {
    return smem_desc_sw128<16, 1024>(block + (kk / 4) * (kBlock * 128) + wg_row0 * 128 +
                                     (kk % 4) * 32);
  };
  auto tile_kmajor = [&](uint32_t tile, int kk) {
    return smem_desc_sw128<16, 1024>(tile + (kk / 4) * (kN * 128) + (kk % 4) * 32);
  };
  auto tile_mnmajor = [&](uint32_t tile, int kk) {
    return smem_desc_sw128<kN * 128, 1024>(tile + kk * 2048);
  };

  float dq_acc[kD / 2];  // dQ, 64 x 128 per warpgroup: accumulator fragment
#pragma unroll
  for (int j = 0; j < kD / 2; ++j) dq_acc[j] = 0.0f;

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
      const uint32_t buffer = (i & 1) * kDqKvTileBytes;
      float s[kN / 2], dp[kN / 2];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        wgmma_ss<T, kN>(s, row_desc(q_s, kk), tile_kmajor(k_s + buffer, kk), kk > 0);
      }
      if constexpr (kOverlap) wgmma_commit();  // S alone: P is computed while dP runs
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        wgmma_ss<T, kN>(dp, row_desc(do_s, kk), tile_kmajor(v_s + buffer, kk), kk > 0);
      }
      wgmma_commit();
      if constexpr (kOverlap) {
        wgmma_wait<1>();
      } else {
        wgmma_wait<0>();
      }
      fence_registers(s);

      // s[x], dp[x]: row row_g + 8 * ((x >> 1) & 1), key k_off + 8 * (x >> 2) + 2c + (x & 1).
      // Register j of dS packs x = 2j, 2j + 1 (row row_g + 8 * (j & 1)): k16 step kk of dS K
      // takes registers 4kk..4kk+3 (keys 16kk..16kk+15), the register A fragment layout.
#pragma unroll
      for (int j = 0; j < kN / 4; ++j) {
        const int r = j & 1;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = k_off + 8 * (j >> 1) + 2 * c + e;
          s[2 * j + e] = diagonal && key > row_g + 8 * r  // P, in place
                             ? 0.0f
                             : exp2f(s[2 * j + e] * scale_log2 - lse2[r]);
        }
      }
      if constexpr (kOverlap) {
        fence_registers(s);  // P is computed before the wait, beside dP
        wgmma_wait<0>();
      }
      fence_registers(dp);
      uint32_t ds[kN / 4];
#pragma unroll
      for (int j = 0; j < kN / 4; ++j) {
        const int r = j & 1;
        ds[j] = pack2<T>(s[2 * j] * (dp[2 * j] - dlt[r]) * scale,
                         s[2 * j + 1] * (dp[2 * j + 1] - dlt[r]) * scale);
      }
      fence_registers(ds);  // dS is written before the fence
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        wgmma_rs_tb<T, kD>(dq_acc, ds[4 * kk], ds[4 * kk + 1], ds[4 * kk + 2], ds[4 * kk + 3],
                           tile_mnmajor(k_s + buffer, kk), true);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_registers(dq_acc);
      fence_registers(ds);
    }
    __syncthreads();  // the buffer is refilled by the prefetch of iteration i + 1
  }

  // With no tile at all Q's copy was never waited for: wait, so the staging below cannot race
  // with it. Past this barrier every warp is past its last wgmma wait, so Q's shared memory is
  // free: each warp stages its own 16 rows of dQ there, then writes them out with 16-byte stores.
  cp_async_wait<0>();
  __syncthreads();
  constexpr float kUnscaled[2] = {1.0f, 1.0f};
  stage_accumulator_rows<T, kBlock>(dq_acc, q_ptr, row_g, c, kUnscaled);
  __syncwarp();
  T* dq_tile = dq + b * shape.q.batch + h * shape.q.head + q0 * shape.q.token;
  store_staged_rows<T, kBlock>(q_ptr, wg_row0 + 16 * warp, lane, dq_tile, shape.q.token);
#endif  // RA_SM90A_DEVICE
}

// The fused dQ's epilogue: dq (q's strides, T) from the fp32 workspace in fragment order (the
// softmax scale is already in dS). One CTA per kM-query tile: coalesced float4 loads of the
// tile's 32 KB, converted into a row-major [kM][kD] 16-bit tile in shared memory, then written
// out a row at a time (16 threads x 16 bytes per 256-byte row). (Each thread storing its own
// fragment rows directly scattered 16-byte stores over 32 rows per warp instruction: 0.71 ms at
// 64K x 16 heads, 2.6x the bytes' time.)
// Float4 i of a tile holds register 4n + {0..3} of thread t of warpgroup wg (i = 1024 wg +
// 128 n + t; see kFusedDq): query 16 (t / 32) + (t % 32) / 4 (+ 8 for the second pair), D
// columns 64 wg + 8 n + 2 (t % 4) and + 1.
constexpr int kDqStageWords = kD / 2 + 4;  // uint32 words per staged row: 64 + 4 of padding,
                                           // so a warp's scattered pair stores hit 32 banks
template <typename T>
__global__ void __launch_bounds__(256)
    dq_from_workspace_kernel(const float* __restrict__ dq_work, T* __restrict__ dq,
                             BlockSparseShape shape) {
  __shared__ __align__(16) uint32_t stage[kM * kDqStageWords];  // [kM][kD / 2] packed pairs
  const int64_t tile = blockIdx.x;
  const int q_tiles = shape.q_len / kM;
  const int q0 = static_cast<int>(tile % q_tiles) * kM;
  const int h = static_cast<int>((tile / q_tiles) % shape.heads);
  const int64_t b = tile / q_tiles / shape.heads;
  const float4* from = reinterpret_cast<const float4*>(dq_work + tile * kDqTileFloats);
#pragma unroll
  for (int k = 0; k < kDqTileFloats / 4 / 256; ++k) {
    const int i = k * 256 + threadIdx.x;
    const float4 x = from[i];
    const int wg = i / 1024, n = (i / 128) % 8, t = i % 128;
    const int row = 16 * (t / 32) + (t % 32) / 4, pair = 32 * wg + 4 * n + t % 4;
    stage[row * kDqStageWords + pair] = pack2<T>(x.x, x.y);
    stage[(row + 8) * kDqStageWords + pair] = pack2<T>(x.z, x.w);
  }
  __syncthreads();
  T* tile_out = dq + b * shape.q.batch + h * shape.q.head + int64_t(q0) * shape.q.token;
#pragma unroll
  for (int k = 0; k < kM * kD / 8 / 256; ++k) {
    const int i = k * 256 + threadIdx.x;
    const int row = i / (kD / 8), chunk = i % (kD / 8);  // 8 elements = 16 bytes per chunk
    const uint4 v = *reinterpret_cast<const uint4*>(&stage[row * kDqStageWords + 4 * chunk]);
    *reinterpret_cast<uint4*>(tile_out + int64_t(row) * shape.q.token + 8 * chunk) = v;
  }
}

template <typename T, bool kOverlap>
cudaError_t launch_dq(const void* q, const void* k, const void* v, const void* dout,
                      const float* lse, const float* delta, void* dq, const BlockSparseShape& shape,
                      const DeviceBlockLayout& layout, float scale, cudaStream_t stream) {
  auto kernel = dq_sm90_kernel<T, kOverlap>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kDqSmemBytes));
  if (err != cudaSuccess) return err;
  dim3 grid(shape.q_len / kBlock, shape.heads, shape.batch);
  kernel<<<grid, kThreads, kDqSmemBytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(dout), lse, delta, static_cast<T*>(dq), shape, layout, scale,
      scale * kLog2e);
  return cudaGetLastError();
}

// dq_work: null, or (kFusedDq) the fp32 workspace, zeroed here, and dq written from it.
template <typename T, bool kOverlap, bool kFusedDq>
cudaError_t launch_dkdv(const void* q, const void* k, const void* v, const void* dout,
                        const float* lse, const float* delta, void* dq, void* dk, void* dv,
                        float* dq_work, const BlockSparseShape& shape,
                        const DeviceBlockLayout& layout, float scale, cudaStream_t stream) {
  auto kernel = dkdv_sm90_kernel<T, kOverlap, kFusedDq>;
  constexpr size_t kBytes = kFusedDq ? kFusedSmemBytes : kSmemBytes;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kBytes));
  if (err != cudaSuccess) return err;
  const int64_t work_tiles = static_cast<int64_t>(shape.batch) * shape.heads * (shape.q_len / kM);
  if constexpr (kFusedDq) {
    err = cudaMemsetAsync(dq_work, 0, work_tiles * kDqTileFloats * sizeof(float), stream);
    if (err != cudaSuccess) return err;
  }
  dim3 grid(shape.kv_len / kBlock, shape.kv_heads, shape.batch);
  kernel<<<grid, kThreads, kBytes, stream>>>(static_cast<const T*>(q), static_cast<const T*>(k),
                                             static_cast<const T*>(v), static_cast<const T*>(dout),
                                             lse, delta, static_cast<T*>(dk), static_cast<T*>(dv),
                                             dq_work, shape, layout, scale, scale * kLog2e);
  if constexpr (kFusedDq) {
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if (work_tiles > 0) {
      dq_from_workspace_kernel<T><<<static_cast<unsigned>(work_tiles), 256, 0, stream>>>(
          dq_work, static_cast<T*>(dq), shape);
    }
  }
  return cudaGetLastError();
}

}  // namespace

bool sm90_backward_supports(const BlockSparseShape& shape) {
  return shape.head_dim == kD && shape.block_size == kBlock;
}

cudaError_t block_sparse_dkdv_sm90(SparseDType dtype, const void* q, const void* k, const void* v,
                                   const void* dout, const float* lse, const float* delta, void* dk,
                                   void* dv, const BlockSparseShape& shape,
                                   const DeviceBlockLayout& layout, float scale,
                                   cudaStream_t stream, bool overlap) {
  if (block_sparse_unsupported(shape) != nullptr || !sm90_backward_supports(shape)) {
    return cudaErrorInvalidValue;
  }
  const bool bf16 = dtype == SparseDType::kBFloat16;
  auto launch =
      bf16 ? (overlap ? launch_dkdv<__nv_bfloat16, true, false>
                      : launch_dkdv<__nv_bfloat16, false, false>)
           : (overlap ? launch_dkdv<__half, true, false> : launch_dkdv<__half, false, false>);
  return launch(q, k, v, dout, lse, delta, nullptr, dk, dv, nullptr, shape, layout, scale, stream);
}

size_t block_sparse_fused_dq_workspace_bytes(const BlockSparseShape& shape) {
  return static_cast<size_t>(shape.batch) * shape.heads * shape.q_len * kD * sizeof(float);
}

cudaError_t block_sparse_dkdv_dq_sm90(SparseDType dtype, const void* q, const void* k,
                                      const void* v, const void* dout, const float* lse,
                                      const float* delta, void* dq, void* dk, void* dv,
                                      float* dq_workspace, const BlockSparseShape& shape,
                                      const DeviceBlockLayout& layout, float scale,
                                      cudaStream_t stream) {
  if (block_sparse_unsupported(shape) != nullptr || !sm90_backward_supports(shape) ||
      dq_workspace == nullptr || reinterpret_cast<uintptr_t>(dq_workspace) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  auto launch = dtype == SparseDType::kBFloat16 ? launch_dkdv<__nv_bfloat16, true, true>
                                                : launch_dkdv<__half, true, true>;
  return launch(q, k, v, dout, lse, delta, dq, dk, dv, dq_workspace, shape, layout, scale, stream);
}

cudaError_t block_sparse_dq_sm90(SparseDType dtype, const void* q, const void* k, const void* v,
                                 const void* dout, const float* lse, const float* delta, void* dq,
                                 const BlockSparseShape& shape, const DeviceBlockLayout& layout,
                                 float scale, cudaStream_t stream, bool overlap) {
  if (block_sparse_unsupported(shape) != nullptr || !sm90_backward_supports(shape)) {
    return cudaErrorInvalidValue;
  }
  const bool bf16 = dtype == SparseDType::kBFloat16;
  auto launch = bf16 ? (overlap ? launch_dq<__nv_bfloat16, true> : launch_dq<__nv_bfloat16, false>)
                     : (overlap ? launch_dq<__half, true> : launch_dq<__half, false>);
  return launch(q, k, v, dout, lse, delta, dq, shape, layout, scale, stream);
}

}  // namespace ra::cuda::detail
