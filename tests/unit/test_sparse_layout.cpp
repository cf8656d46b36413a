// Block layouts of every sparse pattern, causal and not, against the brute-force token mask
// (tests/support/sparse_token_mask.h); CSR/CSC consistency, density, FLOP count, validation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>

#include "attention/sparse/sparse_patterns.h"
#include "attention/sparse/sparse_ring_plan.h"
#include "runtime/error.h"
#include "runtime/validation.h"
#include "tests/support/sparse_cases.h"
#include "tests/support/sparse_token_mask.h"

namespace ra {
namespace {

using testing::sparse_pattern_cases;
using testing::sparse_test_attention;

// The layout expanded to tokens: active blocks, causal-masked inside when causal.
at::Tensor layout_token_mask(const BlockLayout& layout) {
  const int64_t b = layout.block_size, S = layout.seq_len();
  at::Tensor mask = torch::zeros({S, S}, torch::kBool);
  for (int64_t i = 0; i < layout.num_blocks; ++i) {
    for (int64_t a = layout.row_offsets[i]; a < layout.row_offsets[i + 1]; ++a) {
      mask.narrow(0, i * b, b).narrow(1, layout.col_indices[a] * b, b).fill_(true);
    }
  }
  return layout.causal ? mask.logical_and(torch::ones({S, S}, torch::kBool).tril()) : mask;
}

TEST(SparseLayout, EveryPatternMatchesBruteForceMask) {
  for (const auto& c : sparse_pattern_cases(256, 16)) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(c.name + (causal ? " causal" : ""));
      const DilatedAttentionConfig attention = sparse_test_attention(256, causal);
      BlockLayout layout = build_block_layout(c.sparse, attention, 256);
      at::Tensor want = testing::sparse_token_mask(c.sparse, attention, 256);
      EXPECT_TRUE(torch::equal(layout_token_mask(layout), want));
      // Sanity of the test itself: the pattern is neither empty nor dense.
      const double density = layout.density();
      EXPECT_GT(density, 0.05);
      EXPECT_LT(density, 0.95);
      EXPECT_DOUBLE_EQ(layout.attended_pairs(), want.sum().item<double>());
    }
  }
}

TEST(SparseLayout, CscIsTheTransposeOfCsr) {
  auto c = sparse_pattern_cases(256, 16)[4];  // custom: asymmetric
  BlockLayout layout = build_block_layout(c.sparse, sparse_test_attention(256, false), 256);
  ASSERT_EQ(layout.row_indices.size(), layout.col_indices.size());
  int64_t seen = 0;
  for (int64_t j = 0; j < layout.num_blocks; ++j) {
    for (int64_t a = layout.col_offsets[j]; a < layout.col_offsets[j + 1]; ++a) {
      EXPECT_TRUE(layout.is_active(layout.row_indices[a], j));
      if (a > layout.col_offsets[j]) {
        EXPECT_LT(layout.row_indices[a - 1], layout.row_indices[a]);
      }
      ++seen;
    }
  }
  EXPECT_EQ(seen, layout.active_blocks());
}

TEST(SparseLayout, DensityFlopsAndDescription) {
  SparseConfig s;
  s.block_size = 16;
  s.window = 16;  // diagonal blocks only
  DilatedAttentionConfig a = sparse_test_attention(256, false);
  BlockLayout layout = build_block_layout(s, a, 256);
  EXPECT_EQ(layout.active_blocks(), 16);
  EXPECT_DOUBLE_EQ(layout.density(), 1.0 / 16);
  EXPECT_DOUBLE_EQ(layout.forward_flops(2, 3, 8), 4.0 * 2 * 3 * 8 * 16 * 16 * 16);
  a.causal = true;
  BlockLayout causal = build_block_layout(s, a, 256);
  EXPECT_DOUBLE_EQ(causal.forward_flops(2, 3, 8), 4.0 * 2 * 3 * 8 * 16 * (16 * 17 / 2));
  EXPECT_NE(causal.describe().find("density=6.25% causal"), std::string::npos) << causal.describe();
}

