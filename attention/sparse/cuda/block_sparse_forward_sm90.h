// The Hopper forward of block-sparse attention (warpgroup MMA, block_sparse_forward_sm90.cu). It
// is compiled for sm_90a only, in its own object library; block_sparse_forward dispatches to it
// (block_sparse_kernels.h says when). Same arguments and results as block_sparse_forward.
#pragma once

#include "attention/sparse/cuda/block_sparse_kernels.h"

namespace ra::cuda::detail {

// Shapes it handles (on top of block_sparse_unsupported's rules): head_dim 128, block_size 128.
bool sm90_forward_supports(const BlockSparseShape& shape);

// kernel: which wgmma variant (SparseForwardKernel, block_sparse_kernels.h); any non-wgmma value
// runs the default kWgmma64.
cudaError_t block_sparse_forward_sm90(SparseDType dtype, const void* q, const void* k,
                                      const void* v, void* out, float* lse,
                                      const BlockSparseShape& shape,
                                      const DeviceBlockLayout& layout, float scale,
                                      cudaStream_t stream, SparseForwardKernel kernel);

}  // namespace ra::cuda::detail
