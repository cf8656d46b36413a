// The LibTorch-version-dependent calls of ringattn, in one place: ATen's fused attention ops
// (cuDNN and flash, forward and backward) as they are spelled in PyTorch 2.x (checked against
// 2.11's native_functions.yaml). Included only where the build has a CUDA LibTorch
// (RA_TORCH_HAS_CUDA); Debian's CPU LibTorch 1.13 has none of these ops.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace ra::compat {

// What a fused forward returns that the backward needs: out [N, h, L, D]; lse [N, h, L]
// (flash) or [N, h, L, 1] (cuDNN), fp32, natural log; the philox state the backward expects
// (unused without dropout, but the ops take it).
struct FusedAttentionForward {
  at::Tensor out, lse, philox_seed, philox_offset;
};

using FusedAttentionGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // dq, dk, dv

// The two fused attention kernels ATen offers on sm_90.
enum class FusedOp : int64_t { kCudnn = 0, kFlash = 1 };

// q, k, v: [N, h, L, D] (strided views allowed, last dim contiguous); no dropout, no mask.
inline FusedAttentionForward fused_attention_forward(FusedOp op, const at::Tensor& q,
                                                     const at::Tensor& k, const at::Tensor& v,
                                                     bool causal, double scale) {
  if (op == FusedOp::kCudnn) {
    auto r = at::_scaled_dot_product_cudnn_attention(q, k, v, /*attn_bias=*/std::nullopt,
                                                     /*compute_log_sumexp=*/true,
                                                     /*dropout_p=*/0.0, causal,
                                                     /*return_debug_mask=*/false, scale);
    return {std::get<0>(r), std::get<1>(r), std::get<6>(r), std::get<7>(r)};
  }
  auto r = at::_scaled_dot_product_flash_attention(q, k, v, /*dropout_p=*/0.0, causal,
                                                   /*return_debug_mask=*/false, scale);
  return {std::get<0>(r), std::get<1>(r), std::get<6>(r), std::get<7>(r)};
}

// `saved` from fused_attention_forward (lse in the layout the forward returned, or the merged
// lse shaped like it); out and grad_out with identical strides.
inline FusedAttentionGrads fused_attention_backward(FusedOp op, const at::Tensor& grad_out,
                                                    const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    const FusedAttentionForward& saved, bool causal,
                                                    double scale) {
  const int64_t max_q = q.size(2), max_k = k.size(2);
  if (op == FusedOp::kCudnn) {
    return at::_scaled_dot_product_cudnn_attention_backward(
        grad_out, q, k, v, saved.out, saved.lse, saved.philox_seed, saved.philox_offset,
        /*attn_bias=*/at::Tensor(), /*cum_seq_q=*/at::Tensor(), /*cum_seq_k=*/at::Tensor(), max_q,
        max_k, /*dropout_p=*/0.0, causal, scale);
  }
  return at::_scaled_dot_product_flash_attention_backward(
      grad_out, q, k, v, saved.out, saved.lse, /*cum_seq_q=*/at::Tensor(),
      /*cum_seq_k=*/at::Tensor(), max_q, max_k, /*dropout_p=*/0.0, causal, saved.philox_seed,
      saved.philox_offset, scale);
}

}  // namespace ra::compat
