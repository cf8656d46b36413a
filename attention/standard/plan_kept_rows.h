// The head groups of a dilation plan as the CUDA kernels see them: one cuda::KeptRows per group
// of every branch, in plan order (branch by branch), for B sequences of S tokens and H heads; and
// which consecutive groups run as one fused-attention call (stacks). Shared by the fused path
// (fused_dilated_attention.cpp) and the kernel benches (bench/raw_kernel_timing.h).
#pragma once

#include <cstdint>
#include <vector>

#include "attention/standard/cuda/kept_rows.h"
#include "attention/standard/dilation_plan.h"

namespace ra {

// One branch head group of the plan, with its place in the branch list.
struct GroupRows {
  int branch = 0, group = 0;  // plan.branches[branch].groups[group]
  cuda::KeptRows rows;
  bool writes = false;  // in the plan's head cover: its gradients are written, not added
};

// partition: head_mode partition (a group's heads are consecutive; all mode: every rate-th head).
std::vector<GroupRows> plan_groups(const DilationPlan& plan, int64_t B, int64_t S, int64_t H,
                                   bool partition);

// Consecutive groups that run as one fused-attention call. All mode's one-head groups of a
// branch (rate >= H) with equal kept rows stack along the head dim: group o keeps head o at
// rows o + r * l of each segment, so in a contiguous [B, S, H, D] tensor groups o and o + 1 sit
// (H + 1) * D elements apart, one strided view for all (stacked_rows_view, kept_rows_view.h).
// LongNet-base's rate-12 branch runs as 2 calls instead of 12, wide's rate-16 branch as 1
// instead of 16: bigger calls, which cuDNN runs faster.
struct GroupStack {
  size_t first = 0;  // index of its first group
  int count = 1;
};

// The stacks of `groups` (plan_groups' order; each stack's groups all write or all add), every
// group alone unless `stack` (head mode all only: partition groups never qualify anyway).
std::vector<GroupStack> group_stacks(const std::vector<GroupRows>& groups, bool stack);

// Group j of a stack whose first group is `first` (same n range).
cuda::KeptRows stacked_group(cuda::KeptRows first, int j);

}  // namespace ra
