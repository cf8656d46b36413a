// AllGatherSpanning (LongNet's algorithm): every member's kept K/V, padded to the largest
// member's count, is all-gathered in the segment group while this rank attends its own K/V;
// the gathered K/V are kept for backward (m times this rank's K/V in memory, no second
// gather). Backward computes dK/dV for the other members' keys first, reduce-scatters them back
// to their owners while it runs its own keys' blocks, then adds the two.
#include <ATen/ATen.h>

#include <algorithm>

#include "attention/ring/spanning_strategy.h"

namespace ra {
namespace {

int64_t largest_member(const ShardTask& task) {
  int64_t n = 0;
  for (int i = 0; i < task.group_size; ++i) n = std::max(n, task.kept_of(i));
  return n;
}

// The member's slice of a gathered tensor [m, 2, B, h_kv, n_max, D]: its valid rows.
at::Tensor member_rows(const at::Tensor& gathered, const ShardTask& task, int member) {
  return gathered[member].narrow(3, 0, task.kept_of(member));
}

}  // namespace

at::Tensor AllGatherSpanning::forward(const ShardTask& task, RingExchange& group,
                                      const at::Tensor& q, const at::Tensor& kv, double scale,
                                      bool causal, const PartialAttention& acc) {
  const at::Tensor expand = kv_expand_index(task, kv);
  const int64_t n_max = largest_member(task);
  at::Tensor send = kv.contiguous();  // [2, B, h_kv, n_me, D]; alive until the gather is done
  if (send.size(3) != n_max) {
    send = at::zeros({2, kv.size(1), kv.size(2), n_max, kv.size(4)}, kv.options());
    send.narrow(3, 0, kv.size(3)).copy_(kv);
  }
  at::Tensor gathered =
      at::empty({task.group_size, 2, kv.size(1), kv.size(2), n_max, kv.size(4)}, kv.options());
  auto pending = group.start_all_gather(send, gathered);
  attend_member(q, task.my_chunks(), kv, task.member_chunks[task.member], expand, scale, causal,
                acc);
  pending->wait();
  for (int i = 0; i < task.group_size; ++i) {
    if (i == task.member) continue;
    attend_member(q, task.my_chunks(), member_rows(gathered, task, i), task.member_chunks[i],
                  expand, scale, causal, acc);
  }
  return gathered;
}

at::Tensor AllGatherSpanning::backward(const ShardTask& task, RingExchange& group,
                                       const at::Tensor& q, const at::Tensor& out,
                                       const at::Tensor& lse, const at::Tensor& dout,
                                       const at::Tensor& kv, const at::Tensor& saved, double scale,
                                       bool causal, const at::Tensor& dq) {
  RA_CHECK(saved.defined() && saved.size(0) == task.group_size,
           "allgather strategy: backward needs the K/V gathered by its forward");
  const at::Tensor expand = kv_expand_index(task, kv);
  const auto grad_options = saved.options().dtype(dq.scalar_type());
  // Every member's share of this rank's dK/dV (this rank's own slot and the padding rows zero).
  // The block calls write each member's rows (GradTarget::kOverwrite), so no zero fill first.
  at::Tensor grads = at::empty(saved.sizes(), grad_options);  // [m, 2, B, h_kv, n_max, D]
  for (int i = 0; i < task.group_size; ++i) {
    const int64_t kept = i == task.member ? 0 : task.kept_of(i);
    grads[i].narrow(3, kept, grads.size(4) - kept).zero_();
    if (i == task.member) continue;
    attend_member_backward(q, out, lse, dout, task.my_chunks(), member_rows(saved, task, i),
                           task.member_chunks[i], expand, scale, causal, dq,
                           member_rows(grads, task, i), GradTarget::kOverwrite);
  }
  at::Tensor others = at::empty(saved.sizes().slice(1), grad_options);
  auto pending = group.start_reduce_scatter_sum(grads, others);
  at::Tensor mine = at::empty(kv.sizes(), grad_options);
  attend_member_backward(q, out, lse, dout, task.my_chunks(), kv, task.member_chunks[task.member],
                         expand, scale, causal, dq, mine, GradTarget::kOverwrite);
  pending->wait();
  return mine.add_(others.narrow(3, 0, kv.size(3)));
}

}  // namespace ra
