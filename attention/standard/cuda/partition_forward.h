// The partition mode's forward output in one pass over whole rows: for every head group, its
// rows of the layer's output (times the output scale, rounded once) and of the lse, dst = the
// row that head h's group keeps at token s, zeros (lse -inf) where it keeps none. In partition
// mode each head is in exactly one group, so this is the merge. A launch per group
// (write_kept_rows) writes 2-3 heads of each token: for the [B, S, H] lse that leaves every
// 32-byte sector partly written, a read-modify-write in DRAM each time. LongNet-base's five
// groups at 1M tokens on H100 (bench/kept_row_write_bench.cpp, docs/PERFORMANCE.md session 17):
// 0.98 ms here against 1.22 a launch per group; the fwd+bwd step 20.5 against 20.7 ms.
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// One group: its rows (whole: n_begin 0, every segment), its output rows [N, h, L, D] (strides
// in elements, 16-byte aligned) and lse rows [N, h, L] (strides in floats); both may be null
// where rows.kept == 0.
struct PartitionGroup {
  KeptRows rows;
  const void* out = nullptr;
  int64_t out_sn = 0, out_sh = 0, out_sl = 0;
  const float* lse = nullptr;
  int64_t lse_sn = 0, lse_sh = 0, lse_sl = 0;
};

constexpr int kMaxPartitionGroups = 16;
constexpr int kMaxPartitionHeads = 512;

// groups: `count` (<= kMaxPartitionGroups) groups of a [batch, seq_len, heads] tensor holding
// each head at most once (a head no group holds gets zeros and -inf); heads <=
// kMaxPartitionHeads. out: contiguous [batch, seq_len, heads, head_dim] of `kind` (fp16/bf16;
// head_dim * 2 a multiple of 16 bytes); lse: contiguous
// [batch, seq_len, heads] fp32. Checked: shapes, disjoint heads, sources, alignment.
void launch_write_partition_forward(const PartitionGroup* groups, int count, int64_t batch,
                                    int64_t seq_len, int64_t heads, int64_t head_dim,
                                    ScalarKind kind, float scale, void* out, float* lse,
                                    cudaStream_t stream);

}  // namespace ra::cuda
