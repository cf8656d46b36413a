// The computation shared by the ring and all-gather strategies: this rank's query chunks of a
// spanning task against the K/V chunks of one member of the segment group (held after a ring
// hop or an all-gather), forward with an online fp32/fp64 LSE merge and backward with the
// merged output and LSE. Chunks are "packed": the kept positions of a member's chunks
// concatenated in chunk order, q as [B, h, n, D] and K/V stacked as [2, B, h, n, D].
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "attention/ring/shard_geometry.h"

namespace ra {

// Running attention of a set of query rows: undefined until the first block arrives.
struct PartialAttention {
  at::Tensor out;  // [..., L, D] compute dtype
  at::Tensor lse;  // [..., L]    compute dtype
};

// Exact, -inf-safe merge of two partial results of the same rows (LongNet eq. 10), by
// merge_by_lse; an undefined side is the identity.
PartialAttention merge_partials(const PartialAttention& a, const PartialAttention& b);

// x: [B, S_local, H, X] -> the kept rows of `chunks` for the task's heads, [B, h, n, X].
at::Tensor gather_chunks(const at::Tensor& x, const ShardTask& task,
                         const std::vector<KeptChunk>& chunks);
// The view of x [B, S_local, H, X] at one chunk's kept rows and the task's heads: [B, n, h, X].
at::Tensor chunk_view(const at::Tensor& x, const ShardTask& task, const KeptChunk& chunk);

// Adds the forward of q's chunks against `kv` (the chunks of one member) into acc (one entry
// per query chunk). q: [B, h, n_q, D]; kv: [2, B, h, n_kv, D]. Causal: a pair of chunks is
// attended fully when the key chunk comes first, on the diagonal when it is the same chunk.
void attend_member(const at::Tensor& q, const std::vector<KeptChunk>& q_chunks,
                   const at::Tensor& kv, const std::vector<KeptChunk>& kv_chunks, double scale,
                   bool causal, std::vector<PartialAttention>& acc);

// Backward of attend_member for the merged out / lse of q's rows: adds into dq [B, h, n_q, D]
// and dkv [2, B, h, n_kv, D] (compute dtype).
void attend_member_backward(const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse,
                            const at::Tensor& dout, const std::vector<KeptChunk>& q_chunks,
                            const at::Tensor& kv, const std::vector<KeptChunk>& kv_chunks,
                            double scale, bool causal, at::Tensor& dq, at::Tensor& dkv);

// Packed range of chunk i: sum of the counts of chunks before it.
int64_t packed_start(const std::vector<KeptChunk>& chunks, size_t i);

}  // namespace ra
