// PositionEncoding: a transform of per-head queries and keys by their absolute token index
// (RoPE, XPOS, ...). MultiheadDilatedAttention applies it right after the projections. A
// sequence-parallel caller passes the global index of its shard's first token, so every rank
// encodes exactly what one device holding the whole sequence would.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace ra {

class PositionEncoding {
 public:
  virtual ~PositionEncoding() = default;
  // q, k: [B, S, H, D] -> same shape and dtype; token i has global index first_position + i.
  // Two methods because some encodings (XPOS) scale queries and keys differently.
  virtual at::Tensor encode_query(const at::Tensor& q, int64_t first_position) const = 0;
  virtual at::Tensor encode_key(const at::Tensor& k, int64_t first_position) const = 0;
  // Both at once, for encodings that can share the work (RoPE on CUDA: one kernel launch for q
  // and k). The same values as encode_query and encode_key.
  virtual std::pair<at::Tensor, at::Tensor> encode_query_key(const at::Tensor& q,
                                                             const at::Tensor& k,
                                                             int64_t first_position) const {
    return {encode_query(q, first_position), encode_key(k, first_position)};
  }
};

}  // namespace ra
