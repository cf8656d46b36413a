// Dense masked dilated attention in float64, straight from the definition.
#include "tests/support/dense_reference.h"

#include <cmath>
#include <limits>

namespace ra::testing {

at::Tensor branch_count_matrix(const DilatedAttentionConfig& config, int64_t seq_len,
                               int64_t num_heads) {
  const int64_t G = static_cast<int64_t>(config.segment_lengths.size());
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor counts = at::zeros({num_heads, seq_len, seq_len}, f64);
  at::Tensor pos = at::arange(seq_len, f64.dtype(at::kLong));
  for (int64_t h = 0; h < num_heads; ++h) {
    // Partition mode: head h belongs to group g; groups 0 .. H mod G - 1 have one extra head.
    int64_t group = 0;
    {
      int64_t start = 0;
      for (int64_t g = 0; g < G; ++g) {
        int64_t size = num_heads / G + (g < num_heads % G ? 1 : 0);
        if (h >= start && h < start + size) group = g;
        start += size;
      }
    }
    for (int64_t i = 0; i < G; ++i) {
      if (config.head_mode == HeadMode::kPartition && i != group) continue;
      const int64_t w = std::min(config.segment_lengths[i], seq_len);
      const int64_t r = config.dilation_rates[i];
      const int64_t offset = config.head_mode == HeadMode::kAll ? h % r : group % r;
      at::Tensor local = pos.remainder(w);
      at::Tensor kept = local.ge(offset).logical_and((local - offset).remainder(r).eq(0));
      at::Tensor seg = pos.div(w, "floor");
      at::Tensor pair = kept.unsqueeze(1)
                            .logical_and(kept.unsqueeze(0))
                            .logical_and(seg.unsqueeze(1).eq(seg.unsqueeze(0)));
      if (config.causal) pair = pair.logical_and(pos.unsqueeze(0).le(pos.unsqueeze(1)));
      counts[h] += pair.to(at::kDouble);
    }
  }
  return counts;
}

DenseResult dense_dilated_attention(const DilatedAttentionConfig& config, const at::Tensor& q,
                                    const at::Tensor& k, const at::Tensor& v) {
  const double scale =
      config.softmax_scale ? *config.softmax_scale : 1.0 / std::sqrt(double(q.size(3)));
  DenseResult result = dense_attention_with_counts(
      branch_count_matrix(config, q.size(1), q.size(2)), q, k, v, scale);
  if (config.head_mode == HeadMode::kPartition) {
    result.out = result.out / static_cast<double>(config.segment_lengths.size());
  }
  return result;
}

DenseResult dense_attention_with_counts(const at::Tensor& counts, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t H = q.size(2), Hkv = k.size(2);
  at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  // GQA: query head h reads k/v head h / (H / Hkv).
  at::Tensor kv_index = at::arange(H, q.options().dtype(at::kLong)).div(H / Hkv, "floor");
  kd = kd.index_select(2, kv_index), vd = vd.index_select(2, kv_index);
  at::Tensor scores = at::einsum("bshd,bthd->bhst", {qd, kd}) * scale;  // [B, H, S, S]
  // [H, S, S] on the inputs' device (GPU tests run this reference on the GPU).
  at::Tensor counts_here = counts.to(q.device());
  at::Tensor allowed = counts_here.gt(0).unsqueeze(0);
  at::Tensor has_key = allowed.any(-1, /*keepdim=*/true);  // [1, H, S, 1]
  // Rows without keys: fill with 0 so softmax stays finite, then zero their output.
  at::Tensor logits =
      at::where(allowed, scores + at::log(counts_here.clamp_min(1)).unsqueeze(0),
                at::full({}, -std::numeric_limits<double>::infinity(), scores.options()));
  logits = at::where(has_key, logits, at::zeros_like(logits));
  at::Tensor probs = at::softmax(logits, -1) * has_key.to(at::kDouble);
  at::Tensor out = at::einsum("bhst,bthd->bshd", {probs, vd});
  at::Tensor lse =
      at::where(has_key.squeeze(-1), at::logsumexp(logits, -1),
                at::full({}, -std::numeric_limits<double>::infinity(), logits.options()));
  return {out, lse.permute({0, 2, 1}).detach()};
}

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor ad = a.detach().to(at::kDouble).cpu(), bd = b.detach().to(at::kDouble).cpu();
  if (at::isnan(ad).any().item<bool>() || at::isnan(bd).any().item<bool>()) {
    return std::numeric_limits<double>::infinity();
  }
  const double denom = bd.norm().item<double>();
  const double diff = (ad - bd).norm().item<double>();
  return denom == 0 ? diff : diff / denom;
}

double tolerance_for(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble:
      return 1e-10;
    case at::kFloat:
      return 1e-5;
    case at::kHalf:
      return 5e-3;
    default:
      return 1e-2;
  }
}

}  // namespace ra::testing
