// The whole multi-branch dilated attention of one rank's shard as ONE autograd operation.
// Forward: every (branch, head group) task gives (out_i, lse_i) for its kept rows — local
// tasks directly, spanning tasks through the ring or all-gather strategy — merged by LSE.
// Backward: every (query chunk, key chunk) pair's flash backward with the MERGED out and lse.
// This is exact: the merged output is one softmax over the union of all branches' keys (with
// multiplicity), so no per-branch normalisation and no gradient through lse is needed.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "attention/attention.h"
#include "attention/ring/segment_groups.h"
#include "attention/ring/shard_geometry.h"
#include "attention/ring/spanning_strategy.h"
#include "attention/standard/dilation_plan.h"

namespace ra {

// What one call needs besides the tensors; shared with the backward node.
struct ShardedAttentionPlan {
  std::vector<ShardTask> tasks;
  double scale = 1.0;
  double output_scale = 1.0;  // 1/G in head_mode=partition
  bool causal = false;
  std::shared_ptr<SegmentGroups> groups;
  std::shared_ptr<SpanningStrategy> strategy;
  bool stack_head_groups = true;  // RingConfig::stack_head_groups
  // When set (CUDA fp16/bf16 in a build with the fused path), the local tasks do not run one by
  // one: the fused single-GPU path runs all shard-local branches at once (their plan over the
  // shard: local_branches, output scale 1) with its kernels, and the spanning tasks merge into
  // its out and lse; backward likewise.
  bool fused_local = false;
  DilationPlan local_branches;
  HeadMode head_mode = HeadMode::kAll;
  AttentionBackend backend = AttentionBackend::kAuto;
};

// q: [B, S_local, H, D], k, v: [B, S_local, H_kv, D] this rank's shard (the tasks planned with
// kv_group = H / H_kv; only the k/v heads a task uses travel). Returns out
// [B, S_local, H, D] (input dtype, differentiable w.r.t. q, k, v) and lse [B, S_local, H]
// (float32, float64 for float64 inputs).
AttentionResult sharded_dilated_attention(std::shared_ptr<const ShardedAttentionPlan> plan,
                                          const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v);

}  // namespace ra
