// Rotary position embedding as one pass: each (x_j, x_{j+D/2}) pair of a [B, S, H, D] row is
// rotated by the angle whose cos/sin sit in fp32 tables [S, D/2], in fp32, and written to a
// contiguous output. The backward is the same rotation with the sine negated (sign = -1).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// x: [B, S, H, D] with element strides (batch, token, head), the head dim contiguous;
// out: contiguous [B, S, H, D] of the same kind; cos, sin: [S, D/2] fp32 contiguous.
// out[.., j] = x_j cos - sign x_{j+D/2} sin, out[.., j+D/2] = x_{j+D/2} cos + sign x_j sin.
struct RotateTensor {
  const void* x;
  void* out;
};
// One or two tensors of the same shape and strides (a query and a key) in one launch: the
// index decode and the cos / sin loads are shared.
void launch_rotate_pairs(const RotateTensor* tensors, int count, int64_t stride_b, int64_t stride_s,
                         int64_t stride_h, const float* cos, const float* sin, int batch,
                         int seq_len, int heads, int head_dim, ScalarKind kind, float sign,
                         cudaStream_t stream);

}  // namespace ra::cuda
