// LayerNorm over the last dim F with affine gamma, beta as one pass each way, in three forms:
//   plain:    y = LN(a)
//   GELU:     y = LN(GELU(a + bias))   (the FFN: fc1's bias, its activation, MAGNETO's sub-LN)
//   residual: h = x + a, y = LN(h)     (a residual add and the next pre-LN: h is written too)
// Forward reads its inputs once and writes y (plus per-row mean and rstd). Backward (recomputing
// GELU) reads dy and the normalised input once and writes its gradient, with per-block partial
// sums of dgamma and dbeta (and of the bias gradient, which equals the column sums of da); in
// the residual form it also adds the gradient h receives from its other uses (the residual
// stream), so that sum is not a separate pass. ATen's LayerNorm backward reads dy and its input
// twice (input gradient, then gamma/beta gradients); unfused GELU, bias gradient and residual
// add each cost a full pass. One thread per 8 features, one block per row (grid-stride):
// F % 8 == 0 and F <= 8192. GELU is the exact (erf) one, its normal CDF within ~3e-7
// (normal_cdf.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

constexpr int kLayerNormMaxFeatures = 8192;

enum class LayerNormForm { kPlain, kGelu, kResidual };

// Every [rows, F] tensor is contiguous, every [F] one too, all of `kind` except mean and rstd.
struct LayerNormForwardParams {
  const void* a = nullptr;         // [rows, F]
  const void* bias = nullptr;      // [F], kGelu only, may be null: GELU(a + bias)
  const void* residual = nullptr;  // [rows, F], kResidual: h = residual + a
  void* sum = nullptr;             // [rows, F] out, kResidual: h rounded to kind (normalised)
  const void* gamma = nullptr;     // [F]
  const void* beta = nullptr;      // [F]
  void* y = nullptr;               // [rows, F] out
  float* mean = nullptr;           // [rows] out
  float* rstd = nullptr;           // [rows] out
  int64_t rows = 0;
  int features = 0;
  float eps = 1e-5f;
  LayerNormForm form = LayerNormForm::kPlain;
};

struct LayerNormBackwardParams {
  const void* dy = nullptr;     // [rows, F]
  const void* x = nullptr;      // [rows, F]: a (kPlain, kGelu) or the sum h (kResidual)
  const void* bias = nullptr;   // [F], kGelu: the forward's bias, may be null
  const void* gamma = nullptr;  // [F]
  const float* mean = nullptr;  // [rows] from the forward
  const float* rstd = nullptr;  // [rows]
  // [rows, F], kResidual, may be null: h's gradient from its other uses, added to dx.
  const void* extra_grad = nullptr;
  void* dx = nullptr;               // [rows, F] out
  float* dgamma_partial = nullptr;  // [blocks, F] out: row b = the sums over block b's rows
  float* dbeta_partial = nullptr;   // [blocks, F] out
  float* dbias_partial = nullptr;   // [blocks, F] out, kGelu with a bias: sums of dx
  int64_t rows = 0;
  int features = 0;
  int blocks = 0;  // from layer_norm_backward_blocks
  LayerNormForm form = LayerNormForm::kPlain;
};

void launch_layer_norm_forward(const LayerNormForwardParams& p, ScalarKind kind,
                               cudaStream_t stream);

// How many blocks the backward runs, i.e. the rows of its partial-sum buffers.
int layer_norm_backward_blocks(int64_t rows, int features, LayerNormForm form, int device);

void launch_layer_norm_backward(const LayerNormBackwardParams& p, ScalarKind kind,
                                cudaStream_t stream);

}  // namespace ra::cuda
