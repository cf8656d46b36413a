// Brute-force token-level mask of a block-sparse pattern, written from the rules in
// attention/sparse/sparse_patterns.h on the full [S, S] token grid with tensor ops, sharing no
// code with the library's row-by-row layout builder. Small S only.
#pragma once

#include <ATen/ATen.h>

#include "runtime/config.h"

namespace ra::testing {

// [S, S] bool: mask[p, t] is true when query token p attends to key token t.
at::Tensor sparse_token_mask(const SparseConfig& sparse, const DilatedAttentionConfig& attention,
                             int64_t seq_len);

}  // namespace ra::testing
