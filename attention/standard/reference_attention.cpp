// Reference dilated attention: per branch and head group, slice the kept positions of every
// segment (a strided view), attend densely inside the segment, scatter back, merge by LSE.
#include "attention/standard/reference_attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "attention/standard/lse_merge.h"

namespace ra {

double softmax_scale(const DilatedAttentionConfig& config, int64_t head_dim) {
  return config.softmax_scale ? *config.softmax_scale : 1.0 / std::sqrt(double(head_dim));
}

BranchAttention reference_branch_attention(const BranchPlan& branch, const at::Tensor& q,
                                           const at::Tensor& k, const at::Tensor& v, double scale,
                                           bool causal, double dropout_p) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t heads_per_kv = H / k.size(2);
  const int64_t w = branch.segment, nseg = branch.num_segments, r = branch.rate;
  auto opts = q.options();
  at::Tensor out = at::zeros({B, S, H, D}, opts);
  at::Tensor lse = at::full({B, S, H}, -std::numeric_limits<double>::infinity(), opts);
  for (const HeadGroup& group : branch.groups) {
    const int64_t L = branch.kept_per_segment(group.offset);
    if (L == 0) continue;
    at::Tensor heads = at::tensor(group.heads, opts.dtype(at::kLong));
    at::Tensor kv_heads = at::div(heads, heads_per_kv, "floor");
    // [B, S, h, D] -> [B, nseg, w, h, D] -> kept rows [B, nseg, L, h, D] -> [B, nseg, h, L, D]
    auto kept = [&](const at::Tensor& t, const at::Tensor& idx) {
      return t.index_select(2, idx)
          .view({B, nseg, w, idx.size(0), D})
          .slice(2, group.offset, w, r)
          .permute({0, 1, 3, 2, 4});
    };
    at::Tensor qg = kept(q, heads), kg = kept(k, kv_heads), vg = kept(v, kv_heads);
    at::Tensor scores = at::matmul(qg, kg.transpose(-1, -2)) * scale;  // [B, nseg, h, L, L]
    if (causal) {
      at::Tensor future = at::ones({L, L}, opts.dtype(at::kBool)).triu(1);
      scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
    }
    at::Tensor g_lse = at::logsumexp(scores, -1);  // [B, nseg, h, L]
    at::Tensor probs = at::exp(scores - g_lse.unsqueeze(-1));
    if (dropout_p > 0) probs = at::dropout(probs, dropout_p, /*train=*/true);
    at::Tensor g_out = at::matmul(probs, vg);  // [B, nseg, h, L, D]
    // Scatter back: the kept rows of out/lse as views, heads by index_copy_ (autograd-aware).
    out.view({B, nseg, w, H, D})
        .slice(2, group.offset, w, r)
        .index_copy_(3, heads, g_out.permute({0, 1, 3, 2, 4}));
    lse.view({B, nseg, w, H})
        .slice(2, group.offset, w, r)
        .index_copy_(3, heads, g_lse.permute({0, 1, 3, 2}));
  }
  return {out, lse};
}

AttentionResult dilated_attention_reference(const DilatedAttentionConfig& config,
                                            const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, bool training) {
  const auto compute = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor qc = q.to(compute), kc = k.to(compute), vc = v.to(compute);
  const DilationPlan plan = DilationPlan::build(config, q.size(1), q.size(2));
  const double scale = softmax_scale(config, q.size(3));
  const double dropout_p = training ? config.dropout : 0.0;
  std::vector<at::Tensor> outs, lses;
  for (const BranchPlan& branch : plan.branches) {
    BranchAttention b =
        reference_branch_attention(branch, qc, kc, vc, scale, config.causal, dropout_p);
    outs.push_back(b.out);
    lses.push_back(b.lse);
  }
  MergedAttention merged = merge_by_lse(outs, lses);
  at::Tensor out = merged.out;
  if (plan.output_scale != 1.0) out = out * plan.output_scale;
  return {out.to(q.scalar_type()), merged.lse};
}

}  // namespace ra
