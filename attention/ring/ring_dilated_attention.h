// RingDilatedAttention: dilated attention of a sequence sharded across the ranks of a
// communicator (factory names "ring" and "allgather"). Each rank passes its shard
// [B, S/P, H, D] of q, k, v (rank p holds tokens [p S/P, (p+1) S/P), or the zigzag layout
// when RingConfig::zigzag) and gets its shard of exactly what DilatedAttention computes on
// the whole sequence, forward and backward. Branches whose segment fits in a shard never
// communicate; spanning branches move only the dilated (kept) K/V.
#pragma once

#include <memory>

#include "attention/attention.h"
#include "attention/ring/segment_groups.h"
#include "attention/ring/spanning_strategy.h"
#include "attention/standard/dilated_attention.h"
#include "comm/communicator.h"
#include "runtime/config.h"

namespace ra {

class RingDilatedAttention : public DilatedAttentionBase {
 public:
  // Validates both configs. Each forward applies ring.timeout_seconds to `comm` and its
  // segment-group communicators (every blocking wait).
  RingDilatedAttention(DilatedAttentionConfig config, RingConfig ring,
                       std::shared_ptr<Communicator> comm);

  // q: [B, S/P, H, D]; k, v: [B, S/P, H_kv, D]. Collective: every rank of the communicator
  // calls it with the same shapes and config.
  AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  std::string name() const override { return to_string(ring_.strategy); }

  const RingConfig& ring_config() const { return ring_; }
  // Ring buffer counters (bytes reserved, reuse hits, bytes sent) of the buffers this module
  // shares with every other ring attention on the same communicator (the other layers).
  RingExchange::Counters buffer_counters() const { return groups_->counters(); }

 private:
  RingConfig ring_;
  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<SegmentGroups> groups_;
  std::shared_ptr<SpanningStrategy> strategy_;
  DilatedAttention local_;  // for configs whose segments all fit in a shard
};

}  // namespace ra
