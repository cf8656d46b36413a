// LayerNorm forward and backward kernels, plain, of GELU(a + bias) or of a residual sum (see
// layer_norm.h). Each thread keeps its 8 features of the current row in registers; the row
// statistics are block sums (warp shuffles, then one float per warp in shared memory). The GELU
// forms are bound by instruction issue (ncu on H100: the forward had 82% of its issue slots busy
// at 56% of the DRAM bandwidth), so their arithmetic is arranged for few instructions
// (normal_cdf.h: 1.69 -> 1.27 ms on H100 at 256K x 3072) and each block sum has one barrier.
#include "attention/standard/cuda/layer_norm.h"

#include <algorithm>
#include <type_traits>

#include "attention/standard/cuda/normal_cdf.h"
#include "attention/standard/cuda/row_kernel_launch.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

// The sums of v over the block, returned to every thread; blockDim.x is a multiple of 32. One
// barrier: `buffer` must differ from the previous call's (callers alternate two), which a thread
// may still be reading; the one before that is free, since every thread read it before it
// arrived at the previous call's barrier. Blocks of many warps add the warps' partial sums by a
// warp shuffle (one shared load per lane, not one per warp: fewer instructions at 12 warps).
__device__ inline float2 block_sum(float2 v, float2* buffer) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, offset);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, offset);
  }
  const int lane = threadIdx.x % 32, warps = int(blockDim.x / 32);
  if (lane == 0) buffer[threadIdx.x / 32] = v;
  __syncthreads();
  if (warps <= 4) {
    float2 total = buffer[0];
    for (int w = 1; w < warps; ++w) total.x += buffer[w].x, total.y += buffer[w].y;
    return total;
  }
  v = lane < warps ? buffer[lane] : make_float2(0.f, 0.f);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, offset);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, offset);
  }
  return v;
}

// Each block walks rows blockIdx.x, + gridDim.x, ...; the next row's 16 bytes per thread (per
// input) are loaded before this row's two block reductions so a load is always in flight (the
// plain and residual forms are memory bound, and a block otherwise idles its memory pipe while
// it reduces).
template <typename T, LayerNormForm kForm>
__global__ void layer_norm_forward_kernel(const LayerNormForwardParams p) {
  __shared__ float2 scratch[2][32];  // the two block sums of a row alternate buffers
  const int features = p.features;
  const int column = threadIdx.x * 8;  // this thread's features: [column, column + 8)
  const bool active = column < features;
  float w[8], b[8], bias[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (active) {
    load8(static_cast<const T*>(p.gamma) + column, w);
    load8(static_cast<const T*>(p.beta) + column, b);
    if (kForm == LayerNormForm::kGelu && p.bias)
      load8(static_cast<const T*>(p.bias) + column, bias);
  }
  const float inv_features = 1.f / float(features);
  auto load_row = [&](const void* base, int64_t row) {
    return active && row < p.rows ? *reinterpret_cast<const uint4*>(static_cast<const T*>(base) +
                                                                    row * features + column)
                                  : uint4{0, 0, 0, 0};
  };
  constexpr bool kResidual = kForm == LayerNormForm::kResidual;
  uint4 next = load_row(p.a, blockIdx.x);
  uint4 next_residual = kResidual ? load_row(p.residual, blockIdx.x) : uint4{0, 0, 0, 0};
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    float g[8];
    unpack8<T>(next, g);
    next = load_row(p.a, row + gridDim.x);
    if constexpr (kResidual) {
      float r[8];
      unpack8<T>(next_residual, r);
      next_residual = load_row(p.residual, row + gridDim.x);
      // h is normalised as stored (rounded), so the backward's recompute from h agrees.
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = to_float(from_float<T>(g[e] + r[e]));
      if (active) store8(static_cast<T*>(p.sum) + row * features + column, g);
    }
    float sum = 0.f;
    if (active) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if constexpr (kForm == LayerNormForm::kGelu) g[e] = gelu(g[e] + bias[e]);
        sum += g[e];
      }
    }
    const float mean = block_sum(make_float2(sum, 0.f), scratch[0]).x * inv_features;
    float squares = 0.f;
    if (active) {
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] -= mean, squares += g[e] * g[e];  // g: centred
    }
    const float rstd =
        rsqrtf(block_sum(make_float2(squares, 0.f), scratch[1]).x * inv_features + p.eps);
    if (active) {
      float out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) out[e] = g[e] * rstd * w[e] + b[e];
      store8(static_cast<T*>(p.y) + row * features + column, out);
    }
    if (threadIdx.x == 0) p.mean[row] = mean, p.rstd[row] = rstd;
  }
}

