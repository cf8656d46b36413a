// SparseRingPlan::build: one pass over the layout's active blocks per rank.
#include "attention/sparse/sparse_ring_plan.h"

#include <algorithm>
#include <set>

#include "runtime/error.h"

namespace ra {

SparseRingPlan SparseRingPlan::build(const BlockLayout& layout, int rank, int world_size) {
  RA_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "rank = ", rank,
           ": must be in [0, world size = ", world_size, ")");
  RA_CHECK(layout.num_blocks % world_size == 0, "block layout of ", layout.num_blocks,
           " blocks over P = ", world_size, " ranks: each rank must own a whole number of blocks");
  SparseRingPlan plan;
  plan.rank = rank;
  plan.world_size = world_size;
  const int64_t per_rank = layout.num_blocks / world_size;
  plan.blocks_per_rank = per_rank;
  const int P = world_size;
  // needs[r][h]: src-local key blocks rank r's query blocks need at hop h.
  std::vector<std::vector<std::set<int64_t>>> needs(P, std::vector<std::set<int64_t>>(P));
  for (int r = 0; r < P; ++r) {
    for (int64_t i = r * per_rank; i < (r + 1) * per_rank; ++i) {
      for (int64_t a = layout.row_offsets[i]; a < layout.row_offsets[i + 1]; ++a) {
        const int64_t j = layout.col_indices[a];
        const int src = static_cast<int>(j / per_rank);
        needs[r][(r - src + P) % P].insert(j - src * per_rank);
      }
    }
  }
  for (int h = 0; h < P; ++h) {
    bool needed = false;
    for (int r = 0; r < P; ++r) needed = needed || !needs[r][h].empty();
    if (!needed) {
      plan.skipped_hops.push_back(h);
      continue;
    }
    SparseHop hop;
    hop.hop = h;
    hop.src = (rank - h + P) % P;
    hop.dst = (rank + h) % P;
    hop.recv_blocks.assign(needs[rank][h].begin(), needs[rank][h].end());
    hop.send_blocks.assign(needs[hop.dst][h].begin(), needs[hop.dst][h].end());
    for (int64_t local = 0; local < per_rank; ++local) {
      const int64_t i = rank * per_rank + local;
      RowTask task;
      task.query_block = local;
      for (int64_t a = layout.row_offsets[i]; a < layout.row_offsets[i + 1]; ++a) {
        const int64_t j = layout.col_indices[a];
        if (j / per_rank != hop.src) continue;
        const int64_t src_local = j - hop.src * per_rank;
        const int64_t slot =
            h == 0 ? src_local
                   : std::lower_bound(hop.recv_blocks.begin(), hop.recv_blocks.end(), src_local) -
                         hop.recv_blocks.begin();
        if (layout.causal && j == i) task.diagonal_slot = slot;
        task.key_slots.push_back(slot);
      }
      if (!task.key_slots.empty()) hop.tasks.push_back(std::move(task));
    }
    plan.hops.push_back(std::move(hop));
  }
  return plan;
}

int64_t SparseRingPlan::sent_blocks() const {
  int64_t total = 0;
  for (const auto& hop : hops) {
    if (hop.hop > 0) total += static_cast<int64_t>(hop.send_blocks.size());
  }
  return total;
}

}  // namespace ra
