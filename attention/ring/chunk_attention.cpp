// Member-against-member attention over the planned block calls (block_call_plan.h), merging
// each block into the slice of the packed accumulator it covers; packed views of the shard
// where the kept rows allow one, so q and the accumulators need no gather copies.
#include "attention/ring/chunk_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "attention/ring/block_call_plan.h"
#include "attention/standard/accumulate.h"
#include "attention/standard/block_attention.h"
#include "attention/standard/lse_merge.h"
#include "runtime/error.h"

namespace ra {

PartialAttention empty_partial(const at::Tensor& q) {
  const auto options = q.options().dtype(block_compute_dtype(q.scalar_type()));
  return {at::zeros(q.sizes(), options),
          at::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<double>::infinity(),
                   options)};
}

PartialAttention running_partial(const PartialAttention& target, const at::Tensor& q) {
  return target.write_once ? empty_partial(q) : target;
}

void finish_partial(const PartialAttention& target, const PartialAttention& running) {
  if (!target.write_once) return;
  target.out.copy_(running.out);
  target.lse.copy_(running.lse);
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

at::Tensor packed_view(const at::Tensor& x, const ShardTask& task,
                       const std::vector<KeptChunk>& chunks) {
  KeptChunk all{0, 0, 0};
  for (const KeptChunk& c : chunks) {
    if (c.count == 0) continue;
    if (all.count == 0) {
      all = c;
    } else if (c.first == all.first + all.count * task.rate) {
      all.count += c.count;  // continues the progression of the rows so far
    } else {
      return at::Tensor();
    }
  }
  if (all.count == 0) {
    return x.narrow(1, 0, 0)
        .slice(2, task.heads.start, task.heads.stop, task.heads.step)
        .permute({0, 2, 1, 3});
  }
  return chunk_view(x, task, all).permute({0, 2, 1, 3});  // [B, h, n, X]
}

at::Tensor gather_chunks(const at::Tensor& x, const ShardTask& task,
                         const std::vector<KeptChunk>& chunks) {
  at::Tensor view = packed_view(x, task, chunks);
  if (view.defined()) return view;
  std::vector<at::Tensor> parts;
  for (const KeptChunk& c : chunks) {
    if (c.count > 0) parts.push_back(chunk_view(x, task, c).permute({0, 2, 1, 3}));
  }
  return at::cat(parts, 2);  // [B, h, n, X]
}

void pack_chunks(const at::Tensor& dst, const at::Tensor& x, const ShardTask& task,
                 const std::vector<KeptChunk>& chunks) {
  at::Tensor view = packed_view(x, task, chunks);
  if (view.defined()) {
    dst.copy_(view);
    return;
  }
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (chunks[c].count == 0) continue;
    dst.narrow(2, packed_start(chunks, c), chunks[c].count)
        .copy_(chunk_view(x, task, chunks[c]).permute({0, 2, 1, 3}));
  }
}

at::Tensor head_index(const std::vector<int64_t>& heads, const at::Tensor& like) {
  at::Tensor index = at::tensor(heads, at::kLong);
  if (!like.is_cuda()) return index.to(like.device());
  // Pinned + non_blocking: a pageable copy would make the host wait for the queued compute.
  return index.pin_memory().to(like.device(), /*non_blocking=*/true);
}

at::Tensor kv_expand_index(const ShardTask& task, const at::Tensor& like) {
  if (task.kv.identity()) return at::Tensor();
  return head_index(task.kv.expand, like);
}

namespace {

// k/v heads -> query heads (a copy, local to this rank; nothing expanded ever travels).
at::Tensor expanded(const at::Tensor& kv, const at::Tensor& expand) {
  return expand.defined() ? kv.index_select(2, expand) : kv;
}

// Adds a query-head gradient [B, h, n, D] into a k/v-head gradient [B, h_kv, n, D].
void add_grouped(const at::Tensor& dst, const at::Tensor& expand, const at::Tensor& grad) {
  if (expand.defined()) {
    dst.index_add_(1, expand, grad.to(dst.scalar_type()));
  } else {
    accumulate_(dst, grad);
  }
}

// Whether the row ranges [a, a + n) and [b, b + m) share a row.
bool rows_overlap(int64_t a, int64_t n, int64_t b, int64_t m) { return a < b + m && b < a + n; }

// The forward of one planned block call (kv: expanded to q's heads).
BlockForward block_call_forward(const BlockCall& c, const at::Tensor& q, const at::Tensor& kv,
                                double scale) {
  return block_attention_forward(q.narrow(2, c.q_start, c.q_count),
                                 kv[0].narrow(2, c.kv_start, c.kv_count),
                                 kv[1].narrow(2, c.kv_start, c.kv_count), scale, c.mask);
}

// The backward of one planned block call (kv: expanded to q's heads).
BlockGradients block_call_backward(const BlockCall& c, const at::Tensor& q, const at::Tensor& out,
                                   const at::Tensor& lse, const at::Tensor& dout,
                                   const at::Tensor& kv, double scale) {
  return block_attention_backward(
      q.narrow(2, c.q_start, c.q_count), kv[0].narrow(2, c.kv_start, c.kv_count),
      kv[1].narrow(2, c.kv_start, c.kv_count), out.narrow(2, c.q_start, c.q_count),
      lse.narrow(2, c.q_start, c.q_count), dout.narrow(2, c.q_start, c.q_count), scale, c.mask);
}

}  // namespace

