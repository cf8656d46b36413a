// Block-sparse attention of this rank's query shard over the global layout, differentiable
// (a custom autograd function). Forward walks the plan's hops: local key blocks first, then the
// blocks received at each needed hop, merged online by log-sum-exp. Backward re-exchanges the
// needed key/value blocks, computes gradients with the final out and lse (flash identity), and
// returns each received block's dK/dV to its owner. With one rank (no communicator) it is the
// single-device computation. Per hop the arithmetic is either the torch ops of
// block_sparse_ops.h or, given the hops' device layouts, the CUDA kernels (attention/sparse/cuda).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "attention/attention.h"
#include "attention/sparse/sparse_ring_plan.h"

namespace ra {

class Communicator;
struct SparseHopLayouts;  // attention/sparse/cuda/block_sparse_cuda.h

// What the ring form moved (bytes of tensor payload this rank sent), and how it computed.
struct SparseCommStats {
  int64_t forward_bytes_sent = 0;
  int64_t backward_bytes_sent = 0;  // key/value blocks again plus their dK/dV going home
  int64_t exchanges = 0;            // send_recv calls, forward and backward
  int64_t kernel_hops = 0;          // forward hops computed by the CUDA kernels (0: torch ops)
};

struct BlockSparseRun {
  std::shared_ptr<const SparseRingPlan> plan;
  std::shared_ptr<Communicator> comm;      // null when the plan has one rank
  std::shared_ptr<SparseCommStats> stats;  // optional; updated by forward and backward
  int64_t block_size = 0;
  double scale = 1.0;
  // Set (CUDA fp16/bf16 inputs the kernels take, builds with RA_SPARSE_CUDA_KERNELS): the plan's
  // hops uploaded for the CUDA kernels, which then run each hop; null: the torch-op path.
  std::shared_ptr<const SparseHopLayouts> hop_layouts;
};

// q: [B, S/P, H, D]; k, v: [B, S/P, H_kv, D] (this rank's shard; H_kv divides H), validated.
// out: [B, S/P, H, D] in q's dtype; lse: [B, S/P, H] float32 (float64 for float64 inputs).
AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const BlockSparseRun& run);

}  // namespace ra
