// The RoPE rotation kernel: one thread per (row, j < D/2) pair, fp32 math, grid-stride loop.
// Memory-bound; consecutive threads touch consecutive j, so loads and stores coalesce.
#include "attention/standard/cuda/rotate_pairs.h"

#include <algorithm>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

__device__ inline float load_as_float(const float* p) { return *p; }
template <typename T>
__device__ inline float load_as_float(const T* p) {
  return to_float(*p);
}
__device__ inline void store_from_float(float* p, float v) { *p = v; }
template <typename T>
__device__ inline void store_from_float(T* p, float v) {
  *p = from_float<T>(v);
}

template <typename T>
__global__ void rotate_pairs_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_s,
                                    int64_t stride_h, T* __restrict__ out,
                                    const float* __restrict__ cos, const float* __restrict__ sin,
                                    int seq_len, int heads, int half, int64_t total, float sign) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int j = i % half;
    const int64_t row = i / half;  // (b, s, h) in row-major order
    const int h = row % heads;
    const int64_t s = (row / heads) % seq_len, b = row / heads / seq_len;
    const T* src = x + b * stride_b + s * stride_s + h * stride_h;
    const float x1 = load_as_float(src + j), x2 = load_as_float(src + j + half);
    const float c = cos[s * half + j], sn = sign * sin[s * half + j];
    T* dst = out + row * 2 * half;
    store_from_float(dst + j, x1 * c - x2 * sn);
    store_from_float(dst + j + half, x2 * c + x1 * sn);
  }
}

template <typename T>
void launch(const void* x, int64_t sb, int64_t ss, int64_t sh, void* out, const float* cos,
            const float* sin, int seq_len, int heads, int half, int64_t total, float sign,
            cudaStream_t stream) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  rotate_pairs_kernel<T><<<blocks, threads, 0, stream>>>(static_cast<const T*>(x), sb, ss, sh,
                                                         static_cast<T*>(out), cos, sin, seq_len,
                                                         heads, half, total, sign);
}

}  // namespace

void launch_rotate_pairs(const void* x, int64_t stride_b, int64_t stride_s, int64_t stride_h,
                         void* out, const float* cos, const float* sin, int batch, int seq_len,
                         int heads, int head_dim, ScalarKind kind, float sign,
                         cudaStream_t stream) {
  RA_CHECK(head_dim % 2 == 0, "head_dim = ", head_dim, ": rotary needs an even head dim");
  const int half = head_dim / 2;
  const int64_t total = int64_t(batch) * seq_len * heads * half;
  if (total == 0) return;
  switch (kind) {
    case ScalarKind::kHalf:
      launch<__half>(x, stride_b, stride_s, stride_h, out, cos, sin, seq_len, heads, half, total,
                     sign, stream);
      break;
    case ScalarKind::kBFloat16:
      launch<__nv_bfloat16>(x, stride_b, stride_s, stride_h, out, cos, sin, seq_len, heads, half,
                            total, sign, stream);
      break;
    case ScalarKind::kFloat:
      launch<float>(x, stride_b, stride_s, stride_h, out, cos, sin, seq_len, heads, half, total,
                    sign, stream);
      break;
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
