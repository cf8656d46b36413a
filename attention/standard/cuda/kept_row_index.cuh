// Where a kept row lives: decodes a flat index over a group's [N, h, L] rows into its place in
// the [N, h, L, *] layout and in the [B, S, H, *] token layout. Shared by the gather and
// scatter-add kernels so the head/offset rules of the plan are decoded in one place.
// Index: the integer type of the decode. 64-bit division is a ~70-instruction software routine on
// the GPU and made these copy kernels ALU-bound (~55% of the memory bandwidth); launches whose
// flat index fits 32 bits (every realistic chunk) use uint32_t (see fits_32_bits).
#pragma once

#include <cstdint>

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

struct KeptRowPlace {
  int64_t n;        // segment-batch index in the [n_size, h, L, *] rows tensor (from n_begin)
  int j, l;         // head within the group, kept row within the segment
  int64_t b, s, h;  // batch, token and head in [B, S, H, *]
};

// row: flat index over the [size_n, h, L] rows of `rows`.
template <typename Index>
__device__ inline KeptRowPlace locate_kept_row(const KeptRows& rows, Index row) {
  KeptRowPlace p;
  const Index kept = Index(rows.kept), heads = Index(rows.head_count);
  const Index row_in_n = row / kept;
  p.l = int(row - row_in_n * kept);
  const Index n = row_in_n / heads;
  p.j = int(row_in_n - n * heads);
  p.n = int64_t(n);
  const Index nseg = Index(rows.seq_len / rows.segment);
  const Index m = n + Index(rows.n_begin);
  const Index b = m / nseg;
  p.b = int64_t(b);
  p.s = int64_t(m - b * nseg) * rows.segment + rows.offset + int64_t(p.l) * rows.rate;
  p.h = rows.head_start + int64_t(p.j) * rows.head_step;
  return p;
}

// The grid-stride loop of the kept-row kernels: calls fn(place, item) for every (kept row, item of
// the row) of this thread, items_per_row items (words, vectors) per row, `total` in all.
template <typename Index, typename Fn>
__device__ inline void for_each_kept_row_item(const KeptRows& rows, int items_per_row, Index total,
                                              Fn&& fn) {
  const Index per_row = Index(items_per_row);
  for (Index t = blockIdx.x * Index(blockDim.x) + threadIdx.x; t < total;
       t += Index(gridDim.x) * blockDim.x) {
    const Index row = t / per_row;
    fn(locate_kept_row(rows, row), int(t - row * per_row));
  }
}

// Whether a launch over `total` flat items of `rows` can decode in 32 bits: the item index and
// every segment-batch index stay below 2^31, so a grid-stride step (< 2^31) cannot wrap.
inline bool fits_32_bits(const KeptRows& rows, int64_t total) {
  constexpr int64_t kLimit = int64_t(1) << 31;
  return total < kLimit && rows.n_begin + rows.size_n() < kLimit;
}

// Calls launch(uint32_t{}) where fits_32_bits(rows, total), else launch(int64_t{}): the
// argument's type is the kernel's Index.
template <typename Launch>
void with_index_type(const KeptRows& rows, int64_t total, Launch&& launch) {
  if (fits_32_bits(rows, total)) {
    launch(uint32_t{});
  } else {
    launch(int64_t{});
  }
}

}  // namespace ra::cuda
