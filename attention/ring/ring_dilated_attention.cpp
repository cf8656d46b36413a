// RingDilatedAttention::forward: validate the sharding, plan this rank's tasks, run the
// sharded autograd operation.
#include "attention/ring/ring_dilated_attention.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "attention/ring/sharded_dilated_attention.h"
#include "attention/standard/dilated_attention.h"
#include "attention/standard/dilation_plan.h"
#include "attention/standard/reference_attention.h"
#include "runtime/validation.h"

namespace ra {

RingDilatedAttention::RingDilatedAttention(DilatedAttentionConfig config, RingConfig ring,
                                           std::shared_ptr<Communicator> comm)
    : DilatedAttentionBase(std::move(config)),
      ring_(ring),
      comm_(std::move(comm)),
      local_(config_) {
  validate(ring_);
  RA_CHECK(comm_ != nullptr, "attention = '", to_string(ring_.strategy),
           "': the communicator is null; sequence-parallel attention needs one "
           "(AttentionSpec::comm)");
  groups_ = SegmentGroups::shared(comm_);
  strategy_ = make_spanning_strategy(ring_);
}

AttentionResult RingDilatedAttention::forward(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v) {
  validate_attention_inputs(config_, q, k, v);
  const int world = comm_->size();
  const int64_t shard = q.size(1), seq_len = shard * world;
  validate_sharding(config_, seq_len, world);
  validate_ring_layout(config_, ring_, seq_len, world);
  RA_CHECK(!(training_ && config_.dropout > 0), "dropout = ", config_.dropout, ": attention = '",
           name(), "' does not implement attention dropout yet; use dropout = 0");
  const int64_t heads = q.size(2);
  const DilationPlan dilation = DilationPlan::build(config_, seq_len, heads);
  // Every segment inside one shard (and the shard a whole number of segments, validated above):
  // the attention is shard-local, exactly the single-device computation on this shard, so the
  // single-device path (fused kernels on GPU) does it with no communication at all.
  const bool all_local = std::all_of(dilation.branches.begin(), dilation.branches.end(),
                                     [&](const BranchPlan& b) { return b.segment <= shard; });
  if (all_local && !ring_.zigzag) {
    local_.train(training_);
    return local_.forward(q, k, v);
  }
  auto plan = std::make_shared<ShardedAttentionPlan>();
  // GQA: K/V stay at H_kv heads; each task sends only the k/v heads its query heads read and
  // expands them after receipt (dK/dV are summed back per k/v head before they return).
  plan->tasks = plan_shard_tasks(dilation, shard, world, comm_->rank(), ring_.zigzag,
                                 heads / k.size(2), config_.causal && ring_.balance_causal);
  plan->scale = softmax_scale(config_, q.size(3));
  plan->output_scale = dilation.output_scale;
  plan->causal = config_.causal;
  for (const BranchPlan& branch : dilation.branches) {
    if (ring_.zigzag || branch.segment > shard) continue;
    plan->local_branches.branches.push_back(branch);
    plan->local_branches.branches.back().index = int(plan->local_branches.branches.size()) - 1;
  }
  plan->head_mode = config_.head_mode;
  plan->backend = config_.backend;
  plan->fused_local =
      !plan->local_branches.branches.empty() && fused_path_applies(config_, q, /*dropout=*/false);
  groups_->follow_world(ring_.timeout_seconds);  // the groups are shared by all layers
  plan->groups = groups_;
  plan->strategy = strategy_;
  plan->stack_head_groups = ring_.stack_head_groups;
  return sharded_dilated_attention(plan, q, k, v);
}

}  // namespace ra
