// The independent float64 reference every numeric test compares against (DESIGN.md):
//   out = softmax(q k^T * scale + log C) v,
// C[h, p, t] = number of branches in which p and t are kept in the same segment for head h
// (and t <= p when causal). Rows with no attended key give out = 0, lse = -inf. Written from
// the definition, sharing no code with the library's plan, so a wrong rule there shows up.
// Dense [H, S, S] matrices: small sizes only.
#pragma once

#include <ATen/ATen.h>

#include "runtime/config.h"

namespace ra::testing {

// [H, S, S] float64 counts C.
at::Tensor branch_count_matrix(const DilatedAttentionConfig& config, int64_t seq_len,
                               int64_t num_heads);

struct DenseResult {
  at::Tensor out;  // [B, S, H, D] float64, differentiable w.r.t. float64 inputs
  at::Tensor lse;  // [B, S, H] float64 (before the partition 1/G scale)
};

// q: [B, S, H, D]; k, v: [B, S, H_kv, D]; computed in float64 (inputs are converted).
DenseResult dense_dilated_attention(const DilatedAttentionConfig& config, const at::Tensor& q,
                                    const at::Tensor& k, const at::Tensor& v);

// The same dense form for any counts: out = softmax(q k^T * scale + log C) v, C: [H or 1, S, S]
// float64 (0 = masked). No partition scale. Used with 0/1 token masks for block-sparse layouts.
DenseResult dense_attention_with_counts(const at::Tensor& counts, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v, double scale);

// ||a - b||_F / ||b||_F in float64; +inf if either has a NaN.
double relative_error(const at::Tensor& a, const at::Tensor& b);

// Tolerances by dtype (DESIGN.md): fp64 1e-10, fp32 1e-5, bf16 1e-2, fp16 5e-3.
double tolerance_for(at::ScalarType dtype);

}  // namespace ra::testing
