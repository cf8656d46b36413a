// DilationPlan: head groups, offsets and kept counts for both head modes; the FLOP count.
#include <gtest/gtest.h>

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
