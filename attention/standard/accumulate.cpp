// accumulate_, sum_into_, sum_pieces_into_: the row kernel where it applies, else ATen.
#include "attention/standard/accumulate.h"

#include <ATen/ATen.h>

#include "attention/standard/block_attention.h"
#include "attention/standard/row_runs.h"
#include "runtime/error.h"

#ifdef RA_HAS_FUSED_ATTENTION
#include "attention/standard/row_accumulate_cuda.h"
#endif

namespace ra {

void accumulate_(const at::Tensor& dst, const at::Tensor& src) { sum_into_(dst, {src}, true); }

void sum_into_(const at::Tensor& dst, const std::vector<at::Tensor>& srcs, bool accumulate) {
  RA_CHECK(!srcs.empty(), "sum_into_: no sources");
  const auto compute = block_compute_dtype(dst.scalar_type());
  RA_CHECK(!accumulate || dst.scalar_type() == compute, "sum_into_: a ", dst.scalar_type(),
           " destination is written, not accumulated into (it would be rounded twice)");
#ifdef RA_HAS_FUSED_ATTENTION
  if (try_sum_rows_cuda(dst, srcs, accumulate)) return;
#endif
  if (dst.scalar_type() != compute) {  // summed in the compute dtype, rounded once
    at::Tensor sum = at::empty(dst.sizes(), dst.options().dtype(compute));
    sum_into_(sum, srcs);
    dst.copy_(sum);
    return;
  }
  size_t first = 0;
  if (!accumulate) dst.copy_(srcs[first++]);
  for (size_t i = first; i < srcs.size(); ++i) dst.add_(srcs[i]);
}

void sum_pieces_into_(const at::Tensor& dst, const std::vector<RowPiece>& pieces, bool accumulate) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const RowPiece& p : pieces) ranges.emplace_back(p.start, p.rows.size(2));
  for (const RowRun& run : row_runs(dst.size(2), ranges)) {
    const at::Tensor target = dst.narrow(2, run.begin, run.end - run.begin);
    if (run.cover.empty()) {
      if (!accumulate) target.zero_();
      continue;
    }
    std::vector<at::Tensor> srcs;
    for (size_t i : run.cover) {
      srcs.push_back(pieces[i].rows.narrow(2, run.begin - pieces[i].start, run.end - run.begin));
    }
    sum_into_(target, srcs, accumulate);
  }
}

}  // namespace ra
