// Writes one branch head group's gradient rows ([N, h, L, D]) into the full [B, S, H, D]
// gradient as plain stores, and zeros into the rows of the group's heads that the group does not
// keep. For head groups that hold every head once (DilationPlan::head_cover) this writes each
// (token, head) exactly once, replacing a zero fill of the full gradient plus a read-modify-write
// scatter-add (partition mode: every group; all mode: one branch).
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// Optionally the group's lse too: dst[b, s, head] = src[n, j, l] where the row is kept, else
// -inf (the partition mode's forward, whose groups hold every head once: this IS the merge).
// Strides in floats; src [N, h, L] of the launch's n range, dst [B, S, H].
struct KeptLse {
  const float* src = nullptr;
  int64_t src_sn = 0, src_sh = 0, src_sl = 0;
  float* dst = nullptr;  // null: no lse written
  int64_t dst_sb = 0, dst_ss = 0, dst_sh = 0;
};

// For every segment m in [n_begin, n_begin + size_n) of `rows`, token p < w' of it and head
// j < head_count: dst[b, s, head_start + j * head_step, :] = src[m - n_begin, j, (p - o) / r, :]
// if p = o + l * r for some l, else 0 (b = m / nseg, s = (m % nseg) * w' + p). src may be null
// when rows.kept == 0 (only zeros). Elements are copied as bytes; D * element size must be a
// multiple of 16 bytes and pointers and strides must allow 16-byte access (checked). scale != 1
// multiplies the copied rows (fp16/bf16 only, rounded once): the partition mode's dV, whose
// fused backward ran with V scaled, and its forward output (1/G x the branch's output).
void launch_write_kept_rows(const KeptRows& rows, const RowTensor& src, const TokenTensor& dst,
                            int64_t head_dim, ScalarKind kind, cudaStream_t stream,
                            float scale = 1.f, const KeptLse& lse = {});

// The same for up to 3 tensors of the group at once (its dq, dk, dv): one index decode, their
// loads in flight together, one launch.
struct KeptRowsWrite {
  RowTensor src;
  TokenTensor dst;
  float scale = 1.f;
};
void launch_write_kept_rows(const KeptRows& rows, const KeptRowsWrite* writes, int count,
                            int64_t head_dim, ScalarKind kind, cudaStream_t stream,
                            const KeptLse& lse = {});

}  // namespace ra::cuda
