// One thread per (kept row, 8 head-dim elements): a 16-byte load of the branch gradient and a
// 16-byte read-modify-write of the full gradient.
#include "attention/standard/cuda/scatter_add_kept_rows.h"

#include <algorithm>

#include "attention/standard/cuda/kept_row_index.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

// Index: uint32_t or int64_t, the flat index's type (kept_row_index.cuh).
template <typename T, typename Index>
__global__ void scatter_add_kept_rows_kernel(KeptRows rows, RowTensor src, TokenTensor acc,
                                             int chunks_per_row, Index total) {
  for_each_kept_row_item(rows, chunks_per_row, total, [&](const KeptRowPlace& p, int chunk) {
    float g[8];
    load8(static_cast<const T*>(src.data) + p.n * src.stride_n + p.j * src.stride_h +
              p.l * src.stride_l + chunk * 8,
          g);
    T* to = static_cast<T*>(acc.data) + p.b * acc.stride_b + p.s * acc.stride_s +
            p.h * acc.stride_h + chunk * 8;
    float sum[8];
    load8(to, sum);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum[e] += g[e];
    store8(to, sum);
  });
}

}  // namespace

void launch_scatter_add_kept_rows(const KeptRows& rows, const RowTensor& src,
                                  const TokenTensor& acc, int64_t head_dim, ScalarKind kind,
                                  cudaStream_t stream) {
  RA_CHECK(head_dim % 8 == 0, "head_dim = ", head_dim,
           ": scatter_add_kept_rows needs a multiple of 8");
  RA_CHECK(aligned16(src.data) && src.stride_n % 8 == 0 && src.stride_h % 8 == 0 &&
               src.stride_l % 8 == 0,
           "scatter_add_kept_rows: source pointer and strides must allow 16-byte loads");
  RA_CHECK(aligned16(acc.data) && acc.stride_b % 8 == 0 && acc.stride_s % 8 == 0 &&
               acc.stride_h % 8 == 0,
           "scatter_add_kept_rows: accumulator pointer and strides must allow 16-byte access");
  const int chunks_per_row = int(head_dim / 8);
  const int64_t total = rows.num_rows() * chunks_per_row;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  RA_CHECK(kind == ScalarKind::kHalf || kind == ScalarKind::kBFloat16,
           "scatter_add_kept_rows: gradient rows must be fp16 or bf16");
  with_index_type(rows, total, [&](auto index) {
    using Index = decltype(index);
    if (kind == ScalarKind::kHalf) {
      scatter_add_kept_rows_kernel<__half, Index>
          <<<blocks, threads, 0, stream>>>(rows, src, acc, chunks_per_row, Index(total));
    } else {
      scatter_add_kept_rows_kernel<__nv_bfloat16, Index>
          <<<blocks, threads, 0, stream>>>(rows, src, acc, chunks_per_row, Index(total));
    }
  });
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
