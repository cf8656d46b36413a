// Block-sparse attention forward on the GPU, FlashAttention-2 style: one CTA per (query block,
// head, batch), each warp owning 16 or 32 query rows, walking the CSR row of its query block 64
// keys at a time (cp.async double buffering: the next key tile loads while this one is computed).
// S, the online softmax (exp2 of log2(e)-prescaled scores), P and O stay in registers; writes out
// and the LSE. block_sparse_forward sends D 128 / block 128 on compute capability 9.0 to the
// wgmma kernel of block_sparse_forward_sm90.cu instead (block_sparse_forward_choice).
#include <cmath>
#include <cstring>

#include "attention/sparse/cuda/block_sparse_diagonal.cuh"
#include "attention/sparse/cuda/block_sparse_forward_sm90.h"
#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "attention/sparse/cuda/block_sparse_tiles.cuh"
#include "runtime/env_switch.h"

namespace ra::cuda {
namespace {

using namespace detail;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The query tile is one layout block (kBlock = block_size rows), so a CTA walks one CSR row. A
// warp owns kMT m-tiles of 16 rows; with two, each K/V fragment it loads from shared memory feeds
// two mma (half the shared-memory traffic per flop). Two only for D 64 and block 128: at D 128
// O alone is 128 fp32 registers per m-tile pair and ptxas spills, so that case runs 8 warps of 16.
template <typename T, int D, int kBlock>
struct ForwardConfig {
  static constexpr int kMT = D == 64 && kBlock == 128 ? 2 : 1;
  static constexpr int kWarpRows = 16 * kMT;
  static constexpr int kWarps = kBlock / kWarpRows, kThreads = 32 * kWarps;
  static constexpr int kN = 64;  // keys per tile
  static constexpr uint32_t kKvTileBytes = kN * D * sizeof(T);
  static constexpr size_t kSmemBytes = (kBlock + 4 * kN) * D * sizeof(T);  // Q, K[2], V[2]
};

template <typename T, int D, int kBlock>
__global__ void __launch_bounds__(ForwardConfig<T, D, kBlock>::kThreads)
    block_sparse_forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                const T* __restrict__ v, T* __restrict__ out,
                                float* __restrict__ lse, BlockSparseShape shape,
                                DeviceBlockLayout layout, float scale_log2) {
  using C = ForwardConfig<T, D, kBlock>;
  constexpr int kN = C::kN, kMT = C::kMT;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  const uint32_t q_s = smem_address(Qs);
  const uint32_t k_s = q_s + kBlock * D * sizeof(T);  // + buffer * kKvTileBytes
  const uint32_t v_s = k_s + 2 * C::kKvTileBytes;

  // Last query blocks first: under a causal layout they have the most key blocks, so the long
  // CTAs start early and the short ones fill the tail.
  const int q_block = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int q0 = q_block * kBlock;
  const int kv_h = h / (shape.heads / shape.kv_heads);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int warp_row0 = C::kWarpRows * w;  // this warp's first row in the tile
  const int row_first = q0 + warp_row0;    // and its token
  const T* q_head = q + b * shape.q.batch + h * shape.q.head;
  const T* k_head = k + b * shape.k.batch + kv_h * shape.k.head;
  const T* v_head = v + b * shape.v.batch + kv_h * shape.v.head;

  const CsrKeyTiles<kBlock, kN> key_tiles(layout, q_block);
  const int tiles = key_tiles.count;
  const int diagonal_block = diagonal_key_block(layout, q_block);
  auto load_kv = [&](int i) {
    const uint32_t offset = (i & 1) * C::kKvTileBytes;
    copy_tile_async<T, D, kN, C::kThreads>(k_s + offset, k_head, shape.k.token, key_tiles.key0(i));
    copy_tile_async<T, D, kN, C::kThreads>(v_s + offset, v_head, shape.v.token, key_tiles.key0(i));
  };

  copy_tile_async<T, D, kBlock, C::kThreads>(q_s, q_head, shape.q.token, q0);
  if (tiles > 0) load_kv(0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[kMT][D / 16][4];  // Q fragments of the warp's rows, reused for every key tile
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) load_a<D>(qa[m][kk], q_s, warp_row0 + 16 * m, kk);
  }

