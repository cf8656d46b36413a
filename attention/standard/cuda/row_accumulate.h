// Rows of attention blocks merged and summed, the glue between the block calls of the
// sequence-parallel path: an online log-sum-exp merge of a block's output into the running fp32
// output or all blocks' merged at once (forward), and blocks' gradients summed (backward). Each
// reads the blocks in their own dtype (the fused kernels' fp16/bf16), so no fp32 copy is made
// first.
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// The rows the kernels walk: RowTensors of [a0, a1, a2, head_dim] (any three leading dims, D
// contiguous); an lse [a0, a1, a2] is a RowTensor of the same strides.
struct RowShape {
  int64_t a0 = 0, a1 = 0, a2 = 0;
  int head_dim = 0;  // D: a multiple of 8, at most kRowAccumulateMaxDim
};
constexpr int kRowAccumulateMaxDim = 256;

// Per row: lse' = logaddexp(acc_lse, lse); acc_out += exp(lse - lse') (out - acc_out);
// acc_lse = lse'. Rows where both lse are -inf are left as they are. acc_out, acc_lse, lse:
// fp32; out: `out_kind`. Row starts 16-byte aligned.
void launch_merge_block(const RowTensor& acc_out, const RowTensor& acc_lse, const RowTensor& out,
                        ScalarKind out_kind, const RowTensor& lse, const RowShape& shape,
                        cudaStream_t stream);

// The merge of several blocks' rows at once, written once: per row lse = logsumexp_i lse_i and
// out = sum_i exp(lse_i - lse) out_i, in fp32, out rounded once to dst_kind (fp32 or src_kind);
// rows where every lse_i is -inf get out = 0, lse = -inf. outs: src_kind; lses, dst_lse: fp32
// (lse RowTensors of the out rows' shape); at most kRowMergeMaxSources. Alignment as above.
constexpr int kRowMergeMaxSources = 8;
void launch_merge_rows(const RowTensor& dst_out, ScalarKind dst_kind, const RowTensor& dst_lse,
                       const RowTensor* outs, const RowTensor* lses, int num_srcs,
                       ScalarKind src_kind, const RowShape& shape, cudaStream_t stream);

// dst = (accumulate ? dst : 0) + the sum of srcs[0..num_srcs) per element, in fp32, one pass,
// rounded once to dst_kind: fp32 or src_kind (then not accumulate: a rounded dst is written,
// never read). srcs `src_kind`, at most kRowSumMaxSources (launch again with accumulate, into an
// fp32 dst, for more). Alignment as above.
constexpr int kRowSumMaxSources = 8;
void launch_sum_rows(const RowTensor& dst, ScalarKind dst_kind, const RowTensor* srcs, int num_srcs,
                     ScalarKind src_kind, bool accumulate, const RowShape& shape,
                     cudaStream_t stream);

}  // namespace ra::cuda
