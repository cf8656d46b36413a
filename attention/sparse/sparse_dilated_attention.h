// SparseDilatedAttention (factory name "sparse"): exact block-sparse attention over a block
// layout built from the SparseConfig pattern (attention/sparse/sparse_patterns.h). The dilated
// config contributes `causal`, `softmax_scale` and, for the `dilated` pattern, its branches
// (segment_lengths, dilation_rates) applied to blocks; other patterns ignore the branches.
// With a communicator of P > 1 ranks, q/k/v are this rank's S/P-token shard and the layout is
// over the global S = P * shard; key blocks travel only to ranks whose query blocks need them.
// Unlike the dense dilated variants a pair of tokens counts once however many rules select it.
// CUDA fp16/bf16 inputs with D and block size 64 or 128 run the CUDA kernels where the build has
// them (RA_SPARSE_CUDA_KERNELS): directly on one device, per hop in the ring form; everything
// else runs the exact torch-op path (block_sparse_ops.h) on the inputs' device.
#pragma once

#include <memory>

#include "attention/attention.h"
#include "attention/sparse/block_layout.h"
#include "attention/sparse/block_sparse_attention.h"

namespace ra {

class Communicator;
struct SparseDeviceLayout;  // attention/sparse/cuda/block_sparse_cuda.h

class SparseDilatedAttention : public DilatedAttentionBase {
 public:
  // Rejects dropout > 0 and head_mode = partition (not defined for block layouts).
  SparseDilatedAttention(DilatedAttentionConfig attention, SparseConfig sparse,
                         std::shared_ptr<Communicator> comm = nullptr);

  AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  std::string name() const override { return "sparse"; }

  const SparseConfig& sparse_config() const { return sparse_; }
  // The global layout for a global sequence length (built once per length).
  const BlockLayout& layout(int64_t global_seq_len);
  // Bytes this rank sent in the last forward (and the backward that followed it).
  const SparseCommStats& comm_stats() const { return *stats_; }

 private:
  SparseConfig sparse_;
  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<SparseCommStats> stats_;
  int64_t cached_seq_len_ = 0;
  BlockLayout layout_;
  std::shared_ptr<const SparseRingPlan> plan_;
  std::shared_ptr<SparseDeviceLayout> device_layout_;    // the layout on the GPU, when used
  std::shared_ptr<const SparseHopLayouts> hop_layouts_;  // the ring plan's hops on the GPU
};

}  // namespace ra
