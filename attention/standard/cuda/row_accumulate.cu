// A thread per 8 elements of a row (blockDim.x = D / 8 rounded up to a power of two, so a row
// never straddles warps), rows along blockDim.y; the grid's x walks A2, its y the A0 x A1 planes.
// Both kernels are pure streams: 16-byte loads and stores, fp32 arithmetic.
#include "attention/standard/cuda/row_accumulate.h"

#include <algorithm>
#include <cmath>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPlanes = 65535;  // gridDim.y

__device__ inline void load8f(const float* src, float (&dst)[8]) {
  const float4 a = reinterpret_cast<const float4*>(src)[0];
  const float4 b = reinterpret_cast<const float4*>(src)[1];
  dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w;
  dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
}
__device__ inline void store8f(float* dst, const float (&src)[8]) {
  reinterpret_cast<float4*>(dst)[0] = make_float4(src[0], src[1], src[2], src[3]);
  reinterpret_cast<float4*>(dst)[1] = make_float4(src[4], src[5], src[6], src[7]);
}
template <typename T>
__device__ inline void load8_any(const T* src, float (&dst)[8]) {
  if constexpr (std::is_same_v<T, float>) {
    load8f(src, dst);
  } else {
    load8<T>(src, dst);
  }
}
template <typename T>
__device__ inline void store8_any(T* dst, const float (&src)[8]) {
  if constexpr (std::is_same_v<T, float>) {
    store8f(dst, src);
  } else {
    store8<T>(dst, src);
  }
}

__device__ inline int64_t offset(const RowTensor& v, int64_t i0, int64_t i1, int64_t i2) {
  return i0 * v.stride_n + i1 * v.stride_h + i2 * v.stride_l;
}

// Calls fn(i0, i1, i2, chunk, in_range) for this thread's row and 8-element chunk; every thread
// calls it (in_range false past the end) so fn may synchronize the warp.
template <typename Fn>
__device__ inline void for_each_row(const RowShape& shape, Fn&& fn) {
  const int chunk = threadIdx.x;
  const int64_t i2 = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool row_ok = i2 < shape.a2 && chunk * 8 < shape.head_dim;
  for (int64_t plane = blockIdx.y; plane < shape.a0 * shape.a1; plane += gridDim.y) {
    fn(plane / shape.a1, plane % shape.a1, i2, chunk, row_ok);
  }
}

template <typename T>
__global__ void merge_block_kernel(RowTensor acc_out, RowTensor acc_lse, RowTensor out,
                                   RowTensor lse, RowShape shape) {
  for_each_row(shape, [&](int64_t i0, int64_t i1, int64_t i2, int chunk, bool ok) {
    float a = -INFINITY, b = -INFINITY;
    if (ok) {
      a = static_cast<const float*>(acc_lse.data)[offset(acc_lse, i0, i1, i2)];
      b = static_cast<const float*>(lse.data)[offset(lse, i0, i1, i2)];
    }
    __syncwarp();  // every lane of the row has read acc_lse before lane 0 rewrites it
    if (!ok) return;
    const float m = fmaxf(a, b);
    if (m == -INFINITY) return;  // neither side attended anything: unchanged
    const float merged = m + logf(expf(a - m) + expf(b - m));
    const float w = expf(b - merged);
    float* acc = static_cast<float*>(acc_out.data) + offset(acc_out, i0, i1, i2) + chunk * 8;
    float x[8], o[8];
    load8f(acc, x);
    load8_any(static_cast<const T*>(out.data) + offset(out, i0, i1, i2) + chunk * 8, o);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = fmaf(w, o[e] - x[e], x[e]);
    store8f(acc, x);
    if (chunk == 0) static_cast<float*>(acc_lse.data)[offset(acc_lse, i0, i1, i2)] = merged;
  });
}

struct SumSources {
  RowTensor src[kRowSumMaxSources];
  int count;
};

