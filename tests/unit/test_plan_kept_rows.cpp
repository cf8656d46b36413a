// plan_groups: every head group of a dilation plan as the kernels' KeptRows (geometry, heads as
// start/step/count, kept rows per segment), in plan order, for both head modes.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ra
