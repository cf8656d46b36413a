// The RoPE rotation kernels, fp32 math, grid-stride loops. Memory-bound: the fp16/bf16 kernel
// moves 8 pairs per thread with 16-byte loads and stores (when D/2 % 8 == 0 and the rows are
// 16-byte aligned); the scalar kernel (one pair per thread) covers everything else.
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

// Eight consecutive pairs (j .. j+7, j+D/2 .. j+D/2+7) per thread, of kCount tensors with the
// same shape and strides (a query and a key: one index decode and one cos / sin load for both).
// Index: uint32_t where the flat index fits (64-bit division is a ~70-instruction routine), else
// int64_t; cos and sin come as two 16-byte loads each (the launch checks their alignment).
template <typename T, int kCount>
struct Tensors8 {
  const T* x[kCount];
  T* out[kCount];
};

template <typename T, typename Index, int kCount>
__global__ void rotate_pairs8_kernel(Tensors8<T, kCount> io, int64_t stride_b, int64_t stride_s,
                                     int64_t stride_h, const float* __restrict__ cos,
                                     const float* __restrict__ sin, int seq_len, int heads,
                                     int half, Index total, float sign) {
  const Index groups = Index(half / 8);
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < total;
       i += Index(gridDim.x) * blockDim.x) {
    const Index row = i / groups;  // (b, s, h) in row-major order
    const int j = int(i - row * groups) * 8;
    const Index token = row / Index(heads);
    const int h = int(row - token * Index(heads));
    const Index b = token / Index(seq_len);
    const int64_t s = int64_t(token - b * Index(seq_len));
    const int64_t offset = int64_t(b) * stride_b + s * stride_s + h * stride_h;
    float x1[kCount][8], x2[kCount][8], c[8], sn[8];
#pragma unroll
    for (int t = 0; t < kCount; ++t) {
      load8(io.x[t] + offset + j, x1[t]);
      load8(io.x[t] + offset + j + half, x2[t]);
    }
    const float4* c4 = reinterpret_cast<const float4*>(cos + s * half + j);
    const float4* s4 = reinterpret_cast<const float4*>(sin + s * half + j);
    *reinterpret_cast<float4*>(c) = c4[0], *reinterpret_cast<float4*>(c + 4) = c4[1];
    *reinterpret_cast<float4*>(sn) = s4[0], *reinterpret_cast<float4*>(sn + 4) = s4[1];
#pragma unroll
    for (int t = 0; t < kCount; ++t) {
      float y1[8], y2[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float si = sign * sn[e];
        y1[e] = x1[t][e] * c[e] - x2[t][e] * si;
        y2[e] = x2[t][e] * c[e] + x1[t][e] * si;
      }
      T* dst = io.out[t] + int64_t(row) * 2 * half;
      store8(dst + j, y1);
      store8(dst + j + half, y2);
    }
  }
}

template <typename T, int kCount>
void launch8(const RotateTensor* tensors, int64_t sb, int64_t ss, int64_t sh, const float* cos,
             const float* sin, int seq_len, int heads, int half, int64_t rows, float sign,
             cudaStream_t stream) {
  Tensors8<T, kCount> io;
  for (int t = 0; t < kCount; ++t) {
    io.x[t] = static_cast<const T*>(tensors[t].x), io.out[t] = static_cast<T*>(tensors[t].out);
  }
  const int64_t total = rows * (half / 8);
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  auto run = [&](auto index) {
    using Index = decltype(index);
    rotate_pairs8_kernel<T, Index, kCount><<<blocks, threads, 0, stream>>>(
        io, sb, ss, sh, cos, sin, seq_len, heads, half, Index(total), sign);
  };
  // A grid-stride step (< 2^31) cannot wrap a 32-bit index below 2^31.
  if (total < (int64_t(1) << 31)) {
    run(uint32_t{});
  } else {
    run(int64_t{});
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

void launch_rotate_pairs(const RotateTensor* tensors, int count, int64_t stride_b, int64_t stride_s,
                         int64_t stride_h, const float* cos, const float* sin, int batch,
                         int seq_len, int heads, int head_dim, ScalarKind kind, float sign,
                         cudaStream_t stream) {
  RA_CHECK(head_dim % 2 == 0, "head_dim = ", head_dim, ": rotary needs an even head dim");
  RA_CHECK(count >= 1 && count <= 2, "rotate_pairs: ", count, " tensors in one launch: 1 or 2");
  const int half = head_dim / 2;
  const int64_t rows = int64_t(batch) * seq_len * heads, total = rows * half;
  if (total == 0) return;
  bool vector8 = kind != ScalarKind::kFloat && half % 8 == 0 && aligned16(cos) && aligned16(sin) &&
                 stride_b % 8 == 0 && stride_s % 8 == 0 && stride_h % 8 == 0;
  for (int t = 0; t < count; ++t) {
    vector8 = vector8 && aligned16(tensors[t].x) && aligned16(tensors[t].out);
  }
  if (vector8) {
    auto run = [&](auto type) {
      using T = decltype(type);
      if (count == 1) {
        launch8<T, 1>(tensors, stride_b, stride_s, stride_h, cos, sin, seq_len, heads, half, rows,
                      sign, stream);
      } else {
        launch8<T, 2>(tensors, stride_b, stride_s, stride_h, cos, sin, seq_len, heads, half, rows,
                      sign, stream);
      }
    };
    if (kind == ScalarKind::kHalf) {
      run(__half{});
    } else {
      run(__nv_bfloat16{});
    }
    RA_CUDA_CHECK_LAUNCH();
    return;
  }
  // The scalar kernel: one launch per tensor.
  for (int t = 0; t < count; ++t) {
    const void* x = tensors[t].x;
    void* out = tensors[t].out;
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
}

}  // namespace ra::cuda
