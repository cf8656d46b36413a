// Plain descriptions of tensors and of "kept rows" shared by the dilated-attention CUDA kernels.
// A branch head group keeps, in every segment of w' tokens, the rows offset, offset + r, ... of
// the heads head_start, head_start + head_step, ...; the fused attention kernels see those rows
// as a [N = B * S / w', h, L, D] tensor. Kernels get these structs, never an at::Tensor.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ra::cuda {

// Element types the kernels read and write (fp32 is used for LSE and gradient accumulators).
enum class ScalarKind { kHalf, kBFloat16, kFloat };

inline int scalar_bytes(ScalarKind kind) { return kind == ScalarKind::kFloat ? 4 : 2; }

// Geometry of one branch head group inside a [B, S, H, *] tensor.
struct KeptRows {
  int32_t batch = 0, seq_len = 0, num_heads = 0;
  int32_t segment = 0, rate = 1, offset = 0;  // w', r, o
  int32_t head_start = 0, head_step = 1, head_count = 0;
  int32_t kept = 0;  // L = ceil((w' - o) / r)
  // A range of the N = B * S / w' segment-batch rows (the backward works in such chunks to
  // bound its temporaries); n_count < 0: from n_begin to the end.
  int64_t n_begin = 0, n_count = -1;

  int32_t num_segments() const { return seq_len / segment; }
  int64_t total_n() const { return int64_t(batch) * num_segments(); }
  int64_t size_n() const { return n_count < 0 ? total_n() - n_begin : n_count; }
  int64_t num_rows() const { return size_n() * head_count * kept; }
};

// A [B, S, H, D] tensor: element strides of its first three dims; D is contiguous.
struct TokenTensor {
  void* data = nullptr;
  int64_t stride_b = 0, stride_s = 0, stride_h = 0;
};

// A [N, h, L, D] tensor (one group's kept rows, or the n range of them that a KeptRows
// names): element strides; D is contiguous.
struct RowTensor {
  void* data = nullptr;
  int64_t stride_n = 0, stride_h = 0, stride_l = 0;
};

}  // namespace ra::cuda
