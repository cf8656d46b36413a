// block_sparse_forward / block_sparse_backward: gather a chunk of key blocks, one matmul for the
// row's scores, causal mask on the diagonal block only.
#include "attention/sparse/block_sparse_ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

namespace ra {
namespace {

struct KeyChunk {
  at::Tensor slots;  // [n] int64
  at::Tensor k, v;   // [B, Hkv, n*b, D]
  at::Tensor bias;   // [g*b, n*b] with -inf above the diagonal block's diagonal, or undefined
};

KeyChunk gather_chunk(const at::Tensor& kv, const RowTask& task, size_t first, size_t count,
                      int64_t rows, int64_t block_size) {
  std::vector<int64_t> slots(task.key_slots.begin() + first,
                             task.key_slots.begin() + first + count);
  KeyChunk chunk;
  chunk.slots = at::tensor(slots, at::kLong).to(kv.device());
  const int64_t n = static_cast<int64_t>(count);
  auto gather = [&](int which) {
    at::Tensor blocks = kv[which].index_select(2, chunk.slots);  // [B, Hkv, n, b, D]
    return blocks.reshape({blocks.size(0), blocks.size(1), n * block_size, blocks.size(4)});
  };
  chunk.k = gather(0);
  chunk.v = gather(1);
  auto diag = std::find(slots.begin(), slots.end(), task.diagonal_slot);
  if (task.diagonal_slot >= 0 && diag != slots.end()) {
    const int64_t at_block = diag - slots.begin();
    auto opts = kv.options();
    chunk.bias = at::zeros({rows, n * block_size}, opts);
    // Query row t of the g*b rows is token t mod b of the block.
    at::Tensor upper = at::ones({block_size, block_size}, opts.dtype(at::kBool)).triu(1);
    at::Tensor masked = at::zeros({block_size, block_size}, opts)
                            .masked_fill(upper, -std::numeric_limits<double>::infinity());
    chunk.bias.narrow(1, at_block * block_size, block_size)
        .copy_(masked.repeat({rows / block_size, 1}));
  }
  return chunk;
}

at::Tensor scores(const at::Tensor& q_row, const KeyChunk& chunk, double scale) {
  at::Tensor s = at::matmul(q_row, chunk.k.transpose(-1, -2)) * scale;  // [B, Hkv, g*b, n*b]
  return chunk.bias.defined() ? s + chunk.bias : s;
}

}  // namespace

void block_sparse_forward(const at::Tensor& q, const at::Tensor& kv,
                          const std::vector<RowTask>& tasks, double scale, int64_t block_size,
                          at::Tensor& out, at::Tensor& lse) {
  const int64_t rows = q.size(3);
  for (const RowTask& task : tasks) {
    at::Tensor q_row = q.select(2, task.query_block);      // [B, Hkv, g*b, D]
    at::Tensor out_row = out.select(2, task.query_block);  // views: updated in place
    at::Tensor lse_row = lse.select(2, task.query_block);  // [B, Hkv, g*b]
    for (size_t first = 0; first < task.key_slots.size(); first += kKeyBlocksPerChunk) {
      const size_t count = std::min<size_t>(kKeyBlocksPerChunk, task.key_slots.size() - first);
      KeyChunk chunk = gather_chunk(kv, task, first, count, rows, block_size);
      at::Tensor s = scores(q_row, chunk, scale);
      at::Tensor chunk_lse = at::logsumexp(s, -1);  // finite: every row sees >= 1 key
      at::Tensor chunk_out = at::matmul(at::exp(s - chunk_lse.unsqueeze(-1)), chunk.v);
      at::Tensor merged = at::logaddexp(lse_row, chunk_lse);
      out_row.copy_(out_row * at::exp(lse_row - merged).unsqueeze(-1) +
                    chunk_out * at::exp(chunk_lse - merged).unsqueeze(-1));
      lse_row.copy_(merged);
    }
  }
}

void block_sparse_backward(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& dout,
                           const at::Tensor& lse, const at::Tensor& delta,
                           const std::vector<RowTask>& tasks, double scale, int64_t block_size,
                           at::Tensor& dq, at::Tensor& dkv) {
  const int64_t rows = q.size(3);
  for (const RowTask& task : tasks) {
    at::Tensor q_row = q.select(2, task.query_block);                        // [B, Hkv, g*b, D]
    at::Tensor dout_row = dout.select(2, task.query_block);                  // [B, Hkv, g*b, D]
    at::Tensor lse_row = lse.select(2, task.query_block).unsqueeze(-1);      // [B, Hkv, g*b, 1]
    at::Tensor delta_row = delta.select(2, task.query_block).unsqueeze(-1);  // [B, Hkv, g*b, 1]
    at::Tensor dq_row = dq.select(2, task.query_block);
    for (size_t first = 0; first < task.key_slots.size(); first += kKeyBlocksPerChunk) {
      const size_t count = std::min<size_t>(kKeyBlocksPerChunk, task.key_slots.size() - first);
      KeyChunk chunk = gather_chunk(kv, task, first, count, rows, block_size);
      at::Tensor p = at::exp(scores(q_row, chunk, scale) - lse_row);  // [B, Hkv, g*b, n*b]
      at::Tensor dp = at::matmul(dout_row, chunk.v.transpose(-1, -2));
      at::Tensor ds = p * (dp - delta_row) * scale;
      dq_row.add_(at::matmul(ds, chunk.k));
      auto as_blocks = [&](const at::Tensor& t) {  // [B, Hkv, n*b, D] -> [B, Hkv, n, b, D]
        return t.reshape(
            {t.size(0), t.size(1), static_cast<int64_t>(count), block_size, t.size(3)});
      };
      dkv[0].index_add_(2, chunk.slots, as_blocks(at::matmul(ds.transpose(-1, -2), q_row)));
      dkv[1].index_add_(2, chunk.slots, as_blocks(at::matmul(p.transpose(-1, -2), dout_row)));
    }
  }
}

}  // namespace ra
