// BlockLayout: which (query block, key block) pairs of a block-sparse attention are active, in
// compressed form: CSR by query block (the forward pass and dQ walk rows) and its transpose, CSC
// by key block (what a dK/dV kernel walks). It is built for the whole (global) sequence and never
// holds a dense [S, S] or [S/b, S/b] matrix, so it scales to million-token layouts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ra {

struct BlockLayout {
  int64_t block_size = 0;
  int64_t num_blocks = 0;  // S / block_size, query and key blocks alike
  // Causal: no key block after its query block is active, and the diagonal block is masked
  // token by token inside (key position <= query position).
  bool causal = false;
  std::vector<int64_t> row_offsets;  // [num_blocks + 1], CSR by query block
  std::vector<int64_t> col_indices;  // [active_blocks()], ascending within each row
  std::vector<int64_t> col_offsets;  // [num_blocks + 1], CSC by key block
  std::vector<int64_t> row_indices;  // [active_blocks()], ascending within each column

  // rows[i] lists the key blocks of query block i (any order, duplicates allowed). Drops key
  // blocks after i when causal; throws ra::Error if a query block row is left empty (its
  // tokens would attend to nothing) or an index is out of range.
  static BlockLayout from_rows(std::vector<std::vector<int64_t>> rows, int64_t block_size,
                               bool causal);

  int64_t seq_len() const { return num_blocks * block_size; }
  int64_t active_blocks() const { return static_cast<int64_t>(col_indices.size()); }
  // Active blocks / num_blocks^2 (FlexAttention's definition, also for causal layouts).
  double density() const;
  bool is_active(int64_t query_block, int64_t key_block) const;
  // Attended (query, key) token pairs: b^2 per block, b(b+1)/2 for causal diagonal blocks.
  double attended_pairs() const;
  // 4 * B * H * D * attended_pairs(): the "effective" forward FLOPs (backward ~2.5x).
  double forward_flops(int64_t batch, int64_t num_heads, int64_t head_dim) const;
  // "blocks=256x256 block_size=64 active=1234 density=1.88% causal".
  std::string describe() const;
};

}  // namespace ra
