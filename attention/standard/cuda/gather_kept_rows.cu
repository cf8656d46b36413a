// One thread per (kept row, vector of the row). Exact copies move the row's bytes as 16-, 4- or
// 2-byte words, the widest that the pointers, strides and row size allow; scaled copies move 8
// fp16/bf16 values (16 bytes) per thread where aligned, else one.
#include "attention/standard/cuda/gather_kept_rows.h"

#include <algorithm>

#include "attention/standard/cuda/kept_row_index.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

// Index: uint32_t or int64_t, the flat index's type (kept_row_index.cuh).
template <typename Word, typename Index>
__global__ void gather_kept_rows_kernel(KeptRows rows, const char* __restrict__ src, int64_t src_sb,
                                        int64_t src_ss, int64_t src_sh, char* __restrict__ dst,
                                        int64_t dst_sn, int64_t dst_sh, int64_t dst_sl,
                                        int words_per_row, Index total) {
  for_each_kept_row_item(rows, words_per_row, total, [&](const KeptRowPlace& p, int word) {
    // Strides are in bytes here.
    const Word* from =
        reinterpret_cast<const Word*>(src + p.b * src_sb + p.s * src_ss + p.h * src_sh);
    Word* to = reinterpret_cast<Word*>(dst + p.n * dst_sn + p.j * dst_sh + p.l * dst_sl);
    to[word] = from[word];
  });
}

// kVec elements per thread (8: 16-byte loads and stores; 1: any alignment). Element strides.
template <typename T, int kVec, typename Index>
__global__ void gather_scaled_kernel(KeptRows rows, TokenTensor src, RowTensor dst,
                                     int vecs_per_row, float scale, Index total) {
  for_each_kept_row_item(rows, vecs_per_row, total, [&](const KeptRowPlace& p, int vec) {
    const T* from = static_cast<const T*>(src.data) + p.b * src.stride_b + p.s * src.stride_s +
                    p.h * src.stride_h + vec * kVec;
    T* to = static_cast<T*>(dst.data) + p.n * dst.stride_n + p.j * dst.stride_h +
            p.l * dst.stride_l + vec * kVec;
    if constexpr (kVec == 8) {
      float v[8];
      load8(from, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] *= scale;
      store8(to, v);
    } else {
      *to = from_float<T>(to_float(*from) * scale);
    }
  });
}

int64_t grid_for(int64_t total, int threads) {
  return std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
}

template <typename Word>
void launch_words(const KeptRows& rows, const TokenTensor& src, const RowTensor& dst,
                  int64_t row_bytes, int64_t elem_bytes, cudaStream_t stream) {
  const int words_per_row = int(row_bytes / sizeof(Word));
  const int64_t total = rows.num_rows() * words_per_row;
  if (total == 0) return;
  const int threads = 256;
  with_index_type(rows, total, [&](auto index) {
    using Index = decltype(index);
    gather_kept_rows_kernel<Word, Index><<<grid_for(total, threads), threads, 0, stream>>>(
        rows, static_cast<const char*>(src.data), src.stride_b * elem_bytes,
        src.stride_s * elem_bytes, src.stride_h * elem_bytes, static_cast<char*>(dst.data),
        dst.stride_n * elem_bytes, dst.stride_h * elem_bytes, dst.stride_l * elem_bytes,
        words_per_row, Index(total));
  });
  RA_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_scaled(const KeptRows& rows, const TokenTensor& src, const RowTensor& dst,
                   int64_t row_elems, float scale, cudaStream_t stream) {
  const bool vec8 = row_elems % 8 == 0 && aligned16(src.data) && aligned16(dst.data) &&
                    src.stride_b % 8 == 0 && src.stride_s % 8 == 0 && src.stride_h % 8 == 0 &&
                    dst.stride_n % 8 == 0 && dst.stride_h % 8 == 0 && dst.stride_l % 8 == 0;
  const int vecs_per_row = int(vec8 ? row_elems / 8 : row_elems);
  const int64_t total = rows.num_rows() * vecs_per_row;
  if (total == 0) return;
  const int threads = 256;
  with_index_type(rows, total, [&](auto index) {
    using Index = decltype(index);
    if (vec8) {
      gather_scaled_kernel<T, 8, Index><<<grid_for(total, threads), threads, 0, stream>>>(
          rows, src, dst, vecs_per_row, scale, Index(total));
    } else {
      gather_scaled_kernel<T, 1, Index><<<grid_for(total, threads), threads, 0, stream>>>(
          rows, src, dst, vecs_per_row, scale, Index(total));
    }
  });
  RA_CUDA_CHECK_LAUNCH();
}

bool allows_word(const TokenTensor& src, const RowTensor& dst, int64_t row_bytes,
                 int64_t elem_bytes, int64_t word) {
  auto ok = [&](int64_t bytes) { return bytes % word == 0; };
  return ok(row_bytes) && ok(reinterpret_cast<uintptr_t>(src.data)) &&
         ok(reinterpret_cast<uintptr_t>(dst.data)) && ok(src.stride_b * elem_bytes) &&
         ok(src.stride_s * elem_bytes) && ok(src.stride_h * elem_bytes) &&
         ok(dst.stride_n * elem_bytes) && ok(dst.stride_h * elem_bytes) &&
         ok(dst.stride_l * elem_bytes);
}

}  // namespace

void launch_gather_kept_rows(const KeptRows& rows, const TokenTensor& src, const RowTensor& dst,
                             int64_t row_elems, ScalarKind kind, cudaStream_t stream, float scale) {
  RA_CHECK(rows.segment > 0 && rows.rate > 0 && rows.seq_len % rows.segment == 0,
           "gather_kept_rows: segment = ", rows.segment, ", rate = ", rows.rate,
           ", seq_len = ", rows.seq_len, ": need segment > 0 dividing seq_len and rate > 0");
  if (scale != 1.f) {
    switch (kind) {
      case ScalarKind::kHalf:
        return launch_scaled<__half>(rows, src, dst, row_elems, scale, stream);
      case ScalarKind::kBFloat16:
        return launch_scaled<__nv_bfloat16>(rows, src, dst, row_elems, scale, stream);
      default:
        RA_THROW("gather_kept_rows: a scaled gather takes fp16 or bf16 rows");
    }
  }
  const int64_t elem_bytes = scalar_bytes(kind);
  const int64_t row_bytes = row_elems * elem_bytes;
  if (allows_word(src, dst, row_bytes, elem_bytes, 16)) {
    launch_words<uint4>(rows, src, dst, row_bytes, elem_bytes, stream);
  } else if (allows_word(src, dst, row_bytes, elem_bytes, 4)) {
    launch_words<uint32_t>(rows, src, dst, row_bytes, elem_bytes, stream);
  } else {
    launch_words<uint16_t>(rows, src, dst, row_bytes, elem_bytes, stream);
  }
}

}  // namespace ra::cuda
