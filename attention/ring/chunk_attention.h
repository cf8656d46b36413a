// The computation shared by the ring and all-gather strategies: this rank's query chunks of a
// spanning task against the K/V chunks of one member of the segment group (held after a ring
// hop or an all-gather), forward merged in place by LSE (fp32, fp64 for fp64 inputs) into one
// packed accumulator and backward with the merged output and LSE. Chunks are "packed": the
// kept positions of a member's chunks concatenated in chunk order, q as [B, h, n, D] and K/V
// stacked as [2, B, h_kv, n, D] (GQA: the task's k/v heads, expanded only right before the
// block primitive). Chunk pairs are grouped into few block calls (block_call_plan.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "attention/ring/shard_geometry.h"
#include "attention/standard/accumulate.h"
#include "attention/standard/lse_merge.h"

namespace ra {

// Attention of the packed query rows: out [B, h, n, D] and lse [B, h, n]. May be views of a
// larger tensor. A running merge (compute dtype, 0 and -inf until a block is merged in), or,
// write_once, a target that holds nothing yet and gets the merge of every block once (out of any
// floating dtype, e.g. the layer's bf16 output, rounded once).
struct PartialAttention {
  at::Tensor out;
  at::Tensor lse;
  bool write_once = false;
};

// For strategies that merge block by block: the running merge for `target` (target itself, or
// fresh zeros and -inf when it is write_once), and its copy into the target once all are in.
PartialAttention running_partial(const PartialAttention& target, const at::Tensor& q);
void finish_partial(const PartialAttention& target, const PartialAttention& running);

// The empty accumulator for q's rows [B, h, n, D] (zeros, -inf) in the compute dtype.
PartialAttention empty_partial(const at::Tensor& q);

// x: [B, S_local, H, X] -> the kept rows of `chunks` for the task's heads, [B, h, n, X]: a
// strided view when the chunks' kept positions continue one another (one chunk; zigzag with
// rate 1), else a copy. Read-only use; use pack_chunks for what must be contiguous.
at::Tensor gather_chunks(const at::Tensor& x, const ShardTask& task,
                         const std::vector<KeptChunk>& chunks);
// The same kept rows as one view, or an undefined tensor when they are not evenly spaced.
at::Tensor packed_view(const at::Tensor& x, const ShardTask& task,
                       const std::vector<KeptChunk>& chunks);
// Copies the kept rows of x into dst [B, h, n, X] (e.g. a slice of the K/V that travel).
void pack_chunks(const at::Tensor& dst, const at::Tensor& x, const ShardTask& task,
                 const std::vector<KeptChunk>& chunks);
// The view of x [B, S_local, H, X] at one chunk's kept rows and the task's heads: [B, n, h, X].
at::Tensor chunk_view(const at::Tensor& x, const ShardTask& task, const KeptChunk& chunk);

// `heads` as a long tensor on like's device (an asynchronous copy for CUDA).
at::Tensor head_index(const std::vector<int64_t>& heads, const at::Tensor& like);

// GQA: the index (long, on like's device) that expands the task's k/v heads to its query heads
// along the head dim (task.kv.expand), or an undefined tensor when there is nothing to expand.
at::Tensor kv_expand_index(const ShardTask& task, const at::Tensor& like);

// Merges the forward of q's chunks against `kv` (the chunks of one member) into acc, one block
// call per planned group of chunk pairs. q: [B, h, n_q, D]; kv: [2, B, h_kv, n_kv, D], the
// task's k/v heads, expanded here to q's heads by `expand` (kv_expand_index; undefined when
// h_kv = h). Causal: a pair of chunks is attended fully when the key chunk comes first, on the
// diagonal when it is the same chunk.
void attend_member(const at::Tensor& q, const std::vector<KeptChunk>& q_chunks,
                   const at::Tensor& kv, const std::vector<KeptChunk>& kv_chunks,
                   const at::Tensor& expand, double scale, bool causal,
                   const PartialAttention& acc);

// The block calls of attend_member, their outputs returned unmerged (the fused kernels': the
// input dtype) at the packed query rows each covers, in call order: for merge_pieces_into_.
std::vector<OutputPiece> member_block_outputs(const at::Tensor& q,
                                              const std::vector<KeptChunk>& q_chunks,
                                              const at::Tensor& kv,
                                              const std::vector<KeptChunk>& kv_chunks,
                                              const at::Tensor& expand, double scale, bool causal);

// How attend_member_backward treats dkv: adds into what it holds, or takes it as uninitialized
// (at::empty) and writes all of it - each block's gradient copied into rows no earlier block
// wrote, added elsewhere, and rows no block attended zero-filled (no zero fill and no
// read-modify-write of the rows one block covers). A dkv of a lower precision than the compute
// dtype is only written, never summed into (an error where two blocks meet in a row).
enum class GradTarget { kAdd, kOverwrite };

// Backward of attend_member for the merged out / lse of q's rows: adds into dq [B, h, n_q, D],
// and into (or, kOverwrite, writes) dkv [2, B, h_kv, n_kv, D] (compute dtype; the query heads'
// dK/dV summed over each k/v head's group), once per block call.
void attend_member_backward(const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse,
                            const at::Tensor& dout, const std::vector<KeptChunk>& q_chunks,
                            const at::Tensor& kv, const std::vector<KeptChunk>& kv_chunks,
                            const at::Tensor& expand, double scale, bool causal,
                            const at::Tensor& dq, const at::Tensor& dkv,
                            GradTarget dkv_target = GradTarget::kAdd);

// What each block call of attend_member_backward returned, unsummed, at the packed rows it
// covers (block_gradient_dtype: the fused kernels' fp16/bf16 as they wrote them), in the order
// of the calls: for sum_pieces_into_, or to travel to the owner of the K/V rows, who then sums
// every block's gradient of a row in fp32 and rounds it once.
struct MemberGradients {
  std::vector<RowPiece> dq;      // rows of q [B, h, n_q, D]
  std::vector<RowPiece> dk, dv;  // rows of kv[0], kv[1] [B, h_kv, n_kv, D]
};

// The block calls of attend_member_backward (the same arguments; no GQA expansion, so kv's
// heads are q's), their gradients returned as pieces.
MemberGradients member_block_gradients(const at::Tensor& q, const at::Tensor& out,
                                       const at::Tensor& lse, const at::Tensor& dout,
                                       const std::vector<KeptChunk>& q_chunks, const at::Tensor& kv,
                                       const std::vector<KeptChunk>& kv_chunks, double scale,
                                       bool causal);

// Packed range of chunk i: sum of the counts of chunks before it.
int64_t packed_start(const std::vector<KeptChunk>& chunks, size_t i);

}  // namespace ra
