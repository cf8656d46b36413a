// Torch side of the kernel boundary of attention/standard/cuda: the element kind the raw-pointer
// kernels take for a tensor dtype (half, bfloat16 or float; none for anything else), and a
// tensor's first three strides as the kernels' RowTensor.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>

#include "attention/standard/cuda/kept_rows.h"

namespace ra {

inline std::optional<cuda::ScalarKind> kernel_scalar_kind(at::ScalarType type) {
  switch (type) {
    case at::kHalf:
      return cuda::ScalarKind::kHalf;
    case at::kBFloat16:
      return cuda::ScalarKind::kBFloat16;
    case at::kFloat:
      return cuda::ScalarKind::kFloat;
    default:
      return std::nullopt;
  }
}

// t: [N, h, L, D], [N, h, L] or [N, h, L, 1] (any three leading dims; D contiguous).
inline cuda::RowTensor row_tensor(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace ra
