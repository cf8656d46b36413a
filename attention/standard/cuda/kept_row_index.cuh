// Where a kept row lives: decodes a flat index over a group's [N, h, L] rows into its place in
// the [N, h, L, *] layout and in the [B, S, H, *] token layout. Shared by the gather and
// scatter-add kernels so the head/offset rules of the plan are decoded in one place.
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

struct KeptRowPlace {
  int64_t n;        // segment-batch index in the [n_size, h, L, *] rows tensor (from n_begin)
  int j, l;         // head within the group, kept row within the segment
  int64_t b, s, h;  // batch, token and head in [B, S, H, *]
};

// row: flat index over the [size_n, h, L] rows of `rows`.
__device__ inline KeptRowPlace locate_kept_row(const KeptRows& rows, int64_t row) {
  KeptRowPlace p;
  p.l = int(row % rows.kept);
  row /= rows.kept;
  p.j = int(row % rows.head_count);
  p.n = row / rows.head_count;
  const int64_t n = p.n + rows.n_begin;
  const int nseg = rows.seq_len / rows.segment;
  p.b = n / nseg;
  p.s = (n % nseg) * rows.segment + rows.offset + int64_t(p.l) * rows.rate;
  p.h = rows.head_start + int64_t(p.j) * rows.head_step;
  return p;
}

}  // namespace ra::cuda
