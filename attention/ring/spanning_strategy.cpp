// Picks the spanning strategy for RingConfig::strategy; the dQ accumulator of strategies that
// add block by block.
#include "attention/ring/spanning_strategy.h"

#include <ATen/ATen.h>

#include "attention/standard/block_attention.h"

namespace ra {

at::Tensor dq_accumulator(const TaskGradients& grads) {
  if (grads.dq_target == GradTarget::kAdd) return grads.dq;
  const auto compute = block_compute_dtype(grads.dq.scalar_type());
  if (grads.dq.scalar_type() == compute) return grads.dq.zero_();
  return at::zeros(grads.dq.sizes(), grads.dq.options().dtype(compute));
}

void finish_dq(const TaskGradients& grads, const at::Tensor& accumulator) {
  if (!accumulator.is_same(grads.dq)) grads.dq.copy_(accumulator);
}

std::unique_ptr<SpanningStrategy> make_spanning_strategy(const RingConfig& config) {
  if (config.strategy == RingStrategy::kAllGather) {
    return std::make_unique<AllGatherSpanning>(config.exchange_ctas);
  }
  return std::make_unique<RingSpanning>();
}

}  // namespace ra
