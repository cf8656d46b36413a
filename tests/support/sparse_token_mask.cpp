// sparse_token_mask: every rule evaluated on every (query token, key token) pair.
#include "tests/support/sparse_token_mask.h"

namespace ra::testing {

at::Tensor sparse_token_mask(const SparseConfig& sparse, const DilatedAttentionConfig& attention,
                             int64_t seq_len) {
  const int64_t b = sparse.block_size;
  at::Tensor p = at::arange(seq_len, at::kLong).unsqueeze(1);  // query token, [S, 1]
  at::Tensor t = at::arange(seq_len, at::kLong).unsqueeze(0);  // key token, [1, S]
  at::Tensor qb = p.div(b, "floor"), kb = t.div(b, "floor");
  at::Tensor distance_tokens = (qb - kb).abs() * b;  // block distance in tokens, [S, S]
  at::Tensor local = distance_tokens.lt(sparse.window);
  at::Tensor mask;
  switch (sparse.pattern) {
    case SparsePattern::kLocalWindow:
      mask = local;
      break;
    case SparsePattern::kDilated: {
      mask = local;
      for (size_t l = 0; l < attention.segment_lengths.size(); ++l) {
        const int64_t w = std::min(attention.segment_lengths[l], seq_len);
        at::Tensor same_segment = p.div(w, "floor").eq(t.div(w, "floor"));
        at::Tensor on_rate = (qb - kb).abs().remainder(attention.dilation_rates[l]).eq(0);
        mask = mask.logical_or(same_segment.logical_and(on_rate));
      }
      break;
    }
    case SparsePattern::kGlobalLocal: {
      const int64_t g_tokens = (sparse.global_tokens + b - 1) / b * b;
      mask = local.logical_or(p.lt(g_tokens)).logical_or(t.lt(g_tokens));
      break;
    }
    case SparsePattern::kHierarchical:
      mask = at::zeros({seq_len, seq_len}, at::kBool);
      for (size_t l = 0; l < sparse.level_windows.size(); ++l) {
        mask = mask.logical_or(
            distance_tokens.lt(sparse.level_windows[l])
                .logical_and(distance_tokens.remainder(sparse.level_strides[l]).eq(0)));
      }
      break;
    case SparsePattern::kCustom: {
      const int64_t nb = seq_len / b;
      at::Tensor blocks = at::tensor(std::vector<int64_t>(sparse.custom_block_mask.begin(),
                                                          sparse.custom_block_mask.end()),
                                     at::kLong)
                              .reshape({nb, nb})
                              .ne(0);
      mask = blocks.index_select(0, qb.squeeze(1)).index_select(1, kb.squeeze(0));
      break;
    }
  }
  if (attention.causal) mask = mask.logical_and(t.le(p));
  return mask.expand({seq_len, seq_len}).clone();
}

}  // namespace ra::testing
