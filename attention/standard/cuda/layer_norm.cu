// LayerNorm (of GELU(a) with kGelu) forward and backward kernels (see layer_norm.h). Each
// thread keeps its 8 features of the current row in registers; the row statistics are block
// sums (warp shuffles, then one float per warp in shared memory).
#include "attention/standard/cuda/layer_norm.h"

#include <algorithm>
#include <tuple>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// The kernels are ALU bound on erff (~25 instructions), so the backward computes it once for
// both gelu(a) = a Phi(a) and gelu'(a) = Phi(a) + a phi(a).
__device__ inline float gelu(float a) { return 0.5f * a * (1.f + erff(a * kInvSqrt2)); }
__device__ inline void gelu_and_grad(float a, float& value, float& grad) {
  const float cdf = 0.5f * (1.f + erff(a * kInvSqrt2));
  value = a * cdf;
  grad = cdf + a * kInvSqrt2Pi * __expf(-0.5f * a * a);
}

// The sum of v over the block, returned to every thread; blockDim.x is a multiple of 32.
__device__ inline float block_sum(float v, float* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();  // the previous call's readers are done with scratch
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += scratch[w];
  return total;
}

int threads_for(int features) { return (features / 8 + 31) / 32 * 32; }

// The blocks of `kernel` that fit on the GPU at once, at most `rows`: the kernels stride over
// rows, so one full wave balances the work (more blocks would leave a part-empty last wave).
template <typename Kernel>
int resident_blocks(Kernel kernel, int threads, int64_t rows, int device) {
  int sms = 0, per_sm = 0;
  RA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  RA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return int(std::max<int64_t>(1, std::min<int64_t>(rows, int64_t(sms) * std::max(1, per_sm))));
}

// Each block walks rows blockIdx.x, + gridDim.x, ...; the next row's 16 bytes per thread are
// loaded before this row's two block reductions so a load is always in flight (the kernels are
// memory bound, and a block otherwise idles its memory pipe while it reduces).
template <typename T, bool kGelu>
__global__ void layer_norm_forward_kernel(const T* __restrict__ a, const T* __restrict__ gamma,
                                          const T* __restrict__ beta, T* __restrict__ y,
                                          float* __restrict__ mean_out,
                                          float* __restrict__ rstd_out, int64_t rows, int features,
                                          float eps) {
  __shared__ float scratch[32];
  const int column = threadIdx.x * 8;  // this thread's features: [column, column + 8)
  const bool active = column < features;
  float w[8], b[8];
  if (active) load8(gamma + column, w), load8(beta + column, b);
  const float inv_features = 1.f / float(features);
  auto load_row = [&](int64_t row) {
    return active && row < rows ? *reinterpret_cast<const uint4*>(a + row * features + column)
                                : uint4{0, 0, 0, 0};
  };
  uint4 next = load_row(blockIdx.x);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    float g[8];
    unpack8<T>(next, g);
    next = load_row(row + gridDim.x);
    float sum = 0.f;
    if (active) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if constexpr (kGelu) g[e] = gelu(g[e]);
        sum += g[e];
      }
    }
    const float mean = block_sum(sum, scratch) * inv_features;
    float squares = 0.f;
    if (active) {
#pragma unroll
      for (int e = 0; e < 8; ++e) squares += (g[e] - mean) * (g[e] - mean);
    }
    const float rstd = rsqrtf(block_sum(squares, scratch) * inv_features + eps);
    if (active) {
      float out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) out[e] = (g[e] - mean) * rstd * w[e] + b[e];
      store8(y + row * features + column, out);
    }
    if (threadIdx.x == 0) mean_out[row] = mean, rstd_out[row] = rstd;
  }
}

// dxhat = dy * gamma; dg = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); da = dg gelu'(a)
// (da = dg without kGelu). kMaxThreads bounds the registers (1024-thread blocks need <= 64).
// gamma is re-read per row (an L1 hit) and gelu'(a) replaces a after the first use, to keep the
// registers down.
template <typename T, bool kGelu, int kMaxThreads>
__global__ void __launch_bounds__(kMaxThreads)
    layer_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ a,
                               const T* __restrict__ gamma, const float* __restrict__ mean_in,
                               const float* __restrict__ rstd_in, T* __restrict__ da,
                               float* __restrict__ dgamma_partial,
                               float* __restrict__ dbeta_partial, int64_t rows, int features) {
  __shared__ float scratch[32];
  const int column = threadIdx.x * 8;
  const bool active = column < features;
  float dgamma[8] = {0, 0, 0, 0, 0, 0, 0, 0}, dbeta[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const float inv_features = 1.f / float(features);
  auto load_row = [&](const T* base, int64_t row) {
    return active && row < rows ? *reinterpret_cast<const uint4*>(base + row * features + column)
                                : uint4{0, 0, 0, 0};
  };
  uint4 next_a = load_row(a, blockIdx.x), next_dy = load_row(dy, blockIdx.x);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float mean = mean_in[row], rstd = rstd_in[row];
    float slope[8], xhat[8], dxhat[8];  // slope = gelu'(a)
    {
      float x[8], grad[8], w[8];
      unpack8<T>(next_a, x);
      unpack8<T>(next_dy, grad);
      next_a = load_row(a, row + gridDim.x);
      next_dy = load_row(dy, row + gridDim.x);
      if (active) {
        load8(gamma + column, w);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          float g = x[e];
          slope[e] = 1.f;
          if constexpr (kGelu) gelu_and_grad(x[e], g, slope[e]);
          xhat[e] = (g - mean) * rstd;
          dxhat[e] = grad[e] * w[e];
          dgamma[e] += grad[e] * xhat[e];
          dbeta[e] += grad[e];
        }
      }
    }
    float sum_dxhat = 0.f, sum_dxhat_xhat = 0.f;
    if (active) {
#pragma unroll
      for (int e = 0; e < 8; ++e) sum_dxhat += dxhat[e], sum_dxhat_xhat += dxhat[e] * xhat[e];
    }
    const float mean_dxhat = block_sum(sum_dxhat, scratch) * inv_features;
    const float mean_dxhat_xhat = block_sum(sum_dxhat_xhat, scratch) * inv_features;
    if (active) {
      float out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        out[e] = rstd * (dxhat[e] - mean_dxhat - xhat[e] * mean_dxhat_xhat) * slope[e];
      }
      store8(da + row * features + column, out);
    }
  }
  if (active) {
    float* dg = dgamma_partial + int64_t(blockIdx.x) * features + column;
    float* db = dbeta_partial + int64_t(blockIdx.x) * features + column;
#pragma unroll
    for (int e = 0; e < 8; ++e) dg[e] = dgamma[e], db[e] = dbeta[e];
  }
}

