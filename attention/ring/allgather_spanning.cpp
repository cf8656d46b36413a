// AllGatherSpanning (LongNet's algorithm): every member's kept K/V, padded to the largest
// member's count, is all-gathered in the segment group while this rank attends its own K/V;
// the gathered K/V are kept for backward (m times this rank's K/V in memory, no second
// gather). Where the layer's output is this task's alone (the dense ring), every block's output
// is kept and all are merged once at the end, straight into the returned input-dtype output (no
// fp32 running merge). Backward reduce-scatters dK/dV as a pairwise exchange beside compute: step t
// computes member (me + t)'s blocks and sends their dK/dV to it while receiving member (me - t)'s
// for this rank's keys; after its own keys' blocks the owner sums them all. Without GQA expansion
// every block's dK/dV travel unsummed, as the kernels returned them (the fused kernels: bf16/fp16,
// at the rows each call covers), and the owner sums all of a row's in fp32 and rounds once, like
// dQ: the sums an fp32 reduce-scatter would make, at half its bytes, with no fp32 buffers, no
// copies into a send buffer and no zero rows sent. All of a step's pieces go in one message
// (one NCCL launch): a second NCCL kernel queued behind the first found every SM taken by the
// persistent cuDNN kernel launched meanwhile and ran only after it (2 x H200 trace, session 14).
// The exchange has a whole block computation to hide behind, so its NCCL kernels may run on few
// CTAs (RingConfig::exchange_ctas), leaving the SMs to cuDNN's persistent backward kernels.
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "attention/ring/block_call_plan.h"
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
  // A write-once target gets the merge of every block at the end (one pass, rounded once).
  std::vector<OutputPiece> blocks;
  auto attend = [&](const at::Tensor& member_kv, const std::vector<KeptChunk>& member_chunks) {
    if (!acc.write_once) {
      attend_member(q, task.my_chunks(), member_kv, member_chunks, expand, scale, causal, acc);
      return;
    }
    for (OutputPiece& p : member_block_outputs(q, task.my_chunks(), member_kv, member_chunks,
                                               expand, scale, causal)) {
      blocks.push_back(std::move(p));
    }
  };
  attend(kv, task.member_chunks[task.member]);
  pending->wait();
  for (int i = 0; i < task.group_size; ++i) {
    if (i != task.member) attend(member_rows(gathered, task, i), task.member_chunks[i]);
  }
  if (acc.write_once) merge_pieces_into_(acc.out, acc.lse, blocks);
  return gathered;
}

void AllGatherSpanning::backward(const ShardTask& task, RingExchange& group, const at::Tensor& q,
                                 const at::Tensor& out, const at::Tensor& lse,
                                 const at::Tensor& dout, const at::Tensor& kv,
                                 const at::Tensor& saved, double scale, bool causal,
                                 const TaskGradients& grads) {
  RA_CHECK(saved.defined() && saved.size(0) == task.group_size,
           "allgather strategy: backward needs the K/V gathered by its forward");
  const at::Tensor expand = kv_expand_index(task, kv);
  if (!expand.defined()) {
    backward_unsummed(task, group, q, out, lse, dout, kv, saved, scale, causal, grads);
    return;
  }
  // GQA: the query heads' dK/dV are summed per k/v head (in the compute dtype) before they travel.
  const at::Tensor dq = dq_accumulator(grads);
  const auto grad_options = saved.options().dtype(block_compute_dtype(q.scalar_type()));
  const int m = task.group_size, me = task.member;
  std::vector<at::Tensor> sent, mine;  // sent: alive until their transfers are done
  std::vector<std::unique_ptr<PendingTransfer>> pending;
  for (int t = 1; t < m; ++t) {
    const int to = (me + t) % m, from = (me + m - t) % m;
    at::Tensor theirs = at::empty(member_rows(saved, task, to).sizes(), grad_options);
    attend_member_backward(q, out, lse, dout, task.my_chunks(), member_rows(saved, task, to),
                           task.member_chunks[to], expand, scale, causal, dq, theirs,
                           GradTarget::kOverwrite);
    at::Tensor incoming = at::empty(kv.sizes(), grad_options);
    pending.push_back(group.start_send_recv_beside_compute(theirs, to, incoming, from, kv.device(),
                                                           kGradientTag, exchange_ctas_));
    sent.push_back(theirs);
    mine.push_back(incoming);
  }
  at::Tensor own = at::empty(kv.sizes(), grad_options);
  attend_member_backward(q, out, lse, dout, task.my_chunks(), kv, task.member_chunks[me], expand,
                         scale, causal, dq, own, GradTarget::kOverwrite);
  for (auto& p : pending) p->wait();
  mine.push_back(own);
  sum_into_(grads.dkv, mine);
  finish_dq(grads, dq);
}