// Dst: fp32, or T itself (then every element is rounded once, after the fp32 sum).
template <typename T, typename Dst>
__global__ void sum_rows_kernel(RowTensor dst, SumSources srcs, bool accumulate, RowShape shape) {
  for_each_row(shape, [&](int64_t i0, int64_t i1, int64_t i2, int chunk, bool ok) {
    if (!ok) return;
    Dst* d = static_cast<Dst*>(dst.data) + offset(dst, i0, i1, i2) + chunk * 8;
    float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (accumulate) load8_any(d, x);
    for (int i = 0; i < srcs.count; ++i) {
      float s[8];
      load8_any(
          static_cast<const T*>(srcs.src[i].data) + offset(srcs.src[i], i0, i1, i2) + chunk * 8, s);
#pragma unroll
      for (int e = 0; e < 8; ++e) x[e] += s[e];
    }
    store8_any(d, x);
  });
}

struct MergeSources {
  RowTensor out[kRowMergeMaxSources];
  RowTensor lse[kRowMergeMaxSources];
  int count;
};

// Every lane of a row reads the sources' lse (a few loads) and forms the same weights; lane 0
// writes the merged lse. Rows no source attended get out = 0, lse = -inf.
template <typename T, typename Dst>
__global__ void merge_rows_kernel(RowTensor dst_out, RowTensor dst_lse, MergeSources srcs,
                                  RowShape shape) {
  for_each_row(shape, [&](int64_t i0, int64_t i1, int64_t i2, int chunk, bool ok) {
    if (!ok) return;
    float lse[kRowMergeMaxSources];
    float m = -INFINITY;
    for (int i = 0; i < srcs.count; ++i) {
      lse[i] = static_cast<const float*>(srcs.lse[i].data)[offset(srcs.lse[i], i0, i1, i2)];
      m = fmaxf(m, lse[i]);
    }
    float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float merged = -INFINITY;
    if (m != -INFINITY) {
      float total = 0;
      for (int i = 0; i < srcs.count; ++i) total += expf(lse[i] - m);
      merged = m + logf(total);
      for (int i = 0; i < srcs.count; ++i) {
        const float w = expf(lse[i] - merged);
        float o[8];
        load8_any(
            static_cast<const T*>(srcs.out[i].data) + offset(srcs.out[i], i0, i1, i2) + chunk * 8,
            o);
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = fmaf(w, o[e], x[e]);
      }
    }
    store8_any(static_cast<Dst*>(dst_out.data) + offset(dst_out, i0, i1, i2) + chunk * 8, x);
    if (chunk == 0) static_cast<float*>(dst_lse.data)[offset(dst_lse, i0, i1, i2)] = merged;
  });
}

struct Launch {
  dim3 grid, block;
};

Launch launch_shape(const RowShape& shape) {
  RA_CHECK(shape.head_dim > 0 && shape.head_dim % 8 == 0 && shape.head_dim <= kRowAccumulateMaxDim,
           "row accumulate: head_dim = ", shape.head_dim, "; must be a multiple of 8 up to ",
           kRowAccumulateMaxDim);
  int lanes = 1;
  while (lanes * 8 < shape.head_dim) lanes *= 2;  // <= 32: a row stays inside one warp
  const int rows_per_block = kThreads / lanes;
  const int64_t blocks_x = (shape.a2 + rows_per_block - 1) / rows_per_block;
  const int64_t planes = std::min<int64_t>(shape.a0 * shape.a1, kMaxPlanes);
  return {dim3(unsigned(blocks_x), unsigned(planes)),
          dim3(unsigned(lanes), unsigned(rows_per_block))};
}

bool empty(const RowShape& s) { return s.a0 == 0 || s.a1 == 0 || s.a2 == 0; }

template <template <typename> class Kernel, typename... Args>
void launch_by_kind(ScalarKind kind, const Launch& l, cudaStream_t stream, Args... args) {
  switch (kind) {
    case ScalarKind::kHalf:
      Kernel<__half>::launch(l, stream, args...);
      break;
    case ScalarKind::kBFloat16:
      Kernel<__nv_bfloat16>::launch(l, stream, args...);
      break;
    case ScalarKind::kFloat:
      Kernel<float>::launch(l, stream, args...);
      break;
  }
  RA_CUDA_CHECK_LAUNCH();
}