template <typename T, bool kGelu>
auto backward_kernel(int threads) {
  return threads <= 512 ? layer_norm_backward_kernel<T, kGelu, 512>
                        : layer_norm_backward_kernel<T, kGelu, 1024>;
}

void check_shape(int features, std::initializer_list<const void*> pointers) {
  RA_CHECK(features > 0 && features % 8 == 0 && features <= kLayerNormMaxFeatures,
           "layer_norm kernels: features = ", features, ": they need a multiple of 8 up to ",
           kLayerNormMaxFeatures);
  for (const void* p : pointers) {
    RA_CHECK(aligned16(p), "layer_norm kernels: operands must be 16-byte aligned");
  }
}

template <typename T, bool kGelu>
void forward(const void* a, const void* gamma, const void* beta, void* y, float* mean, float* rstd,
             int64_t rows, int features, float eps, int device, cudaStream_t stream) {
  const int threads = threads_for(features);
  auto kernel = layer_norm_forward_kernel<T, kGelu>;
  const int blocks = resident_blocks(kernel, threads, rows, device);
  kernel<<<blocks, threads, 0, stream>>>(static_cast<const T*>(a), static_cast<const T*>(gamma),
                                         static_cast<const T*>(beta), static_cast<T*>(y), mean,
                                         rstd, rows, features, eps);
}

template <typename T, bool kGelu>
void backward(const void* dy, const void* a, const void* gamma, const float* mean,
              const float* rstd, void* da, float* dgamma_partial, float* dbeta_partial,
              int64_t rows, int features, int blocks, cudaStream_t stream) {
  const int threads = threads_for(features);
  backward_kernel<T, kGelu>(threads)<<<blocks, threads, 0, stream>>>(
      static_cast<const T*>(dy), static_cast<const T*>(a), static_cast<const T*>(gamma), mean, rstd,
      static_cast<T*>(da), dgamma_partial, dbeta_partial, rows, features);
}

}  // namespace

void launch_layer_norm_forward(const void* a, const void* gamma, const void* beta, void* y,
                               float* mean, float* rstd, int64_t rows, int features, float eps,
                               bool gelu, ScalarKind kind, cudaStream_t stream) {
  check_shape(features, {a, gamma, beta, y});
  if (rows == 0) return;
  int device = 0;
  RA_CUDA_CHECK(cudaGetDevice(&device));
  const auto args =
      std::make_tuple(a, gamma, beta, y, mean, rstd, rows, features, eps, device, stream);
  if (kind == ScalarKind::kHalf) {
    std::apply(gelu ? forward<__half, true> : forward<__half, false>, args);
  } else if (kind == ScalarKind::kBFloat16) {
    std::apply(gelu ? forward<__nv_bfloat16, true> : forward<__nv_bfloat16, false>, args);
  } else {
    RA_THROW("layer_norm kernels take fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

int layer_norm_backward_blocks(int64_t rows, int features, bool gelu, int device) {
  // Both scalar types compile to the same register count.
  const int threads = threads_for(features);
  return resident_blocks(gelu ? backward_kernel<__nv_bfloat16, true>(threads)
                              : backward_kernel<__nv_bfloat16, false>(threads),
                         threads, rows, device);
}

void launch_layer_norm_backward(const void* dy, const void* a, const void* gamma, const float* mean,
                                const float* rstd, void* da, float* dgamma_partial,
                                float* dbeta_partial, int64_t rows, int features, int blocks,
                                bool gelu, ScalarKind kind, cudaStream_t stream) {
  check_shape(features, {dy, a, gamma, da, dgamma_partial, dbeta_partial});
  RA_CHECK(blocks > 0, "layer_norm backward: blocks = ", blocks);
  const auto args = std::make_tuple(dy, a, gamma, mean, rstd, da, dgamma_partial, dbeta_partial,
                                    rows, features, blocks, stream);
  if (kind == ScalarKind::kHalf) {
    std::apply(gelu ? backward<__half, true> : backward<__half, false>, args);
  } else if (kind == ScalarKind::kBFloat16) {
    std::apply(gelu ? backward<__nv_bfloat16, true> : backward<__nv_bfloat16, false>, args);
  } else {
    RA_THROW("layer_norm kernels take fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
