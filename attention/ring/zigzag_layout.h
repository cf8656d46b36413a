// The zigzag layout for dense causal attention across P ranks: the sequence is cut into 2P
// chunks and rank p holds chunks p and 2P-1-p, so every rank has the same causal work
// (the plain layout gives the last rank P times the first one's). Helpers to shard a full
// sequence into this layout and to put the gathered shards back in order.
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// full: [B, S, ...] -> rank's shard [B, S/P, ...] (chunk p then chunk 2P-1-p). S % 2P == 0.
at::Tensor zigzag_shard(const at::Tensor& full, int rank, int world_size);

// gathered: [B, S, ...], the shards of ranks 0..P-1 concatenated along dim 1 -> [B, S, ...] in
// sequence order.
at::Tensor zigzag_unshard(const at::Tensor& gathered, int world_size);

}  // namespace ra
