// accumulate_: the row kernel where it applies, else ATen.
#include "attention/standard/accumulate.h"

#include <ATen/ATen.h>

#ifdef RA_HAS_FUSED_ATTENTION
#include "attention/standard/row_accumulate_cuda.h"
#endif

namespace ra {

void accumulate_(const at::Tensor& dst, const at::Tensor& src) {
#ifdef RA_HAS_FUSED_ATTENTION
  if (try_accumulate_cuda(dst, src)) return;
#endif
  dst.add_(src);
}

}  // namespace ra