void attend_member(const at::Tensor& q, const std::vector<KeptChunk>& q_chunks,
                   const at::Tensor& kv_heads, const std::vector<KeptChunk>& kv_chunks,
                   const at::Tensor& expand, double scale, bool causal,
                   const PartialAttention& acc) {
  RA_CHECK(!acc.write_once, "attend_member merges into a running merge, not a write-once target");
  const at::Tensor kv = expanded(kv_heads, expand);
  for (const BlockCall& c : plan_block_calls(q_chunks, kv_chunks, causal)) {
    BlockForward f = block_call_forward(c, q, kv, scale);
    merge_by_lse_(acc.out.narrow(2, c.q_start, c.q_count), acc.lse.narrow(2, c.q_start, c.q_count),
                  f.out, f.lse);
  }
}

std::vector<OutputPiece> member_block_outputs(const at::Tensor& q,
                                              const std::vector<KeptChunk>& q_chunks,
                                              const at::Tensor& kv_heads,
                                              const std::vector<KeptChunk>& kv_chunks,
                                              const at::Tensor& expand, double scale, bool causal) {
  const at::Tensor kv = expanded(kv_heads, expand);
  std::vector<OutputPiece> pieces;
  for (const BlockCall& c : plan_block_calls(q_chunks, kv_chunks, causal)) {
    BlockForward f = block_call_forward(c, q, kv, scale);
    pieces.push_back({c.q_start, f.out, f.lse});
  }
  return pieces;
}

MemberGradients member_block_gradients(const at::Tensor& q, const at::Tensor& out,
                                       const at::Tensor& lse, const at::Tensor& dout,
                                       const std::vector<KeptChunk>& q_chunks, const at::Tensor& kv,
                                       const std::vector<KeptChunk>& kv_chunks, double scale,
                                       bool causal) {
  RA_CHECK(kv.size(2) == q.size(1), "member_block_gradients: kv has ", kv.size(2), " heads, q ",
           q.size(1), " (GQA expansion sums heads: attend_member_backward)");
  MemberGradients g;
  for (const BlockCall& c : plan_block_calls(q_chunks, kv_chunks, causal)) {
    BlockGradients b = block_call_backward(c, q, out, lse, dout, kv, scale);
    g.dq.push_back({c.q_start, b.dq});
    g.dk.push_back({c.kv_start, b.dk});
    g.dv.push_back({c.kv_start, b.dv});
  }
  return g;
}

void attend_member_backward(const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse,
                            const at::Tensor& dout, const std::vector<KeptChunk>& q_chunks,
                            const at::Tensor& kv_heads, const std::vector<KeptChunk>& kv_chunks,
                            const at::Tensor& expand, double scale, bool causal,
                            const at::Tensor& dq, const at::Tensor& dkv, GradTarget dkv_target) {
  const at::Tensor kv = expanded(kv_heads, expand);
  // kOverwrite: the kv row ranges written so far; a block whose range meets none of them (and
  // needs no head grouping) is copied in, any other is added onto zeros.
  std::vector<std::pair<int64_t, int64_t>> written;
  auto meets_written = [&](int64_t start, int64_t count) {
    for (const auto& [s, n] : written) {
      if (rows_overlap(start, count, s, n)) return true;
    }
    return false;
  };
  auto zero_unwritten = [&](int64_t start, int64_t count) {  // the rows no written range covers
    std::vector<std::pair<int64_t, int64_t>> spans = written;
    std::sort(spans.begin(), spans.end());
    int64_t pos = start;
    const int64_t stop = start + count;
    for (const auto& [s, n] : spans) {
      if (s > pos && pos < stop) dkv.narrow(3, pos, std::min(s, stop) - pos).zero_();
      pos = std::max(pos, s + n);
    }
    if (pos < stop) dkv.narrow(3, pos, stop - pos).zero_();
  };
  for (const BlockCall& c : plan_block_calls(q_chunks, kv_chunks, causal)) {
    BlockGradients g = block_call_backward(c, q, out, lse, dout, kv, scale);
    accumulate_(dq.narrow(2, c.q_start, c.q_count), g.dq);
    const at::Tensor dk = dkv[0].narrow(2, c.kv_start, c.kv_count);
    const at::Tensor dv = dkv[1].narrow(2, c.kv_start, c.kv_count);
    if (dkv_target == GradTarget::kOverwrite) {
      if (!expand.defined() && !meets_written(c.kv_start, c.kv_count)) {
        dk.copy_(g.dk);
        dv.copy_(g.dv);
        written.emplace_back(c.kv_start, c.kv_count);
        continue;
      }
      RA_CHECK(dkv.scalar_type() == block_compute_dtype(dkv.scalar_type()),
               "attend_member_backward: a ", dkv.scalar_type(), " dK/dV target would sum rounded ",
               "block gradients (a block call overlaps rows another wrote, or GQA)");
      zero_unwritten(c.kv_start, c.kv_count);
      written.emplace_back(c.kv_start, c.kv_count);
    }
    add_grouped(dk, expand, g.dk);
    add_grouped(dv, expand, g.dv);
  }
  if (dkv_target == GradTarget::kOverwrite) zero_unwritten(0, dkv.size(3));
}

}  // namespace ra
