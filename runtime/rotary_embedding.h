// RotaryEmbedding (RoPE, Su et al. 2021): rotates each (x_j, x_{j+D/2}) pair of a query or key
// by the angle position * base^(-2j/D) (the half-split layout of GPT-NeoX / LLaMA). Positions
// are global token indices, so a shard starting at token rank * S/P gets exactly the rotation
// one device would give it. Angles are computed in float64: at 8M tokens an fp32 angle would
// be off by ~1 radian.
#pragma once

#include <ATen/ATen.h>

#include <mutex>

#include "attention/position_encoding.h"

namespace ra {

class RotaryEmbedding : public PositionEncoding {
 public:
  // head_dim must be even.
  explicit RotaryEmbedding(int64_t head_dim, double base = 10000.0);

  // x: [B, S, H, D] -> same; token i at global position first_position + i.
  at::Tensor encode_query(const at::Tensor& q, int64_t first_position) const override {
    return rotate(q, first_position);
  }
  at::Tensor encode_key(const at::Tensor& k, int64_t first_position) const override {
    return rotate(k, first_position);
  }
  // On CUDA q and k rotate in one launch each way (where they share shape, dtype and strides).
  std::pair<at::Tensor, at::Tensor> encode_query_key(const at::Tensor& q, const at::Tensor& k,
                                                     int64_t first_position) const override;
  at::Tensor rotate(const at::Tensor& x, int64_t first_position) const;

 private:
  struct Table {
    int64_t first = -1, length = 0;
    at::Tensor cos, sin;  // [1, S, 1, D/2], x's dtype and device
  };
  const Table& table(int64_t first_position, int64_t length,
                     const at::TensorOptions& options) const;
  // Whether x takes the CUDA kernel; its fp32 tables [S, D/2] if so.
  bool cuda_tables(const at::Tensor& x, int64_t first_position, at::Tensor& cos,
                   at::Tensor& sin) const;

  int64_t head_dim_;
  double base_;
  mutable std::mutex mutex_;  // backward may recompute on another thread (GPU)
  mutable Table cache_;       // the last table: every layer of a step asks for the same one
};

}  // namespace ra
