// Builds the kernels' KeptRows for every head group of a dilation plan, and the stacks of them
// that run as one call (plan_kept_rows.h).
#include "attention/standard/plan_kept_rows.h"

namespace ra {

std::vector<GroupRows> plan_groups(const DilationPlan& plan, int64_t B, int64_t S, int64_t H,
                                   bool partition) {
  std::vector<GroupRows> groups;
  for (const BranchPlan& branch : plan.branches) {
    for (size_t gi = 0; gi < branch.groups.size(); ++gi) {
      const HeadGroup& group = branch.groups[gi];
      cuda::KeptRows r;
      r.batch = int32_t(B);
      r.seq_len = int32_t(S);
      r.num_heads = int32_t(H);
      r.segment = int32_t(branch.segment);
      r.rate = int32_t(branch.rate);
      r.offset = int32_t(group.offset);
      r.head_start = int32_t(group.heads.front());
      r.head_step = partition ? 1 : int32_t(branch.rate);
      r.head_count = int32_t(group.heads.size());
      r.kept = int32_t(branch.kept_per_segment(group.offset));
      groups.push_back({branch.index, int(gi), r});
    }
  }
  return groups;
}

std::vector<GroupStack> group_stacks(const std::vector<GroupRows>& groups, bool stack) {
  std::vector<GroupStack> stacks;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const GroupRows& g = groups[gi];
    if (stack && !stacks.empty()) {
      const GroupRows& last = groups[gi - 1];
      const bool joins =
          stacks.back().first + stacks.back().count == gi && g.branch == last.branch &&
          g.writes == last.writes && g.rows.head_count == 1 && last.rows.head_count == 1 &&
          g.rows.offset == last.rows.offset + 1 && g.rows.head_start == last.rows.head_start + 1 &&
          g.rows.kept == last.rows.kept && g.rows.kept >= 2;  // one-row groups run on flash
      if (joins) {
        ++stacks.back().count;
        continue;
      }
    }
    stacks.push_back({gi, 1});
  }
  return stacks;
}

cuda::KeptRows stacked_group(cuda::KeptRows first, int j) {
  first.offset += j;
  first.head_start += j;
  return first;
}

}  // namespace ra
