// One thread per (run of kTokensPerThread tokens, 16-byte word of a token's whole output row):
// the words fastest, so a warp stores whole contiguous rows. The
// run's first token is placed in its head's group once (divisions); the thread then steps token
// by token, tracking the segment position incrementally, as write_kept_rows does. The head ->
// group table and the groups sit in the kernel's parameters (__grid_constant__: read in place).
#include "attention/standard/cuda/partition_forward.h"

#include <algorithm>
#include <cmath>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kTokensPerThread = 4;

// A group as the kernel reads it: output strides in 16-byte words.
struct GroupArgs {
  int32_t segment = 1, rate = 1, offset = 0, kept = 0, head_start = 0, head_step = 1;
  int32_t segments_per_sequence = 1;
  const uint4* out = nullptr;
  int64_t out_sn = 0, out_sh = 0, out_sl = 0;
  const float* lse = nullptr;
  int64_t lse_sn = 0, lse_sh = 0, lse_sl = 0;
};

struct ForwardParams {
  GroupArgs groups[kMaxPartitionGroups];
  int8_t group_of_head[kMaxPartitionHeads];  // -1: no group holds the head
};

// Index: the flat index's type (uint32_t where the launch fits 31 bits). T: the output's
// element type.
template <typename Index, typename T>
__global__ void write_partition_forward_kernel(const __grid_constant__ ForwardParams p,
                                               Index tokens, Index seq_len, int heads,
                                               int words_per_head, float scale, uint4* out,
                                               float* lse, Index total) {
  const Index row_items = Index(heads) * Index(words_per_head);
  for (Index t = blockIdx.x * Index(blockDim.x) + threadIdx.x; t < total;
       t += Index(gridDim.x) * blockDim.x) {
    const Index run = t / row_items;
    const int item = int(t - run * row_items);
    const int h = item / words_per_head;
    const int word = item - h * words_per_head;
    Index token = run * kTokensPerThread;
    const int gi = p.group_of_head[h];
    const GroupArgs* g = gi >= 0 ? &p.groups[gi] : nullptr;
    // Where the run's first token sits in the group: segment-batch row n, position in the
    // segment, from = position - offset, kept row l and phase = from mod rate (as in
    // write_kept_rows). Unused without a group.
    int64_t n = 0;
    int pos = 0, from = -1, l = 0, phase = 0, j = 0;
    if (g != nullptr) {
      const Index b = token / seq_len, s = token - b * seq_len;
      const Index in_sequence = s / Index(g->segment);
      n = int64_t(b) * g->segments_per_sequence + int64_t(in_sequence);
      pos = int(s - in_sequence * Index(g->segment));
      from = pos - g->offset;
      l = from > 0 ? from / g->rate : 0;
      phase = from > 0 ? from - l * g->rate : 0;
      j = (h - g->head_start) / g->head_step;
    }
    for (int i = 0; i < kTokensPerThread && token < tokens; ++i, ++token) {
      const bool keeps = g != nullptr && from >= 0 && phase == 0 && l < g->kept;
      uint4 value = make_uint4(0, 0, 0, 0);
      if (keeps) {
        value = g->out[n * g->out_sn + j * g->out_sh + int64_t(l) * g->out_sl + word];
        if (scale != 1.f) value = scaled8<T>(value, scale);
      }
      out[int64_t(token) * row_items + item] = value;
      if (word == 0) {
        lse[int64_t(token) * heads + h] =
            keeps ? g->lse[n * g->lse_sn + j * g->lse_sh + int64_t(l) * g->lse_sl] : -INFINITY;
      }
      if (g != nullptr) {  // the next token
        ++pos, ++from;
        if (from > 0 && ++phase == g->rate) phase = 0, ++l;
        if (pos == g->segment) pos = 0, ++n, from = -g->offset, l = 0, phase = 0;
      }
    }
  }
}

}  // namespace

