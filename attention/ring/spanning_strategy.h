// How the K/V chunks of a segment that spans several ranks reach each query chunk, and how
// their gradients return: RingSpanning (K/V hop around the segment group, dK/dV travel with
// them and return to their owners) or AllGatherSpanning (LongNet: all-gather K/V, backward
// reduce-scatter of dK/dV, done as pairwise exchanges). Both see packed tensors
// (chunk_attention.h) and the group's RingExchange.
// What forward returns (the all-gathered K/V; nothing for the ring) is passed back to backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "attention/ring/chunk_attention.h"
#include "comm/ring_exchange.h"
#include "runtime/config.h"

namespace ra {

// Where a task's backward puts its gradients (views of the caller's tensors allowed). A target
// of a lower precision than the compute dtype gets per element the compute-dtype sum of its
// block gradients, rounded once.
struct TaskGradients {
  at::Tensor dq;                            // [B, h, n_me, D]
  GradTarget dq_target = GradTarget::kAdd;  // kAdd: added into (compute dtype); kOverwrite: written
  at::Tensor dkv;                           // [2, B, h_kv, n_me, D]: written
};

// For strategies that add dQ block by block: a compute-dtype accumulator for grads.dq (dq itself,
// zero-filled for kOverwrite, or fresh zeros when dq has another dtype), and the copy into
// grads.dq once all blocks are in.
at::Tensor dq_accumulator(const TaskGradients& grads);
void finish_dq(const TaskGradients& grads, const at::Tensor& accumulator);

class SpanningStrategy {
 public:
  virtual ~SpanningStrategy() = default;

  // q: [B, h, n_me, D] this rank's kept queries and kv: [2, B, h_kv, n_me, D] its kept K/V at
  // the task's k/v heads (task.kv; input dtype, contiguous: that is what travels, expanded to
  // the query heads only after receipt), both in task.my_chunks() order (with the causal
  // balance the mirror layout, not the rank's home rows: mirror_swap.h). Merges every member's
  // blocks into acc (q's rows; a running merge, or write_once). Returns what backward needs
  // besides its arguments (may be undefined).
  virtual at::Tensor forward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                             const at::Tensor& kv, double scale, bool causal,
                             const PartialAttention& acc) = 0;

  // out, dout: the merged output and its gradient of q's rows in the input dtype (the same
  // layout); lse: their merged LSE (compute dtype). Puts dQ of q's rows and this rank's dK/dV
  // (summed over each k/v head's query heads before they travel home) into `grads`.
  // saved: what forward returned for this task.
  virtual void backward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                        const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                        const at::Tensor& kv, const at::Tensor& saved, double scale, bool causal,
                        const TaskGradients& grads) = 0;
};

class RingSpanning : public SpanningStrategy {
 public:
  at::Tensor forward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                     const at::Tensor& kv, double scale, bool causal,
                     const PartialAttention& acc) override;
  void backward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                const at::Tensor& kv, const at::Tensor& saved, double scale, bool causal,
                const TaskGradients& grads) override;
};

class AllGatherSpanning : public SpanningStrategy {
 public:
  // exchange_ctas: RingConfig::exchange_ctas, the CTAs of the backward's dK/dV exchange.
  explicit AllGatherSpanning(int exchange_ctas = 0) : exchange_ctas_(exchange_ctas) {}
  at::Tensor forward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                     const at::Tensor& kv, double scale, bool causal,
                     const PartialAttention& acc) override;
  void backward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                const at::Tensor& kv, const at::Tensor& saved, double scale, bool causal,
                const TaskGradients& grads) override;

 private:
  // Without GQA expansion: every block's dK/dV travel to their owner as the kernels returned
  // them (MemberGradients), one message per member, and all gradients are summed once.
  void backward_unsummed(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                         const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                         const at::Tensor& kv, const at::Tensor& saved, double scale, bool causal,
                         const TaskGradients& grads);

  int exchange_ctas_ = 0;
};

std::unique_ptr<SpanningStrategy> make_spanning_strategy(const RingConfig& config);

}  // namespace ra
