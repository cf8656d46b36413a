// Sharded dilated attention: task loops for forward and backward, and the autograd node that
// connects them (a torch::autograd::Node, so it can hold the plan and the communicators).
#include "attention/ring/sharded_dilated_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <limits>
#include <utility>

#include "attention/ring/mirror_swap.h"
#include "attention/standard/block_attention.h"
#include "attention/standard/lse_merge.h"
#ifdef RA_HAS_FUSED_ATTENTION
#include "attention/standard/fused_dilated_attention.h"
#endif

namespace ra {
namespace {

// x: [B, S_local, H, X] -> the kept rows of a local task, [B, segments, L, h, X] (a view).
at::Tensor local_view(const at::Tensor& x, const ShardTask& t) {
  const int64_t stop = t.offset + (t.kept_per_segment - 1) * t.rate + 1;
  return x.view({x.size(0), t.local_segments, t.segment_length, x.size(2), x.size(3)})
      .slice(2, t.offset, stop, t.rate)
      .slice(3, t.heads.start, t.heads.stop, t.heads.step);
}

// [B, segments, L, h, X] <-> block layout [B * segments, h, L, X].
at::Tensor to_blocks(const at::Tensor& view) {
  return view.permute({0, 1, 3, 2, 4})
      .reshape({view.size(0) * view.size(1), view.size(3), view.size(2), view.size(4)});
}
at::Tensor from_blocks(const at::Tensor& blocks, const at::Tensor& view) {
  return blocks.view({view.size(0), view.size(1), view.size(3), view.size(2), view.size(4)})
      .permute({0, 1, 3, 2, 4});
}

// lse [B, S_local, H] seen as [B, S_local, H, 1], so the row views above apply to it too.
at::Tensor with_unit_dim(const at::Tensor& lse) { return lse.unsqueeze(-1); }

// Where a task's k/v heads are read (and their gradients added): `task` with heads = the k/v
// heads its query heads use (task.kv), over k, v themselves when those heads are a strided
// range, else over copies of just those heads (`index`; gradients index_add_-ed back).
struct KvSide {
  ShardTask task;
  at::Tensor k, v;
  at::Tensor index;  // defined when k, v are copies of the heads task.kv.heads
};

KvSide kv_side(const ShardTask& task, const at::Tensor& k, const at::Tensor& v) {
  KvSide side{task, k, v, at::Tensor()};
  if (task.kv.range.count() > 0) {
    side.task.heads = task.kv.range;
    return side;
  }
  side.index = head_index(task.kv.heads, k);
  side.k = k.index_select(2, side.index);
  side.v = v.index_select(2, side.index);
  side.task.heads = {0, static_cast<int64_t>(task.kv.heads.size()), 1};
  return side;
}

// Where a KvSide's gradients are accumulated: dk, dv themselves, or zeros of its copies' shape.
std::pair<at::Tensor, at::Tensor> kv_grad_targets(const KvSide& side, const at::Tensor& dk,
                                                  const at::Tensor& dv) {
  if (!side.index.defined()) return {dk, dv};
  return {at::zeros(side.k.sizes(), dk.options()), at::zeros(side.v.sizes(), dv.options())};
}
void finish_kv_grads(const KvSide& side, const at::Tensor& dk, const at::Tensor& dv,
                     const std::pair<at::Tensor, at::Tensor>& targets) {
  if (!side.index.defined()) return;
  dk.index_add_(2, side.index, targets.first);
  dv.index_add_(2, side.index, targets.second);
}

// Local task blocks [N, h_kv, L, D] expanded to the query heads (a local copy).
at::Tensor expand_blocks(const at::Tensor& blocks, const at::Tensor& expand) {
  return expand.defined() ? blocks.index_select(1, expand) : blocks;
}
// Query-head gradient blocks [N, h, L, D] summed over each k/v head's group: [N, h_kv, L, D].
at::Tensor group_blocks(const at::Tensor& grad, const at::Tensor& expand, int64_t kv_heads) {
  if (!expand.defined()) return grad;
  const auto compute = grad.options().dtype(block_compute_dtype(grad.scalar_type()));
  return at::zeros({grad.size(0), kv_heads, grad.size(2), grad.size(3)}, compute)
      .index_add_(1, expand, grad.to(compute.dtype()));
}

// K/V of this rank's home rows stacked: [2, B, h_kv, n, D] in the input dtype, contiguous (what
// travels), written with one copy per tensor (per chunk where the rows are not one view).
at::Tensor pack_kv(const at::Tensor& k, const at::Tensor& v, const ShardTask& task) {
  at::Tensor kv =
      at::empty({2, k.size(0), task.heads.count(), task.home_kept(), k.size(3)}, k.options());
  pack_chunks(kv[0], k, task, task.my_home_chunks());
  pack_chunks(kv[1], v, task, task.my_home_chunks());
  return kv;
}

// Adds packed [B, h, n, X] into the kept rows of x [B, S_local, H, X].
void add_to_chunks(const at::Tensor& x, const ShardTask& task, const std::vector<KeptChunk>& chunks,
                   const at::Tensor& packed) {
  at::Tensor view = packed_view(x, task, chunks);
  if (view.defined()) {
    view.add_(packed);
    return;
  }
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (chunks[c].count == 0) continue;
    chunk_view(x, task, chunks[c])
        .add_(packed.narrow(2, packed_start(chunks, c), chunks[c].count).permute({0, 2, 1, 3}));
  }
}

// Whether the task's packed rows of `chunks` are all of x [B, S_local, H, X] (every row, every
// head, in order): then packed [B, H, S_local, X] is x.permute(0, 2, 1, 3) exactly.
bool covers_all(const at::Tensor& x, const ShardTask& task, const std::vector<KeptChunk>& chunks) {
  const at::Tensor view = packed_view(x, task, chunks);
  return view.defined() && view.numel() == x.numel();
}

// Merges packed partial results [B, h, n, *] of the task's home rows into out/lse4
// [B, S_local, H, *].
void merge_into_chunks(const at::Tensor& out, const at::Tensor& lse4, const ShardTask& task,
                       const at::Tensor& acc_out, const at::Tensor& acc_lse) {
  const auto& mine = task.my_home_chunks();
  for (size_t c = 0; c < mine.size(); ++c) {
    if (mine[c].count == 0) continue;
    const int64_t start = packed_start(mine, c), n = mine[c].count;
    merge_by_lse_(chunk_view(out, task, mine[c]), chunk_view(lse4, task, mine[c]).squeeze(-1),
                  acc_out.narrow(2, start, n).permute({0, 2, 1, 3}),
                  acc_lse.narrow(2, start, n).permute({0, 2, 1}));
  }
}

// Spanning tasks that run as one. Consecutive tasks of a branch whose members hold chunks of
// equal ids and sizes (each head group keeps as many rows of every chunk, e.g. when the rate
// divides the shard) and whose k/v heads are their own strided range (no GQA expansion) stack
// their rows along the head dim: one block call and one K/V message per hop for all of them.
// In head mode all a spanning branch with r >= H has one head per group, so this is the
// difference between one-head kernels and H-head kernels. Every rank forms the same batches.
using TaskBatch = std::vector<const ShardTask*>;

// Whether `task` runs inside a stack of several (so not on its own).
bool in_stack(const std::vector<TaskBatch>& batches, const ShardTask& task) {
  for (const TaskBatch& batch : batches) {
    if (batch.size() < 2) continue;
    for (const ShardTask* t : batch) {
      if (t == &task) return true;
    }
  }
  return false;
}

bool stackable(const ShardTask& a, const ShardTask& b) {
  if (a.local || b.local || a.branch != b.branch || a.group_size != b.group_size ||
      a.member != b.member) {
    return false;
  }
  for (const ShardTask* t : {&a, &b}) {
    if (!t->kv.identity() || t->kv.range.count() == 0) return false;
  }
  for (int i = 0; i < a.group_size; ++i) {
    const auto &x = a.member_chunks[i], &y = b.member_chunks[i];
    if (x.size() != y.size()) return false;
    for (size_t c = 0; c < x.size(); ++c) {
      if (x[c].id != y[c].id || x[c].count != y[c].count) return false;
    }
  }
  return true;
}

std::vector<TaskBatch> spanning_batches(const ShardedAttentionPlan& plan) {
  std::vector<TaskBatch> batches;
  for (const ShardTask& t : plan.tasks) {
    if (t.local) continue;
    if (plan.stack_head_groups && !batches.empty() && stackable(*batches.back().back(), t)) {
      batches.back().push_back(&t);
    } else {
      batches.push_back({&t});
    }
  }
  return batches;
}

// x [B, S_local, H, X] -> the batch's home rows, [B, sum of h, n, X] (tasks in order).
at::Tensor gather_batch(const at::Tensor& x, const TaskBatch& batch) {
  std::vector<at::Tensor> parts;
  for (const ShardTask* t : batch) parts.push_back(gather_chunks(x, *t, t->my_home_chunks()));
  return at::cat(parts, 1);
}

// The K/V that travel for a batch: [2, B, sum of h, n, D].
at::Tensor pack_batch_kv(const at::Tensor& k, const at::Tensor& v, const TaskBatch& batch) {
  std::vector<at::Tensor> parts;
  for (const ShardTask* t : batch) {
    const KvSide side = kv_side(*t, k, v);
    parts.push_back(pack_kv(side.k, side.v, side.task));
  }
  return at::cat(parts, 2);
}

// Whether the plan is one spanning task whose packed rows, computed by this rank itself, are all
// of q [B, S_local, H, D] in order (e.g. the dense ring).
bool sole_task(const ShardedAttentionPlan& plan, const at::Tensor& q) {
  if (plan.tasks.size() != 1) return false;
  const ShardTask& task = plan.tasks[0];
  return !task.local && !task.swaps_rows() && covers_all(q, task, task.my_home_chunks());
}

struct ForwardState {
  // [B, S_local, H, D] compute dtype, merged, before output_scale (the input dtype where the sole
  // task wrote it); released once the returned output (input dtype) is the merged output itself
  // (output_scale 1), which backward then reads.
  at::Tensor out;
  at::Tensor lse;  // [B, S_local, H] compute dtype
  // What each spanning strategy call returned for backward, in run order (stacks, then tasks).
  std::vector<at::Tensor> spanning_saved;
#ifdef RA_HAS_FUSED_ATTENTION
  FusedKernelState fused;  // plan.fused_local: what the local branches' backward needs
#endif
};

#ifdef RA_HAS_FUSED_ATTENTION
// The shard-local branches as the fused path runs them (plan.fused_local).
FusedPlanSpec local_spec(const ShardedAttentionPlan& plan) {
  FusedPlanSpec spec{plan.local_branches, plan.head_mode, plan.scale, plan.causal};
  spec.plan.output_scale = 1.0;  // the merge stays unscaled until all branches are in
  return spec;
}

// GQA: k/v [B, S, H_kv, D] -> [B, S, H, D] (query head h reads k/v head h / (H / H_kv)), and
// the gradients of the copies summed back per k/v head.
at::Tensor expand_kv_heads(const at::Tensor& t, int64_t heads) {
  const int64_t group = heads / t.size(2);
  return group == 1 ? t : t.repeat_interleave(group, 2).contiguous();
}
at::Tensor sum_kv_heads(const at::Tensor& grad, int64_t kv_heads) {  // grad: [B, S, H, D]
  const int64_t group = grad.size(2) / kv_heads;
  if (group == 1) return grad;
  return grad.view({grad.size(0), grad.size(1), kv_heads, group, grad.size(3)}).sum(3);
}
#endif

ForwardState run_forward(const ShardedAttentionPlan& plan, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& v) {
  const auto compute = block_compute_dtype(q.scalar_type());
  ForwardState s;
#ifdef RA_HAS_FUSED_ATTENTION
  if (plan.fused_local) {  // every local branch at once; the spanning tasks merge in below
    FusedPlanForward f =
        fused_plan_forward(local_spec(plan), plan.backend, q, expand_kv_heads(k, q.size(2)),
                           expand_kv_heads(v, q.size(2)));
    s.out = f.out.to(compute);
    s.lse = f.lse.to(compute);
    s.fused = f.state;
  }
#endif
  // The layer's output is one spanning task's alone: it writes it once, in the input dtype, where
  // it is returned (no fp32 running merge, no conversion after).
  const bool sole = !s.out.defined() && plan.output_scale == 1.0 && sole_task(plan, q);
  if (sole) {
    s.out = at::empty(q.sizes(), q.options());
    s.lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(compute));
  } else if (!s.out.defined()) {  // a running merge: 0 and -inf until blocks are merged in
    s.out = at::zeros(q.sizes(), q.options().dtype(compute));
    s.lse = at::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<double>::infinity(),
                     q.options().dtype(compute));
  }
  at::Tensor lse4 = with_unit_dim(s.lse);
  const BlockMask diagonal = plan.causal ? BlockMask::kCausalDiagonal : BlockMask::kNone;
  const std::vector<TaskBatch> batches = spanning_batches(plan);
  for (const TaskBatch& batch : batches) {  // stacked tasks; single ones run below
    if (batch.size() == 1) continue;
    const ShardTask& lead = *batch.front();
    RingExchange& group = plan.groups->group(lead.group_size);
    // [B, sum h, n, D] in the layout the ring computes in (mirror_swap.h)
    const at::Tensor q_rows = to_compute_rows(lead, group, gather_batch(q, batch));
    const PartialAttention acc = empty_partial(q_rows);
    s.spanning_saved.push_back(plan.strategy->forward(
        lead, group, q_rows, to_compute_rows(lead, group, pack_batch_kv(k, v, batch), 3),
        plan.scale, plan.causal, acc));
    const at::Tensor out_rows = from_compute_rows(lead, group, acc.out);
    const at::Tensor lse_rows = from_compute_rows(lead, group, acc.lse);
    int64_t h0 = 0;
    for (const ShardTask* t : batch) {
      const int64_t h = t->heads.count();
      merge_into_chunks(s.out, lse4, *t, out_rows.narrow(1, h0, h), lse_rows.narrow(1, h0, h));
      h0 += h;
    }
  }
  for (const ShardTask& task : plan.tasks) {
    if (task.local && plan.fused_local) continue;  // done above
    if (in_stack(batches, task)) continue;         // done above
    const KvSide side = kv_side(task, k, v);
    if (task.local) {
      at::Tensor out_view = local_view(s.out, task);
      const at::Tensor expand = kv_expand_index(task, q);
      BlockForward f = block_attention_forward(
          to_blocks(local_view(q, task)),
          expand_blocks(to_blocks(local_view(side.k, side.task)), expand),
          expand_blocks(to_blocks(local_view(side.v, side.task)), expand), plan.scale, diagonal);
      merge_by_lse_(out_view, local_view(lse4, task).squeeze(-1), from_blocks(f.out, out_view),
                    from_blocks(f.lse.unsqueeze(-1), local_view(lse4, task)).squeeze(-1));
      continue;
    }
    const auto& mine = task.my_home_chunks();
    RingExchange& group = plan.groups->group(task.group_size);
    // [B, h, n, D] in the layout the ring computes in (mirror_swap.h)
    at::Tensor q_packed = to_compute_rows(task, group, gather_chunks(q, task, mine));
    const at::Tensor kv_packed =
        to_compute_rows(task, group, pack_kv(side.k, side.v, side.task), 3);
    if (sole) {
      const PartialAttention target{packed_view(s.out, task, mine),
                                    packed_view(lse4, task, mine).squeeze(-1), true};
      s.spanning_saved.push_back(plan.strategy->forward(task, group, q_packed, kv_packed,
                                                        plan.scale, plan.causal, target));
      continue;
    }
    // Blocks merge straight into this rank's output rows when those are one view (and the rank
    // computes its own rows); else into a packed accumulator merged into them afterwards.
    PartialAttention acc;
    if (!task.swaps_rows()) acc = {packed_view(s.out, task, mine), packed_view(lse4, task, mine)};
    const bool direct = acc.out.defined();
    acc = direct ? PartialAttention{acc.out, acc.lse.squeeze(-1)} : empty_partial(q_packed);
    s.spanning_saved.push_back(
        plan.strategy->forward(task, group, q_packed, kv_packed, plan.scale, plan.causal, acc));
    if (!direct) {
      merge_into_chunks(s.out, lse4, task, from_compute_rows(task, group, acc.out),
                        from_compute_rows(task, group, acc.lse));
    }
  }
  return s;
}

