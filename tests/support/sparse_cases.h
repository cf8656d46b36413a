// One configuration of every block-sparse pattern, shared by the layout, attention and ring
// tests, so each of them covers the same local_window / dilated / global_local / hierarchical /
// custom cases.
#pragma once

#include <string>
#include <vector>

#include "runtime/config.h"

namespace ra::testing {

struct SparsePatternCase {
  std::string name;
  SparseConfig sparse;
};

// Every pattern for seq_len tokens in blocks of `block` (at least 8 blocks); none is empty or
// dense. custom is a fixed asymmetric mask with the diagonal set.
std::vector<SparsePatternCase> sparse_pattern_cases(int64_t seq_len, int64_t block);

// Branches (S/4, rate 1) and (S, rate 3) for the `dilated` pattern.
DilatedAttentionConfig sparse_test_attention(int64_t seq_len, bool causal);

}  // namespace ra::testing
