// The exact block-sparse attention arithmetic with torch ops (the CPU path and the reference the
// CUDA kernels mirror). Works query block row by row against a buffer of key/value blocks,
// in chunks of key blocks merged online by log-sum-exp, so the softmax is joint over every
// active key block of a row while memory stays at [g*b, chunk*b] scores per (batch, kv head).
// Backward uses the flash identity with the final out and lse: no per-chunk normalisation.
//
// Layouts (compute dtype: float64 for float64 inputs, else float32), with Hkv k/v heads, g = H/Hkv
// query heads per k/v head, nq query blocks, nk buffered key blocks of b tokens:
//   q, out, dq, dout:  [B, Hkv, nq, g*b, D]   (the g query heads of a k/v head side by side)
//   lse, delta:        [B, Hkv, nq, g*b]
//   kv, dkv:           [2, B, Hkv, nk, b, D]  (k then v)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace ra {

// One query block row's work against the key/value buffer.
struct RowTask {
  int64_t query_block = 0;         // index into q's nq blocks
  std::vector<int64_t> key_slots;  // indices into kv's nk blocks
  int64_t diagonal_slot = -1;      // the slot holding this query block's own keys when causal
                                   // (masked token by token), else -1
};

// Key blocks per chunk of the online merge (bounds the score matrix of dense rows).
inline constexpr int64_t kKeyBlocksPerChunk = 16;

// Attends each task's query block to its key blocks and merges the result into out/lse
// (exact LSE merge; start from out = 0, lse = -inf).
void block_sparse_forward(const at::Tensor& q, const at::Tensor& kv,
                          const std::vector<RowTask>& tasks, double scale, int64_t block_size,
                          at::Tensor& out, at::Tensor& lse);

// Adds the gradients of the tasks' block pairs to dq and dkv, given the final (merged) lse of
// every row and delta = rowsum(dout * out).
void block_sparse_backward(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& dout,
                           const at::Tensor& lse, const at::Tensor& delta,
                           const std::vector<RowTask>& tasks, double scale, int64_t block_size,
                           at::Tensor& dq, at::Tensor& dkv);

}  // namespace ra
