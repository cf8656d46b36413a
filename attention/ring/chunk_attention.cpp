// Chunk-pair loops over the block-attention primitive; the causal rule compares chunk ids.
#include "attention/ring/chunk_attention.h"

#include <ATen/ATen.h>

#include "attention/standard/block_attention.h"
#include "attention/standard/lse_merge.h"

namespace ra {
namespace {

// Which pairs of a (query chunk, key chunk) are attended; false = none.
bool chunk_pair_mask(const KeptChunk& q, const KeptChunk& k, bool causal, BlockMask* mask) {
  if (q.count == 0 || k.count == 0) return false;
  if (!causal || k.id < q.id) {
    *mask = BlockMask::kNone;
    return true;
  }
  if (k.id > q.id) return false;
  *mask = BlockMask::kCausalDiagonal;  // same chunk: same kept positions on both sides
  return true;
}

}  // namespace

PartialAttention merge_partials(const PartialAttention& a, const PartialAttention& b) {
  if (!a.out.defined()) return b;
  if (!b.out.defined()) return a;
  MergedAttention m = merge_by_lse({a.out, b.out}, {a.lse, b.lse});
  return {m.out, m.lse};
}

int64_t packed_start(const std::vector<KeptChunk>& chunks, size_t i) {
  int64_t start = 0;
  for (size_t c = 0; c < i; ++c) start += chunks[c].count;
  return start;
}

at::Tensor chunk_view(const at::Tensor& x, const ShardTask& task, const KeptChunk& chunk) {
  const int64_t stop = chunk.first + (chunk.count - 1) * task.rate + 1;
  return x.slice(1, chunk.first, stop, task.rate)
      .slice(2, task.heads.start, task.heads.stop, task.heads.step);
}

at::Tensor gather_chunks(const at::Tensor& x, const ShardTask& task,
                         const std::vector<KeptChunk>& chunks) {
  std::vector<at::Tensor> parts;
  for (const KeptChunk& c : chunks) {
    if (c.count > 0) parts.push_back(chunk_view(x, task, c).permute({0, 2, 1, 3}));
  }
  if (parts.empty()) {
    return at::empty({x.size(0), task.heads.count(), 0, x.size(3)}, x.options());
  }
  return at::cat(parts, 2).contiguous();  // [B, h, n, X]
}

void attend_member(const at::Tensor& q, const std::vector<KeptChunk>& q_chunks,
                   const at::Tensor& kv, const std::vector<KeptChunk>& kv_chunks, double scale,
                   bool causal, std::vector<PartialAttention>& acc) {
  for (size_t a = 0; a < q_chunks.size(); ++a) {
    const int64_t qa = packed_start(q_chunks, a);
    for (size_t b = 0; b < kv_chunks.size(); ++b) {
      BlockMask mask;
      if (!chunk_pair_mask(q_chunks[a], kv_chunks[b], causal, &mask)) continue;
      const int64_t kb = packed_start(kv_chunks, b), nk = kv_chunks[b].count;
      BlockForward f =
          block_attention_forward(q.narrow(2, qa, q_chunks[a].count), kv[0].narrow(2, kb, nk),
                                  kv[1].narrow(2, kb, nk), scale, mask);
      acc[a] = merge_partials(acc[a], {f.out, f.lse});
    }
  }
}

void attend_member_backward(const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse,
                            const at::Tensor& dout, const std::vector<KeptChunk>& q_chunks,
                            const at::Tensor& kv, const std::vector<KeptChunk>& kv_chunks,
                            double scale, bool causal, at::Tensor& dq, at::Tensor& dkv) {
  for (size_t a = 0; a < q_chunks.size(); ++a) {
    const int64_t qa = packed_start(q_chunks, a), nq = q_chunks[a].count;
    for (size_t b = 0; b < kv_chunks.size(); ++b) {
      BlockMask mask;
      if (!chunk_pair_mask(q_chunks[a], kv_chunks[b], causal, &mask)) continue;
      const int64_t kb = packed_start(kv_chunks, b), nk = kv_chunks[b].count;
      BlockGradients g = block_attention_backward(
          q.narrow(2, qa, nq), kv[0].narrow(2, kb, nk), kv[1].narrow(2, kb, nk),
          out.narrow(2, qa, nq), lse.narrow(2, qa, nq), dout.narrow(2, qa, nq), scale, mask);
      dq.narrow(2, qa, nq).add_(g.dq);
      dkv[0].narrow(2, kb, nk).add_(g.dk);
      dkv[1].narrow(2, kb, nk).add_(g.dv);
    }
  }
}

}  // namespace ra
