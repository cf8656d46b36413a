// merge_by_lse with torch ops. Weights are exp(lse_i - m) / sum_j exp(lse_j - m) with the max
// m taken as a constant shift, and the sum clamped away from 0, so all-masked rows stay finite
// in forward and backward (a plain logsumexp backward gives NaN there).
// merge_by_lse_: lse' = logaddexp(acc_lse, lse) (-inf when both are), w = exp(lse - lse'),
// acc_out += w * (out - acc_out); w = 0 where both sides attended nothing (NaN from -inf + inf).
#include "attention/standard/lse_merge.h"

#include <ATen/ATen.h>

#include <limits>

#include "attention/standard/row_runs.h"
#include "runtime/error.h"
#ifdef RA_HAS_FUSED_ATTENTION
#include "attention/standard/row_accumulate_cuda.h"
#endif

namespace ra {

MergedAttention merge_by_lse(const std::vector<at::Tensor>& outs,
                             const std::vector<at::Tensor>& lses) {
  RA_CHECK(!outs.empty() && outs.size() == lses.size(), "merge_by_lse: got ", outs.size(),
           " outputs and ", lses.size(), " lse tensors; need the same positive number");
  at::Tensor lse_stack = at::stack(lses, 0);  // [n, ...]
  at::Tensor m = std::get<0>(lse_stack.detach().max(0));
  at::Tensor m_safe = at::where(at::isfinite(m), m, at::zeros_like(m));
  at::Tensor e = at::exp(lse_stack - m_safe.unsqueeze(0));  // [n, ...], 0 where lse_i = -inf
  at::Tensor denom = e.sum(0);
  at::Tensor weights = e / denom.clamp_min(std::numeric_limits<float>::min()).unsqueeze(0);
  at::Tensor out;
  for (size_t i = 0; i < outs.size(); ++i) {
    at::Tensor term = weights[i].unsqueeze(-1).to(outs[i].scalar_type()) * outs[i];
    out = out.defined() ? out + term : term;
  }
  return {out, (m_safe + at::log(denom)).detach()};
}

void merge_by_lse_(const at::Tensor& acc_out, const at::Tensor& acc_lse, const at::Tensor& out,
                   const at::Tensor& lse) {
  RA_CHECK(acc_out.scalar_type() == acc_lse.scalar_type() &&
               lse.scalar_type() == acc_lse.scalar_type() && at::isFloatingType(out.scalar_type()),
           "merge_by_lse_: acc_out, acc_lse and lse must share one dtype and out be floating; got ",
           acc_out.scalar_type(), ", ", acc_lse.scalar_type(), ", ", lse.scalar_type(), " and ",
           out.scalar_type());
#ifdef RA_HAS_FUSED_ATTENTION
  if (try_merge_block_cuda(acc_out, acc_lse, out, lse)) return;
#endif
  at::Tensor merged = at::logaddexp(acc_lse, lse);
  at::Tensor weight = at::exp(lse - merged).nan_to_num_(0.0);  // in [0, 1]
  acc_out.lerp_(out.to(acc_out.scalar_type()), weight.unsqueeze(-1));
  acc_lse.copy_(merged);
}

void merge_pieces_into_(const at::Tensor& out, const at::Tensor& lse,
                        const std::vector<OutputPiece>& pieces) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const OutputPiece& p : pieces) ranges.emplace_back(p.start, p.out.size(2));
  for (const RowRun& run : row_runs(out.size(2), ranges)) {
    const int64_t n = run.end - run.begin;
    const at::Tensor out_rows = out.narrow(2, run.begin, n), lse_rows = lse.narrow(2, run.begin, n);
    if (run.cover.empty()) {
      out_rows.zero_();
      lse_rows.fill_(-std::numeric_limits<double>::infinity());
      continue;
    }
    std::vector<at::Tensor> outs, lses;
    for (size_t i : run.cover) {
      outs.push_back(pieces[i].out.narrow(2, run.begin - pieces[i].start, n));
      lses.push_back(pieces[i].lse.narrow(2, run.begin - pieces[i].start, n));
    }
#ifdef RA_HAS_FUSED_ATTENTION
    if (try_merge_rows_cuda(out_rows, lse_rows, outs, lses)) continue;
#endif
    for (at::Tensor& o : outs) o = o.to(lse.scalar_type());  // computed in the lse dtype
    const MergedAttention merged = merge_by_lse(outs, lses);
    out_rows.copy_(merged.out);
    lse_rows.copy_(merged.lse);
  }
}

}  // namespace ra
