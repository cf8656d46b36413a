// Block attention with torch ops (any device): scores in the compute dtype, masked, exact
// logsumexp; the backward recomputes the probabilities from the merged LSE (flash identity).
#include "attention/standard/block_attention.h"

#include <ATen/ATen.h>

#include <limits>

#include "runtime/error.h"

namespace ra {
namespace {

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

void check_block(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, BlockMask mask) {
  RA_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "block attention: q, k, v must be ",
           "[N, H, L, D]; got ", q.dim(), ", ", k.dim(), " and ", v.dim(), " dims");
  RA_CHECK(k.sizes() == v.sizes(), "block attention: k ", k.sizes(), " and v ", v.sizes(),
           " must have the same shape");
  RA_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
           "block attention: q ", q.sizes(), " and k ", k.sizes(), " must agree on N, H and D");
  RA_CHECK(mask == BlockMask::kNone || q.size(2) == k.size(2),
           "block attention: a causal diagonal block needs Lq == Lk; got ", q.size(2), " and ",
           k.size(2));
}

// [Lq, Lk] true where the pair is masked out (key after query).
at::Tensor future_mask(int64_t lq, int64_t lk, const at::Tensor& like) {
  return at::ones({lq, lk}, like.options().dtype(at::kBool)).triu(1);
}

}  // namespace

at::ScalarType block_compute_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

BlockForward block_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, BlockMask mask) {
  check_block(q, k, v, mask);
  const auto compute = block_compute_dtype(q.scalar_type());
  at::Tensor qc = q.to(compute), kc = k.to(compute), vc = v.to(compute);
  at::Tensor scores = at::matmul(qc, kc.transpose(-1, -2)) * scale;  // [N, H, Lq, Lk]
  if (mask == BlockMask::kCausalDiagonal) {
    scores = scores.masked_fill(future_mask(q.size(2), k.size(2), scores), kMinusInf);
  }
  at::Tensor lse = at::logsumexp(scores, -1);              // [N, H, Lq]
  at::Tensor probs = at::exp(scores - lse.unsqueeze(-1));  // [N, H, Lq, Lk]
  return {at::matmul(probs, vc), lse};
}

BlockGradients block_attention_backward(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out,
                                        const at::Tensor& lse, const at::Tensor& dout, double scale,
                                        BlockMask mask) {
  check_block(q, k, v, mask);
  const auto compute = block_compute_dtype(q.scalar_type());
  at::Tensor qc = q.to(compute), kc = k.to(compute), vc = v.to(compute);
  at::Tensor oc = out.to(compute), doc = dout.to(compute), lc = lse.to(compute);
  // Rows nobody attended (lse = -inf) get P = 0 instead of exp(-inf + inf) = NaN.
  at::Tensor finite = at::isfinite(lc);
  at::Tensor lse_safe = at::where(finite, lc, at::zeros_like(lc));
  at::Tensor scores = at::matmul(qc, kc.transpose(-1, -2)) * scale;  // [N, H, Lq, Lk]
  at::Tensor probs = at::exp(scores - lse_safe.unsqueeze(-1)) * finite.unsqueeze(-1);
  if (mask == BlockMask::kCausalDiagonal) {
    probs = probs.masked_fill(future_mask(q.size(2), k.size(2), probs), 0.0);
  }
  at::Tensor delta = (doc * oc).sum(-1, /*keepdim=*/true);   // [N, H, Lq, 1]
  at::Tensor dv = at::matmul(probs.transpose(-1, -2), doc);  // [N, H, Lk, D]
  at::Tensor dp = at::matmul(doc, vc.transpose(-1, -2));     // [N, H, Lq, Lk]
  at::Tensor ds = probs * (dp - delta);
  at::Tensor dq = at::matmul(ds, kc) * scale;                    // [N, H, Lq, D]
  at::Tensor dk = at::matmul(ds.transpose(-1, -2), qc) * scale;  // [N, H, Lk, D]
  return {dq, dk, dv};
}

}  // namespace ra
