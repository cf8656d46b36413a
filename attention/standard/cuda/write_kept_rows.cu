// One thread per (segment, token of the segment, head of the group, 16 bytes of the row), the
// 16-byte words fastest, then heads, so a warp stores whole contiguous rows of the gradient.
#include "attention/standard/cuda/write_kept_rows.h"

#include <algorithm>

#include "attention/standard/cuda/kept_row_index.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

// Strides in 16-byte words. Index: uint32_t or int64_t, the flat index's type (the decode's
// divisions are 32-bit where the launch fits, see kept_row_index.cuh).
template <typename Index>
__global__ void write_kept_rows_kernel(KeptRows rows, const uint4* __restrict__ src, int64_t src_sn,
                                       int64_t src_sh, int64_t src_sl, uint4* __restrict__ dst,
                                       int64_t dst_sb, int64_t dst_ss, int64_t dst_sh,
                                       int words_per_row, Index total) {
  const Index per_row = Index(words_per_row), heads = Index(rows.head_count);
  const Index segment = Index(rows.segment), nseg = Index(rows.seq_len / rows.segment);
  for (Index t = blockIdx.x * Index(blockDim.x) + threadIdx.x; t < total;
       t += Index(gridDim.x) * blockDim.x) {
    const Index row = t / per_row;
    const int word = int(t - row * per_row);
    const Index token = row / heads;  // (segment, token in segment), flat
    const int j = int(row - token * heads);
    const Index n = token / segment;  // segment index from n_begin
    const int p = int(token - n * segment);
    const Index m = Index(rows.n_begin) + n;
    const Index b = m / nseg;
    const int64_t s = int64_t(m - b * nseg) * rows.segment + p;
    const int from_offset = p - rows.offset;
    const int l = from_offset >= 0 ? from_offset / rows.rate : -1;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (l >= 0 && l * rows.rate == from_offset && l < rows.kept) {
      value = src[int64_t(n) * src_sn + j * src_sh + l * src_sl + word];
    }
    dst[int64_t(b) * dst_sb + s * dst_ss +
        (rows.head_start + int64_t(j) * rows.head_step) * dst_sh + word] = value;
  }
}

}  // namespace

void launch_write_kept_rows(const KeptRows& rows, const RowTensor& src, const TokenTensor& dst,
                            int64_t head_dim, ScalarKind kind, cudaStream_t stream) {
  RA_CHECK(rows.segment > 0 && rows.rate > 0 && rows.seq_len % rows.segment == 0,
           "write_kept_rows: segment = ", rows.segment, ", rate = ", rows.rate,
           ", seq_len = ", rows.seq_len, ": need segment > 0 dividing seq_len and rate > 0");
  const int64_t elem_bytes = scalar_bytes(kind);
  const int64_t row_bytes = head_dim * elem_bytes;
  const int64_t word_elems = 16 / elem_bytes;  // elements per 16-byte word
  RA_CHECK(row_bytes % 16 == 0, "write_kept_rows: rows of ", head_dim, " x ", elem_bytes,
           " bytes; need a multiple of 16 bytes");
  RA_CHECK(aligned16(dst.data) && dst.stride_b % word_elems == 0 &&
               dst.stride_s % word_elems == 0 && dst.stride_h % word_elems == 0,
           "write_kept_rows: gradient pointer and strides must allow 16-byte stores");
  const bool reads = rows.kept > 0;
  RA_CHECK(
      !reads || (src.data != nullptr && aligned16(src.data) && src.stride_n % word_elems == 0 &&
                 src.stride_h % word_elems == 0 && src.stride_l % word_elems == 0),
      "write_kept_rows: source pointer and strides must allow 16-byte loads");
  const int words_per_row = int(row_bytes / 16);
  const int64_t total = rows.size_n() * rows.segment * rows.head_count * words_per_row;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  with_index_type(rows, total, [&](auto index) {
    using Index = decltype(index);
    write_kept_rows_kernel<Index><<<blocks, threads, 0, stream>>>(
        rows, static_cast<const uint4*>(reads ? src.data : nullptr), src.stride_n / word_elems,
        src.stride_h / word_elems, src.stride_l / word_elems, static_cast<uint4*>(dst.data),
        dst.stride_b / word_elems, dst.stride_s / word_elems, dst.stride_h / word_elems,
        words_per_row, Index(total));
  });
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
