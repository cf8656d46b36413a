// Plans the block-attention calls between the query chunks of this rank and the key chunks of
// one member (both packed: kept rows concatenated in chunk order), grouping chunk pairs into as
// few calls as possible. Forward and backward run the same plan. Causal rule per chunk pair:
// key chunk id < query chunk id -> attended fully, same id -> lower-triangular, later -> none.
//  - A run of same-chunk pairs along the diagonal whose ids increase in packed order is ONE
//    causal call over the square it spans: on packed indices the causal mask then equals the
//    chunk rule (pairs below the diagonal are earlier chunks, above it later ones). This is the
//    zigzag diagonal hop (chunks r and 2P-1-r on both sides).
//  - The remaining fully attended pairs are covered greedily by rectangles (maximal run along a
//    query chunk's row, then extended over following rows), each ONE unmasked call: kv from an
//    earlier zigzag rank is one call (both q chunks x kv chunk s), from a later one too (q chunk
//    2P-1-r x both kv chunks). Without causal masking everything is one call.
// Chunks that keep nothing take no rows and are ignored.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/ring/shard_geometry.h"
#include "attention/standard/block_attention.h"

namespace ra {

// One block_attention call: packed query rows [q_start, q_start + q_count) against packed key
// rows [kv_start, kv_start + kv_count); kCausalDiagonal only for q_count == kv_count over the
// same kept positions.
struct BlockCall {
  int64_t q_start = 0, q_count = 0;
  int64_t kv_start = 0, kv_count = 0;
  BlockMask mask = BlockMask::kNone;
};

std::vector<BlockCall> plan_block_calls(const std::vector<KeptChunk>& q_chunks,
                                        const std::vector<KeptChunk>& kv_chunks, bool causal);

}  // namespace ra
