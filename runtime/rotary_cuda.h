// Torch boundary of the fused RoPE kernel (attention/standard/cuda/rotate_pairs.h), compiled
// only with a CUDA LibTorch: one kernel per rotation instead of ~8 strided, broadcasting
// elementwise ops (which cost ~20% of a LongNet-base training step at 1M tokens on 4 H100s).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

namespace ra {

// x: [B, S, H, D] CUDA fp16/bf16/fp32, head dim contiguous; cos, sin: [S, D/2] fp32 on x's
// device. Returns the rotated x (contiguous, x's dtype); differentiable w.r.t. x.
at::Tensor rotate_pairs_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// q and k (each as x above) rotated together: one launch per direction where they share shape,
// dtype and strides.
std::pair<at::Tensor, at::Tensor> rotate_pairs_cuda(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& cos, const at::Tensor& sin);

}  // namespace ra
