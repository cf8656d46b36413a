// Block attention. CUDA fp16/bf16 blocks with a head dim the fused kernels take go to ATen's
// cuDNN (flash as the fallback) attention with LSE and its backward fed the merged out/lse
// (builds with a CUDA LibTorch); everything else uses torch ops: scores in the compute dtype,
// masked, exact logsumexp, and a backward that recomputes the probabilities from the merged LSE.
#include "attention/standard/block_attention.h"

#include <ATen/ATen.h>

#include <limits>

#include "runtime/error.h"
#ifdef RA_HAS_FUSED_ATTENTION
#include <atomic>

#include "runtime/torch_compat.h"
#endif

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

#ifdef RA_HAS_FUSED_ATTENTION
std::atomic<bool> g_cudnn_rejected{false};  // cuDNN refused a block shape once: flash from then on

bool fused_eligible(const at::Tensor& q) {
  const int64_t d = q.size(3);
  return q.is_cuda() && (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16) &&
         d % 8 == 0 && d <= 256;
}

compat::FusedOp fused_op(int64_t head_dim) {
  return head_dim <= 128 && !g_cudnn_rejected.load() ? compat::FusedOp::kCudnn
                                                     : compat::FusedOp::kFlash;
}

// Runs fn(op) with cuDNN first; if cuDNN rejects the shape, remembers that and uses flash.
template <typename Fn>
auto with_fused_op(int64_t head_dim, Fn&& fn) {
  const compat::FusedOp op = fused_op(head_dim);
  try {
    return fn(op);
  } catch (const c10::Error&) {
    if (op != compat::FusedOp::kCudnn) throw;
    g_cudnn_rejected = true;
    return fn(compat::FusedOp::kFlash);
  }
}

// The fused kernels take any strides with a dense last dim: the ring's narrowed q / K / V
// slices (sequence ranges of packed [N, H, L, D] tensors) are passed without a copy.
at::Tensor dense_last_dim(const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

BlockForward fused_block_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 double scale, BlockMask mask) {
  const at::Tensor qc = dense_last_dim(q), kc = dense_last_dim(k), vc = dense_last_dim(v);
  compat::FusedAttentionForward f = with_fused_op(q.size(3), [&](compat::FusedOp op) {
    return compat::fused_attention_forward(op, qc, kc, vc, mask == BlockMask::kCausalDiagonal,
                                           scale);
  });
  at::Tensor lse = f.lse.dim() == 4 ? f.lse.select(3, 0) : f.lse;  // [N, H, Lq] fp32
  return {f.out, lse};  // out in the input dtype: the merge reads it as it is
}

BlockGradients fused_block_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& out, const at::Tensor& lse,
                                    const at::Tensor& dout, double scale, BlockMask mask) {
  const auto dtype = q.scalar_type();
  const at::Tensor qc = dense_last_dim(q), kc = dense_last_dim(k), vc = dense_last_dim(v);
  // out and dout in the input dtype with identical strides, as the kernels expect: views of two
  // tensors of one layout (the callers convert them once) go in as they are.
  at::Tensor oc = out.to(dtype), doc = dout.to(dtype);
  if (oc.strides() != doc.strides() || oc.stride(-1) != 1) {
    oc = oc.contiguous();
    doc = doc.contiguous();
  }
  // lse = -inf (row attended nothing anywhere) -> +inf, so P = exp(s - lse) = 0, not NaN.
  at::Tensor lse_safe = at::where(
      at::isfinite(lse), lse.to(at::kFloat),
      at::full({}, std::numeric_limits<float>::infinity(), lse.options().dtype(at::kFloat)));
  const at::Tensor philox = at::zeros({1}, q.options().dtype(at::kLong));  // no dropout
  compat::FusedAttentionGrads g = with_fused_op(q.size(3), [&](compat::FusedOp op) {
    at::Tensor lse_k = op == compat::FusedOp::kCudnn ? lse_safe.unsqueeze(-1) : lse_safe;
    compat::FusedAttentionForward saved{oc, lse_k.contiguous(), philox, philox};
    return compat::fused_attention_backward(op, doc, qc, kc, vc, saved,
                                            mask == BlockMask::kCausalDiagonal, scale);
  });
  return {std::get<0>(g), std::get<1>(g), std::get<2>(g)};  // input dtype (BlockGradients)
}
#endif

}  // namespace

at::ScalarType block_compute_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

at::ScalarType block_gradient_dtype(const at::Tensor& q) {
#ifdef RA_HAS_FUSED_ATTENTION
  if (fused_eligible(q)) return q.scalar_type();
#endif
  return block_compute_dtype(q.scalar_type());
}

BlockForward block_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, BlockMask mask) {
  check_block(q, k, v, mask);
#ifdef RA_HAS_FUSED_ATTENTION
  if (fused_eligible(q)) return fused_block_forward(q, k, v, scale, mask);
#endif
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
#ifdef RA_HAS_FUSED_ATTENTION
  if (fused_eligible(q)) return fused_block_backward(q, k, v, out, lse, dout, scale, mask);
#endif
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
