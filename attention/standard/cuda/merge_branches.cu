// One thread block per few tokens, a thread per (head, 8 head-dim elements): walks the
// branches, and for the ones that keep this token for this head merges the branch outputs
// online (running max, fp32), then writes out and lse. The index math that decides which
// branch keeps what is done once per block (head table) and once per token (token slots) in
// shared memory: per element it was ~30 integer divisions, which made the kernel compute-bound
// at ~1/3 of the memory bandwidth (31 ms of a 1M LongNet-base training step on H100). The batched
// kernel (the default up to 8 branches) issues every branch's loads before merging: 11.5 -> 9.9
// ms per 1M LongNet-base training step on H200.
#include "attention/standard/cuda/merge_branches.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kTokensPerBlock = 4;

// Where head h sits in a branch: group and head index within it, and the row offset (r mod
// rate) of the rows it keeps; offset < 0: the head is not in this branch (partition mode).
struct HeadSlot {
  int group, head_index, offset;
};
// Where the current token sits in a branch: its position mod rate, kept row and segment n.
struct TokenSlot {
  int64_t n;
  int pos_mod_rate, kept_row;
};

// The block's threads fill heads[i * num_heads + h]: where head h sits in branch i.
__device__ inline void fill_head_table(const MergeBranch* branches, int num_branches, int num_heads,
                                       HeadSlot* heads, int tid, int threads) {
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
}

// The block's threads fill token[i]: where token (b, s) sits in branch i.
__device__ inline void fill_token_slots(const MergeBranch* branches, int num_branches, int b, int s,
                                        int seq_len, TokenSlot* token, int tid, int threads) {
  for (int i = tid; i < num_branches; i += threads) {
    const MergeBranch br = branches[i];
    const int pos = s % br.segment;
    token[i] = {int64_t(b) * (seq_len / br.segment) + s / br.segment, pos % br.rate, pos / br.rate};
  }
}

// Stores one (token, head)'s merge, acc = sum_i w_i o_i with w_i = exp(lse_i - max_lse) and
// sum = sum_i w_i: out's 8 elements of `chunk` = acc / sum x out_scale, and (chunk 0) its lse.
// No kept branch (sum = 0): zeros and lse -inf.
template <typename T>
__device__ inline void store_merged(float (&acc)[8], float max_lse, float sum, float out_scale,
                                    const TokenTensor& out, int b, int s, int h, int chunk,
                                    float* lse_out, int64_t lse_index) {
  const float inv = sum > 0.f ? out_scale / sum : 0.f;
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] *= inv;
  store8(static_cast<T*>(out.data) + b * out.stride_b + s * out.stride_s + h * out.stride_h +
             chunk * 8,
         acc);
  if (chunk == 0) lse_out[lse_index] = sum > 0.f ? max_lse + logf(sum) : -INFINITY;
}

