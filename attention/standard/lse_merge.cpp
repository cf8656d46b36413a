// merge_by_lse with torch ops. Weights are exp(lse_i - m) / sum_j exp(lse_j - m) with the max
// m taken as a constant shift, and the sum clamped away from 0, so all-masked rows stay finite
// in forward and backward (a plain logsumexp backward gives NaN there).
#include "attention/standard/lse_merge.h"

#include <ATen/ATen.h>

#include <limits>

#include "runtime/error.h"

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

}  // namespace ra
