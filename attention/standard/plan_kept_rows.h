// The head groups of a dilation plan as the CUDA kernels see them: one cuda::KeptRows per group
// of every branch, in plan order (branch by branch), for B sequences of S tokens and H heads.
// Shared by the fused path (fused_dilated_attention.cpp) and bench/kept_row_write_bench.cpp.
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

}  // namespace ra
