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

// In place, no autograd: merges (out [..., D], lse [...]) into the accumulator (acc_out,
// acc_lse), which may be strided views (e.g. slices of a larger accumulator). Start from
// acc_out = 0, acc_lse = -inf. Computes in acc_lse's dtype (fp32 for bf16/fp16 attention, fp64
// stays fp64); acc_out and lse must have that dtype, out may be any floating dtype (a fused
// kernel's fp16/bf16 output). On CUDA, [A0, A1, A2, D] fp32 accumulators take one fused pass
// (cuda/row_accumulate.h) that reads out in its own dtype; elsewhere torch ops (lerp).
void merge_by_lse_(const at::Tensor& acc_out, const at::Tensor& acc_lse, const at::Tensor& out,
                   const at::Tensor& lse);

// One block's rows of a larger [A0, A1, n, D] output: rows [start, start + count).
struct OutputPiece {
  int64_t start = 0;
  at::Tensor out;  // [A0, A1, count, D] any floating dtype (a fused kernel's fp16/bf16)
  at::Tensor lse;  // [A0, A1, count] compute dtype
};

// No autograd: out [A0, A1, n, D] (any floating dtype) and lse [A0, A1, n] (the pieces' lse
// dtype) written with the merge of the pieces that cover each row (rows none covers: 0 and
// -inf), computed in the lse dtype and out rounded once. On CUDA one pass per run of rows with
// the same covering pieces (cuda/row_accumulate.h).
void merge_pieces_into_(const at::Tensor& out, const at::Tensor& lse,
                        const std::vector<OutputPiece>& pieces);

}  // namespace ra
