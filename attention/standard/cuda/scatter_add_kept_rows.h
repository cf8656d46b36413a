// Adds one branch head group's gradient rows ([N, h, L, D], fp16/bf16) into the full
// [B, S, H, D] gradient of the same dtype, in place (the sum is formed in fp32 and rounded once
// per branch): how each branch's fused-backward dq/dk/dv reach the full gradients without a
// full-size accumulator. The groups of one branch touch disjoint rows, and launches on one
// stream are ordered, so no atomics are needed.
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// acc[b, s, h, :] += src[n, j, l, :] for every kept (n, j, l) of `rows`; both of `kind`
// (fp16/bf16). D % 8 == 0; pointers and strides must allow 16-byte access (checked).
struct KeptRowsAdd {
  RowTensor src;
  TokenTensor acc;
};
// Up to 3 of them for the same rows (a group's dq, dk, dv) in one launch: one index decode per
// row, every tensor's loads in flight together.
void launch_scatter_add_kept_rows(const KeptRows& rows, const KeptRowsAdd* adds, int count,
                                  int64_t head_dim, ScalarKind kind, cudaStream_t stream);

}  // namespace ra::cuda
