// The FFN's y = LayerNorm(GELU(a)) over the last dim F as one pass each way (MAGNETO's sub-LN
// after the FFN activation): forward reads a once and writes y (plus per-row mean and rstd);
// backward recomputes GELU(a) and writes da, with per-block partial sums of dgamma and dbeta.
// Unfused, the same math moves ~2x the bytes forward and ~2.7x backward (GELU and LayerNorm
// kernels each read and write the [rows, F] activations). One thread per 8 features, one block
// per row (grid-stride): F % 8 == 0 and F <= 8192. GELU is the exact (erf) one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

constexpr int kGeluLayerNormMaxFeatures = 8192;

// a, y: [rows, F] contiguous (kind); gamma, beta: [F] (kind); mean, rstd: [rows] fp32 out.
void launch_gelu_layer_norm_forward(const void* a, const void* gamma, const void* beta, void* y,
                                    float* mean, float* rstd, int64_t rows, int features, float eps,
                                    ScalarKind kind, cudaStream_t stream);

// How many blocks the backward runs, i.e. the rows of its partial-sum buffers.
int gelu_layer_norm_backward_blocks(int64_t rows, int features, int device);

// dy, a, da: [rows, F] contiguous (kind); gamma: [F] (kind); mean, rstd: [rows] fp32 from the
// forward; dgamma_partial, dbeta_partial: [blocks, F] fp32 (blocks from the function above),
// each row the sums of one block's rows (the caller sums them over dim 0).
void launch_gelu_layer_norm_backward(const void* dy, const void* a, const void* gamma,
                                     const float* mean, const float* rstd, void* da,
                                     float* dgamma_partial, float* dbeta_partial, int64_t rows,
                                     int features, int blocks, ScalarKind kind,
                                     cudaStream_t stream);

}  // namespace ra::cuda
