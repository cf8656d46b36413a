// Exact dilated attention with torch ops (autograd gives the backward). Runs on any device and
// dtype: float16/bfloat16/float32 compute in float32, float64 in float64. It materialises each
// segment's [L, L] scores, so it is the correctness baseline and the CPU path, not a fast path.
#pragma once

#include <ATen/core/Tensor.h>

#include "attention/attention.h"
#include "attention/standard/dilation_plan.h"

namespace ra {

// One branch of the plan. q: [B, S, H, D]; k, v: [B, S, H_kv, D] in the compute dtype.
// out: [B, S, H, D], zero where the branch keeps no position; lse: [B, S, H], -inf there.
// Both are differentiable (the merge needs gradients through lse).
struct BranchAttention {
  at::Tensor out;
  at::Tensor lse;
};
BranchAttention reference_branch_attention(const BranchPlan& branch, const at::Tensor& q,
                                           const at::Tensor& k, const at::Tensor& v, double scale,
                                           bool causal, double dropout_p);

// The whole dilated attention (all branches, merged, partition scale applied). Inputs must
// already be validated (validate_attention_inputs).
AttentionResult dilated_attention_reference(const DilatedAttentionConfig& config,
                                            const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, bool training);

// 1/sqrt(head_dim) unless the config sets a scale.
double softmax_scale(const DilatedAttentionConfig& config, int64_t head_dim);

}  // namespace ra
