// The layer's lse in partition mode, every head group in one launch: dst[b, s, h] = the lse of
// the row that head h's group keeps at token s, -inf where it keeps none. In partition mode each
// head is in exactly one group, so this is the merge's lse. One launch writes whole [B, S, H]
// rows; a launch per group (write_kept_rows' KeptLse) leaves every 32-byte sector of a token's H
// floats partly written, a read-modify-write in DRAM each time (bench/kept_row_write_bench.cpp:
// 0.29 of 1.22 ms for LongNet-base's five groups at 1M tokens on H100).
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// One group: its rows (whole: n_begin 0, every segment) and their lse [N, h, L], strides in
// floats; src may be null where rows.kept == 0.
struct LseGroup {
  KeptRows rows;
  const float* src = nullptr;
  int64_t src_sn = 0, src_sh = 0, src_sl = 0;
};

constexpr int kMaxLseGroups = 32;
constexpr int kMaxLseHeads = 512;

// groups: `count` (<= kMaxLseGroups) groups of a [batch, seq_len, heads] tensor holding each head
// at most once (a head no group holds gets -inf); dst: contiguous [batch, seq_len, heads] fp32;
// heads <= kMaxLseHeads. Checked: shapes, disjoint heads, sources.
void launch_write_partition_lse(const LseGroup* groups, int count, int64_t batch, int64_t seq_len,
                                int64_t heads, float* dst, cudaStream_t stream);

}  // namespace ra::cuda