  float o[kMT][D / 8][4] = {};
  // Running max (log2 domain) and this thread's partial row sums: m-tile m, rows g and g + 8.
  float row_max[kMT][2], row_sum[kMT][2];
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.0f;
  }
  for (int i = 0; i < tiles; ++i) {
    prefetch_next_tile(i, tiles, load_kv);
    __syncthreads();
    const int k0 = key_tiles.key0(i);
    const bool diagonal = k0 / kBlock == diagonal_block;
    const int k_off = k0 % kBlock;  // the tile's first key, as an offset in its block
    // On the diagonal a warp whose queries all precede the tile has nothing to add.
    if (!(diagonal && k_off > warp_row0 + C::kWarpRows - 1)) {
      const uint32_t buffer = (i & 1) * C::kKvTileBytes;
      float s[kMT][kN / 8][4] = {};
      gemm_abt<T, D, kN, kMT>(s, qa, k_s + buffer);
#pragma unroll
      for (int m = 0; m < kMT; ++m) {
        float tile_max[2] = {row_max[m][0], row_max[m][1]};
#pragma unroll
        for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = k_off + 8 * j + 2 * c + (e & 1);  // offsets in the blocks
            const int query = warp_row0 + 16 * m + g + 8 * (e >> 1);
            const float x = diagonal && key > query ? -INFINITY : s[m][j][e] * scale_log2;
            s[m][j][e] = x;
            tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
          }
        }
        float base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          tile_max[r] = quad_max(tile_max[r]);
          // A row with no unmasked key yet keeps max -inf: exponentiate against 0, not -inf.
          base[r] = tile_max[r] == -INFINITY ? 0.0f : tile_max[r];
          const float alpha = exp2f(row_max[m][r] - base[r]);
          row_max[m][r] = tile_max[r];
          row_sum[m][r] *= alpha;
#pragma unroll
          for (int j = 0; j < D / 8; ++j) {
            o[m][j][2 * r] *= alpha;
            o[m][j][2 * r + 1] *= alpha;
          }
        }
#pragma unroll
        for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            s[m][j][e] = exp2f(s[m][j][e] - base[e >> 1]);
            row_sum[m][e >> 1] += s[m][j][e];
          }
        }
      }
      gemm_pb<T, kN, D, kMT>(o, s, v_s + buffer);
    }
    __syncthreads();  // the buffer is refilled by the prefetch of iteration i + 1
  }

  T* out_tile = out + b * shape.out.batch + h * shape.out.head + q0 * shape.out.token;
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_sum[m][r] = quad_sum(row_sum[m][r]);
      inv[r] = row_sum[m][r] > 0.0f ? 1.0f / row_sum[m][r] : 0.0f;
    }
    // Only this warp reads its Q rows (and no longer: fragments are loaded): stage O there.
    store_rows<T, D>(Qs, warp_row0 + 16 * m, o[m], inv, out_tile, shape.out.token);
    if (c == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t row =
            (static_cast<int64_t>(b) * shape.q_len + row_first + 16 * m + g + 8 * r) * shape.heads +
            h;
        const float l = row_sum[m][r];
        lse[row] = l > 0.0f ? (row_max[m][r] + log2f(l)) * kLn2 : -INFINITY;
      }
    }
  }
}

template <typename T, int D, int kBlock>
cudaError_t launch_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                           const BlockSparseShape& shape, const DeviceBlockLayout& layout,
                           float scale, cudaStream_t stream) {
  using C = ForwardConfig<T, D, kBlock>;
  auto kernel = block_sparse_forward_kernel<T, D, kBlock>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (err != cudaSuccess) return err;
  dim3 grid(shape.q_len / kBlock, shape.heads, shape.batch);
  kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), lse, shape, layout, scale * kLog2e);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t launch_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                           const BlockSparseShape& shape, const DeviceBlockLayout& layout,
                           float scale, cudaStream_t stream) {
  return shape.block_size == 64
             ? launch_forward<T, D, 64>(q, k, v, out, lse, shape, layout, scale, stream)
             : launch_forward<T, D, 128>(q, k, v, out, lse, shape, layout, scale, stream);
}

}  // namespace

