// accumulate_, sum_into_: the row kernel where it applies, else ATen.
#include "attention/standard/accumulate.h"

#include <ATen/ATen.h>

#include "runtime/error.h"

#ifdef RA_HAS_FUSED_ATTENTION
#include "attention/standard/row_accumulate_cuda.h"
#endif

namespace ra {

void accumulate_(const at::Tensor& dst, const at::Tensor& src) {
#ifdef RA_HAS_FUSED_ATTENTION
  if (try_sum_rows_cuda(dst, {src}, /*accumulate=*/true)) return;
#endif
  dst.add_(src);
}

void sum_into_(const at::Tensor& dst, const std::vector<at::Tensor>& srcs) {
  RA_CHECK(!srcs.empty(), "sum_into_: no sources");
#ifdef RA_HAS_FUSED_ATTENTION
  if (try_sum_rows_cuda(dst, srcs, /*accumulate=*/false)) return;
#endif
  dst.copy_(srcs[0]);
  for (size_t i = 1; i < srcs.size(); ++i) dst.add_(srcs[i]);
}

}  // namespace ra
