// LayerNorm over the last dim F with affine gamma, beta, optionally of GELU(a) (the FFN's
// activation followed by MAGNETO's sub-LN), as one pass each way: forward reads a once and
// writes y (plus per-row mean and rstd); backward (recomputing GELU(a)) reads dy and a once and
// writes da, with per-block partial sums of dgamma and dbeta. ATen's LayerNorm backward reads
// dy and a twice (input gradient, then gamma/beta gradients), and GELU unfused adds a full pass
// each way. One thread per 8 features, one block per row (grid-stride): F % 8 == 0 and
// F <= 8192. GELU is the exact (erf) one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

constexpr int kLayerNormMaxFeatures = 8192;

// a, y: [rows, F] contiguous (kind); gamma, beta: [F] (kind); mean, rstd: [rows] fp32 out.
// gelu: normalise GELU(a) instead of a.
void launch_layer_norm_forward(const void* a, const void* gamma, const void* beta, void* y,
                               float* mean, float* rstd, int64_t rows, int features, float eps,
                               bool gelu, ScalarKind kind, cudaStream_t stream);

// How many blocks the backward runs, i.e. the rows of its partial-sum buffers.
int layer_norm_backward_blocks(int64_t rows, int features, bool gelu, int device);

// dy, a, da: [rows, F] contiguous (kind); gamma: [F] (kind); mean, rstd: [rows] fp32 from the
// forward; dgamma_partial, dbeta_partial: [blocks, F] fp32 (blocks from the function above),
// each row the sums of one block's rows (the caller sums them over dim 0).
void launch_layer_norm_backward(const void* dy, const void* a, const void* gamma,
                                const float* mean, const float* rstd, void* da,
                                float* dgamma_partial, float* dbeta_partial, int64_t rows,
                                int features, int blocks, bool gelu, ScalarKind kind,
                                cudaStream_t stream);

}  // namespace ra::cuda
