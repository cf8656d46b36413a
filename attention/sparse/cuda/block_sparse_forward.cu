// Block-sparse attention forward on the GPU: one CTA per (64-query tile, head, batch) walks the
// CSR row of its query block, 64 keys at a time, with an online softmax (running max and sum
// per row in fp32) and tensor-core products; writes out and the LSE.
#include <cmath>

#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "attention/sparse/cuda/block_sparse_tiles.cuh"

namespace ra::cuda {
namespace {

using namespace detail;

template <typename T, int D>
constexpr size_t forward_smem_bytes() {
  return 3 * kTile * D * sizeof(T)        // Q, K, V tiles
         + kTile * kTile * sizeof(T)      // P
         + kTile * kTile * sizeof(float)  // S
         + kTile * D * sizeof(float)      // O accumulator
         + 3 * kTile * sizeof(float);     // running max, sum, rescale factor
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    block_sparse_forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                const T* __restrict__ v, T* __restrict__ out,
                                float* __restrict__ lse, BlockSparseShape shape,
                                DeviceBlockLayout layout, float scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + kTile * D;
  T* Vs = Ks + kTile * D;
  T* Ps = Vs + kTile * D;
  float* Ss = reinterpret_cast<float*>(Ps + kTile * kTile);
  float* Os = Ss + kTile * kTile;
  float* row_max = Os + kTile * D;
  float* row_sum = row_max + kTile;
  float* row_rescale = row_sum + kTile;

  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const int kv_h = h / (shape.heads / shape.kv_heads);
  const int bs = shape.block_size, q_block = q0 / bs;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* q_head = q + b * shape.q.batch + h * shape.q.head;
  const T* k_head = k + b * shape.k.batch + kv_h * shape.k.head;
  const T* v_head = v + b * shape.v.batch + kv_h * shape.v.head;

  load_tile<T, D>(Qs, q_head, shape.q.token, q0);
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) Os[i] = 0.0f;
  for (int i = threadIdx.x; i < kTile; i += kThreads) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.0f;
  }
  __syncthreads();

  for (int a = layout.row_offsets[q_block]; a < layout.row_offsets[q_block + 1]; ++a) {
    const int k_block = layout.col_indices[a];
    const bool diagonal = layout.causal && k_block == q_block;
    for (int k0 = k_block * bs; k0 < (k_block + 1) * bs; k0 += kTile) {
      if (diagonal && k0 > q0 + kTile - 1) continue;  // every key after every query
      load_tile<T, D>(Ks, k_head, shape.k.token, k0);
      load_tile<T, D>(Vs, v_head, shape.v.token, k0);
      __syncthreads();
      mma_abt<T, D>(Ss, Qs, Ks);
      __syncwarp();
      for (int r = 16 * w; r < 16 * w + 16; ++r) {  // online softmax of this warp's rows
        float s[2];
        for (int j = 0; j < 2; ++j) {
          const int c = lane + 32 * j;
          s[j] = causal_masked(diagonal, q0 + r, k0 + c) ? -INFINITY : Ss[r * kTile + c] * scale;
        }
        const float old_max = row_max[r];
        const float new_max = fmaxf(old_max, warp_max(fmaxf(s[0], s[1])));
        float p[2];
        for (int j = 0; j < 2; ++j) p[j] = new_max == -INFINITY ? 0.0f : __expf(s[j] - new_max);
        const float sum = warp_sum(p[0] + p[1]);
        const float rescale = old_max == -INFINITY ? 0.0f : __expf(old_max - new_max);
        Ps[r * kTile + lane] = from_float<T>(p[0]);
        Ps[r * kTile + lane + 32] = from_float<T>(p[1]);
        __syncwarp();
        if (lane == 0) {
          row_max[r] = new_max;
          row_sum[r] = row_sum[r] * rescale + sum;
          row_rescale[r] = rescale;
        }
      }
      __syncwarp();
      for (int i = lane; i < 16 * D; i += 32) Os[16 * w * D + i] *= row_rescale[16 * w + i / D];
      __syncwarp();
      mma_ab_accumulate<T, D, nvcuda::wmma::row_major>(Os, Ps, Vs);
      __syncthreads();  // K/V tiles are reloaded next
    }
  }

  T* out_head = out + b * shape.out.batch + h * shape.out.head;
  for (int r = 16 * w; r < 16 * w + 16; ++r) {
    const float l = row_sum[r];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = lane; d < D; d += 32) {
      out_head[(q0 + r) * shape.out.token + d] = from_float<T>(Os[r * D + d] * inv);
    }
    if (lane == 0) {
      lse[(static_cast<int64_t>(b) * shape.seq_len + q0 + r) * shape.heads + h] =
          l > 0.0f ? row_max[r] + logf(l) : -INFINITY;
    }
  }
}

template <typename T, int D>
cudaError_t launch_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                           const BlockSparseShape& shape, const DeviceBlockLayout& layout,
                           float scale, cudaStream_t stream) {
  auto kernel = block_sparse_forward_kernel<T, D>;
  constexpr size_t smem = forward_smem_bytes<T, D>();
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  dim3 grid(shape.seq_len / kTile, shape.heads, shape.batch);
  kernel<<<grid, kThreads, smem, stream>>>(static_cast<const T*>(q), static_cast<const T*>(k),
                                           static_cast<const T*>(v), static_cast<T*>(out), lse,
                                           shape, layout, scale);
  return cudaGetLastError();
}

}  // namespace

const char* block_sparse_unsupported(const BlockSparseShape& shape) {
  if (shape.head_dim != 64 && shape.head_dim != 128) return "head_dim must be 64 or 128";
  if (shape.block_size != 64 && shape.block_size != 128) return "block_size must be 64 or 128";
  if (shape.seq_len <= 0 || shape.seq_len % shape.block_size != 0) {
    return "seq_len must be a positive multiple of block_size";
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

cudaError_t block_sparse_forward(SparseDType dtype, const void* q, const void* k, const void* v,
                                 void* out, float* lse, const BlockSparseShape& shape,
                                 const DeviceBlockLayout& layout, float scale,
                                 cudaStream_t stream) {
  if (block_sparse_unsupported(shape) != nullptr) return cudaErrorInvalidValue;
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
