// Writes one branch head group's gradient rows ([N, h, L, D]) into the full [B, S, H, D]
// gradient as plain stores, and zeros into the rows of the group's heads that the group does not
// keep. For head groups that hold every head once (DilationPlan::head_cover) this writes each
// (token, head) exactly once, replacing a zero fill of the full gradient plus a read-modify-write
// scatter-add (partition mode: every group; all mode: one branch).
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// For every segment m in [n_begin, n_begin + size_n) of `rows`, token p < w' of it and head
// j < head_count: dst[b, s, head_start + j * head_step, :] = src[m - n_begin, j, (p - o) / r, :]
// if p = o + l * r for some l, else 0 (b = m / nseg, s = (m % nseg) * w' + p). src may be null
// when rows.kept == 0 (only zeros). Elements are copied as bytes; D * element size must be a
// multiple of 16 bytes and pointers and strides must allow 16-byte access (checked).
void launch_write_kept_rows(const KeptRows& rows, const RowTensor& src, const TokenTensor& dst,
                            int64_t head_dim, ScalarKind kind, cudaStream_t stream);

}  // namespace ra::cuda
