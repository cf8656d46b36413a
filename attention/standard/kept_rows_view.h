// A head group's kept rows of a [B, S, H, D] tensor as a strided view, the layout the fused
// attention kernels read without a copy: one group's rows as [n, h, L, D], or a stack of
// all-mode one-head groups (plan_kept_rows.h's GroupStack) as one [n, count, L, D] view.
#pragma once

#include <ATen/ATen.h>

#include "attention/standard/cuda/kept_rows.h"

namespace ra {

// The rows of g (its n range) of t [B, S, H, D] (viewable as [B * S / w', w', H, D]):
// [n, h, L, D], no copy.
at::Tensor kept_rows_view(const at::Tensor& t, const cuda::KeptRows& g);

// The rows of `count` stacked groups (first, then the next offsets and heads, stacked_group) of
// a contiguous t [B, S, H, D]: [n, count, L, D] with head stride (H + 1) * D, no copy.
at::Tensor stacked_rows_view(const at::Tensor& t, const cuda::KeptRows& first, int count);

}  // namespace ra
