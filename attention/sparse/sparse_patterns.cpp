// The pattern rules of sparse_patterns.h, enumerated row by row (never a dense block matrix).
#include "attention/sparse/sparse_patterns.h"

#include <algorithm>
#include <vector>

#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {
namespace {

using Rows = std::vector<std::vector<int64_t>>;

// Largest block distance d with d * b < tokens.
int64_t max_distance(int64_t tokens, int64_t block_size) { return (tokens - 1) / block_size; }

// Key blocks i - d * step, ..., i + d * step (step in blocks) for d * step <= reach.
void add_strided_band(Rows& rows, int64_t reach, int64_t step) {
  const int64_t nb = static_cast<int64_t>(rows.size());
  for (int64_t i = 0; i < nb; ++i) {
    for (int64_t d = 0; d <= reach; d += step) {
      if (i - d >= 0) rows[i].push_back(i - d);
      if (d > 0 && i + d < nb) rows[i].push_back(i + d);
    }
  }
}

void add_dilated_segments(Rows& rows, const DilatedAttentionConfig& attention, int64_t seq_len,
                          int64_t block_size) {
  const int64_t nb = static_cast<int64_t>(rows.size());
  for (size_t l = 0; l < attention.segment_lengths.size(); ++l) {
    const int64_t seg = std::min(attention.segment_lengths[l], seq_len) / block_size;
    const int64_t rate = attention.dilation_rates[l];
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t first = i / seg * seg;
      for (int64_t j = first + (i - first) % rate; j < first + seg; j += rate) {
        rows[i].push_back(j);
      }
    }
  }
}

void add_global(Rows& rows, int64_t global_blocks) {
  const int64_t nb = static_cast<int64_t>(rows.size());
  global_blocks = std::min(global_blocks, nb);
  for (int64_t i = 0; i < nb; ++i) {
    if (i < global_blocks) {
      for (int64_t j = 0; j < nb; ++j) rows[i].push_back(j);
    } else {
      for (int64_t j = 0; j < global_blocks; ++j) rows[i].push_back(j);
    }
  }
}

}  // namespace

BlockLayout build_block_layout(const SparseConfig& sparse, const DilatedAttentionConfig& attention,
                               int64_t seq_len) {
  validate(sparse);
  validate(attention);
  validate_sparse_sequence(sparse, attention, seq_len);
  const int64_t b = sparse.block_size;
  const int64_t nb = seq_len / b;
  Rows rows(nb);
  const int64_t local_reach = max_distance(sparse.window, b);
  switch (sparse.pattern) {
    case SparsePattern::kLocalWindow:
      add_strided_band(rows, local_reach, 1);
      break;
    case SparsePattern::kDilated:
      add_strided_band(rows, local_reach, 1);
      add_dilated_segments(rows, attention, seq_len, b);
      break;
    case SparsePattern::kGlobalLocal:
      add_strided_band(rows, local_reach, 1);
      add_global(rows, (sparse.global_tokens + b - 1) / b);
      break;
    case SparsePattern::kHierarchical:
      for (size_t l = 0; l < sparse.level_windows.size(); ++l) {
        add_strided_band(rows, max_distance(sparse.level_windows[l], b),
                         sparse.level_strides[l] / b);
      }
      break;
    case SparsePattern::kCustom:
      for (int64_t i = 0; i < nb; ++i) {
        for (int64_t j = 0; j < nb; ++j) {
          if (sparse.custom_block_mask[i * nb + j] != 0) rows[i].push_back(j);
        }
      }
      break;
  }
  return BlockLayout::from_rows(std::move(rows), b, attention.causal);
}

}  // namespace ra