struct InputGradients {
  at::Tensor dq;      // [B, S_local, H, D] compute dtype, or the input dtype (sole_gradients)
  at::Tensor dk, dv;  // [B, S_local, H_kv, D] the same (any strides)
};

// Whether the layer's gradients are its sole spanning task's alone (sole_task, and its k/v rows
// all of k in order, at k/v heads that are a strided range: no GQA head copies, kv_side): then
// its backward writes dq, dk and dv once, in the input dtype, where the node returns them.
bool sole_gradients(const ShardedAttentionPlan& plan, const at::Tensor& q, const at::Tensor& k) {
  if (!sole_task(plan, q) || plan.tasks[0].kv.range.count() == 0) return false;
  ShardTask kv_task = plan.tasks[0];
  kv_task.heads = kv_task.kv.range;
  return covers_all(k, kv_task, kv_task.my_home_chunks());
}

// out_in: the merged output [B, S, H, D] in the input dtype, contiguous: what the fused kernels
// read (every block call takes views of it and of dout's conversion below).
InputGradients run_backward(const ShardedAttentionPlan& plan, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const ForwardState& fwd,
                            const at::Tensor& out_in, const at::Tensor& dout) {
  const auto compute = fwd.lse.scalar_type(), dtype = q.scalar_type();
  const auto compute_options = fwd.lse.options();
  const at::Tensor dmerged =
      (plan.output_scale == 1.0 ? dout : dout.to(compute) * plan.output_scale)
          .to(dtype)
          .contiguous();
  InputGradients g;
#ifdef RA_HAS_FUSED_ATTENTION
  if (plan.fused_local) {  // the local branches' share, with the merge of all branches
    std::array<at::Tensor, 3> d =
        fused_plan_backward(local_spec(plan), fwd.fused, q, expand_kv_heads(k, q.size(2)),
                            expand_kv_heads(v, q.size(2)), out_in, fwd.lse.contiguous(), dmerged);
    g.dq = d[0].to(compute);
    g.dk = sum_kv_heads(d[1].to(compute), k.size(2));
    g.dv = sum_kv_heads(d[2].to(compute), v.size(2));
  }
#endif
  const bool sole = !g.dq.defined() && sole_gradients(plan, q, k);
  if (!g.dq.defined() && !sole) g.dq = at::zeros(out_in.sizes(), compute_options);
  // dk, dv: allocated on first use, unless the first user is a spanning task whose packed rows
  // are all of them (the dense ring): its gradients become dk, dv (no zero fill, no add).
  auto kv_grads_allocated = [&] {
    if (g.dk.defined()) return;
    g.dk = at::zeros(k.sizes(), compute_options);
    g.dv = at::zeros(v.sizes(), compute_options);
  };
  at::Tensor lse4 = with_unit_dim(fwd.lse);
  const BlockMask diagonal = plan.causal ? BlockMask::kCausalDiagonal : BlockMask::kNone;
  const std::vector<TaskBatch> batches = spanning_batches(plan);
  size_t next_saved = 0;                    // fwd.spanning_saved is in the order of the loops below
  for (const TaskBatch& batch : batches) {  // stacked tasks; single ones run below
    if (batch.size() == 1) continue;
    const ShardTask& lead = *batch.front();
    RingExchange& group = plan.groups->group(lead.group_size);
    auto compute_rows = [&](const at::Tensor& x) {  // [B, sum h, n, X]
      return to_compute_rows(lead, group, gather_batch(x, batch));
    };
    const at::Tensor q_rows = compute_rows(q);
    const at::Tensor kv_rows = to_compute_rows(lead, group, pack_batch_kv(k, v, batch), 3);
    at::Tensor dq_rows = at::empty(q_rows.sizes(), compute_options);
    at::Tensor dkv = at::empty(kv_rows.sizes(), compute_options);
    plan.strategy->backward(lead, group, q_rows, compute_rows(out_in),
                            compute_rows(lse4).squeeze(-1), compute_rows(dmerged), kv_rows,
                            fwd.spanning_saved.at(next_saved++), plan.scale, plan.causal,
                            {dq_rows, GradTarget::kOverwrite, dkv});
    dq_rows = from_compute_rows(lead, group, dq_rows);
    dkv = from_compute_rows(lead, group, dkv, 3);
    kv_grads_allocated();
    int64_t h0 = 0;
    for (const ShardTask* t : batch) {
      const int64_t h = t->heads.count();
      const KvSide side = kv_side(*t, k, v);  // k/v heads: a strided range of g.dk's heads
      add_to_chunks(g.dq, *t, t->my_home_chunks(), dq_rows.narrow(1, h0, h));
      add_to_chunks(g.dk, side.task, t->my_home_chunks(), dkv[0].narrow(1, h0, h));
      add_to_chunks(g.dv, side.task, t->my_home_chunks(), dkv[1].narrow(1, h0, h));
      h0 += h;
    }
  }
  for (const ShardTask& task : plan.tasks) {
    if (task.local && plan.fused_local) continue;  // done above
    if (in_stack(batches, task)) continue;         // done above
    const KvSide side = kv_side(task, k, v);
    if (task.local) {
      kv_grads_allocated();
      const auto kv_grads = kv_grad_targets(side, g.dk, g.dv);
      at::Tensor view = local_view(g.dq, task);
      const at::Tensor expand = kv_expand_index(task, q);
      BlockGradients b = block_attention_backward(
          to_blocks(local_view(q, task)),
          expand_blocks(to_blocks(local_view(side.k, side.task)), expand),
          expand_blocks(to_blocks(local_view(side.v, side.task)), expand),
          to_blocks(local_view(out_in, task)), to_blocks(local_view(lse4, task)).squeeze(-1),
          to_blocks(local_view(dmerged, task)), plan.scale, diagonal);
      view.add_(from_blocks(b.dq, view));
      at::Tensor kv_view = local_view(kv_grads.first, side.task);
      const int64_t kv_heads = side.task.heads.count();
      kv_view.add_(from_blocks(group_blocks(b.dk, expand, kv_heads), kv_view));
      local_view(kv_grads.second, side.task)
          .add_(from_blocks(group_blocks(b.dv, expand, kv_heads), kv_view));
      finish_kv_grads(side, g.dk, g.dv, kv_grads);
      continue;
    }
    const auto& mine = task.my_home_chunks();
    RingExchange& group = plan.groups->group(task.group_size);
    auto compute_rows = [&](const at::Tensor& x) {  // [B, h, n, X]
      return to_compute_rows(task, group, gather_chunks(x, task, mine));
    };
    at::Tensor q_packed = compute_rows(q);
    const at::Tensor kv_packed =
        to_compute_rows(task, group, pack_kv(side.k, side.v, side.task), 3);
    if (sole) {
      // The layer's gradients are this task's alone: written once, in the input dtype, where the
      // node returns them (dq, dk, dv contiguous [B, S_local, H(_kv), D]; no fp32 copies).
      g.dq = at::empty(q.sizes(), q.options());
      const at::Tensor dkv_home = at::empty({2, k.size(0), k.size(1), k.size(2), k.size(3)},
                                            k.options());  // [2, B, S_local, H_kv, D]
      g.dk = dkv_home[0];
      g.dv = dkv_home[1];
      plan.strategy->backward(task, group, q_packed, compute_rows(out_in),
                              compute_rows(lse4).squeeze(-1), compute_rows(dmerged), kv_packed,
                              fwd.spanning_saved.at(next_saved++), plan.scale, plan.causal,
                              {packed_view(g.dq, task, mine), GradTarget::kOverwrite,
                               dkv_home.permute({0, 1, 3, 2, 4})});
      continue;
    }
    // dQ is added straight into this rank's rows when they are one view it computes itself.
    at::Tensor dq_view = task.swaps_rows() ? at::Tensor() : packed_view(g.dq, task, mine);
    at::Tensor dq_packed =
        dq_view.defined() ? dq_view : at::empty(q_packed.sizes(), compute_options);
    at::Tensor dkv = at::empty(kv_packed.sizes(), compute_options);
    plan.strategy->backward(
        task, group, q_packed, compute_rows(out_in), compute_rows(lse4).squeeze(-1),
        compute_rows(dmerged), kv_packed, fwd.spanning_saved.at(next_saved++), plan.scale,
        plan.causal,
        {dq_packed, dq_view.defined() ? GradTarget::kAdd : GradTarget::kOverwrite, dkv});
    dkv = from_compute_rows(task, group, dkv, 3);
    if (!dq_view.defined()) {
      add_to_chunks(g.dq, task, mine, from_compute_rows(task, group, dq_packed));
    }
    if (!g.dk.defined() && !side.index.defined() && covers_all(k, side.task, mine)) {
      g.dk = dkv[0].permute({0, 2, 1, 3});  // [B, h_kv, n, D] -> [B, S_local, H_kv, D]
      g.dv = dkv[1].permute({0, 2, 1, 3});
      continue;
    }
    kv_grads_allocated();
    const auto kv_grads = kv_grad_targets(side, g.dk, g.dv);
    add_to_chunks(kv_grads.first, side.task, mine, dkv[0]);
    add_to_chunks(kv_grads.second, side.task, mine, dkv[1]);
    finish_kv_grads(side, g.dk, g.dv, kv_grads);
  }
  kv_grads_allocated();  // no task had k/v rows
  return g;
}

