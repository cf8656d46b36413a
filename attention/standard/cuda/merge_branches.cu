// A thread per (8 head-dim elements, head, token lane): walks the branches, and for the ones that
// keep its token for its head merges the branch outputs online (running max, fp32), then writes
// out and lse. The index math that decides which branch keeps what is done once per block (head
// table) and once per token (token slots) in shared memory: per element it was ~30 integer
// divisions, which made the kernel compute-bound at ~1/3 of the memory bandwidth (31 ms of a 1M
// LongNet-base training step on H100). A block handles blockDim.z tokens per step (one pair of
// barriers per step, not per token), and each thread issues the lse and then the out loads of
// kBatch branches before merging them, so the loads of different branches are in flight together
// instead of one dependent pair at a time.
#include "attention/standard/cuda/merge_branches.h"

#include <algorithm>
#include <cmath>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kStepsPerBlock = 4;  // token steps (of blockDim.z tokens) per block
constexpr int kBatch = 4;          // branches whose loads are issued together

// Where head h sits in a branch: group and head index within it, and the row offset (r mod
// rate) of the rows it keeps; offset < 0: the head is not in this branch (partition mode).
struct HeadSlot {
  int group, head_index, offset;
};
// Where a token sits in a branch: its position mod rate, kept row and segment n.
struct TokenSlot {
  int64_t n;
  int pos_mod_rate, kept_row;
};
// Where a token sits in [B, S]; ints only, so it may follow the HeadSlot table unpadded.
struct TokenPlace {
  int b, s;
};

// Launched with 256 threads at most (launch_merge_branches); 3 blocks per SM keep enough loads in
// flight.
template <typename T>
__global__ void __launch_bounds__(256, 3)
    merge_branches_kernel(const MergeBranch* __restrict__ branches, int num_branches,
                          const MergeGroup* __restrict__ groups, int batch, int seq_len,
                          int num_heads, float out_scale, TokenTensor out,
                          float* __restrict__ lse_out) {
  extern __shared__ int64_t shared[];  // int64_t: TokenSlot's alignment
  // [blockDim.z][num_branches], then [num_branches][num_heads], then [blockDim.z] (batch, token).
  TokenSlot* token_slots = reinterpret_cast<TokenSlot*>(shared);
  HeadSlot* heads = reinterpret_cast<HeadSlot*>(token_slots + blockDim.z * num_branches);
  TokenPlace* token_place = reinterpret_cast<TokenPlace*>(heads + num_branches * num_heads);
  const int tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  for (int e = tid; e < num_branches * num_heads; e += threads) {
    const int i = e / num_heads, h = e % num_heads;
    const MergeBranch br = branches[i];
    HeadSlot slot{-1, -1, -1};
    if (br.partition) {
      const int index = h - br.head_start;
      if (index >= 0 && index < br.head_count) slot = {br.first_group, index, br.offset};
    } else {
      const int offset = h % br.rate;
      slot = {br.first_group + offset, h / br.rate, offset};
    }
    heads[e] = slot;
  }
  const int h = blockIdx.y * blockDim.y + threadIdx.y;  // this thread's head
  const int chunk = threadIdx.x;                        // and 8 of its head-dim elements
  const int64_t tokens = int64_t(batch) * seq_len;
  const TokenSlot* my_slots = token_slots + threadIdx.z * num_branches;
  for (int step = 0; step < kStepsPerBlock; ++step) {
    const int64_t first = (int64_t(blockIdx.x) * kStepsPerBlock + step) * blockDim.z;
    if (first >= tokens) break;
    __syncthreads();  // the head table is written; the previous step's slots are consumed
    for (int e = tid; e < int(blockDim.z) * num_branches; e += threads) {
      const int z = e / num_branches, i = e % num_branches;
      const int64_t t = first + z;
      const int b = int(t / seq_len), s = int(t - int64_t(b) * seq_len);
      if (i == 0) token_place[z] = {b, s};
      const MergeBranch br = branches[i];
      const int seg = s / br.segment, pos = s - seg * br.segment;
      const int kept_row = pos / br.rate;
      token_slots[e] = {int64_t(b) * (seq_len / br.segment) + seg, pos - kept_row * br.rate,
                        kept_row};
    }
    __syncthreads();
    const int64_t t = first + threadIdx.z;
    if (h >= num_heads || t >= tokens) continue;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float running_max = -INFINITY, running_sum = 0.f;
    for (int i0 = 0; i0 < num_branches; i0 += kBatch) {
      // Issue the batch's lse loads, then its out loads, then merge: independent loads overlap.
      const T* src[kBatch];
      float lse_i[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        src[k] = nullptr;
        lse_i[k] = -INFINITY;
        const int i = i0 + k;
        if (i >= num_branches) continue;
        const HeadSlot hs = heads[i * num_heads + h];
        const TokenSlot ts = my_slots[i];
        if (hs.offset < 0 || ts.pos_mod_rate != hs.offset) continue;
        const MergeGroup& g = groups[hs.group];
        lse_i[k] = g.lse[ts.n * g.lse_stride_n + hs.head_index * g.lse_stride_h +
                         ts.kept_row * g.lse_stride_l];
        src[k] = static_cast<const T*>(g.out) + ts.n * g.out_stride_n +
                 hs.head_index * g.out_stride_h + ts.kept_row * g.out_stride_l + chunk * 8;
      }
      uint4 raw[kBatch];  // 8 fp16/bf16 each, unpacked when merged (fewer live registers)
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        if (src[k] != nullptr && lse_i[k] != -INFINITY) {
          raw[k] = *reinterpret_cast<const uint4*>(src[k]);
        }
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        if (src[k] == nullptr || lse_i[k] == -INFINITY) continue;
        const float new_max = fmaxf(running_max, lse_i[k]);
        const float old_scale = __expf(running_max - new_max);  // 0 on the first branch
        const float w = __expf(lse_i[k] - new_max);
        running_sum = running_sum * old_scale + w;
        float o[8];
        unpack8<T>(raw[k], o);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] = acc[e] * old_scale + w * o[e];
        running_max = new_max;
      }
    }
    const float inv = running_sum > 0.f ? out_scale / running_sum : 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= inv;
    const int b = token_place[threadIdx.z].b, s = token_place[threadIdx.z].s;
    store8(static_cast<T*>(out.data) + b * out.stride_b + s * out.stride_s + h * out.stride_h +
               chunk * 8,
           acc);
    if (chunk == 0) {
      lse_out[t * num_heads + h] = running_sum > 0.f ? running_max + logf(running_sum) : -INFINITY;
    }
  }
}

}  // namespace

