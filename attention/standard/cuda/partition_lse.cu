// One thread per (token, head) of the [B, S, H] lse, consecutive threads along the heads, so a
// warp stores whole contiguous rows; the head's group comes from a table in the kernel's
// parameters, and its kept-row index from the token's place in the group's segment.
#include "attention/standard/cuda/partition_lse.h"

#include <algorithm>
#include <cmath>

#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

struct LseParams {
  LseGroup groups[kMaxLseGroups];
  int16_t group_of_head[kMaxLseHeads];  // -1: no group holds the head
};

// Index: uint32_t where B * S * H fits 31 bits (32-bit divisions), else int64_t.
template <typename Index>
__global__ void write_partition_lse_kernel(const __grid_constant__ LseParams p, Index seq_len,
                                           Index heads, Index total, float* dst) {
  for (Index t = blockIdx.x * Index(blockDim.x) + threadIdx.x; t < total;
       t += Index(gridDim.x) * blockDim.x) {
    const Index token = t / heads;  // b * S + s
    const int h = int(t - token * heads);
    const int gi = p.group_of_head[h];
    float value = -INFINITY;
    if (gi >= 0) {
      const LseGroup& g = p.groups[gi];
      const KeptRows& r = g.rows;
      const Index b = token / seq_len, s = token - b * seq_len;
      const Index segment = Index(r.segment);
      const Index in_batch = s / segment;  // the segment's index within its sequence
      const int from = int(s - in_batch * segment) - r.offset;
      const int l = from >= 0 ? from / r.rate : -1;
      if (from >= 0 && l * r.rate == from && l < r.kept) {
        const int64_t n = int64_t(b) * (r.seq_len / r.segment) + int64_t(in_batch);
        const int j = (h - r.head_start) / r.head_step;
        value = g.src[n * g.src_sn + j * g.src_sh + int64_t(l) * g.src_sl];
      }
    }
    dst[t] = value;
  }
}

}  // namespace

void launch_write_partition_lse(const LseGroup* groups, int count, int64_t batch, int64_t seq_len,
                                int64_t heads, float* dst, cudaStream_t stream) {
  RA_CHECK(count >= 0 && count <= kMaxLseGroups, "partition lse: ", count, " groups; at most ",
           kMaxLseGroups);
  RA_CHECK(heads >= 1 && heads <= kMaxLseHeads, "partition lse: heads = ", heads, "; 1 to ",
           kMaxLseHeads);
  LseParams p{};
  std::fill(p.group_of_head, p.group_of_head + kMaxLseHeads, int16_t(-1));
  for (int gi = 0; gi < count; ++gi) {
    const KeptRows& r = groups[gi].rows;
    RA_CHECK(r.batch == batch && r.seq_len == seq_len && r.num_heads == heads,
             "partition lse: group ", gi, " is of a [", r.batch, ", ", r.seq_len, ", ", r.num_heads,
             "] tensor, the lse [", batch, ", ", seq_len, ", ", heads, "]");
    RA_CHECK(r.segment > 0 && r.rate > 0 && seq_len % r.segment == 0 && r.head_step > 0,
             "partition lse: group ", gi, ": segment = ", r.segment, ", rate = ", r.rate,
             ", head_step = ", r.head_step, ": need positive values, segment dividing ", seq_len);
    RA_CHECK(r.n_begin == 0 && r.size_n() == r.total_n(), "partition lse: group ", gi,
             " covers segments ", r.n_begin, " + ", r.size_n(), " of ", r.total_n(),
             "; it takes whole groups");
    RA_CHECK(r.kept == 0 || groups[gi].src != nullptr, "partition lse: group ", gi,
             " keeps rows but has no lse source");
    for (int c = 0; c < r.head_count; ++c) {
      const int64_t head = int64_t(r.head_start) + int64_t(c) * r.head_step;
      RA_CHECK(head >= 0 && head < heads && p.group_of_head[head] < 0, "partition lse: head ", head,
               " of group ", gi, " is out of [0, ", heads, ") or in an earlier group");
      p.group_of_head[head] = int16_t(gi);
    }
    p.groups[gi] = groups[gi];
  }
  const int64_t total = batch * seq_len * heads;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  if (total < (int64_t(1) << 31)) {
    write_partition_lse_kernel<uint32_t><<<blocks, threads, 0, stream>>>(
        p, uint32_t(seq_len), uint32_t(heads), uint32_t(total), dst);
  } else {
    write_partition_lse_kernel<int64_t>
        <<<blocks, threads, 0, stream>>>(p, seq_len, heads, total, dst);
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
