// BlockLayout construction (sort, dedupe, causal filter, empty-row check) and its statistics.
#include "attention/sparse/block_layout.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "runtime/error.h"

namespace ra {

BlockLayout BlockLayout::from_rows(std::vector<std::vector<int64_t>> rows, int64_t block_size,
                                   bool causal) {
  BlockLayout layout;
  layout.block_size = block_size;
  layout.num_blocks = static_cast<int64_t>(rows.size());
  layout.causal = causal;
  const int64_t nb = layout.num_blocks;
  RA_CHECK(nb > 0, "block layout: no query blocks");
  layout.row_offsets.assign(nb + 1, 0);
  for (int64_t i = 0; i < nb; ++i) {
    auto& row = rows[i];
    std::sort(row.begin(), row.end());
    row.erase(std::unique(row.begin(), row.end()), row.end());
    for (int64_t j : row) {
      RA_CHECK(j >= 0 && j < nb, "block layout: key block ", j, " of query block ", i,
               ": must be in [0, ", nb, ")");
    }
    if (causal) row.erase(std::upper_bound(row.begin(), row.end(), i), row.end());
    if (row.empty()) {
      RA_THROW_HINT("give every query block at least one key block (e.g. its diagonal block)",
                    "block layout: query block ", i, " (tokens ", i * block_size, "..",
                    (i + 1) * block_size - 1, ") has no active key block",
                    causal ? " at or before it (causal)" : "",
                    ": its tokens would attend to nothing");
    }
    layout.col_indices.insert(layout.col_indices.end(), row.begin(), row.end());
    layout.row_offsets[i + 1] = static_cast<int64_t>(layout.col_indices.size());
  }
  // Transpose to CSC: counting sort by key block keeps rows ascending inside each column.
  layout.col_offsets.assign(nb + 1, 0);
  for (int64_t j : layout.col_indices) ++layout.col_offsets[j + 1];
  for (int64_t j = 0; j < nb; ++j) layout.col_offsets[j + 1] += layout.col_offsets[j];
  layout.row_indices.resize(layout.col_indices.size());
  std::vector<int64_t> fill(layout.col_offsets.begin(), layout.col_offsets.end() - 1);
  for (int64_t i = 0; i < nb; ++i) {
    for (int64_t a = layout.row_offsets[i]; a < layout.row_offsets[i + 1]; ++a) {
      layout.row_indices[fill[layout.col_indices[a]]++] = i;
    }
  }
  return layout;
}

double BlockLayout::density() const {
  return static_cast<double>(active_blocks()) / (static_cast<double>(num_blocks) * num_blocks);
}

bool BlockLayout::is_active(int64_t query_block, int64_t key_block) const {
  auto begin = col_indices.begin() + row_offsets[query_block];
  auto end = col_indices.begin() + row_offsets[query_block + 1];
  return std::binary_search(begin, end, key_block);
}

double BlockLayout::attended_pairs() const {
  const double full = static_cast<double>(block_size) * block_size;
  const double diagonal = causal ? block_size * (block_size + 1) / 2.0 : full;
  double pairs = 0;
  for (int64_t i = 0; i < num_blocks; ++i) {
    for (int64_t a = row_offsets[i]; a < row_offsets[i + 1]; ++a) {
      pairs += col_indices[a] == i ? diagonal : full;
    }
  }
  return pairs;
}

double BlockLayout::forward_flops(int64_t batch, int64_t num_heads, int64_t head_dim) const {
  return 4.0 * batch * num_heads * head_dim * attended_pairs();
}

std::string BlockLayout::describe() const {
  std::ostringstream os;
  os << "blocks=" << num_blocks << "x" << num_blocks << " block_size=" << block_size
     << " active=" << active_blocks() << " density=" << std::setprecision(4) << 100.0 * density()
     << "%" << (causal ? " causal" : "");
  return os.str();
}

}  // namespace ra
