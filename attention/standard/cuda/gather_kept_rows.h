// Copies one branch head group's kept rows out of a [B, S, H, D] tensor into a [N, h, L, D]
// tensor: the kernel-ready layout for fused attention kernels that do not take the dilated
// strided view directly, the LSE of the merged result in each branch's layout (D = 1), and, with
// a scale, the partition mode's merged output and output gradient (out * G, grad_out / G) in one
// pass instead of a gather or view followed by a multiply.
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// dst[n, j, l, :] = scale * src[m / nseg, (m % nseg) * w' + o + l * r, head_start + j *
// head_step, :] with m = n_begin + n, for n < size_n, j < head_count, l < kept. row_elems = D.
// scale == 1: any element type, copied as bytes. Otherwise fp16/bf16, multiplied in fp32 and
// rounded to nearest (what an ATen `tensor * scalar` does).
void launch_gather_kept_rows(const KeptRows& rows, const TokenTensor& src, const RowTensor& dst,
                             int64_t row_elems, ScalarKind kind, cudaStream_t stream,
                             float scale = 1.f);

}  // namespace ra::cuda
