// RingSpanning: m - 1 hops of K/V around the segment group, each overlapped with the blocks of
// the K/V already held. Backward: K/V hop again (prefetched), and a dK/dV accumulator follows
// each K/V block, one hop behind, plus a final hop that returns it to its owner.
#include <ATen/ATen.h>

#include <vector>

#include "attention/ring/spanning_strategy.h"

namespace ra {
namespace {

// Ring buffer slots: K/V double buffer, dK/dV send and receive. Streams: K/V and dK/dV.
constexpr int kKvSlots = 2, kGradSendSlot = 2, kGradRecvSlot = 3;
constexpr int kKvStream = 0, kGradStream = 1;

int member_at_hop(const ShardTask& task, int hop) {
  const int m = task.group_size;
  return ((task.member - hop) % m + m) % m;  // whose K/V this rank holds after `hop` hops
}

at::Tensor kv_buffer(RingExchange& group, int slot, const at::Tensor& like, int64_t kept) {
  return group.buffer(slot, {2, like.size(1), like.size(2), kept, like.size(4)}, like.options());
}

}  // namespace

at::Tensor RingSpanning::forward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                                 const at::Tensor& kv, double scale, bool causal,
                                 const PartialAttention& target) {
  const at::Tensor expand = kv_expand_index(task, kv);
  const int m = task.group_size;
  const PartialAttention acc = running_partial(target, q);
  at::Tensor held = kv;  // [2, B, h_kv, n, D]
  for (int hop = 0; hop < m; ++hop) {
    at::Tensor incoming;
    if (hop + 1 < m) {
      const int64_t kept = task.kept_of(member_at_hop(task, hop + 1));
      incoming = kv_buffer(group, hop % kKvSlots, kv, kept);
      group.start(held, incoming, kKvStream);
    }
    attend_member(q, task.my_chunks(), held, task.member_chunks[member_at_hop(task, hop)], expand,
                  scale, causal, acc);
    if (hop + 1 < m) {
      group.wait(kKvStream);
      held = incoming;
    }
  }
  finish_partial(target, acc);
  return at::Tensor();  // backward passes the K/V around again
}

void RingSpanning::backward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                            const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                            const at::Tensor& kv, const at::Tensor& /*saved*/, double scale,
                            bool causal, const TaskGradients& grads) {
  const at::Tensor expand = kv_expand_index(task, kv);
  const int m = task.group_size;
  const at::Tensor dq = dq_accumulator(grads);
  const auto grad_options = q.options().dtype(dq.scalar_type());
  at::Tensor held = kv, grad_in;
  for (int hop = 0; hop < m; ++hop) {
    const int source = member_at_hop(task, hop);
    at::Tensor incoming;
    if (hop + 1 < m) {
      incoming = kv_buffer(group, hop % kKvSlots, kv, task.kept_of(member_at_hop(task, hop + 1)));
      group.start(held, incoming, kKvStream);
    }
    // The block calls write `source`'s dK/dV (no zero fill first): at hop 0 straight into the
    // send buffer (nothing is in flight on the dK/dV stream yet), later into a fresh tensor that
    // the accumulator for `source`, arriving from the previous rank (it held it one hop ago), is
    // added to.
    const std::vector<int64_t> shape = {2, kv.size(1), kv.size(2), task.kept_of(source),
                                        kv.size(4)};
    at::Tensor grad_out;
    if (hop == 0) {
      grad_out = group.buffer(kGradSendSlot, shape, grad_options);
      attend_member_backward(q, out, lse, dout, task.my_chunks(), held, task.member_chunks[source],
                             expand, scale, causal, dq, grad_out, GradTarget::kOverwrite);
    } else {
      at::Tensor partial = at::empty(shape, grad_options);
      attend_member_backward(q, out, lse, dout, task.my_chunks(), held, task.member_chunks[source],
                             expand, scale, causal, dq, partial, GradTarget::kOverwrite);
      group.wait(kGradStream);
      grad_out = group.buffer(kGradSendSlot, shape, grad_options);
      at::add_out(grad_out, grad_in, partial);
    }
    // After the last hop this returns every accumulator to its owner.
    const int64_t kept_in = task.kept_of(member_at_hop(task, hop + 1));
    grad_in =
        group.buffer(kGradRecvSlot, {2, kv.size(1), kv.size(2), kept_in, kv.size(4)}, grad_options);
    group.start(grad_out, grad_in, kGradStream);
    if (hop + 1 < m) {
      group.wait(kKvStream);
      held = incoming;
    }
  }
  group.wait(kGradStream);
  finish_dq(grads, dq);
  grads.dkv.copy_(grad_in);  // the slot is reused by the next task
}

}  // namespace ra