void AllGatherSpanning::backward_unsummed(const ShardTask& task, RingExchange& group,
                                          const at::Tensor& q, const at::Tensor& out,
                                          const at::Tensor& lse, const at::Tensor& dout,
                                          const at::Tensor& kv, const at::Tensor& saved,
                                          double scale, bool causal, const TaskGradients& grads) {
  const int m = task.group_size, me = task.member;
  // The dtype every rank's block calls return their gradients in (the same on every rank).
  const auto travel = kv.options().dtype(block_gradient_dtype(q));
  std::vector<RowPiece> dq, dk, dv;  // every block's, in call order; dk, dv: this rank's keys
  std::vector<at::Tensor> sent;      // alive until their transfers are done
  std::vector<std::unique_ptr<PendingTransfer>> pending;
  auto append = [](std::vector<RowPiece>& to, const std::vector<RowPiece>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  for (int t = 1; t < m; ++t) {
    const int to = (me + t) % m, from = (me + m - t) % m;
    const MemberGradients theirs =
        member_block_gradients(q, out, lse, dout, task.my_chunks(), member_rows(saved, task, to),
                               task.member_chunks[to], scale, causal);
    append(dq, theirs.dq);
    std::vector<at::Tensor> sends;
    for (const auto* pieces : {&theirs.dk, &theirs.dv}) {
      for (const RowPiece& p : *pieces) {
        RA_CHECK(p.rows.scalar_type() == travel.dtype(), "allgather strategy: a block gradient in ",
                 p.rows.scalar_type(), ", its owner expects ", travel.dtype());
        sends.push_back(p.rows.contiguous());
      }
    }
    // What member `from`'s block calls against this rank's keys return, in their order.
    std::vector<at::Tensor> recvs;
    const std::vector<BlockCall> calls =
        plan_block_calls(task.member_chunks[from], task.my_chunks(), causal);
    for (std::vector<RowPiece>* pieces : {&dk, &dv}) {
      for (const BlockCall& c : calls) {
        at::Tensor rows = at::empty({kv.size(1), kv.size(2), c.kv_count, kv.size(4)}, travel);
        pieces->push_back({c.kv_start, rows});
        recvs.push_back(rows);
      }
    }
    pending.push_back(group.start_send_recv_beside_compute(sends, to, recvs, from, kv.device(),
                                                           kGradientTag, exchange_ctas_));
    sent.insert(sent.end(), sends.begin(), sends.end());
  }
  const MemberGradients own = member_block_gradients(q, out, lse, dout, task.my_chunks(), kv,
                                                     task.member_chunks[me], scale, causal);
  append(dq, own.dq);
  append(dk, own.dk);
  append(dv, own.dv);
  sum_pieces_into_(grads.dq, dq, grads.dq_target == GradTarget::kAdd);
  for (auto& p : pending) p->wait();
  sum_pieces_into_(grads.dkv[0], dk);
  sum_pieces_into_(grads.dkv[1], dv);
}

}  // namespace ra
