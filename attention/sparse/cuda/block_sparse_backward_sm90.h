// The Hopper dQ and dK/dV kernels of the block-sparse backward (warpgroup MMA,
// block_sparse_backward_sm90.cu). They are compiled for sm_90a only, in the forward's object
// library; block_sparse_backward runs them instead of the mma.sync kernels where
// block_sparse_backward_choice says so (delta stays on its kernel). The fused variant computes dQ
// inside the dK/dV kernel (fp32 atomics into a workspace) instead of a dQ kernel.
#pragma once

#include <cstddef>

#include "attention/sparse/cuda/block_sparse_kernels.h"

namespace ra::cuda::detail {

// overlap: the elementwise work of each query (dQ: key) tile runs beside that tile's wgmmas (the
// default); false waits for each product before using it (the simpler schedule, kept to compare
// and to fall back on).

// Shapes it handles (on top of block_sparse_unsupported's rules): head_dim 128, block_size 128.
bool sm90_backward_supports(const BlockSparseShape& shape);

// dk, dv (k/v's strides) are overwritten, 0 for key blocks no query block attends; delta is
// rowsum(dO * O) [B, q_len, H] as block_sparse_backward computes it first.
cudaError_t block_sparse_dkdv_sm90(SparseDType dtype, const void* q, const void* k, const void* v,
                                   const void* dout, const float* lse, const float* delta, void* dk,
                                   void* dv, const BlockSparseShape& shape,
                                   const DeviceBlockLayout& layout, float scale,
                                   cudaStream_t stream, bool overlap);

// kWgmmaFusedDq: dK/dV as block_sparse_dkdv_sm90 (overlapped), and in the same kernel dQ_partial
// = dS K per query tile, added with fp32 reductions into dq_workspace (16-byte aligned,
// block_sparse_fused_dq_workspace_bytes(shape); zeroed here on the stream), then converted into
// dq (q's strides, overwritten, 0 for query rows without active blocks) by a small kernel.
size_t block_sparse_fused_dq_workspace_bytes(const BlockSparseShape& shape);
cudaError_t block_sparse_dkdv_dq_sm90(SparseDType dtype, const void* q, const void* k,
                                      const void* v, const void* dout, const float* lse,
                                      const float* delta, void* dq, void* dk, void* dv,
                                      float* dq_workspace, const BlockSparseShape& shape,
                                      const DeviceBlockLayout& layout, float scale,
                                      cudaStream_t stream);

// dq (q's strides) is overwritten, 0 for query blocks without active blocks.
cudaError_t block_sparse_dq_sm90(SparseDType dtype, const void* q, const void* k, const void* v,
                                 const void* dout, const float* lse, const float* delta, void* dq,
                                 const BlockSparseShape& shape, const DeviceBlockLayout& layout,
                                 float scale, cudaStream_t stream, bool overlap);

}  // namespace ra::cuda::detail