const char* block_sparse_unsupported(const BlockSparseShape& shape) {
  if (shape.head_dim != 64 && shape.head_dim != 128) return "head_dim must be 64 or 128";
  if (shape.block_size != 64 && shape.block_size != 128) return "block_size must be 64 or 128";
  if (shape.q_len <= 0 || shape.q_len % shape.block_size != 0 || shape.kv_len <= 0 ||
      shape.kv_len % shape.block_size != 0) {
    return "q_len and kv_len must be positive multiples of block_size";
  }
  if (shape.kv_heads <= 0 || shape.heads % shape.kv_heads != 0) {
    return "kv_heads must divide heads";
  }
  const TensorStrides all[] = {shape.q, shape.k, shape.v, shape.out};
  for (const auto& s : all) {
    if (s.batch % 8 != 0 || s.token % 8 != 0 || s.head % 8 != 0) {
      return "strides must be multiples of 8 elements (16-byte aligned rows)";
    }
  }
  return nullptr;
}

bool current_device_runs_sm90a() {
  // wgmma is sm_90a only: the exact compute capability 9.0, not "9.0 or later".
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();  // not left for the launch check to find
    return false;
  }
  return major == 9 && minor == 0;
}

SparseForwardKernel block_sparse_forward_choice(const BlockSparseShape& shape) {
  const char* env = env_switch("RA_SPARSE_FORWARD", {"mma", "wgmma", "wgmma128", "wgmma_overlap",
                                                     "wgmma_ws", "wgmma_ws_pingpong"});
  if (env != nullptr && std::strcmp(env, "mma") == 0) return SparseForwardKernel::kMma;
  if (!detail::sm90_forward_supports(shape)) return SparseForwardKernel::kMma;
  if (!current_device_runs_sm90a()) return SparseForwardKernel::kMma;
  if (env != nullptr && std::strcmp(env, "wgmma128") == 0) return SparseForwardKernel::kWgmma128;
  if (env != nullptr && std::strcmp(env, "wgmma_overlap") == 0) {
    return SparseForwardKernel::kWgmmaOverlap;
  }
  if (env != nullptr && std::strcmp(env, "wgmma_ws") == 0) return SparseForwardKernel::kWgmmaWs;
  if (env != nullptr && std::strcmp(env, "wgmma_ws_pingpong") == 0) {
    return SparseForwardKernel::kWgmmaWsPingpong;
  }
  if (env != nullptr && std::strcmp(env, "wgmma") == 0) return SparseForwardKernel::kWgmma64;
  return SparseForwardKernel::kWgmmaWsPingpong;
}

cudaError_t block_sparse_forward(SparseDType dtype, const void* q, const void* k, const void* v,
                                 void* out, float* lse, const BlockSparseShape& shape,
                                 const DeviceBlockLayout& layout, float scale,
                                 cudaStream_t stream) {
  if (block_sparse_unsupported(shape) != nullptr) return cudaErrorInvalidValue;
  const SparseForwardKernel choice = block_sparse_forward_choice(shape);
  if (choice != SparseForwardKernel::kMma) {
    return detail::block_sparse_forward_sm90(dtype, q, k, v, out, lse, shape, layout, scale, stream,
                                             choice);
  }
  const bool d64 = shape.head_dim == 64;
  if (dtype == SparseDType::kBFloat16) {
    return d64 ? launch_forward<__nv_bfloat16, 64>(q, k, v, out, lse, shape, layout, scale, stream)
               : launch_forward<__nv_bfloat16, 128>(q, k, v, out, lse, shape, layout, scale,
                                                    stream);
  }
  return d64 ? launch_forward<__half, 64>(q, k, v, out, lse, shape, layout, scale, stream)
             : launch_forward<__half, 128>(q, k, v, out, lse, shape, layout, scale, stream);
}

}  // namespace ra::cuda
