// kept_rows_view and stacked_rows_view: a group's kept rows of a [B, S, H, D] tensor as strided
// views, checked element by element against the math (DESIGN.md: head h keeps offset h mod r of
// every segment), and a stack of one-head groups against the groups' own views.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "attention/standard/kept_rows_view.h"
#include "attention/standard/plan_kept_rows.h"

namespace ra {
namespace {

std::vector<GroupRows> all_mode_groups(int64_t B, int64_t S, int64_t H) {
  DilatedAttentionConfig c;
  c.segment_lengths = {32, 20};
  c.dilation_rates = {8, 6};  // 5 heads: one head per group; 4 rows each, then 4, 4, 3, 3, 3
  return plan_groups(DilationPlan::build(c, S, H), B, S, H, /*partition=*/false);
}

TEST(KeptRowsView, GroupViewHoldsItsRows) {
  const int64_t B = 2, S = 160, H = 5, D = 3;
  const torch::Tensor t = torch::randn({B, S, H, D}, torch::kFloat64);
  for (GroupRows g : all_mode_groups(B, S, H)) {
    g.rows.n_begin = 1, g.rows.n_count = g.rows.total_n() - 2;  // not the first or last segment
    const cuda::KeptRows& r = g.rows;
    const torch::Tensor v = kept_rows_view(t, r);  // [n, h, L, D]
    ASSERT_EQ(v.sizes(), (std::vector<int64_t>{r.size_n(), r.head_count, r.kept, D}));
    for (int64_t n = 0; n < r.size_n(); ++n) {
      const int64_t m = r.n_begin + n, b = m / (S / r.segment), seg = m % (S / r.segment);
      for (int64_t j = 0; j < r.head_count; ++j) {
        for (int64_t l = 0; l < r.kept; ++l) {
          const int64_t s = seg * r.segment + r.offset + l * r.rate;
          const int64_t h = r.head_start + j * r.head_step;
          EXPECT_TRUE(torch::equal(v[n][j][l], t[b][s][h])) << "n " << n << " l " << l;
        }
      }
    }
  }
}

TEST(KeptRowsView, StackEqualsItsGroupsViews) {
  const int64_t B = 2, S = 160, H = 5, D = 3;
  const torch::Tensor t = torch::randn({B, S, H, D}, torch::kFloat64);
  std::vector<GroupRows> groups = all_mode_groups(B, S, H);
  int stacked = 0;
  for (const GroupStack& stack : group_stacks(groups, true)) {
    if (stack.count == 1) continue;
    ++stacked;
    for (int64_t n_begin : {0, 2}) {
      cuda::KeptRows first = groups[stack.first].rows;
      first.n_begin = n_begin, first.n_count = first.total_n() - n_begin - 1;
      std::vector<torch::Tensor> each;
      for (int j = 0; j < stack.count; ++j)
        each.push_back(kept_rows_view(t, stacked_group(first, j)));
      EXPECT_TRUE(torch::equal(stacked_rows_view(t, first, stack.count), torch::cat(each, 1)))
          << "stack from group " << stack.first << ", n from " << n_begin;
    }
  }
  EXPECT_EQ(stacked, 3);  // the 5 offsets of rate 8; rate 6's offsets 0-1 and 2-4
  // Refused: a non-contiguous tensor, a stack past the rate or the heads.
  const cuda::KeptRows& first = groups[0].rows;
  EXPECT_THROW(stacked_rows_view(t.transpose(1, 2), first, 2), std::exception);
  EXPECT_THROW(stacked_rows_view(t, first, 6), std::exception);
}

}  // namespace
}  // namespace ra