void launch_write_partition_forward(const PartitionGroup* groups, int count, int64_t batch,
                                    int64_t seq_len, int64_t heads, int64_t head_dim,
                                    ScalarKind kind, float scale, void* out, float* lse,
                                    cudaStream_t stream) {
  RA_CHECK(count >= 0 && count <= kMaxPartitionGroups, "partition forward: ", count,
           " groups; at most ", kMaxPartitionGroups);
  RA_CHECK(heads >= 1 && heads <= kMaxPartitionHeads, "partition forward: heads = ", heads,
           "; 1 to ", kMaxPartitionHeads);
  RA_CHECK(out != nullptr && lse != nullptr, "partition forward: no output or no lse");
  RA_CHECK(kind != ScalarKind::kFloat && head_dim > 0 && (head_dim * 2) % 16 == 0 && aligned16(out),
           "partition forward: the output must be fp16/bf16, 16-byte aligned, with rows of a "
           "multiple of 16 bytes (head_dim = ",
           head_dim, ")");
  ForwardParams p{};
  std::fill(p.group_of_head, p.group_of_head + kMaxPartitionHeads, int8_t(-1));
  for (int gi = 0; gi < count; ++gi) {
    const PartitionGroup& g = groups[gi];
    const KeptRows& r = g.rows;
    RA_CHECK(r.batch == batch && r.seq_len == seq_len && r.num_heads == heads,
             "partition forward: group ", gi, " is of a [", r.batch, ", ", r.seq_len, ", ",
             r.num_heads, "] tensor, the output [", batch, ", ", seq_len, ", ", heads, "]");
    RA_CHECK(r.segment > 0 && r.rate > 0 && seq_len % r.segment == 0 && r.head_step > 0,
             "partition forward: group ", gi, ": segment = ", r.segment, ", rate = ", r.rate,
             ", head_step = ", r.head_step, ": need positive values, segment dividing ", seq_len);
    RA_CHECK(r.n_begin == 0 && r.size_n() == r.total_n(), "partition forward: group ", gi,
             " covers segments ", r.n_begin, " + ", r.size_n(), " of ", r.total_n(),
             "; it takes whole groups");
    RA_CHECK(r.kept == 0 || g.lse != nullptr, "partition forward: group ", gi,
             " keeps rows but has no lse rows");
    RA_CHECK(r.kept == 0 || (g.out != nullptr && aligned16(g.out) && g.out_sn % 8 == 0 &&
                             g.out_sh % 8 == 0 && g.out_sl % 8 == 0),
             "partition forward: group ", gi,
             "'s output rows must exist and allow 16-byte loads (pointer and strides)");
    for (int c = 0; c < r.head_count; ++c) {
      const int64_t head = int64_t(r.head_start) + int64_t(c) * r.head_step;
      RA_CHECK(head >= 0 && head < heads && p.group_of_head[head] < 0, "partition forward: head ",
               head, " of group ", gi, " is out of [0, ", heads, ") or in an earlier group");
      p.group_of_head[head] = int8_t(gi);
    }
    GroupArgs& a = p.groups[gi];
    a.segment = r.segment, a.rate = r.rate, a.offset = r.offset, a.kept = r.kept;
    a.head_start = r.head_start, a.head_step = r.head_step;
    a.segments_per_sequence = r.seq_len / r.segment;
    a.out = static_cast<const uint4*>(g.out);
    a.out_sn = g.out_sn / 8, a.out_sh = g.out_sh / 8, a.out_sl = g.out_sl / 8;
    a.lse = g.lse;
    a.lse_sn = g.lse_sn, a.lse_sh = g.lse_sh, a.lse_sl = g.lse_sl;
  }
  const int words_per_head = int(head_dim * 2 / 16);
  const int64_t tokens = batch * seq_len;
  const int64_t runs = (tokens + kTokensPerThread - 1) / kTokensPerThread;
  const int64_t row_items = heads * words_per_head;
  const int64_t total = runs * row_items;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  auto launch = [&](auto index, auto type) {
    using Index = decltype(index);
    using T = decltype(type);
    write_partition_forward_kernel<Index, T><<<blocks, threads, 0, stream>>>(
        p, Index(tokens), Index(seq_len), int(heads), words_per_head, scale,
        static_cast<uint4*>(out), lse, Index(total));
  };
  // 32-bit divisions where every flat index (items and the output's words) stays below 2^31.
  const bool small = tokens * row_items < (int64_t(1) << 31);
  if (kind == ScalarKind::kHalf) {
    small ? launch(uint32_t{}, __half{}) : launch(int64_t{}, __half{});
  } else {
    small ? launch(uint32_t{}, __nv_bfloat16{}) : launch(int64_t{}, __nv_bfloat16{});
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
