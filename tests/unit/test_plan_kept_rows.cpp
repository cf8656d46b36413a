// plan_groups: every head group of a dilation plan as the kernels' KeptRows (geometry, heads as
// start/step/count, kept rows per segment), in plan order, for both head modes; group_stacks:
// which consecutive groups run as one call.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "attention/standard/plan_kept_rows.h"

namespace ra {
namespace {

DilationPlan plan_of(std::vector<int64_t> w, std::vector<int64_t> r, HeadMode mode, int64_t S,
                     int64_t H) {
  DilatedAttentionConfig c;
  c.segment_lengths = std::move(w);
  c.dilation_rates = std::move(r);
  c.head_mode = mode;
  return DilationPlan::build(c, S, H);
}

// The fields that name a group's rows: {branch, group, segment, rate, offset, head_start,
// head_step, head_count, kept}.
std::vector<int64_t> fields(const GroupRows& g) {
  const cuda::KeptRows& r = g.rows;
  return {g.branch,     g.group,     r.segment,    r.rate, r.offset,
          r.head_start, r.head_step, r.head_count, r.kept};
}

TEST(PlanKeptRows, AllModeHeadsStepByTheRate) {
  // 5 heads; branch 1 (w 16, r 3) has offsets 0, 1, 2 over heads {0, 3}, {1, 4}, {2}; branch 2
  // (w 64 clipped to 32, r 2) offsets 0, 1 over heads {0, 2, 4}, {1, 3}.
  const DilationPlan plan = plan_of({8, 16, 64}, {1, 3, 2}, HeadMode::kAll, 32, 5);
  const std::vector<GroupRows> groups = plan_groups(plan, 2, 32, 5, /*partition=*/false);
  ASSERT_EQ(groups.size(), 6u);
  EXPECT_EQ(fields(groups[0]), (std::vector<int64_t>{0, 0, 8, 1, 0, 0, 1, 5, 8}));
  EXPECT_EQ(fields(groups[1]), (std::vector<int64_t>{1, 0, 16, 3, 0, 0, 3, 2, 6}));
  EXPECT_EQ(fields(groups[2]), (std::vector<int64_t>{1, 1, 16, 3, 1, 1, 3, 2, 5}));
  EXPECT_EQ(fields(groups[3]), (std::vector<int64_t>{1, 2, 16, 3, 2, 2, 3, 1, 5}));
  EXPECT_EQ(fields(groups[4]), (std::vector<int64_t>{2, 0, 32, 2, 0, 0, 2, 3, 16}));
  EXPECT_EQ(fields(groups[5]), (std::vector<int64_t>{2, 1, 32, 2, 1, 1, 2, 2, 16}));
  for (const GroupRows& g : groups) {
    EXPECT_EQ(g.rows.batch, 2);
    EXPECT_EQ(g.rows.seq_len, 32);
    EXPECT_EQ(g.rows.num_heads, 5);
    EXPECT_EQ(g.rows.n_begin, 0);
    EXPECT_EQ(g.rows.size_n(), 2 * 32 / g.rows.segment);  // every segment of both sequences
    EXPECT_FALSE(g.writes);
  }
  EXPECT_EQ(groups[1].rows.num_rows(), 4 * 2 * 6);  // N = 2 * 32 / 16 segments, 2 heads, 6 rows
}

TEST(PlanKeptRows, PartitionModeHeadsAreConsecutive) {
  // 7 heads split 3, 2, 2; group i of branch i uses offset i mod r_i.
  const DilationPlan plan = plan_of({8, 16, 32}, {1, 2, 4}, HeadMode::kPartition, 32, 7);
  const std::vector<GroupRows> groups = plan_groups(plan, 1, 32, 7, /*partition=*/true);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(fields(groups[0]), (std::vector<int64_t>{0, 0, 8, 1, 0, 0, 1, 3, 8}));
  EXPECT_EQ(fields(groups[1]), (std::vector<int64_t>{1, 0, 16, 2, 1, 3, 1, 2, 8}));
  EXPECT_EQ(fields(groups[2]), (std::vector<int64_t>{2, 0, 32, 4, 2, 5, 1, 2, 8}));
}

// The (first, count) of every stack.
std::vector<std::pair<size_t, int>> stack_list(const std::vector<GroupRows>& groups, bool stack) {
  std::vector<std::pair<size_t, int>> list;
  for (const GroupStack& s : group_stacks(groups, stack)) list.emplace_back(s.first, s.count);
  return list;
}

TEST(PlanKeptRows, StacksJoinOneHeadGroupsOfABranchWithEqualRows) {
  // 5 heads, S = 160. Branch 0 (rate 1): one 5-head group. Branch 1 (w 16, r 3): heads {0, 3},
  // {1, 4}, {2}: no stack of one-head groups. Branch 2 (w 32, r 8): offsets 0-4, one head and 4
  // rows each: one stack. Branch 3 (w 20, r 6): 4, 4, 3, 3, 3 rows: two stacks. Branch 4 (w 4,
  // r 6): one row or none per segment (those run on flash or not at all): alone.
  const DilationPlan plan = plan_of({8, 16, 32, 20, 4}, {1, 3, 8, 6, 6}, HeadMode::kAll, 160, 5);
  std::vector<GroupRows> groups = plan_groups(plan, 2, 160, 5, /*partition=*/false);
  ASSERT_EQ(groups.size(), 19u);
  using List = std::vector<std::pair<size_t, int>>;
  EXPECT_EQ(stack_list(groups, true), (List{{0, 1},
                                            {1, 1},
                                            {2, 1},
                                            {3, 1},
                                            {4, 5},
                                            {9, 2},
                                            {11, 3},
                                            {14, 1},
                                            {15, 1},
                                            {16, 1},
                                            {17, 1},
                                            {18, 1}}));
  // Off: every group alone.
  const List singles = stack_list(groups, false);
  ASSERT_EQ(singles.size(), groups.size());
  for (size_t i = 0; i < singles.size(); ++i) EXPECT_EQ(singles[i], std::make_pair(i, 1));
  // A group that writes (the head cover) never shares a call with one that adds.
  groups[6].writes = true;
  const List split = stack_list(groups, true);
  EXPECT_EQ(List(split.begin() + 4, split.begin() + 7), (List{{4, 2}, {6, 1}, {7, 2}}));
  // Partition mode: one group per branch, nothing to stack.
  const DilationPlan partition = plan_of({8, 16, 32}, {1, 2, 4}, HeadMode::kPartition, 32, 3);
  EXPECT_EQ(stack_list(plan_groups(partition, 1, 32, 3, /*partition=*/true), true),
            (List{{0, 1}, {1, 1}, {2, 1}}));
  // stacked_group: the next offsets and heads, the same rows otherwise.
  const cuda::KeptRows third = stacked_group(groups[4].rows, 2);
  EXPECT_EQ(third.offset, 2);
  EXPECT_EQ(third.head_start, 2);
  EXPECT_EQ(fields({2, 2, third}), fields(groups[6]));
}

}  // namespace
}  // namespace ra
