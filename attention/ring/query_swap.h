// Causal balance of a spanning task (ShardTask::query_chunks): the queries a rank computes are
// its first half's and its mirror's second half's, so before the ring the second halves swap
// between mirrors, and after it the results of those rows swap back. Packed tensors
// [B, h, n, ...] with rows along dim 2 (q, out, lse, dout, dq alike).
#pragma once

#include <ATen/core/Tensor.h>

#include "attention/ring/shard_geometry.h"
#include "comm/ring_exchange.h"

namespace ra {

// This rank's packed rows [B, h, n_me, ...] (task.my_chunks() order) -> the rows it computes
// [B, h, n_q, ...] (task.my_query_chunks() order): its first chunk's, then the mirror's second
// chunk's, received. The input itself when the task swaps nothing.
at::Tensor to_query_rows(const ShardTask& task, RingExchange& group, const at::Tensor& mine);

// The inverse, for results: computed rows [B, h, n_q, ...] -> this rank's [B, h, n_me, ...]
// (the mirror's rows go back, this rank's second chunk's come home).
at::Tensor from_query_rows(const ShardTask& task, RingExchange& group, const at::Tensor& computed);

}  // namespace ra