TEST(SparseLayout, MillionTokenLayoutIsCompressed) {
  SparseConfig s;  // block 64, window 512
  DilatedAttentionConfig a = sparse_test_attention(256, false);
  a.segment_lengths = {4096, 65536};
  a.dilation_rates = {1, 8};
  s.pattern = SparsePattern::kDilated;
  const auto start = std::chrono::steady_clock::now();
  BlockLayout layout = build_block_layout(s, a, 1 << 20);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(layout.num_blocks, 16384);
  // Per row: 15 local blocks, a dense 64-block segment, 128 blocks at rate 8: about 1.2%.
  EXPECT_GT(layout.density(), 0.005);
  EXPECT_LT(layout.density(), 0.02);
  EXPECT_LT(seconds, 10.0);
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected ra::Error";
  } catch (const Error& e) {
    for (const auto& f : fragments) {
      EXPECT_NE(e.message().find(f), std::string::npos) << "'" << f << "' not in: " << e.message();
    }
  }
}

TEST(SparseLayout, RejectsBadInput) {
  SparseConfig s;
  s.block_size = 16;
  DilatedAttentionConfig a = sparse_test_attention(256, false);
  expect_error([&] { build_block_layout(s, a, 200); }, {"S = 200", "block_size = 16"});
  s.pattern = SparsePattern::kDilated;
  a.segment_lengths = {24, 256};
  expect_error([&] { build_block_layout(s, a, 256); }, {"segment_lengths[0] = 24"});
  s.pattern = SparsePattern::kHierarchical;
  expect_error([&] { build_block_layout(s, a, 256); }, {"level_windows is empty"});
  s.level_windows = {64};
  s.level_strides = {8};
  expect_error([&] { build_block_layout(s, a, 256); }, {"level_strides[0] = 8"});
  s.level_windows.clear();
  s.level_strides.clear();
  s.pattern = SparsePattern::kCustom;
  s.custom_block_mask.assign(10, 1);
  expect_error([&] { build_block_layout(s, a, 256); }, {"custom_block_mask has 10", "256"});
  // A custom row with no key block is an error; with causal, also one whose keys all follow it.
  s.custom_block_mask.assign(16 * 16, 1);
  for (int j = 0; j < 16; ++j) s.custom_block_mask[5 * 16 + j] = 0;
  a = sparse_test_attention(256, false);
  expect_error([&] { build_block_layout(s, a, 256); }, {"query block 5", "no active key block"});
  s.custom_block_mask.assign(16 * 16, 0);
  for (int i = 0; i < 16; ++i) s.custom_block_mask[i * 16 + 15] = 1;
  EXPECT_NO_THROW(build_block_layout(s, a, 256));
  a.causal = true;
  expect_error([&] { build_block_layout(s, a, 256); }, {"query block 0", "causal"});
  SparseConfig levels;
  levels.level_windows = {64, 128};
  levels.level_strides = {64};
  expect_error([&] { validate(levels); }, {"level_windows has 2", "level_strides has 1"});
  levels.level_windows = {0};
  expect_error([&] { validate(levels); }, {"level_windows[0] = 0"});
  SparseConfig custom;
  custom.pattern = SparsePattern::kCustom;
  expect_error([&] { validate(custom); }, {"custom_block_mask is empty"});
  // Sharding: each rank owns whole blocks.
  expect_error([&] { validate_sparse_sequence(SparseConfig{}, a, 64 * 6, 4); }, {"P = 4"});
}

TEST(SparseRingPlan, SkipsHopsAndSendsOnlyNeededBlocks) {
  SparseConfig s;
  s.block_size = 16;
  s.window = 32;  // block distances 0 and 1: only neighbouring ranks exchange, one block each
  DilatedAttentionConfig a = sparse_test_attention(256, false);
  BlockLayout layout = build_block_layout(s, a, 256);
  for (int r = 0; r < 4; ++r) {
    SparseRingPlan plan = SparseRingPlan::build(layout, r, 4);
    EXPECT_EQ(plan.skipped_hops, std::vector<int>({2}));
    ASSERT_EQ(plan.hops.size(), 3u);
    EXPECT_EQ(plan.sent_blocks(), (r == 0 || r == 3) ? 1 : 2);
    for (const auto& hop : plan.hops) {
      if (hop.hop == 1 && r > 0) {
        EXPECT_EQ(hop.recv_blocks, std::vector<int64_t>({3}));
      }
      if (hop.hop == 1 && r < 3) {
        EXPECT_EQ(hop.send_blocks, std::vector<int64_t>({3}));
      }
    }
  }
  a.causal = true;
  layout = build_block_layout(s, a, 256);
  SparseRingPlan plan = SparseRingPlan::build(layout, 1, 4);
  EXPECT_EQ(plan.skipped_hops, std::vector<int>({2, 3}));
}

}  // namespace
}  // namespace ra