void launch_merge_branches(const MergeBranch* branches, int num_branches, const MergeGroup* groups,
                           int batch, int seq_len, int num_heads, int head_dim, ScalarKind kind,
                           float out_scale, const TokenTensor& out, float* lse,
                           cudaStream_t stream) {
  RA_CHECK(head_dim % 8 == 0, "head_dim = ", head_dim, ": the merge kernel needs a multiple of 8");
  RA_CHECK(aligned16(out.data) && out.stride_b % 8 == 0 && out.stride_s % 8 == 0 &&
               out.stride_h % 8 == 0,
           "merge output: pointer and strides must allow 16-byte stores");
  const int chunks_per_row = head_dim / 8;
  const int64_t tokens = int64_t(batch) * seq_len;
  if (tokens == 0 || num_heads == 0) return;
  RA_CHECK(seq_len > 0 && tokens < (int64_t(1) << 40), "merge_branches: ", tokens,
           " tokens: too many");
  RA_CHECK(chunks_per_row <= 256, "head_dim = ", head_dim,
           ": the merge kernel takes at most 2048 (256 threads of 8 elements)");
  // Threads (at most 256, the kernel's launch bound): (8-element chunk, head, token lane); heads
  // beyond the block go to grid.y; token lanes fill the block.
  const int heads_per_block = std::max(1, std::min(num_heads, 256 / chunks_per_row));
  const int token_lanes = std::clamp(256 / (chunks_per_row * heads_per_block), 1, 64);
  const dim3 block(chunks_per_row, heads_per_block, token_lanes);
  const int64_t tokens_per_block = int64_t(kStepsPerBlock) * token_lanes;
  const int64_t blocks = (tokens + tokens_per_block - 1) / tokens_per_block;
  RA_CHECK(blocks < (int64_t(1) << 31), "merge_branches: ", tokens, " tokens exceed the grid");
  const dim3 grid(unsigned(blocks), unsigned((num_heads + heads_per_block - 1) / heads_per_block));
  const size_t shared =
      num_branches * (token_lanes * sizeof(TokenSlot) + num_heads * sizeof(HeadSlot)) +
      token_lanes * sizeof(TokenPlace);
  RA_CHECK(shared <= 48 * 1024, "merge_branches: ", num_branches, " branches x ", num_heads,
           " heads need ", shared, " bytes of shared memory (at most 48 KiB)");
  switch (kind) {
    case ScalarKind::kHalf:
      merge_branches_kernel<__half><<<grid, block, shared, stream>>>(
          branches, num_branches, groups, batch, seq_len, num_heads, out_scale, out, lse);
      break;
    case ScalarKind::kBFloat16:
      merge_branches_kernel<__nv_bfloat16><<<grid, block, shared, stream>>>(
          branches, num_branches, groups, batch, seq_len, num_heads, out_scale, out, lse);
      break;
    default:
      RA_THROW("merge_branches: output must be fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
