// The checks that decide whether the row kernels apply, and their launch on the current stream.
#include "attention/standard/row_accumulate_cuda.h"

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <vector>

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

// [2, B, h, n, D] stacked K/V gradients as the kernels' [2 B, h, n, D] rows, where the first two
// dims merge into one without a copy; 4-D tensors as they are; else undefined.
at::Tensor as_rows(const at::Tensor& t) {
  if (t.dim() == 4) return t;
  if (t.dim() == 5 && (t.size(0) == 1 || t.stride(0) == t.size(1) * t.stride(1))) {
    return t.flatten(0, 1);  // a view: the condition above
  }
  return at::Tensor();
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
  cuda::launch_merge_block(row_tensor(acc_out), row_tensor(acc_lse4), row_tensor(out), *kind,
                           row_tensor(lse4), row_shape(acc_out),
                           at::cuda::getCurrentCUDAStream(acc_out.device().index()));
  return true;
}

bool try_merge_rows_cuda(const at::Tensor& out, const at::Tensor& lse,
                         const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& lses) {
  if (outs.empty() || outs.size() != lses.size() ||
      outs.size() > size_t(cuda::kRowMergeMaxSources) || !kernel_head_dim(out)) {
    return false;
  }
  const std::optional<cuda::ScalarKind> dst_kind = block_kind(out), src_kind = block_kind(outs[0]);
  if (!dst_kind || !src_kind ||
      (*dst_kind != cuda::ScalarKind::kFloat && out.scalar_type() != outs[0].scalar_type())) {
    return false;
  }
  auto lse_rows = [&](const at::Tensor& l) {
    return l.is_cuda() && l.scalar_type() == at::kFloat && l.dim() == 3 &&
           l.device() == out.device() && l.sizes() == out.sizes().slice(0, 3);
  };
  if (!lse_rows(lse)) return false;
  std::vector<cuda::RowTensor> out_views, lse_views;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!same_rows(out, outs[i]) || outs[i].scalar_type() != outs[0].scalar_type() ||
        !vector_rows(outs[i]) || !lse_rows(lses[i])) {
      return false;
    }
    out_views.push_back(row_tensor(outs[i]));
    lse_views.push_back(row_tensor(lses[i].unsqueeze(-1)));
  }
  cuda::launch_merge_rows(row_tensor(out), *dst_kind, row_tensor(lse.unsqueeze(-1)),
                          out_views.data(), lse_views.data(), int(outs.size()), *src_kind,
                          row_shape(out), at::cuda::getCurrentCUDAStream(out.device().index()));
  return true;
}

bool try_sum_rows_cuda(const at::Tensor& dst_in, const std::vector<at::Tensor>& srcs,
                       bool accumulate) {
  const at::Tensor dst = as_rows(dst_in);
  if (srcs.empty() || !dst.defined() || !kernel_head_dim(dst)) return false;
  const std::optional<cuda::ScalarKind> dst_kind = block_kind(dst);
  if (!dst_kind) return false;
  // A rounded dst is written once: it is fp32, or of the sources' dtype and not accumulated
  // (nor summed over several launches).
  const bool rounded = *dst_kind != cuda::ScalarKind::kFloat;
  if (rounded && (accumulate || dst.scalar_type() != srcs[0].scalar_type() ||
                  srcs.size() > size_t(cuda::kRowSumMaxSources))) {
    return false;
  }
  std::vector<cuda::RowTensor> views;
  std::optional<cuda::ScalarKind> kind;
  for (const at::Tensor& src_in : srcs) {
    const at::Tensor src = as_rows(src_in);
    if (!src.defined() || src_in.sizes() != dst_in.sizes() || !same_rows(dst, src) ||
        src.scalar_type() != srcs[0].scalar_type()) {
      return false;
    }
    kind = block_kind(src);
    if (!kind) return false;
    views.push_back(row_tensor(src));
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(dst.device().index());
  for (size_t first = 0; first < views.size(); first += cuda::kRowSumMaxSources) {
    const int count = int(std::min<size_t>(cuda::kRowSumMaxSources, views.size() - first));
    cuda::launch_sum_rows(row_tensor(dst), *dst_kind, views.data() + first, count, *kind,
                          accumulate || first > 0, row_shape(dst), stream);
  }
  return true;
}

}  // namespace ra
