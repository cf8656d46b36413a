// Scatter and merge of every branch's fused-attention output in one fp32 pass (DESIGN.md step 5):
// for each token and head, lse = logsumexp_i lse_i and out = sum_i exp(lse_i - lse) out_i over
// the branches that keep it (an online max keeps it stable); tokens no branch keeps get out = 0,
// lse = -inf. Every output element is written.
#pragma once

#include "attention/standard/cuda/kept_rows.h"

namespace ra::cuda {

// One head group's fused-attention result: out [N, h, L, D] and lse [N, h, L] (fp32).
struct MergeGroup {
  const void* out = nullptr;
  int64_t out_stride_n = 0, out_stride_h = 0, out_stride_l = 0;
  const float* lse = nullptr;
  int64_t lse_stride_n = 0, lse_stride_h = 0, lse_stride_l = 0;
};

// One branch. head_mode all: head h is in group h % rate (offset h % rate, index h / rate).
// Partition: heads [head_start, head_start + head_count) are group first_group's, offset
// `offset`; other heads are not in this branch.
struct MergeBranch {
  int32_t segment = 0, rate = 1;
  int32_t partition = 0;
  int32_t head_start = 0, head_count = 0, offset = 0;
  int32_t first_group = 0;  // index into the MergeGroup array
};

// branches / groups: DEVICE arrays. out: [B, S, H, D] (kind), written as out_scale times the
// merge (the partition mode's 1/G); lse: [B, S, H] fp32 contiguous, of the unscaled merge.
// head_dim % 8 == 0; group out pointers and strides must allow 16-byte loads (checked).
// num_groups: the entries of `groups`.
void launch_merge_branches(const MergeBranch* branches, int num_branches, const MergeGroup* groups,
                           int num_groups, int batch, int seq_len, int num_heads, int head_dim,
                           ScalarKind kind, float out_scale, const TokenTensor& out, float* lse,
                           cudaStream_t stream);

}  // namespace ra::cuda