template <typename T>
__global__ void merge_branches_kernel(const MergeBranch* __restrict__ branches, int num_branches,
                                      const MergeGroup* __restrict__ groups, int batch, int seq_len,
                                      int num_heads, float out_scale, TokenTensor out,
                                      float* __restrict__ lse_out) {
  extern __shared__ int64_t shared[];                       // int64_t: TokenSlot's alignment
  TokenSlot* token = reinterpret_cast<TokenSlot*>(shared);  // [num_branches]
  HeadSlot* heads = reinterpret_cast<HeadSlot*>(token + num_branches);  // [branches][heads]
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int threads = blockDim.x * blockDim.y;
  fill_head_table(branches, num_branches, num_heads, heads, tid, threads);
  const int h = blockIdx.y * blockDim.y + threadIdx.y;  // this thread's head
  const int chunk = threadIdx.x;                        // and 8 of its head-dim elements
  const int64_t tokens = int64_t(batch) * seq_len;
  const int64_t first = int64_t(blockIdx.x) * kTokensPerBlock;
  int b = int(first / seq_len), s = int(first % seq_len);
  for (int k = 0; k < kTokensPerBlock && first + k < tokens; ++k) {
    __syncthreads();  // the head table is written; the previous token's slots are consumed
    fill_token_slots(branches, num_branches, b, s, seq_len, token, tid, threads);
    __syncthreads();
    if (h < num_heads) {
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      float running_max = -INFINITY, running_sum = 0.f;
      for (int i = 0; i < num_branches; ++i) {
        const HeadSlot hs = heads[i * num_heads + h];
        const TokenSlot ts = token[i];
        if (hs.offset < 0 || ts.pos_mod_rate != hs.offset) continue;
        const MergeGroup g = groups[hs.group];
        const float lse_i = g.lse[ts.n * g.lse_stride_n + hs.head_index * g.lse_stride_h +
                                  ts.kept_row * g.lse_stride_l];
        if (lse_i == -INFINITY) continue;
        float o[8];
        load8(static_cast<const T*>(g.out) + ts.n * g.out_stride_n +
                  hs.head_index * g.out_stride_h + ts.kept_row * g.out_stride_l + chunk * 8,
              o);
        const float new_max = fmaxf(running_max, lse_i);
        const float old_scale = __expf(running_max - new_max);  // 0 on the first branch
        const float w = __expf(lse_i - new_max);
        running_sum = running_sum * old_scale + w;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] = acc[e] * old_scale + w * o[e];
        running_max = new_max;
      }
      store_merged<T>(acc, running_max, running_sum, out_scale, out, b, s, h, chunk, lse_out,
                      (first + k) * num_heads + h);
    }
    if (++s == seq_len) s = 0, ++b;
  }
}

// The same merge with every branch's loads issued before any is used: each (token, head) thread
// first looks up which of the (at most kMaxBatchedBranches) branches keep it and loads their lse
// and 16 output bytes, all in flight together, then merges (max first, then the weighted sum).
// The loop above waits for one branch's lse, then its output, then the next branch's: two memory
// latencies per branch, with ~2 branches keeping a token in LongNet's all mode. The group table
// is copied to shared memory too (the loop reads it from global memory per branch).
constexpr int kMaxBatchedBranches = 8;

template <typename T>
__global__ void merge_branches_batched_kernel(const MergeBranch* __restrict__ branches,
                                              int num_branches,
                                              const MergeGroup* __restrict__ groups, int num_groups,
                                              int batch, int seq_len, int num_heads,
                                              float out_scale, TokenTensor out,
                                              float* __restrict__ lse_out) {
  extern __shared__ int64_t shared[];  // int64_t: TokenSlot's and MergeGroup's alignment
  TokenSlot* token = reinterpret_cast<TokenSlot*>(shared);                  // [num_branches]
  MergeGroup* table = reinterpret_cast<MergeGroup*>(token + num_branches);  // [num_groups]
  HeadSlot* heads = reinterpret_cast<HeadSlot*>(table + num_groups);        // [branches][heads]
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int threads = blockDim.x * blockDim.y;
  for (int e = tid; e < num_groups; e += threads) table[e] = groups[e];
  fill_head_table(branches, num_branches, num_heads, heads, tid, threads);
  const int h = blockIdx.y * blockDim.y + threadIdx.y;
  const int chunk = threadIdx.x;
  const int64_t tokens = int64_t(batch) * seq_len;
  const int64_t first = int64_t(blockIdx.x) * kTokensPerBlock;
  int b = int(first / seq_len), s = int(first % seq_len);
  for (int k = 0; k < kTokensPerBlock && first + k < tokens; ++k) {
    __syncthreads();
    fill_token_slots(branches, num_branches, b, s, seq_len, token, tid, threads);
    __syncthreads();
    if (h < num_heads) {
      float lse_i[kMaxBatchedBranches];
      uint4 raw[kMaxBatchedBranches];
#pragma unroll
      for (int i = 0; i < kMaxBatchedBranches; ++i) {
        lse_i[i] = -INFINITY;
        raw[i] = make_uint4(0, 0, 0, 0);
        if (i < num_branches) {
          const HeadSlot hs = heads[i * num_heads + h];
          const TokenSlot ts = token[i];
          if (hs.offset >= 0 && ts.pos_mod_rate == hs.offset) {
            const MergeGroup& g = table[hs.group];
            lse_i[i] = g.lse[ts.n * g.lse_stride_n + hs.head_index * g.lse_stride_h +
                             ts.kept_row * g.lse_stride_l];
            raw[i] = *reinterpret_cast<const uint4*>(
                static_cast<const T*>(g.out) + ts.n * g.out_stride_n +
                hs.head_index * g.out_stride_h + ts.kept_row * g.out_stride_l + chunk * 8);
          }
        }
      }
      float max_lse = -INFINITY;
#pragma unroll
      for (int i = 0; i < kMaxBatchedBranches; ++i) max_lse = fmaxf(max_lse, lse_i[i]);
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum = 0.f;
      if (max_lse != -INFINITY) {
#pragma unroll
        for (int i = 0; i < kMaxBatchedBranches; ++i) {
          if (lse_i[i] == -INFINITY) continue;
          const float w = __expf(lse_i[i] - max_lse);
          float o[8];
          unpack8<T>(raw[i], o);
          sum += w;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[e] += w * o[e];
        }
      }
      store_merged<T>(acc, max_lse, sum, out_scale, out, b, s, h, chunk, lse_out,
                      (first + k) * num_heads + h);
    }
    if (++s == seq_len) s = 0, ++b;
  }
}

}  // namespace

