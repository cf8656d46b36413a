// One thread per (run of kTokensPerThread consecutive tokens of a segment, head of the group, 16
// bytes of the row), the 16-byte words fastest, then heads, so a warp stores whole contiguous rows.
// The flat index is decoded (five divisions) once per run; the thread then steps token by token,
// tracking the kept-row index incrementally: the decode made the one-token-per-thread kernel
// issue-bound at ~2/3 of the memory bandwidth.
#include "attention/standard/cuda/write_kept_rows.h"

#include <algorithm>
#include <cmath>

#include "attention/standard/cuda/kept_row_index.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kTokensPerThread = 4;

// Up to kMaxWrites copies of one group's rows (src [N, h, L, D] -> dst [B, S, H, D], e.g. its dq,
// dk and dv), strides in 16-byte words, each with its scale (1: the bytes are copied).
constexpr int kMaxWrites = 3;
struct WordWrites {
  const uint4* src[kMaxWrites];
  int64_t src_sn[kMaxWrites], src_sh[kMaxWrites], src_sl[kMaxWrites];
  uint4* dst[kMaxWrites];
  int64_t dst_sb[kMaxWrites], dst_ss[kMaxWrites], dst_sh[kMaxWrites];
  float scale[kMaxWrites];
};

// Index: uint32_t or int64_t, the flat index's type (32-bit divisions where the launch fits, see
// kept_row_index.cuh). T: the element type of scaled copies. kCount: the copies made, sharing the
// index decode and with their loads in flight together. The lse's strides are in floats.
template <typename Index, typename T, int kCount>
__global__ void write_kept_rows_kernel(KeptRows rows, WordWrites w, int words_per_row, Index tokens,
                                       Index total, KeptLse lse) {
  const Index per_row = Index(words_per_row), heads = Index(rows.head_count);
  const Index segment = Index(rows.segment), nseg = Index(rows.seq_len / rows.segment);
  for (Index t = blockIdx.x * Index(blockDim.x) + threadIdx.x; t < total;
       t += Index(gridDim.x) * blockDim.x) {
    const Index run = t / per_row;
    const int word = int(t - run * per_row);
    const Index run_index = run / heads;
    const int j = int(run - run_index * heads);
    const int64_t h = rows.head_start + int64_t(j) * rows.head_step;
    Index token = run_index * kTokensPerThread;  // (segment, token in segment), flat
    Index n = token / segment;                   // segment index from n_begin
    int p = int(token - n * segment);
    Index m = Index(rows.n_begin) + n;
    Index b = m / nseg;
    int64_t s = int64_t(m - b * nseg) * rows.segment + p;
    // Token p is kept iff from = p - o >= 0, from = l * r and l < kept; phase = from mod r.
    int from = p - rows.offset;
    int l = from > 0 ? from / rows.rate : 0;
    int phase = from > 0 ? from - l * rows.rate : 0;
#pragma unroll
    for (int i = 0; i < kTokensPerThread; ++i) {
      if (token >= tokens) break;
      const bool kept = from >= 0 && phase == 0 && l < rows.kept;
      uint4 value[kCount];
#pragma unroll
      for (int c = 0; c < kCount; ++c) {
        value[c] = make_uint4(0, 0, 0, 0);
        if (kept)
          value[c] = w.src[c][int64_t(n) * w.src_sn[c] + j * w.src_sh[c] + l * w.src_sl[c] + word];
      }
#pragma unroll
      for (int c = 0; c < kCount; ++c) {
        if (kept && w.scale[c] != 1.f) value[c] = scaled8<T>(value[c], w.scale[c]);
        w.dst[c][int64_t(b) * w.dst_sb[c] + s * w.dst_ss[c] + h * w.dst_sh[c] + word] = value[c];
      }
      if (lse.dst != nullptr && word == 0) {
        lse.dst[int64_t(b) * lse.dst_sb + s * lse.dst_ss + h * lse.dst_sh] =
            kept ? lse.src[int64_t(n) * lse.src_sn + j * lse.src_sh + l * lse.src_sl] : -INFINITY;
      }
      ++token, ++p, ++s, ++from;
      if (from > 0 && ++phase == rows.rate) phase = 0, ++l;
      if (p == rows.segment) {  // the next segment (its first token: from = -o, l = phase = 0)
        p = 0, ++n, ++m;
        from = -rows.offset, l = 0, phase = 0;
        b = m / nseg;
        s = int64_t(m - b * nseg) * rows.segment;
      }
    }
  }
}

}  // namespace

