// Exact merge of partial attention results by their log-sum-exp (LongNet eq. 10):
//   lse = logsumexp_i lse_i,  out = sum_i exp(lse_i - lse) * out_i.
// Used to combine dilated branches and the blocks of a ring. Rows where every lse_i is -inf
// (no key attended) give out = 0 and lse = -inf, with finite (zero) gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace ra {

struct MergedAttention {
  at::Tensor out;  // [..., D] like out_i
  at::Tensor lse;  // [...] like lse_i, detached
};

// outs[i]: [..., D]; lses[i]: [...], same leading shape. Differentiable w.r.t. outs and lses
// through torch ops; computes in the dtype of lses (use fp32 or fp64).
MergedAttention merge_by_lse(const std::vector<at::Tensor>& outs,
                             const std::vector<at::Tensor>& lses);

}  // namespace ra
