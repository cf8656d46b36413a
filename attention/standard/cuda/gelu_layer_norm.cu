// GELU + LayerNorm forward and backward kernels (see gelu_layer_norm.h). Each thread keeps its
// 8 features of the current row in registers; the row statistics are block sums (warp shuffles,
// then one float per warp in shared memory).
#include "attention/standard/cuda/gelu_layer_norm.h"

#include <algorithm>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

__device__ inline float gelu(float a) { return 0.5f * a * (1.f + erff(a * kInvSqrt2)); }
__device__ inline float gelu_grad(float a) {
  return 0.5f * (1.f + erff(a * kInvSqrt2)) + a * kInvSqrt2Pi * expf(-0.5f * a * a);
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

int sm_count(int device) {
  int count = 0;
  RA_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

template <typename T>
__global__ void gelu_layer_norm_forward_kernel(const T* __restrict__ a, const T* __restrict__ gamma,
                                               const T* __restrict__ beta, T* __restrict__ y,
                                               float* __restrict__ mean_out,
                                               float* __restrict__ rstd_out, int64_t rows,
                                               int features, float eps) {
  __shared__ float scratch[32];
  const int column = threadIdx.x * 8;  // this thread's features: [column, column + 8)
  const bool active = column < features;
  float w[8], b[8];
  if (active) load8(gamma + column, w), load8(beta + column, b);
  const float inv_features = 1.f / float(features);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    float g[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float sum = 0.f;
    if (active) {
      load8(a + row * features + column, g);
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = gelu(g[e]), sum += g[e];
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

// dxhat = dy * gamma; dg = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); da = dg gelu'(a).
// kMaxThreads bounds the registers: ~80 per thread unbounded, too many for 1024-thread blocks.
template <typename T, int kMaxThreads>
__global__ void __launch_bounds__(kMaxThreads) gelu_layer_norm_backward_kernel(
    const T* __restrict__ dy, const T* __restrict__ a, const T* __restrict__ gamma,
    const float* __restrict__ mean_in, const float* __restrict__ rstd_in, T* __restrict__ da,
    float* __restrict__ dgamma_partial, float* __restrict__ dbeta_partial, int64_t rows,
    int features) {
  __shared__ float scratch[32];
  const int column = threadIdx.x * 8;
  const bool active = column < features;
  float w[8];
  if (active) load8(gamma + column, w);
  float dgamma[8] = {0, 0, 0, 0, 0, 0, 0, 0}, dbeta[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const float inv_features = 1.f / float(features);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float mean = mean_in[row], rstd = rstd_in[row];
    float x[8], xhat[8], dxhat[8];
    float sum_dxhat = 0.f, sum_dxhat_xhat = 0.f;
    if (active) {
      float grad[8];
      load8(a + row * features + column, x);
      load8(dy + row * features + column, grad);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        xhat[e] = (gelu(x[e]) - mean) * rstd;
        dxhat[e] = grad[e] * w[e];
        sum_dxhat += dxhat[e];
        sum_dxhat_xhat += dxhat[e] * xhat[e];
        dgamma[e] += grad[e] * xhat[e];
        dbeta[e] += grad[e];
      }
    }
    const float mean_dxhat = block_sum(sum_dxhat, scratch) * inv_features;
    const float mean_dxhat_xhat = block_sum(sum_dxhat_xhat, scratch) * inv_features;
    if (active) {
      float out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        out[e] = rstd * (dxhat[e] - mean_dxhat - xhat[e] * mean_dxhat_xhat) * gelu_grad(x[e]);
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

void check_shape(int features, std::initializer_list<const void*> pointers) {
  RA_CHECK(features > 0 && features % 8 == 0 && features <= kGeluLayerNormMaxFeatures,
           "gelu_layer_norm: features = ", features, ": the kernel needs a multiple of 8 up to ",
           kGeluLayerNormMaxFeatures);
  for (const void* p : pointers) {
    RA_CHECK(aligned16(p), "gelu_layer_norm: operands must be 16-byte aligned");
  }
}

template <typename T>
void backward(const void* dy, const void* a, const void* gamma, const float* mean,
              const float* rstd, void* da, float* dgamma_partial, float* dbeta_partial,
              int64_t rows, int features, int blocks, int threads, cudaStream_t stream) {
  auto kernel = threads <= 512 ? gelu_layer_norm_backward_kernel<T, 512>
                               : gelu_layer_norm_backward_kernel<T, 1024>;
  kernel<<<blocks, threads, 0, stream>>>(static_cast<const T*>(dy), static_cast<const T*>(a),
                                         static_cast<const T*>(gamma), mean, rstd,
                                         static_cast<T*>(da), dgamma_partial, dbeta_partial, rows,
                                         features);
}

}  // namespace

void launch_gelu_layer_norm_forward(const void* a, const void* gamma, const void* beta, void* y,
                                    float* mean, float* rstd, int64_t rows, int features, float eps,
                                    ScalarKind kind, cudaStream_t stream) {
  check_shape(features, {a, gamma, beta, y});
  if (rows == 0) return;
  int device = 0;
  RA_CUDA_CHECK(cudaGetDevice(&device));
  const int threads = threads_for(features);
  const int blocks = int(std::min<int64_t>(rows, int64_t(sm_count(device)) * 16));
  switch (kind) {
    case ScalarKind::kHalf:
      gelu_layer_norm_forward_kernel<__half><<<blocks, threads, 0, stream>>>(
          static_cast<const __half*>(a), static_cast<const __half*>(gamma),
          static_cast<const __half*>(beta), static_cast<__half*>(y), mean, rstd, rows, features,
          eps);
      break;
    case ScalarKind::kBFloat16:
      gelu_layer_norm_forward_kernel<__nv_bfloat16><<<blocks, threads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(a), static_cast<const __nv_bfloat16*>(gamma),
          static_cast<const __nv_bfloat16*>(beta), static_cast<__nv_bfloat16*>(y), mean, rstd, rows,
          features, eps);
      break;
    default:
      RA_THROW("gelu_layer_norm: the kernel takes fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

int gelu_layer_norm_backward_blocks(int64_t rows, int features, int device) {
  // Enough blocks to fill the GPU (a few per SM), few enough that the partial sums stay small.
  const int per_sm = std::max(1, 2048 / threads_for(features));
  return int(std::max<int64_t>(1, std::min<int64_t>(rows, int64_t(sm_count(device)) * per_sm)));
}

void launch_gelu_layer_norm_backward(const void* dy, const void* a, const void* gamma,
                                     const float* mean, const float* rstd, void* da,
                                     float* dgamma_partial, float* dbeta_partial, int64_t rows,
                                     int features, int blocks, ScalarKind kind,
                                     cudaStream_t stream) {
  check_shape(features, {dy, a, gamma, da, dgamma_partial, dbeta_partial});
  RA_CHECK(blocks > 0, "gelu_layer_norm backward: blocks = ", blocks);
  const int threads = threads_for(features);
  switch (kind) {
    case ScalarKind::kHalf:
      backward<__half>(dy, a, gamma, mean, rstd, da, dgamma_partial, dbeta_partial, rows, features,
                       blocks, threads, stream);
      break;
    case ScalarKind::kBFloat16:
      backward<__nv_bfloat16>(dy, a, gamma, mean, rstd, da, dgamma_partial, dbeta_partial, rows,
                              features, blocks, threads, stream);
      break;
    default:
      RA_THROW("gelu_layer_norm: the kernel takes fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
