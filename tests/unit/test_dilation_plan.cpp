// DilationPlan: head groups, offsets and kept counts for both head modes; the FLOP count; the
// head cover whose gradients the fused backward writes instead of adding.
#include <gtest/gtest.h>

#include <algorithm>

#include "attention/standard/dilation_plan.h"

namespace ra {
namespace {

DilatedAttentionConfig config_of(std::vector<int64_t> w, std::vector<int64_t> r, HeadMode m) {
  DilatedAttentionConfig c;
  c.segment_lengths = std::move(w);
  c.dilation_rates = std::move(r);
  c.head_mode = m;
  return c;
}

TEST(DilationPlan, AllModeGroupsHeadsByOffset) {
  auto plan = DilationPlan::build(config_of({8, 16, 64}, {1, 3, 2}, HeadMode::kAll), 32, 5);
  ASSERT_EQ(plan.branches.size(), 3u);
  EXPECT_EQ(plan.output_scale, 1.0);
  const auto& b1 = plan.branches[1];
  EXPECT_EQ(b1.segment, 16);
  EXPECT_EQ(b1.num_segments, 2);
  ASSERT_EQ(b1.groups.size(), 3u);
  EXPECT_EQ(b1.groups[0].heads, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(b1.groups[1].heads, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(b1.groups[2].heads, (std::vector<int64_t>{2}));
  // ceil((16 - o) / 3): 6, 5, 5
  EXPECT_EQ(b1.kept_per_segment(0), 6);
  EXPECT_EQ(b1.kept_per_segment(1), 5);
  EXPECT_EQ(b1.kept_per_segment(2), 5);
  EXPECT_EQ(plan.branches[2].segment, 32);  // clipped
  EXPECT_EQ(plan.branches[0].kept_per_segment(8), 0);
}

TEST(DilationPlan, PartitionModeSplitsHeadsExtraFirst) {
  auto plan = DilationPlan::build(config_of({8, 16, 32}, {1, 2, 4}, HeadMode::kPartition), 32, 7);
  EXPECT_DOUBLE_EQ(plan.output_scale, 1.0 / 3);
  // 7 heads, 3 groups: sizes 3, 2, 2; group i uses offset i mod r_i.
  EXPECT_EQ(plan.branches[0].groups[0].heads, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(plan.branches[1].groups[0].heads, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(plan.branches[1].groups[0].offset, 1);
  EXPECT_EQ(plan.branches[2].groups[0].heads, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(plan.branches[2].groups[0].offset, 2);
}

TEST(DilationPlan, PartitionWithFewerHeadsThanBranchesLeavesBranchesEmpty) {
  auto plan = DilationPlan::build(config_of({8, 16, 32}, {1, 2, 4}, HeadMode::kPartition), 32, 2);
  EXPECT_EQ(plan.branches[2].groups.size(), 0u);
}

// The heads of a cover, in order of appearance, and whether each appears once.
std::vector<int64_t> cover_heads(const DilationPlan& plan, const std::vector<GroupRef>& cover) {
  std::vector<int64_t> heads;
  for (const GroupRef& ref : cover) {
    const auto& g = plan.branches[ref.branch].groups[ref.group].heads;
    heads.insert(heads.end(), g.begin(), g.end());
  }
  std::sort(heads.begin(), heads.end());
  return heads;
}

TEST(DilationPlan, PartitionHeadCoverIsEveryGroup) {
  // 7 heads, 3 branches (3, 2, 2 heads), rates leaving gaps in branches 1 and 2.
  auto plan = DilationPlan::build(config_of({8, 16, 32}, {1, 2, 4}, HeadMode::kPartition), 32, 7);
  const auto cover = plan.head_cover(7);
  ASSERT_EQ(cover.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cover[i].branch, i);
  EXPECT_EQ(cover_heads(plan, cover), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  // Fewer heads than branches: the empty branch is simply not in the cover.
  auto few = DilationPlan::build(config_of({8, 16, 32}, {1, 2, 4}, HeadMode::kPartition), 32, 2);
  EXPECT_EQ(cover_heads(few, few.head_cover(2)), (std::vector<int64_t>{0, 1}));
}

TEST(DilationPlan, AllModeHeadCoverIsTheBranchKeepingMostRows) {
  // Every branch's groups hold each head once; rate 2 keeps the most rows.
  auto plan = DilationPlan::build(config_of({8, 16, 32}, {4, 2, 3}, HeadMode::kAll), 32, 5);
  const auto cover = plan.head_cover(5);
  ASSERT_EQ(cover.size(), 2u);  // offsets 0 and 1
  for (const GroupRef& ref : cover) EXPECT_EQ(ref.branch, 1);
  EXPECT_EQ(cover_heads(plan, cover), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // A rate-1 branch is one group of every head.
  auto dense = DilationPlan::build(config_of({8, 16}, {2, 1}, HeadMode::kAll), 32, 5);
  ASSERT_EQ(dense.head_cover(5).size(), 1u);
  EXPECT_EQ(dense.head_cover(5)[0].branch, 1);
  // Rate above the head count: offsets 0 .. H-1, one head each.
  auto sparse = DilationPlan::build(config_of({16}, {8}, HeadMode::kAll), 32, 3);
  EXPECT_EQ(cover_heads(sparse, sparse.head_cover(3)), (std::vector<int64_t>{0, 1, 2}));
}

TEST(DilationPlan, NoHeadCoverWhenHeadsAreMissing) {
  auto plan = DilationPlan::build(config_of({8, 16}, {1, 2}, HeadMode::kPartition), 32, 4);
  EXPECT_TRUE(plan.head_cover(5).empty());  // head 4 is in no group
  EXPECT_TRUE(plan.head_cover(0).empty());
}

TEST(DilationPlan, FlopsFollowDesignFormula) {
  // LongNet base: B=1 H=12 D=64 S=64K.
  auto c = config_of({2048, 4096, 8192, 16384, 32768}, {1, 2, 4, 6, 12}, HeadMode::kAll);
  const int64_t S = 65536;
  auto plan = DilationPlan::build(c, S, 12);
  double want = 0;
  for (size_t i = 0; i < 5; ++i) {
    want += 4.0 * 12 * 64 * S * double(c.segment_lengths[i]) /
            double(c.dilation_rates[i] * c.dilation_rates[i]);
  }
  EXPECT_DOUBLE_EQ(plan.forward_flops(1, S, 64, false), want);
  EXPECT_DOUBLE_EQ(plan.forward_flops(1, S, 64, true), want / 2);
  // Partition: each branch counts only its group's heads (12 / 5 -> 3,3,2,2,2).
  c.head_mode = HeadMode::kPartition;
  auto part = DilationPlan::build(c, S, 12);
  double want_part = 0;
  const int heads[] = {3, 3, 2, 2, 2};
  for (size_t i = 0; i < 5; ++i) {
    want_part += 4.0 * heads[i] * 64 * S * double(c.segment_lengths[i]) /
                 double(c.dilation_rates[i] * c.dilation_rates[i]);
  }
  EXPECT_DOUBLE_EQ(part.forward_flops(1, S, 64, false), want_part);
}

}  // namespace
}  // namespace ra
