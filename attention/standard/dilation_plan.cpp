// Builds the per-branch head groups for both head modes.
#include "attention/standard/dilation_plan.h"

#include <algorithm>
#include <utility>

namespace ra {

DilationPlan DilationPlan::build(const DilatedAttentionConfig& config, int64_t seq_len,
                                 int64_t num_heads) {
  DilationPlan plan;
  const int num_branches = static_cast<int>(config.segment_lengths.size());
  for (int i = 0; i < num_branches; ++i) {
    BranchPlan branch;
    branch.index = i;
    branch.segment = std::min(config.segment_lengths[i], seq_len);
    branch.rate = config.dilation_rates[i];
    branch.num_segments = seq_len / branch.segment;
    if (config.head_mode == HeadMode::kAll) {
      // Paper semantics: head h keeps offset h mod r.
      for (int64_t offset = 0; offset < std::min<int64_t>(branch.rate, num_heads); ++offset) {
        HeadGroup group{offset, {}};
        for (int64_t h = offset; h < num_heads; h += branch.rate) group.heads.push_back(h);
        branch.groups.push_back(std::move(group));
      }
    } else {
      // Partition: G groups of H / G heads, the first H mod G groups one more; group i uses
      // only branch i with offset i mod r_i.
      const int64_t base = num_heads / num_branches, extra = num_heads % num_branches;
      const int64_t first = i * base + std::min<int64_t>(i, extra);
      const int64_t count = base + (i < extra ? 1 : 0);
      HeadGroup group{i % branch.rate, {}};
      for (int64_t h = first; h < first + count; ++h) group.heads.push_back(h);
      if (!group.heads.empty()) branch.groups.push_back(std::move(group));
    }
    plan.branches.push_back(std::move(branch));
  }
  plan.output_scale = config.head_mode == HeadMode::kAll ? 1.0 : 1.0 / num_branches;
  return plan;
}

double DilationPlan::forward_flops(int64_t batch, int64_t seq_len, int64_t head_dim,
                                   bool causal) const {
  double flops = 0;
  for (const auto& b : branches) {
    int64_t heads = 0;
    for (const auto& g : b.groups) heads += static_cast<int64_t>(g.heads.size());
    flops += 4.0 * batch * heads * head_dim * seq_len * static_cast<double>(b.segment) /
             (static_cast<double>(b.rate) * b.rate);
  }
  return causal ? flops / 2 : flops;
}

std::vector<GroupRef> DilationPlan::head_cover(int64_t num_heads) const {
  // Candidates: all groups together (the partition mode's cover) and each branch alone (all
  // mode: offsets h mod r give every head one group of the branch).
  std::vector<std::vector<GroupRef>> candidates(1);
  for (const BranchPlan& b : branches) {
    std::vector<GroupRef> own;
    for (int g = 0; g < static_cast<int>(b.groups.size()); ++g) own.push_back({b.index, g});
    candidates[0].insert(candidates[0].end(), own.begin(), own.end());
    candidates.push_back(std::move(own));
  }
  std::vector<GroupRef> best;
  double best_rows = -1;
  for (const auto& refs : candidates) {
    std::vector<int> seen(static_cast<size_t>(std::max<int64_t>(num_heads, 0)), 0);
    bool cover = num_heads > 0;
    double rows = 0;  // kept (token, head) pairs per token: what the copies write
    for (const GroupRef& ref : refs) {
      const BranchPlan& b = branches[ref.branch];
      const HeadGroup& g = b.groups[ref.group];
      for (int64_t h : g.heads) cover = cover && h >= 0 && h < num_heads && ++seen[h] == 1;
      rows += static_cast<double>(g.heads.size()) * b.kept_per_segment(g.offset) / b.segment;
    }
    for (int count : seen) cover = cover && count == 1;
    if (cover && rows > best_rows) best = refs, best_rows = rows;
  }
  return best;
}

}  // namespace ra
