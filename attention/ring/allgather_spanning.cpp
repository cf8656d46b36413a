// AllGatherSpanning (LongNet's algorithm): every member's kept K/V, padded to the largest
// member's count, is all-gathered in the segment group; backward computes dK/dV for all
// gathered keys and reduce-scatters them back to their owners.
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

// [m, 2, B, h_kv, n_max, D]: every member's K/V, member i valid in [..., :kept_of(i), :].
at::Tensor gather_members(const ShardTask& task, RingExchange& group, const at::Tensor& kv) {
  const int64_t n_max = largest_member(task);
  at::Tensor padded = at::zeros({2, kv.size(1), kv.size(2), n_max, kv.size(4)}, kv.options());
  padded.narrow(3, 0, kv.size(3)).copy_(kv);
  at::Tensor gathered =
      at::empty({task.group_size, 2, kv.size(1), kv.size(2), n_max, kv.size(4)}, kv.options());
  group.comm().all_gather(padded, gathered);
  return gathered;
}

}  // namespace

void AllGatherSpanning::forward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                                const at::Tensor& kv, double scale, bool causal,
                                const PartialAttention& acc) {
  const at::Tensor expand = kv_expand_index(task, kv);
  at::Tensor gathered = gather_members(task, group, kv);
  for (int i = 0; i < task.group_size; ++i) {
    attend_member(q, task.my_chunks(), gathered[i].narrow(3, 0, task.kept_of(i)),
                  task.member_chunks[i], expand, scale, causal, acc);
  }
}

at::Tensor AllGatherSpanning::backward(const ShardTask& task, RingExchange& group,
                                       const at::Tensor& q, const at::Tensor& out,
                                       const at::Tensor& lse, const at::Tensor& dout,
                                       const at::Tensor& kv, double scale, bool causal,
                                       const at::Tensor& dq) {
  const at::Tensor expand = kv_expand_index(task, kv);
  at::Tensor gathered = gather_members(task, group, kv);  // recomputed, not stored
  at::Tensor grads = at::zeros(gathered.sizes(), gathered.options().dtype(dq.scalar_type()));
  for (int i = 0; i < task.group_size; ++i) {
    at::Tensor member_grad = grads[i].narrow(3, 0, task.kept_of(i));
    attend_member_backward(q, out, lse, dout, task.my_chunks(),
                           gathered[i].narrow(3, 0, task.kept_of(i)), task.member_chunks[i], expand,
                           scale, causal, dq, member_grad);
  }
  at::Tensor mine = at::empty(grads.sizes().slice(1), grads.options());
  group.comm().reduce_scatter_sum(grads, mine);
  return mine.narrow(3, 0, kv.size(3));
}

}  // namespace ra
