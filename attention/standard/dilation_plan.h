// The geometry of dilated attention for one (config, S, H): which heads see which kept
// positions of which branch. Every implementation (reference, CUDA fast path, ring) walks
// the same plan, so the head/offset rules of DESIGN.md live in exactly one place.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/config.h"

namespace ra {

// Heads that keep the same positions of a branch: offset, offset + rate, ... in each segment.
struct HeadGroup {
  int64_t offset = 0;
  std::vector<int64_t> heads;  // ascending query-head indices
};

struct BranchPlan {
  int index = 0;             // position in the config's lists
  int64_t segment = 0;       // w' = min(w, S)
  int64_t rate = 1;          // r
  int64_t num_segments = 0;  // S / w'
  std::vector<HeadGroup> groups;

  // ceil((w' - offset) / r): kept positions per segment for a head group (0 if offset >= w').
  int64_t kept_per_segment(int64_t offset) const {
    return offset >= segment ? 0 : (segment - offset + rate - 1) / rate;
  }
};

// One head group of a plan: plan.branches[branch].groups[group].
struct GroupRef {
  int branch = 0, group = 0;
};

struct DilationPlan {
  std::vector<BranchPlan> branches;
  double output_scale = 1.0;  // 1 for head_mode=all, 1/G for head_mode=partition

  // The config must be valid and seq_len a multiple of every clipped segment.
  static DilationPlan build(const DilatedAttentionConfig& config, int64_t seq_len,
                            int64_t num_heads);

  // DESIGN.md's count: sum_i 4 * B * H_i * D * S * w'_i / r_i^2, halved when causal, where H_i
  // is H (all) or the branch's group size (partition). Backward is counted as 2.5x forward.
  double forward_flops(int64_t batch, int64_t seq_len, int64_t head_dim, bool causal) const;

  // Head groups that hold every head of [0, num_heads) exactly once, so each (token, head) is
  // kept by at most one of them: the fused backward writes their gradients (zeros where they
  // keep nothing) instead of zero-filling and adding. Partition mode: every group; all mode:
  // one branch's groups, the one keeping the most rows. Empty if no such set exists.
  std::vector<GroupRef> head_cover(int64_t num_heads) const;
};

}  // namespace ra
