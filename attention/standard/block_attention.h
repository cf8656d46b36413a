// The block-attention primitive every sharded / blocked path is built from: dense softmax
// attention of one query block against one key block, returning the output and its
// log-sum-exp, and the flash-attention backward that takes the *merged* output and LSE of all
// blocks a query row attended (so blocks need no normalisation of their own).
// One entry point per direction, so the GPU build can dispatch them to fused kernels.
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// Which (query, key) pairs of a block are attended.
enum class BlockMask {
  kNone,            // every pair
  kCausalDiagonal,  // same positions on both sides (Lq == Lk): key index <= query index
};

// out in the compute dtype (float32, float64 for float64 inputs), or in the input dtype where a
// fused kernel computed it (merge_by_lse_ takes either); lse in the compute dtype.
struct BlockForward {
  at::Tensor out;  // [N, H, Lq, D]
  at::Tensor lse;  // [N, H, Lq]
};

// In the compute dtype, or in the input dtype where a fused kernel computed them (its
// outputs, not rounded again): callers add them into compute-dtype accumulators.
struct BlockGradients {
  at::Tensor dq;  // [N, H, Lq, D]
  at::Tensor dk;  // [N, H, Lk, D]
  at::Tensor dv;  // [N, H, Lk, D]
};

// float64 for float64 inputs, else float32.
at::ScalarType block_compute_dtype(at::ScalarType input);

// The dtype block_attention_backward returns its gradients in for blocks of q's kind (device,
// dtype, head dim): q's own where a fused kernel computes them, else the compute dtype. A
// tensor of this dtype holds one block's gradients without rounding them again.
at::ScalarType block_gradient_dtype(const at::Tensor& q);

// q: [N, H, Lq, D]; k, v: [N, H, Lk, D]; any floating dtype, one device. Lq, Lk > 0.
BlockForward block_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, BlockMask mask);

// Gradients of this block's pairs for a loss whose gradient w.r.t. the merged output is dout:
// Delta = rowsum(dout * out), P = exp(q k^T scale - lse), dV = P^T dout, dP = dout V^T,
// dS = P (dP - Delta), dQ = dS K scale, dK = dS^T Q scale.
// out: [N, H, Lq, D] and lse: [N, H, Lq] are the merged results over every block the rows
// attended; dout: [N, H, Lq, D]. Rows with lse = -inf contribute nothing.
BlockGradients block_attention_backward(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out,
                                        const at::Tensor& lse, const at::Tensor& dout, double scale,
                                        BlockMask mask);

}  // namespace ra
