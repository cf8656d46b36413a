// One thread per (kept row, 8 head-dim elements): per tensor, a 16-byte load of the branch
// gradient and a 16-byte read-modify-write of the full gradient; with several tensors (dq, dk,
// dv) every load is issued before the first add.
#include "attention/standard/cuda/scatter_add_kept_rows.h"

#include <algorithm>

#include "attention/standard/cuda/kept_row_index.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kMaxAdds = 3;
struct Adds {
  RowTensor src[kMaxAdds];
  TokenTensor acc[kMaxAdds];
};

// Index: uint32_t or int64_t, the flat index's type (kept_row_index.cuh). kCount tensors.
template <typename T, typename Index, int kCount>
__global__ void scatter_add_kept_rows_kernel(KeptRows rows, Adds adds, int chunks_per_row,
                                             Index total) {
  for_each_kept_row_item(rows, chunks_per_row, total, [&](const KeptRowPlace& p, int chunk) {
    uint4 from[kCount], into[kCount];
    T* to[kCount];
#pragma unroll
    for (int c = 0; c < kCount; ++c) {
      const RowTensor& src = adds.src[c];
      const TokenTensor& acc = adds.acc[c];
      from[c] =
          *reinterpret_cast<const uint4*>(static_cast<const T*>(src.data) + p.n * src.stride_n +
                                          p.j * src.stride_h + p.l * src.stride_l + chunk * 8);
      to[c] = static_cast<T*>(acc.data) + p.b * acc.stride_b + p.s * acc.stride_s +
              p.h * acc.stride_h + chunk * 8;
      into[c] = *reinterpret_cast<const uint4*>(to[c]);
    }
#pragma unroll
    for (int c = 0; c < kCount; ++c) {
      float g[8], sum[8];
      unpack8<T>(from[c], g);
      unpack8<T>(into[c], sum);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum[e] += g[e];
      store8(to[c], sum);
    }
  });
}

}  // namespace

void launch_scatter_add_kept_rows(const KeptRows& rows, const KeptRowsAdd* adds, int count,
                                  int64_t head_dim, ScalarKind kind, cudaStream_t stream) {
  RA_CHECK(count >= 1 && count <= kMaxAdds, "scatter_add_kept_rows: ", count,
           " tensors in one launch: 1 to ", kMaxAdds);
  RA_CHECK(head_dim % 8 == 0, "head_dim = ", head_dim,
           ": scatter_add_kept_rows needs a multiple of 8");
  RA_CHECK(kind == ScalarKind::kHalf || kind == ScalarKind::kBFloat16,
           "scatter_add_kept_rows: gradient rows must be fp16 or bf16");
  Adds packed{};
  for (int c = 0; c < count; ++c) {
    const RowTensor& src = adds[c].src;
    const TokenTensor& acc = adds[c].acc;
    RA_CHECK(aligned16(src.data) && src.stride_n % 8 == 0 && src.stride_h % 8 == 0 &&
                 src.stride_l % 8 == 0,
             "scatter_add_kept_rows: source pointer and strides must allow 16-byte loads");
    RA_CHECK(aligned16(acc.data) && acc.stride_b % 8 == 0 && acc.stride_s % 8 == 0 &&
                 acc.stride_h % 8 == 0,
             "scatter_add_kept_rows: accumulator pointer and strides must allow 16-byte access");
    packed.src[c] = src, packed.acc[c] = acc;
  }
  const int chunks_per_row = int(head_dim / 8);
  const int64_t total = rows.num_rows() * chunks_per_row;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  with_index_type(rows, total, [&](auto index) {
    using Index = decltype(index);
    auto launch = [&](auto type) {
      using T = decltype(type);
      auto run = [&](auto kernel) {
        kernel<<<blocks, threads, 0, stream>>>(rows, packed, chunks_per_row, Index(total));
      };
      if (count == 1) run(scatter_add_kept_rows_kernel<T, Index, 1>);
      if (count == 2) run(scatter_add_kept_rows_kernel<T, Index, 2>);
      if (count == 3) run(scatter_add_kept_rows_kernel<T, Index, 3>);
    };
    if (kind == ScalarKind::kHalf) {
      launch(__half{});
    } else {
      launch(__nv_bfloat16{});
    }
  });
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