void launch_write_kept_rows(const KeptRows& rows, const KeptRowsWrite* writes, int count,
                            int64_t head_dim, ScalarKind kind, cudaStream_t stream,
                            const KeptLse& lse) {
  RA_CHECK(count >= 1 && count <= kMaxWrites, "write_kept_rows: ", count,
           " copies in one launch: 1 to ", kMaxWrites);
  RA_CHECK(rows.segment > 0 && rows.rate > 0 && rows.seq_len % rows.segment == 0,
           "write_kept_rows: segment = ", rows.segment, ", rate = ", rows.rate,
           ", seq_len = ", rows.seq_len, ": need segment > 0 dividing seq_len and rate > 0");
  const int64_t elem_bytes = scalar_bytes(kind);
  const int64_t row_bytes = head_dim * elem_bytes;
  const int64_t word_elems = 16 / elem_bytes;  // elements per 16-byte word
  RA_CHECK(row_bytes % 16 == 0, "write_kept_rows: rows of ", head_dim, " x ", elem_bytes,
           " bytes; need a multiple of 16 bytes");
  const bool reads = rows.kept > 0;
  WordWrites w{};
  for (int c = 0; c < count; ++c) {
    const RowTensor& src = writes[c].src;
    const TokenTensor& dst = writes[c].dst;
    RA_CHECK(writes[c].scale == 1.f || kind != ScalarKind::kFloat,
             "write_kept_rows: scale = ", writes[c].scale, ": scaled rows must be fp16 or bf16");
    RA_CHECK(aligned16(dst.data) && dst.stride_b % word_elems == 0 &&
                 dst.stride_s % word_elems == 0 && dst.stride_h % word_elems == 0,
             "write_kept_rows: gradient pointer and strides must allow 16-byte stores");
    RA_CHECK(
        !reads || (src.data != nullptr && aligned16(src.data) && src.stride_n % word_elems == 0 &&
                   src.stride_h % word_elems == 0 && src.stride_l % word_elems == 0),
        "write_kept_rows: source pointer and strides must allow 16-byte loads");
    w.src[c] = static_cast<const uint4*>(reads ? src.data : nullptr);
    w.src_sn[c] = src.stride_n / word_elems, w.src_sh[c] = src.stride_h / word_elems;
    w.src_sl[c] = src.stride_l / word_elems;
    w.dst[c] = static_cast<uint4*>(dst.data);
    w.dst_sb[c] = dst.stride_b / word_elems, w.dst_ss[c] = dst.stride_s / word_elems;
    w.dst_sh[c] = dst.stride_h / word_elems;
    w.scale[c] = writes[c].scale;
  }
  RA_CHECK(lse.dst == nullptr || !reads || lse.src != nullptr,
           "write_kept_rows: an lse output needs the group's lse rows");
  const int words_per_row = int(row_bytes / 16);
  const int64_t tokens = rows.size_n() * rows.segment;
  const int64_t runs = (tokens + kTokensPerThread - 1) / kTokensPerThread;
  const int64_t total = runs * rows.head_count * words_per_row;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  // The token index must fit too: it exceeds the run index, not the flat one.
  with_index_type(rows, std::max(total, tokens), [&](auto index) {
    using Index = decltype(index);
    auto launch = [&](auto type) {
      using T = decltype(type);
      auto run = [&](auto kernel) {
        kernel<<<blocks, threads, 0, stream>>>(rows, w, words_per_row, Index(tokens), Index(total),
                                               lse);
      };
      if (count == 1) run(write_kept_rows_kernel<Index, T, 1>);
      if (count == 2) run(write_kept_rows_kernel<Index, T, 2>);
      if (count == 3) run(write_kept_rows_kernel<Index, T, 3>);
    };
    // Scaled copies need the element type; byte copies (fp32 included) take any.
    if (kind == ScalarKind::kBFloat16) {
      launch(__nv_bfloat16{});
    } else {
      launch(__half{});
    }
  });
  RA_CUDA_CHECK_LAUNCH();
}

void launch_write_kept_rows(const KeptRows& rows, const RowTensor& src, const TokenTensor& dst,
                            int64_t head_dim, ScalarKind kind, cudaStream_t stream, float scale,
                            const KeptLse& lse) {
  const KeptRowsWrite write{src, dst, scale};
  launch_write_kept_rows(rows, &write, 1, head_dim, kind, stream, lse);
}

}  // namespace ra::cuda
