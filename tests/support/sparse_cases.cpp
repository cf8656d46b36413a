// The shared sparse pattern cases.
#include "tests/support/sparse_cases.h"

namespace ra::testing {

std::vector<SparsePatternCase> sparse_pattern_cases(int64_t seq_len, int64_t block) {
  std::vector<SparsePatternCase> cases;
  SparseConfig s;
  s.block_size = block;
  s.pattern = SparsePattern::kLocalWindow;
  s.window = 2 * block + block / 2;  // block distances 0, 1, 2
  cases.push_back({"local_window", s});
  s.pattern = SparsePattern::kDilated;
  s.window = block;  // the diagonal, plus the dilated branches
  cases.push_back({"dilated", s});
  s.pattern = SparsePattern::kGlobalLocal;
  s.window = 2 * block;
  s.global_tokens = block + 4;  // rounds up to two blocks
  cases.push_back({"global_local", s});
  s = SparseConfig{};
  s.block_size = block;
  s.pattern = SparsePattern::kHierarchical;
  s.level_windows = {3 * block, 12 * block};  // distances 0..2, and 0, 4, 8
  s.level_strides = {block, 4 * block};
  cases.push_back({"hierarchical", s});
  s = SparseConfig{};
  s.block_size = block;
  s.pattern = SparsePattern::kCustom;
  const int64_t nb = seq_len / block;
  for (int64_t i = 0; i < nb; ++i) {
    for (int64_t j = 0; j < nb; ++j)
      s.custom_block_mask.push_back(i == j || (i * 7 + j * 3) % 5 == 0);
  }
  cases.push_back({"custom", s});
  return cases;
}

DilatedAttentionConfig sparse_test_attention(int64_t seq_len, bool causal) {
  DilatedAttentionConfig a;
  a.segment_lengths = {seq_len / 4, seq_len};
  a.dilation_rates = {1, 3};
  a.causal = causal;
  return a;
}

}  // namespace ra::testing
