// Which key blocks travel between which ranks for block-sparse attention over P ranks, each
// owning S/P consecutive tokens (blocks_per_rank blocks). At hop h rank r sends its own key/value
// blocks directly to rank r + h and receives from rank r - h (mod P), so a hop can be skipped
// without breaking a relay. Only blocks the receiver's query blocks need travel; a hop no rank
// needs is skipped entirely (no call, no bytes). Every rank derives the same plan from the
// global layout, so the two ends of each exchange agree on the sizes without talking.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/sparse/block_layout.h"
#include "attention/sparse/block_sparse_ops.h"

namespace ra {

struct SparseHop {
  int hop = 0;                       // 0: this rank's own key blocks, no communication
  int src = 0;                       // rank whose key blocks this hop brings: (rank - hop) mod P
  int dst = 0;                       // rank this hop sends to: (rank + hop) mod P
  std::vector<int64_t> recv_blocks;  // src-local key blocks this rank needs, ascending
  std::vector<int64_t> send_blocks;  // this rank's local key blocks dst needs, ascending
  // This rank's query blocks against the hop's buffer: slots index recv_blocks for hop > 0 and
  // this rank's own blocks for hop 0.
  std::vector<RowTask> tasks;
};

struct SparseRingPlan {
  int rank = 0;
  int world_size = 1;
  int64_t blocks_per_rank = 0;
  std::vector<SparseHop> hops;    // hops some rank needs, ascending hop number
  std::vector<int> skipped_hops;  // hops no rank needs

  // layout.num_blocks must be a multiple of world_size (validate_sparse_sequence).
  static SparseRingPlan build(const BlockLayout& layout, int rank, int world_size);

  // Key blocks this rank sends over all hops (each carries k and v).
  int64_t sent_blocks() const;
};

}  // namespace ra
