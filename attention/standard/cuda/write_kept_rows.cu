// One thread per (segment, token of the segment, head of the group, 16 bytes of the row), the
// 16-byte words fastest, then heads, so a warp stores whole contiguous rows of the gradient.
#include "attention/standard/cuda/write_kept_rows.h"

#include <algorithm>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

// Strides in 16-byte words.
__global__ void write_kept_rows_kernel(KeptRows rows, const uint4* __restrict__ src, int64_t src_sn,
                                       int64_t src_sh, int64_t src_sl, uint4* __restrict__ dst,
                                       int64_t dst_sb, int64_t dst_ss, int64_t dst_sh,
                                       int words_per_row, int64_t total) {
  const int nseg = rows.seq_len / rows.segment;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / words_per_row;
    const int word = int(t - row * words_per_row);
    const int64_t token = row / rows.head_count;  // (segment, token in segment), flat
    const int j = int(row - token * rows.head_count);
    const int64_t n = token / rows.segment;  // segment index from n_begin
    const int p = int(token - n * rows.segment);
    const int64_t m = rows.n_begin + n;
    const int64_t b = m / nseg;
    const int64_t s = (m - b * nseg) * rows.segment + p;
    const int from_offset = p - rows.offset;
    const int l = from_offset >= 0 ? from_offset / rows.rate : -1;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (l >= 0 && l * rows.rate == from_offset && l < rows.kept) {
      value = src[n * src_sn + j * src_sh + l * src_sl + word];
    }
    dst[b * dst_sb + s * dst_ss + (rows.head_start + int64_t(j) * rows.head_step) * dst_sh + word] =
        value;
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
  write_kept_rows_kernel<<<blocks, threads, 0, stream>>>(
      rows, static_cast<const uint4*>(reads ? src.data : nullptr), src.stride_n / word_elems,
      src.stride_h / word_elems, src.stride_l / word_elems, static_cast<uint4*>(dst.data),
      dst.stride_b / word_elems, dst.stride_s / word_elems, dst.stride_h / word_elems,
      words_per_row, total);
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
