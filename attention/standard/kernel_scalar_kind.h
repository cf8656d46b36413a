// The element kind the raw-pointer kernels of attention/standard/cuda take for a tensor dtype
// (Torch side of the kernel boundary): half, bfloat16 or float; none for anything else.
#pragma once

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

}  // namespace ra
