// The checks that decide whether the row kernels apply, and their launch on the current stream.
#include "attention/standard/row_accumulate_cuda.h"

#include <ATen/cuda/CUDAContext.h>

#include "attention/standard/cuda/row_accumulate.h"
#include "attention/standard/kernel_scalar_kind.h"

namespace ra {
namespace {

// A 4-D CUDA row tensor the kernels can read with 16-byte vector loads: dense last dim, row
// starts on 16-byte boundaries.
bool vector_rows(const at::Tensor& t) {
  constexpr int64_t align = 16;
  if (!t.is_cuda() || t.dim() != 4 || t.stride(3) != 1) return false;
  const int64_t bytes = t.element_size();
  if (reinterpret_cast<uintptr_t>(t.data_ptr()) % align != 0) return false;
  for (int d = 0; d < 3; ++d) {
    if (t.size(d) > 1 && (t.stride(d) * bytes) % align != 0) return false;
  }
  return true;
}

bool same_rows(const at::Tensor& a, const at::Tensor& b) {
  return a.device() == b.device() && a.sizes() == b.sizes();
}

cuda::RowView row_view(const at::Tensor& t) {  // [A0, A1, A2, *]
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

cuda::RowShape row_shape(const at::Tensor& t) {
  return {t.size(0), t.size(1), t.size(2), int(t.size(3))};
}

bool kernel_head_dim(const at::Tensor& t) {
  return t.size(3) > 0 && t.size(3) % 8 == 0 && t.size(3) <= cuda::kRowAccumulateMaxDim;
}

bool fp32_rows(const at::Tensor& t) { return t.scalar_type() == at::kFloat && vector_rows(t); }

std::optional<cuda::ScalarKind> block_kind(const at::Tensor& t) {
  if (!vector_rows(t)) return std::nullopt;
  return kernel_scalar_kind(t.scalar_type());
}

}  // namespace

bool try_merge_block_cuda(const at::Tensor& acc_out, const at::Tensor& acc_lse,
                          const at::Tensor& out, const at::Tensor& lse) {
  if (!fp32_rows(acc_out) || !kernel_head_dim(acc_out) || !same_rows(acc_out, out)) return false;
  const std::optional<cuda::ScalarKind> kind = block_kind(out);
  if (!kind) return false;
  for (const at::Tensor* l : {&acc_lse, &lse}) {
    if (!l->is_cuda() || l->scalar_type() != at::kFloat || l->dim() != 3 ||
        l->device() != acc_out.device() || l->sizes() != acc_out.sizes().slice(0, 3)) {
      return false;
    }
  }
  const at::Tensor acc_lse4 = acc_lse.unsqueeze(-1), lse4 = lse.unsqueeze(-1);
  cuda::launch_merge_block(row_view(acc_out), row_view(acc_lse4), row_view(out), *kind,
                           row_view(lse4), row_shape(acc_out),
                           at::cuda::getCurrentCUDAStream(acc_out.device().index()));
  return true;
}

bool try_accumulate_cuda(const at::Tensor& dst, const at::Tensor& src) {
  if (!fp32_rows(dst) || !kernel_head_dim(dst) || !same_rows(dst, src)) return false;
  const std::optional<cuda::ScalarKind> kind = block_kind(src);
  if (!kind) return false;
  cuda::launch_accumulate_rows(row_view(dst), row_view(src), *kind, row_shape(dst),
                               at::cuda::getCurrentCUDAStream(dst.device().index()));
  return true;
}

}  // namespace ra
