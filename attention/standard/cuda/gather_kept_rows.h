// Copies one branch head group's kept rows out of a [B, S, H, D] tensor into a [N, h, L, D]
// tensor: the kernel-ready layout for fused attention kernels that do not take the dilated
// strided view directly, and the LSE of the merged result in each branch's layout (D = 1).
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// dst[n, j, l, :] = src[m / nseg, (m % nseg) * w' + o + l * r, head_start + j * head_step, :]
// with m = n_begin + n, for n < size_n, j < head_count, l < kept. row_elems = D. Any element
// type (copied as bytes).
void launch_gather_kept_rows(const KeptRows& rows, const TokenTensor& src, const RowTensor& dst,
                             int64_t row_elems, ScalarKind kind, cudaStream_t stream);

}  // namespace ra::cuda