template <typename T>
struct MergeBlock {
  static void launch(const Launch& l, cudaStream_t s, RowTensor acc_out, RowTensor acc_lse,
                     RowTensor out, RowTensor lse, RowShape shape) {
    merge_block_kernel<T><<<l.grid, l.block, 0, s>>>(acc_out, acc_lse, out, lse, shape);
  }
};
template <typename T>
struct SumRows {
  static void launch(const Launch& l, cudaStream_t s, RowTensor dst, bool dst_fp32, SumSources srcs,
                     bool accumulate, RowShape shape) {
    if (dst_fp32) {
      sum_rows_kernel<T, float><<<l.grid, l.block, 0, s>>>(dst, srcs, accumulate, shape);
    } else {
      sum_rows_kernel<T, T><<<l.grid, l.block, 0, s>>>(dst, srcs, accumulate, shape);
    }
  }
};

template <typename T>
struct MergeRows {
  static void launch(const Launch& l, cudaStream_t s, RowTensor dst_out, bool dst_fp32,
                     RowTensor dst_lse, MergeSources srcs, RowShape shape) {
    if (dst_fp32) {
      merge_rows_kernel<T, float><<<l.grid, l.block, 0, s>>>(dst_out, dst_lse, srcs, shape);
    } else {
      merge_rows_kernel<T, T><<<l.grid, l.block, 0, s>>>(dst_out, dst_lse, srcs, shape);
    }
  }
};

}  // namespace

void launch_merge_rows(const RowTensor& dst_out, ScalarKind dst_kind, const RowTensor& dst_lse,
                       const RowTensor* outs, const RowTensor* lses, int num_srcs,
                       ScalarKind src_kind, const RowShape& shape, cudaStream_t stream) {
  RA_CHECK(num_srcs >= 1 && num_srcs <= kRowMergeMaxSources, "row merge: num_srcs = ", num_srcs,
           "; must be 1..", kRowMergeMaxSources);
  RA_CHECK(dst_kind == ScalarKind::kFloat || dst_kind == src_kind,
           "row merge: the destination must be fp32 or of the sources' dtype");
  if (empty(shape)) return;
  MergeSources sources{};
  for (int i = 0; i < num_srcs; ++i) {
    sources.out[i] = outs[i];
    sources.lse[i] = lses[i];
  }
  sources.count = num_srcs;
  launch_by_kind<MergeRows>(src_kind, launch_shape(shape), stream, dst_out,
                            dst_kind == ScalarKind::kFloat, dst_lse, sources, shape);
}

void launch_merge_block(const RowTensor& acc_out, const RowTensor& acc_lse, const RowTensor& out,
                        ScalarKind out_kind, const RowTensor& lse, const RowShape& shape,
                        cudaStream_t stream) {
  if (empty(shape)) return;
  launch_by_kind<MergeBlock>(out_kind, launch_shape(shape), stream, acc_out, acc_lse, out, lse,
                             shape);
}

void launch_sum_rows(const RowTensor& dst, ScalarKind dst_kind, const RowTensor* srcs, int num_srcs,
                     ScalarKind src_kind, bool accumulate, const RowShape& shape,
                     cudaStream_t stream) {
  RA_CHECK(num_srcs >= 1 && num_srcs <= kRowSumMaxSources, "row sum: num_srcs = ", num_srcs,
           "; must be 1..", kRowSumMaxSources);
  RA_CHECK(dst_kind == ScalarKind::kFloat || dst_kind == src_kind,
           "row sum: the destination must be fp32 or of the sources' dtype");
  RA_CHECK(dst_kind == ScalarKind::kFloat || !accumulate,
           "row sum: only an fp32 destination is accumulated into (a rounded one would be "
           "rounded again)");
  if (empty(shape)) return;
  SumSources sources{};
  for (int i = 0; i < num_srcs; ++i) sources.src[i] = srcs[i];
  sources.count = num_srcs;
  launch_by_kind<SumRows>(src_kind, launch_shape(shape), stream, dst,
                          dst_kind == ScalarKind::kFloat, sources, accumulate, shape);
}

}  // namespace ra::cuda