// dxhat = dy * gamma; dg = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); dx = dg
// gelu'(x + bias) (kGelu), dg + extra_grad (kResidual), dg (kPlain). kMaxThreads and
// kMinBlocks bound the registers (1024-thread blocks need <= 64). gamma and bias are re-read per
// row (L1 hits) and gelu'(x) replaces x after the first use, to keep the registers down.
template <typename T, LayerNormForm kForm, int kMaxThreads, int kMinBlocks>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks)
    layer_norm_backward_kernel(const LayerNormBackwardParams p) {
  constexpr bool kGelu = kForm == LayerNormForm::kGelu;
  constexpr bool kResidual = kForm == LayerNormForm::kResidual;
  __shared__ float2 scratch[2][32];  // consecutive rows' block sums alternate buffers
  const int features = p.features;
  const int column = threadIdx.x * 8;
  const bool active = column < features;
  const bool has_bias = kGelu && p.bias != nullptr;
  const bool has_extra = kResidual && p.extra_grad != nullptr;
  float dgamma[8] = {0, 0, 0, 0, 0, 0, 0, 0}, dbeta[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float dbias[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const float inv_features = 1.f / float(features);
  auto load_row = [&](const void* base, int64_t row) {
    return active && row < p.rows ? *reinterpret_cast<const uint4*>(static_cast<const T*>(base) +
                                                                    row * features + column)
                                  : uint4{0, 0, 0, 0};
  };
  uint4 next_x = load_row(p.x, blockIdx.x), next_dy = load_row(p.dy, blockIdx.x);
  uint4 next_extra = has_extra ? load_row(p.extra_grad, blockIdx.x) : uint4{0, 0, 0, 0};
  int buffer = 0;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x, buffer ^= 1) {
    const float rstd = p.rstd[row], shift = -p.mean[row] * rstd;  // xhat = x rstd + shift
    float slope[8], xhat[8], dxhat[8];  // slope = rstd gelu'(x + bias) (kGelu), else rstd
    {
      float x[8], grad[8], w[8];
      unpack8<T>(next_x, x);
      unpack8<T>(next_dy, grad);
      next_x = load_row(p.x, row + gridDim.x);
      next_dy = load_row(p.dy, row + gridDim.x);
      if (active) {
        load8(static_cast<const T*>(p.gamma) + column, w);
        if (has_bias) {
          float bias[8];
          load8(static_cast<const T*>(p.bias) + column, bias);
#pragma unroll
          for (int e = 0; e < 8; ++e) x[e] += bias[e];
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          float g = x[e];
          slope[e] = rstd;
          if constexpr (kGelu) gelu_and_slope(x[e], rstd, g, slope[e]);
          xhat[e] = g * rstd + shift;
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
    const float2 sums = block_sum(make_float2(sum_dxhat, sum_dxhat_xhat), scratch[buffer]);
    const float mean_dxhat = sums.x * inv_features, mean_dxhat_xhat = sums.y * inv_features;
    float extra[8];
    if constexpr (kResidual) {
      unpack8<T>(next_extra, extra);
      if (has_extra) next_extra = load_row(p.extra_grad, row + gridDim.x);
    }
    if (active) {
      float out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        out[e] = (dxhat[e] - mean_dxhat - xhat[e] * mean_dxhat_xhat) * slope[e];
        if constexpr (kResidual) out[e] += extra[e];
        if constexpr (kGelu) dbias[e] += out[e];
      }
      store8(static_cast<T*>(p.dx) + row * features + column, out);
    }
  }
  if (active) {
    const int64_t offset = int64_t(blockIdx.x) * features + column;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      p.dgamma_partial[offset + e] = dgamma[e];
      p.dbeta_partial[offset + e] = dbeta[e];
      if (has_bias) p.dbias_partial[offset + e] = dbias[e];
    }
  }
}

// Up to 384 threads (F <= 3072, the FFN's sub-LN) two blocks must fit on an SM: unbounded, the
// GELU form took 83 registers (88 allocated), so a 384-thread block filled the register file
// alone and the SM had one row in flight.
template <typename T, LayerNormForm kForm>
auto backward_kernel(int threads) {
  if (threads <= 384) return layer_norm_backward_kernel<T, kForm, 384, 2>;
  return threads <= 512 ? layer_norm_backward_kernel<T, kForm, 512, 1>
                        : layer_norm_backward_kernel<T, kForm, 1024, 1>;
}

void check_shape(int features, std::initializer_list<const void*> pointers) {
  RA_CHECK(features > 0 && features % 8 == 0 && features <= kLayerNormMaxFeatures,
           "layer_norm kernels: features = ", features, ": they need a multiple of 8 up to ",
           kLayerNormMaxFeatures);
  for (const void* p : pointers) {
    RA_CHECK(p == nullptr || aligned16(p), "layer_norm kernels: operands must be 16-byte aligned");
  }
}

template <typename T, LayerNormForm kForm>
void forward(const LayerNormForwardParams& p, int device, cudaStream_t stream) {
  const int threads = threads_for(p.features);
  auto kernel = layer_norm_forward_kernel<T, kForm>;
  const int blocks = resident_blocks(kernel, threads, p.rows, device);
  kernel<<<blocks, threads, 0, stream>>>(p);
}

template <typename T, LayerNormForm kForm>
void backward(const LayerNormBackwardParams& p, cudaStream_t stream) {
  const int threads = threads_for(p.features);
  backward_kernel<T, kForm>(threads)<<<p.blocks, threads, 0, stream>>>(p);
}

// Calls f(T{}, std::integral_constant<LayerNormForm, form>{}) for the runtime scalar kind and form.
template <typename F>
void dispatch(ScalarKind kind, LayerNormForm form, F&& f) {
  auto by_form = [&](auto type) {
    using Form = LayerNormForm;
    switch (form) {
      case Form::kPlain:
        return f(type, std::integral_constant<Form, Form::kPlain>{});
      case Form::kGelu:
        return f(type, std::integral_constant<Form, Form::kGelu>{});
      case Form::kResidual:
        return f(type, std::integral_constant<Form, Form::kResidual>{});
    }
  };
  if (kind == ScalarKind::kHalf) {
    by_form(__half{});
  } else if (kind == ScalarKind::kBFloat16) {
    by_form(__nv_bfloat16{});
  } else {
    RA_THROW("layer_norm kernels take fp16 or bf16");
  }
}

}  // namespace

void launch_layer_norm_forward(const LayerNormForwardParams& p, ScalarKind kind,
                               cudaStream_t stream) {
  check_shape(p.features, {p.a, p.bias, p.residual, p.sum, p.gamma, p.beta, p.y});
  RA_CHECK(p.a && p.gamma && p.beta && p.y && p.mean && p.rstd,
           "layer_norm forward: a, gamma, beta, y, mean and rstd are required");
  RA_CHECK((p.form == LayerNormForm::kResidual) == (p.residual != nullptr && p.sum != nullptr),
           "layer_norm forward: residual and sum go with (only) the residual form");
  RA_CHECK(p.bias == nullptr || p.form == LayerNormForm::kGelu,
           "layer_norm forward: a bias goes with the GELU form only");
  if (p.rows == 0) return;
  int device = 0;
  RA_CUDA_CHECK(cudaGetDevice(&device));
  dispatch(kind, p.form, [&](auto type, auto form) {
    forward<decltype(type), decltype(form)::value>(p, device, stream);
  });
  RA_CUDA_CHECK_LAUNCH();
}

int layer_norm_backward_blocks(int64_t rows, int features, LayerNormForm form, int device) {
  // Both scalar types compile to the same register count.
  const int threads = threads_for(features);
  auto blocks = [&](auto kernel) { return resident_blocks(kernel, threads, rows, device); };
  switch (form) {
    case LayerNormForm::kGelu:
      return blocks(backward_kernel<__nv_bfloat16, LayerNormForm::kGelu>(threads));
    case LayerNormForm::kResidual:
      return blocks(backward_kernel<__nv_bfloat16, LayerNormForm::kResidual>(threads));
    default:
      return blocks(backward_kernel<__nv_bfloat16, LayerNormForm::kPlain>(threads));
  }
}

void launch_layer_norm_backward(const LayerNormBackwardParams& p, ScalarKind kind,
                                cudaStream_t stream) {
  check_shape(p.features, {p.dy, p.x, p.bias, p.gamma, p.extra_grad, p.dx, p.dgamma_partial,
                           p.dbeta_partial, p.dbias_partial});
  RA_CHECK(p.blocks > 0, "layer_norm backward: blocks = ", p.blocks);
  RA_CHECK(
      p.dy && p.x && p.gamma && p.mean && p.rstd && p.dx && p.dgamma_partial && p.dbeta_partial,
      "layer_norm backward: dy, x, gamma, mean, rstd, dx and the partial sums are required");
  RA_CHECK(p.bias == nullptr || (p.form == LayerNormForm::kGelu && p.dbias_partial),
           "layer_norm backward: a bias goes with the GELU form and dbias_partial");
  RA_CHECK(p.extra_grad == nullptr || p.form == LayerNormForm::kResidual,
           "layer_norm backward: extra_grad goes with the residual form only");
  dispatch(kind, p.form, [&](auto type, auto form) {
    backward<decltype(type), decltype(form)::value>(p, stream);
  });
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
