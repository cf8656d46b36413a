// Column sums of a [rows, cols] fp16/bf16 matrix (a Linear layer's bias gradient: the sum of dY
// over tokens), as per-block fp32 partial sums that the caller adds up (deterministic: no
// atomics). ATen's sum over dim 0 moved ~2.9 TB/s on H200 for the training step's
// [262144, 768] gradients; this kernel keeps several rows' loads in flight per thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

constexpr int kColumnSumsMaxCols = 8192;

// The partial-sum rows (blocks) the launch will write for these shapes on `device`.
int column_sums_blocks(int64_t rows, int cols, int device);

// x: [rows, cols] contiguous, 16-byte aligned, cols % 8 == 0 and <= kColumnSumsMaxCols (checked).
// partial: [blocks, cols] fp32 out, blocks from column_sums_blocks; row b = the sums over the
// rows b, b + blocks, ...
void launch_column_sums(const void* x, int64_t rows, int cols, ScalarKind kind, float* partial,
                        int blocks, cudaStream_t stream);

}  // namespace ra::cuda