void launch_merge_branches(const MergeBranch* branches, int num_branches, const MergeGroup* groups,
                           int num_groups, int batch, int seq_len, int num_heads, int head_dim,
                           ScalarKind kind, float out_scale, const TokenTensor& out, float* lse,
                           cudaStream_t stream) {
  RA_CHECK(head_dim % 8 == 0, "head_dim = ", head_dim, ": the merge kernel needs a multiple of 8");
  RA_CHECK(aligned16(out.data) && out.stride_b % 8 == 0 && out.stride_s % 8 == 0 &&
               out.stride_h % 8 == 0,
           "merge output: pointer and strides must allow 16-byte stores");
  const int chunks_per_row = head_dim / 8;
  const int64_t tokens = int64_t(batch) * seq_len;
  if (tokens == 0 || num_heads == 0) return;
  // Threads: (8-element chunk, head); heads beyond 1024 threads go to grid.y.
  const int heads_per_block = std::max(1, std::min(num_heads, 1024 / chunks_per_row));
  const dim3 block(chunks_per_row, heads_per_block);
  const dim3 grid(unsigned((tokens + kTokensPerBlock - 1) / kTokensPerBlock),
                  unsigned((num_heads + heads_per_block - 1) / heads_per_block));
  RA_CHECK((tokens + kTokensPerBlock - 1) / kTokensPerBlock < (int64_t(1) << 31),
           "merge_branches: ", tokens, " tokens exceed the grid");
  const size_t shared = num_branches * (sizeof(TokenSlot) + num_heads * sizeof(HeadSlot));
  RA_CHECK(shared <= 48 * 1024, "merge_branches: ", num_branches, " branches x ", num_heads,
           " heads need ", shared, " bytes of shared memory (at most 48 KiB)");
  // The batched kernel unless RA_MERGE_KERNEL=loop (A/B runs) or there are too many branches.
  const char* choice = std::getenv("RA_MERGE_KERNEL");
  const bool loop =
      num_branches > kMaxBatchedBranches || (choice != nullptr && std::strcmp(choice, "loop") == 0);
  const size_t batched_shared = shared + num_groups * sizeof(MergeGroup);
  RA_CHECK(loop || batched_shared <= 48 * 1024, "merge_branches: ", num_groups,
           " head groups need ", batched_shared, " bytes of shared memory (at most 48 KiB)");
  auto run = [&](auto type) {
    using T = decltype(type);
    if (loop) {
      merge_branches_kernel<T><<<grid, block, shared, stream>>>(
          branches, num_branches, groups, batch, seq_len, num_heads, out_scale, out, lse);
    } else {
      merge_branches_batched_kernel<T>
          <<<grid, block, batched_shared, stream>>>(branches, num_branches, groups, num_groups,
                                                    batch, seq_len, num_heads, out_scale, out, lse);
    }
  };
  switch (kind) {
    case ScalarKind::kHalf:
      run(__half{});
      break;
    case ScalarKind::kBFloat16:
      run(__nv_bfloat16{});
      break;
    default:
      RA_THROW("merge_branches: output must be fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
