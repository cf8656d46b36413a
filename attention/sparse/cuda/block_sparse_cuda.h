// Torch boundary of the block-sparse CUDA kernels (compiled only with a CUDA build of LibTorch):
// checks the tensors, uploads layouts once, wraps single-device forward/backward in an autograd
// function, and offers the raw per-call launches that the ring form (block_sparse_attention.cpp)
// runs once per hop against the hop's buffer of received key/value blocks.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "attention/attention.h"
#include "attention/sparse/block_layout.h"
#include "attention/sparse/block_sparse_ops.h"
#include "attention/sparse/sparse_ring_plan.h"

namespace ra {

// A block layout's CSR and CSC arrays as int32 tensors on one CUDA device: the global layout
// (one device: nq = nk = S/b) or one hop's RowTasks (nq query blocks x nk buffered key blocks).
struct SparseDeviceLayout {
  at::Tensor row_offsets, col_indices, col_offsets, row_indices;
  at::Tensor diagonal_col;  // [nq]: causal diagonal key block or -1; undefined: key block i
  bool causal = false;
  int64_t block_size = 0;
  int64_t num_query_blocks() const { return row_offsets.size(0) - 1; }
  int64_t num_key_blocks() const { return col_offsets.size(0) - 1; }
};

SparseDeviceLayout upload_layout(const BlockLayout& layout, const at::Device& device);

// The layouts of every hop of a plan (parallel to plan.hops), uploaded once per plan: query
// blocks are this rank's, key blocks the hop's buffer slots (this rank's blocks at hop 0).
struct SparseHopLayouts {
  std::vector<SparseDeviceLayout> hops;
  at::Device device = at::kCPU;
};

SparseHopLayouts upload_hop_layouts(const SparseRingPlan& plan, bool causal, int64_t block_size,
                                    const at::Device& device);

// Whether the kernels take these inputs: CUDA float16/bfloat16, D 64 or 128, block 64 or 128.
bool block_sparse_cuda_supports(const at::Tensor& q, int64_t block_size);

// q: [B, S, H, D]; k, v: [B, S, H_kv, D]; CUDA float16/bfloat16, D 64 or 128, block size 64 or
// 128, S = the layout's sequence. out: [B, S, H, D] (q's dtype), lse: [B, S, H] float32.
AttentionResult block_sparse_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const SparseDeviceLayout& layout,
                                            double scale);

// One launch, no autograd. q: [B, nq*b, H, D]; k, v: [B, nk*b, H_kv, D], possibly strided views
// (head dim contiguous, strides multiples of 8 elements); out: [B, nq*b, H, D] contiguous in q's
// dtype and lse: [B, nq*b, H] float32 contiguous, both overwritten.
void block_sparse_forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SparseDeviceLayout& layout, double scale, at::Tensor& out,
                               at::Tensor& lse);

// One launch of the backward with the final out/lse (dout has out's strides). dq has q's
// strides, dk/dv have k/v's strides; all three are overwritten (zero where nothing is active).
void block_sparse_backward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& out, const at::Tensor& dout,
                                const at::Tensor& lse, const SparseDeviceLayout& layout,
                                double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv);

}  // namespace ra
