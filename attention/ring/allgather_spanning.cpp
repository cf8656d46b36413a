// AllGatherSpanning (LongNet's algorithm): every member's kept K/V, padded to the largest
// member's count, is all-gathered in the segment group while this rank attends its own K/V;
// the gathered K/V are kept for backward (m times this rank's K/V in memory, no second
// gather). Backward reduce-scatters dK/dV as a pairwise exchange beside compute: step t computes
// member (me + t)'s blocks and sends their dK/dV to it while receiving member (me - t)'s for this
// rank's keys; after its own keys' blocks the owner sums all m in fp32. Where every member's
// block calls write each key row once and no GQA expansion sums heads (e.g. the dense ring), the
// gradients travel as the block kernels returned them (the fused kernels: bf16/fp16): the same
// sums as an fp32 reduce-scatter of the same block gradients at half its bytes, no fp32 copies.
// The exchange has a whole block computation to hide behind, so its NCCL kernels may run on few
// CTAs (RingConfig::exchange_ctas), leaving the SMs to cuDNN's persistent backward kernels. One
// message per step: a second NCCL kernel queued behind the first found every SM taken by the
// persistent cuDNN kernel launched meanwhile and ran only after it (2 x H200 trace, session 14).
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "attention/ring/spanning_strategy.h"
#include "attention/standard/accumulate.h"
#include "attention/standard/block_attention.h"

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

// Whether every member's block calls against every member's keys write each key row once and no
// GQA expansion sums heads: then the block gradients can travel as the kernels wrote them.
// The same answer on every rank (it depends on the group's chunks only).
bool gradients_travel_exact(const ShardTask& task, const at::Tensor& expand, bool causal) {
  if (expand.defined()) return false;
  for (int s = 0; s < task.group_size; ++s) {
    for (int r = 0; r < task.group_size; ++r) {
      if (!block_calls_write_kv_rows_once(task.member_chunks[s], task.member_chunks[r], causal)) {
        return false;
      }
    }
  }
  return true;
}

// MPI tag of the dK/dV exchange (NCCL orders by issue).
constexpr int kGradientTag = 41;

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
  const int m = task.group_size, me = task.member;

  // dK/dV travel as the block kernels return them where each key row gets one block's (the
  // fused kernels: the input dtype), else in the compute dtype.
  const auto travel = gradients_travel_exact(task, expand, causal)
                          ? kv.options().dtype(block_gradient_dtype(q))
                          : grad_options;
  std::vector<at::Tensor> sent, mine;  // sent: alive until their transfers are done
  std::vector<std::unique_ptr<PendingTransfer>> pending;
  for (int t = 1; t < m; ++t) {
    const int to = (me + t) % m, from = (me + m - t) % m;
    at::Tensor theirs = at::empty(member_rows(saved, task, to).sizes(), travel);
    attend_member_backward(q, out, lse, dout, task.my_chunks(), member_rows(saved, task, to),
                           task.member_chunks[to], expand, scale, causal, dq, theirs,
                           GradTarget::kOverwrite);
    at::Tensor incoming = at::empty(kv.sizes(), travel);
    pending.push_back(group.start_send_recv_beside_compute(theirs, to, incoming, from, kGradientTag,
                                                           exchange_ctas_));
    sent.push_back(theirs);
    mine.push_back(incoming);
  }
  at::Tensor own = at::empty(kv.sizes(), travel);
  attend_member_backward(q, out, lse, dout, task.my_chunks(), kv, task.member_chunks[me], expand,
                         scale, causal, dq, own, GradTarget::kOverwrite);
  for (auto& p : pending) p->wait();
  mine.push_back(own);
  at::Tensor dkv = at::empty(kv.sizes(), grad_options);
  sum_into_(dkv, mine);
  return dkv;
}

}  // namespace ra
