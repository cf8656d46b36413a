// Builds the BlockLayout of each sparse pattern (SparseConfig::pattern) for a global sequence.
// Rules, with block distance d = |i - j| between query block i and key block j (block size b):
//   local_window  d * b < window
//   dilated       local_window, plus for each dilated branch (w_l, r_l) of the attention config:
//                 i and j in the same segment of min(w_l, S) tokens and d a multiple of r_l
//                 (LongNet's segments and dilation applied to blocks instead of tokens)
//   global_local  local_window, plus all key blocks for query blocks i < g and key blocks j < g
//                 for every query block, g = ceil(global_tokens / b)
//   hierarchical  for any level l: d * b < level_windows[l] and d * b a multiple of
//                 level_strides[l]
//   custom        custom_block_mask[i * (S/b) + j] != 0
// Causal (attention config's `causal`) then drops j > i and masks the diagonal block inside.
#pragma once

#include <cstdint>

#include "attention/sparse/block_layout.h"
#include "runtime/config.h"

namespace ra {

// Validates both configs and the sequence (validate_sparse_sequence), then builds the layout.
BlockLayout build_block_layout(const SparseConfig& sparse, const DilatedAttentionConfig& attention,
                               int64_t seq_len);

}  // namespace ra
