// Causal balance of a spanning task (ShardTask::home_chunks): a rank's home rows are its shard
// halves, the ring computes in the mirror layout (its first half and its mirror's second). So
// before the ring the second halves of q, k and v swap between mirrors, and after it the
// results of those rows (out and lse; dq, dk and dv) swap back. Packed tensors, rows along
// `dim` (2 for q [B, h, n, D] and lse [B, h, n], 3 for the stacked K/V [2, B, h_kv, n, D]).
#pragma once

#include <ATen/core/Tensor.h>

#include "attention/ring/shard_geometry.h"
#include "comm/ring_exchange.h"

namespace ra {

// This rank's packed home rows (task.my_home_chunks() order) -> its rows in the layout the
// ring computes in (task.my_chunks() order): its first half's, then the mirror's second half's,
// received. The input itself when the task swaps nothing.
at::Tensor to_compute_rows(const ShardTask& task, RingExchange& group, const at::Tensor& home,
                           int64_t dim = 2);

// The inverse, for results: rows in the compute layout -> this rank's home rows (the mirror's
// rows go back, this rank's second half's come home).
at::Tensor from_compute_rows(const ShardTask& task, RingExchange& group, const at::Tensor& computed,
                             int64_t dim = 2);

}  // namespace ra
