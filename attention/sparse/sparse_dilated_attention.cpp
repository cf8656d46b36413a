// SparseDilatedAttention: validation, layout/plan caching, dispatch to block_sparse_attention.
#include "attention/sparse/sparse_dilated_attention.h"

#include <cmath>

#include "attention/sparse/sparse_patterns.h"
#include "comm/communicator.h"
#include "runtime/error.h"
#include "runtime/validation.h"

#ifdef RA_SPARSE_CUDA_KERNELS
#include "attention/sparse/cuda/block_sparse_cuda.h"
#endif

namespace ra {

SparseDilatedAttention::SparseDilatedAttention(DilatedAttentionConfig attention,
                                               SparseConfig sparse,
                                               std::shared_ptr<Communicator> comm)
    : DilatedAttentionBase(std::move(attention)),
      sparse_(std::move(sparse)),
      comm_(std::move(comm)),
      stats_(std::make_shared<SparseCommStats>()) {
  validate(sparse_);
  RA_CHECK(config_.dropout == 0.0, "dropout = ", config_.dropout,
           ": the sparse attention has no dropout; use dropout = 0");
  RA_CHECK(config_.head_mode == HeadMode::kAll, "head_mode = ", to_string(config_.head_mode),
           ": the sparse attention uses one block layout for every head; use head_mode = all");
}

const BlockLayout& SparseDilatedAttention::layout(int64_t global_seq_len) {
  if (global_seq_len != cached_seq_len_) {
    const int world = comm_ ? comm_->size() : 1;
    validate_sparse_sequence(sparse_, config_, global_seq_len, world);
    layout_ = build_block_layout(sparse_, config_, global_seq_len);
    plan_ = std::make_shared<SparseRingPlan>(
        SparseRingPlan::build(layout_, comm_ ? comm_->rank() : 0, world));
    cached_seq_len_ = global_seq_len;
    device_layout_.reset();
    hop_layouts_.reset();
  }
  return layout_;
}

AttentionResult SparseDilatedAttention::forward(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v) {
  validate_attention_tensors(config_, q, k, v);
  const int world = comm_ ? comm_->size() : 1;
  layout(q.size(1) * world);
  const double scale =
      config_.softmax_scale ? *config_.softmax_scale : 1.0 / std::sqrt(double(q.size(3)));
  *stats_ = SparseCommStats{};
  BlockSparseRun run;
  run.plan = plan_;
  run.comm = world > 1 ? comm_ : nullptr;
  run.stats = stats_;
  run.block_size = sparse_.block_size;
  run.scale = scale;
#ifdef RA_SPARSE_CUDA_KERNELS
  if (block_sparse_cuda_supports(q, sparse_.block_size)) {
    if (world == 1) {
      if (!device_layout_ || device_layout_->row_offsets.device() != q.device()) {
        device_layout_ = std::make_shared<SparseDeviceLayout>(upload_layout(layout_, q.device()));
      }
      return block_sparse_attention_cuda(q, k, v, *device_layout_, scale);
    }
    // The ring form with the kernels per hop; the hops' layouts go to the GPU once per plan.
    if (!hop_layouts_ || hop_layouts_->device != q.device()) {
      hop_layouts_ = std::make_shared<const SparseHopLayouts>(
          upload_hop_layouts(*plan_, layout_.causal, sparse_.block_size, q.device()));
    }
    run.hop_layouts = hop_layouts_;
  }
#endif
  // Otherwise the exact torch-op path: any device and dtype; the ring moves blocks through comm_.
  return block_sparse_attention(q, k, v, run);
}

}  // namespace ra
