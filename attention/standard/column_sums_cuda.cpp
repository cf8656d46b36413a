// column_sums_cuda: per-block fp32 partial sums from the kernel, added up by ATen (a [blocks,
// cols] sum, ~1% of the bytes), rounded once to x's dtype.
#include "attention/standard/column_sums_cuda.h"

#include <ATen/cuda/CUDAContext.h>

#include "attention/standard/cuda/column_sums.h"
#include "attention/standard/kernel_scalar_kind.h"
#include "runtime/error.h"

namespace ra {

bool column_sums_kernel_applies(const at::Tensor& x) {
  return x.is_cuda() && x.dim() == 2 && x.is_contiguous() &&
         (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf) && x.size(1) > 0 &&
         x.size(1) % 8 == 0 && x.size(1) <= cuda::kColumnSumsMaxCols &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
}

at::Tensor column_sums_cuda(const at::Tensor& x) {
  RA_CHECK(column_sums_kernel_applies(x), "column_sums_cuda: x must be a contiguous 2-D fp16/bf16 ",
           "CUDA tensor with a multiple of 8 columns up to ", cuda::kColumnSumsMaxCols, ", got ",
           x.sizes(), " ", x.scalar_type(), " on ", x.device());
  const int64_t rows = x.size(0);
  const int cols = int(x.size(1));
  if (rows == 0) return at::zeros({cols}, x.options());
  const int blocks = cuda::column_sums_blocks(rows, cols, int(x.device().index()));
  at::Tensor partial = at::empty({blocks, cols}, x.options().dtype(at::kFloat));
  cuda::launch_column_sums(x.data_ptr(), rows, cols, *kernel_scalar_kind(x.scalar_type()),
                           partial.data_ptr<float>(), blocks,
                           at::cuda::getCurrentCUDAStream(x.device().index()));
  return partial.sum(0).to(x.scalar_type());
}

}  // namespace ra