// The backward node of sharded_dilated_attention: one gradient input (d out), three outputs.
class ShardedDilatedAttentionBackward : public torch::autograd::Node {
 public:
  ShardedDilatedAttentionBackward(std::shared_ptr<const ShardedAttentionPlan> plan, at::Tensor q,
                                  at::Tensor k, at::Tensor v, ForwardState fwd)
      : plan_(std::move(plan)), q_(q), k_(k), v_(v), fwd_(std::move(fwd)) {}

  std::string name() const override { return "ShardedDilatedAttentionBackward"; }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    RA_CHECK(q_.defined(),
             "sharded dilated attention: backward called twice; pass "
             "retain_graph=true to backward through this graph again");
    at::Tensor out_in = output_.unpack(shared_from_this());  // undefined unless saved
    if (!out_in.defined()) out_in = fwd_.out.to(q_.scalar_type());
    out_in = out_in.contiguous();
    at::Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(out_in);
    at::NoGradGuard no_grad;
    InputGradients g = run_backward(*plan_, q_, k_, v_, fwd_, out_in, dout);
    // In the input's dtype and contiguous (dk, dv may be permuted views of a task's gradients).
    auto to_input = [](const at::Tensor& grad, const at::Tensor& like) {
      return grad.to(like.scalar_type(), false, false, at::MemoryFormat::Contiguous);
    };
    return {to_input(g.dq, q_), to_input(g.dk, k_), to_input(g.dv, v_)};
  }

  // The returned output when it is the merged output in the input dtype (output_scale 1): kept
  // as a saved output (no reference cycle; an in-place change of it fails backward), and the
  // compute-dtype copy is released instead of converted again in backward.
  void save_output(const at::Tensor& out) {
    output_ = torch::autograd::SavedVariable(out, /*is_output=*/true);
    fwd_.out = at::Tensor();
  }

  void release_variables() override {
    q_.reset(), k_.reset(), v_.reset(), fwd_ = {};
    output_.reset_data();
  }

 private:
  std::shared_ptr<const ShardedAttentionPlan> plan_;
  at::Tensor q_, k_, v_;
  ForwardState fwd_;
  torch::autograd::SavedVariable output_;
};

}  // namespace

AttentionResult sharded_dilated_attention(std::shared_ptr<const ShardedAttentionPlan> plan,
                                          const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v) {
  at::Tensor qd = q.detach().contiguous(), kd = k.detach().contiguous(),
             vd = v.detach().contiguous();
  ForwardState fwd;
  {
    at::NoGradGuard no_grad;
    fwd = run_forward(*plan, qd, kd, vd);
  }
  at::Tensor out = plan->output_scale == 1.0 ? fwd.out.to(q.scalar_type())
                                             : fwd.out.mul(plan->output_scale).to(q.scalar_type());
  if (q.requires_grad() || k.requires_grad() || v.requires_grad()) {
    auto node = std::shared_ptr<ShardedDilatedAttentionBackward>(
        new ShardedDilatedAttentionBackward(plan, qd, kd, vd, fwd), torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(q, k, v));
    torch::autograd::set_history(out, node);
    if (plan->output_scale == 1.0) node->save_output(out);
  }
  return {out, fwd.lse};
}

}  // namespace ra
