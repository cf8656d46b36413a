// CUDA kernels of exact block-sparse attention (sm_90, FlashAttention-2 style on mma.sync tensor
// cores): forward with LSE, and backward (dQ by query block over the CSR layout, dK/dV by key
// block over the CSC layout, so no atomics). They visit only active blocks and never form an
// [S, S] mask. Raw pointers, element strides and a stream; no LibTorch, so they build wherever
// nvcc is. Same math as attention/sparse/block_sparse_ops.h (the CPU path the GPU tests compare
// with).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace ra::cuda {

enum class SparseDType { kFloat16, kBFloat16 };

// Tensors [B, S, H, D] with the head dim contiguous: strides in elements for batch, token, head.
struct TensorStrides {
  int64_t batch = 0, token = 0, head = 0;
};

// q, out (and dq, dout) hold q_len tokens: nq = q_len / block_size query blocks; k, v (and dk,
// dv) hold kv_len tokens: nk key blocks. On one device both are the whole sequence; in the ring
// form q is this rank's shard and k/v one hop's buffer of key blocks (any token order).
struct BlockSparseShape {
  int batch = 0, heads = 0, kv_heads = 0, head_dim = 0;  // head_dim 64 or 128
  int q_len = 0, kv_len = 0;
  int block_size = 64;         // 64 or 128
  TensorStrides q, k, v, out;  // dq, dk, dv, dout use the strides of q, k, v, out
};

// The block layout in device memory (int32): CSR by query block over key blocks [0, nk) and CSC
// by key block over query blocks [0, nq). Query blocks without active blocks give out = 0,
// lse = -inf and contribute nothing to the gradients.
struct DeviceBlockLayout {
  const int* row_offsets = nullptr;  // [nq + 1]
  const int* col_indices = nullptr;
  const int* col_offsets = nullptr;  // [nk + 1]
  const int* row_indices = nullptr;
  bool causal = false;
  // Causal only: diagonal_col[i] ([nq]) is the key block holding query block i's own tokens,
  // masked token by token (key offset <= query offset inside the block), or -1 for none. Null
  // means key block i (one device, where key and query blocks are the same sequence).
  const int* diagonal_col = nullptr;
};

// Shape rules the kernels need; returns nullptr when supported, else what is wrong.
const char* block_sparse_unsupported(const BlockSparseShape& shape);

// Whether the current device is compute capability exactly 9.0, where the sm_90a (wgmma / TMA)
// kernels run; false on any CUDA error (cleared).
bool current_device_runs_sm90a();

// The forward kernels block_sparse_forward chooses from: mma.sync (any D/block, sm_80+), or the
// Hopper wgmma kernel (block_sparse_forward_sm90.cu, compiled for sm_90a) with 64-key steps (two
// CTAs per SM) or 128-key steps (one CTA per SM), its overlapped variant (128-key
// steps, tile i's softmax runs while tile i - 1's P V is on the tensor cores), or the overlapped
// loop warp-specialized (a producer warpgroup loads K/V with TMA, two consumer warpgroups
// compute), with or without the consumers taking turns to issue their wgmmas (pingpong, the
// default: fastest at every density measured, docs/PERFORMANCE.md session 5).
enum class SparseForwardKernel {
  kMma,
  kWgmma64,
  kWgmma128,
  kWgmmaOverlap,
  kWgmmaWs,
  kWgmmaWsPingpong
};

// The forward kernel for `shape` on the current device: kWgmmaWsPingpong for head_dim 128 and
// block_size 128 on compute capability 9.0, else mma.sync. The environment variable
// RA_SPARSE_FORWARD (read at every call) overrides: "mma" forces the mma.sync kernel; where wgmma
// applies, "wgmma" asks for the 64-key cp.async kernel, "wgmma128" for its 128-key variant,
// "wgmma_overlap" for the overlapped one and "wgmma_ws" for the warp-specialized one without
// pingpong; unset, empty or "wgmma_ws_pingpong" is the default; any other value throws ra::Error.
SparseForwardKernel block_sparse_forward_choice(const BlockSparseShape& shape);

// out: [B, q_len, H, D]; lse: [B, q_len, H] float32, contiguous.
cudaError_t block_sparse_forward(SparseDType dtype, const void* q, const void* k, const void* v,
                                 void* out, float* lse, const BlockSparseShape& shape,
                                 const DeviceBlockLayout& layout, float scale, cudaStream_t stream);

// The backward kernels block_sparse_backward chooses from: mma.sync dQ and dK/dV (any D/block,
// sm_80+), or the Hopper wgmma kernels (block_sparse_backward_sm90.cu, compiled for sm_90a) for
// both, with the elementwise work overlapping the wgmmas (kWgmma) or not (kWgmmaSync), or for
// dK/dV only (kWgmmaDkdv, overlapping; dQ on mma.sync), or kWgmmaFusedDq: one wgmma kernel for
// dK/dV that also computes dQ (5 tile products instead of 7; dQ added with fp32 atomics into a
// workspace, so dq is not bitwise deterministic run to run), then a small dq conversion kernel.
enum class SparseBackwardKernel { kMma, kWgmma, kWgmmaSync, kWgmmaDkdv, kWgmmaFusedDq };

// The backward kernels for `shape` on the current device: kWgmmaFusedDq for head_dim 128 and
// block_size 128 on compute capability 9.0, else mma.sync. The environment variable
// RA_SPARSE_BACKWARD (read at every call) overrides: "mma" forces the mma.sync kernels; where
// wgmma applies, "wgmma" selects kWgmma (deterministic: no atomics), "wgmma_sync" kWgmmaSync and
// "wgmma_dkdv" kWgmmaDkdv; unset, empty or "wgmma_fused" is the default; any other value throws
// ra::Error.
SparseBackwardKernel block_sparse_backward_choice(const BlockSparseShape& shape);

// Bytes of the dq workspace block_sparse_backward needs for `shape` with `kernels` (its choice):
// B * H * q_len * 128 fp32 for kWgmmaFusedDq, else 0.
size_t block_sparse_backward_workspace_bytes(const BlockSparseShape& shape,
                                             SparseBackwardKernel kernels);

// delta: [B, q_len, H] float32 workspace. dq/dk/dv have q/k/v's strides and are overwritten.
// kernels: block_sparse_backward_choice(shape), passed in so that the workspace was sized for the
// same choice. dq_workspace: block_sparse_backward_workspace_bytes(shape, kernels) bytes, 16-byte
// aligned (contents ignored, it is zeroed on the stream), or null when that is 0.
cudaError_t block_sparse_backward(SparseDType dtype, const void* q, const void* k, const void* v,
                                  const void* out, const void* dout, const float* lse, float* delta,
                                  void* dq, void* dk, void* dv, const BlockSparseShape& shape,
                                  const DeviceBlockLayout& layout, float scale,
                                  SparseBackwardKernel kernels, float* dq_workspace,
                                  cudaStream_t stream);

}  // namespace ra::cuda
