// The merge in three kernels. Flat (the default): a thread per (token, head, 4 x 8 head-dim
// elements) places its token in every branch with FastDivmod multiplies, issues every kept
// branch's loads, merges (max first, then the weighted sum) and stores; no barrier. Batched (more
// than 2^31 items): a block per few tokens, the branch placement computed once per block (head
// table) and once per token (token slots) in shared memory, two barriers per token. Loop (more
// than 8 branches): the batched kernel's layout with an online merge, one branch at a time.
// History: per element ~30 integer divisions made the first kernel compute-bound at ~1/3 of the
// memory bandwidth (31 ms of a 1M LongNet-base training step on H100); the shared tables and the
// batched loads (11.5 -> 9.9 ms per step on H200) then left it at the barriers' pace; the flat
// kernel with 16 bytes per thread ran at 1.8-2.0 TB/s, with 64 bytes at 2.9 (bytes in flight).
#include "attention/standard/cuda/merge_branches.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "attention/standard/cuda/fast_divmod.h"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"
#include "runtime/env_switch.h"

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

constexpr int kMaxBatchedBranches = 8;

// The batched and flat kernels' merge of N loaded branches (lse -inf: not kept; max first, then
// the weighted sum) for kVec 16-byte pieces of the row (chunks chunk, chunk + chunk_step, ...),
// each stored as store_merged does.
template <typename T, int N, int kVec>
__device__ inline void merge_loaded(const float (&lse_i)[N], const uint4 (&raw)[N][kVec],
                                    float out_scale, const TokenTensor& out, int b, int s, int h,
                                    int chunk, int chunk_step, float* lse_out, int64_t lse_index) {
  float max_lse = -INFINITY;
#pragma unroll
  for (int i = 0; i < N; ++i) max_lse = fmaxf(max_lse, lse_i[i]);
  float w[N], sum = 0.f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    w[i] = lse_i[i] == -INFINITY ? 0.f : __expf(lse_i[i] - max_lse);
    sum += w[i];
  }
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (lse_i[i] == -INFINITY) continue;  // not kept, or a row that attended nothing
      float o[8];
      unpack8<T>(raw[i][v], o);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += w[i] * o[e];
    }
    store_merged<T>(acc, max_lse, sum, out_scale, out, b, s, h, chunk + v * chunk_step, lse_out,
                    lse_index);
  }
}

// The same merge with every branch's loads issued before any is used: each (token, head) thread
// first looks up which of the (at most kMaxBatchedBranches) branches keep it and loads their lse
// and 16 output bytes, all in flight together, then merges (max first, then the weighted sum).
// The loop above waits for one branch's lse, then its output, then the next branch's: two memory
// latencies per branch, with ~2 branches keeping a token in LongNet's all mode. The group table
// is copied to shared memory too (the loop reads it from global memory per branch).

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
      uint4 raw[kMaxBatchedBranches][1];
#pragma unroll
      for (int i = 0; i < kMaxBatchedBranches; ++i) {
        lse_i[i] = -INFINITY;
        raw[i][0] = make_uint4(0, 0, 0, 0);
        if (i < num_branches) {
          const HeadSlot hs = heads[i * num_heads + h];
          const TokenSlot ts = token[i];
          if (hs.offset >= 0 && ts.pos_mod_rate == hs.offset) {
            const MergeGroup& g = table[hs.group];
            lse_i[i] = g.lse[ts.n * g.lse_stride_n + hs.head_index * g.lse_stride_h +
                             ts.kept_row * g.lse_stride_l];
            raw[i][0] = *reinterpret_cast<const uint4*>(
                static_cast<const T*>(g.out) + ts.n * g.out_stride_n +
                hs.head_index * g.out_stride_h + ts.kept_row * g.out_stride_l + chunk * 8);
          }
        }
      }
      merge_loaded<T, kMaxBatchedBranches, 1>(lse_i, raw, out_scale, out, b, s, h, chunk, 0,
                                              lse_out, (first + k) * num_heads + h);
    }
    if (++s == seq_len) s = 0, ++b;
  }
}

// The same merge with no barrier and no per-block token loop: a thread per (token, head, kVec
// 16-byte pieces of the row) places its token in every branch itself, with divisions by the
// launch's fixed divisors done as multiplies (FastDivmod). The batched kernel above stops every
// block at two barriers per token while 5 of its threads compute the token's slots; its loads then
// wait for that, and the merge ran at ~1.5 TB/s (3.1 ms of LongNet-base all mode at 1M on H100).
// Each of a warp's load and store instructions covers consecutive 16-byte pieces of a row.
struct BranchDivs {
  FastDivmod segment, rate;
  int32_t segments_per_sequence;  // seq_len / segment
  int32_t partition, head_start, head_count, offset, first_group;
};

// Where (b, s, h) sits in each branch, and its kept branches' lse and kVec 16-byte pieces of
// output (chunks chunk, chunk + chunk_step, ...); lse -inf and no load where a branch does not
// keep it.
template <typename T, int kBranches, int kVec>
__device__ inline void load_kept(const BranchDivs* divs, const MergeGroup* table, uint32_t b,
                                 uint32_t s, uint32_t h, uint32_t chunk, uint32_t chunk_step,
                                 float (&lse_i)[kBranches], uint4 (&raw)[kBranches][kVec]) {
#pragma unroll
  for (int i = 0; i < kBranches; ++i) {
    lse_i[i] = -INFINITY;
#pragma unroll
    for (int v = 0; v < kVec; ++v) raw[i][v] = make_uint4(0, 0, 0, 0);
    const BranchDivs& d = divs[i];
    // Head h's group, its index there and the offset of the rows it keeps (as HeadSlot).
    int group = d.first_group, head_index = int(h) - d.head_start;
    uint32_t offset = uint32_t(d.offset);
    if (!d.partition) {
      uint32_t q, r;
      d.rate.divmod(h, q, r);
      group += int(r), head_index = int(q), offset = r;
    } else if (head_index < 0 || head_index >= d.head_count) {
      continue;
    }
    uint32_t segment_index, pos, kept_row, phase;
    d.segment.divmod(s, segment_index, pos);
    d.rate.divmod(pos, kept_row, phase);
    if (phase != offset) continue;
    const int64_t n = int64_t(b) * d.segments_per_sequence + segment_index;
    const MergeGroup& g = table[group];
    lse_i[i] = g.lse[n * g.lse_stride_n + head_index * g.lse_stride_h +
                     int64_t(kept_row) * g.lse_stride_l];
    const T* row = static_cast<const T*>(g.out) + n * g.out_stride_n + head_index * g.out_stride_h +
                   int64_t(kept_row) * g.out_stride_l;
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      raw[i][v] = *reinterpret_cast<const uint4*>(row + (chunk + v * chunk_step) * 8);
    }
  }
}

// kBranches: the launch's branch count (registers for exactly its loads). kVec: 16-byte pieces
// of a row per thread (chunks part, part + parts, ...: each load instruction of a warp stays
// contiguous), all loaded before the first is merged; the branch placement is shared by them.
template <typename T, int kBranches, int kVec>
__global__ void __launch_bounds__(256)
    merge_branches_flat_kernel(const MergeBranch* __restrict__ branches,
                               const MergeGroup* __restrict__ groups, int num_groups,
                               FastDivmod seq_len, FastDivmod heads, FastDivmod parts,
                               float out_scale, TokenTensor out, float* __restrict__ lse_out,
                               uint32_t total) {
  extern __shared__ int64_t shared[];                         // int64_t: MergeGroup's alignment
  MergeGroup* table = reinterpret_cast<MergeGroup*>(shared);  // [num_groups]
  BranchDivs* divs = reinterpret_cast<BranchDivs*>(table + num_groups);  // [kBranches]
  for (int e = threadIdx.x; e < num_groups; e += blockDim.x) table[e] = groups[e];
  for (int i = threadIdx.x; i < kBranches; i += blockDim.x) {
    const MergeBranch br = branches[i];
    divs[i] = {FastDivmod(uint32_t(br.segment)),
               FastDivmod(uint32_t(br.rate)),
               int32_t(seq_len.divisor / uint32_t(br.segment)),
               br.partition,
               br.head_start,
               br.head_count,
               br.offset,
               br.first_group};
  }
  __syncthreads();
  for (uint32_t item = blockIdx.x * blockDim.x + threadIdx.x; item < total;
       item += gridDim.x * blockDim.x) {
    uint32_t row, part, token, h, b, s;
    parts.divmod(item, row, part);  // row = token * heads + h
    heads.divmod(row, token, h);
    seq_len.divmod(token, b, s);
    float lse_i[kBranches];
    uint4 raw[kBranches][kVec];
    load_kept<T, kBranches, kVec>(divs, table, b, s, h, part, parts.divisor, lse_i, raw);
    merge_loaded<T, kBranches, kVec>(lse_i, raw, out_scale, out, int(b), int(s), int(h), int(part),
                                     int(parts.divisor), lse_out, int64_t(row));
  }
}

// The flat kernel for the launch's branch count (1 to kMaxBatchedBranches).
template <typename T, int kVec, int kBranches = 1>
void launch_flat(int num_branches, dim3 grid, size_t shared, cudaStream_t stream,
                 const MergeBranch* branches, const MergeGroup* groups, int num_groups,
                 FastDivmod seq_len, FastDivmod heads, FastDivmod parts, float out_scale,
                 const TokenTensor& out, float* lse, uint32_t total) {
  if constexpr (kBranches < kMaxBatchedBranches) {
    if (num_branches != kBranches) {
      launch_flat<T, kVec, kBranches + 1>(num_branches, grid, shared, stream, branches, groups,
                                          num_groups, seq_len, heads, parts, out_scale, out, lse,
                                          total);
      return;
    }
  }
  merge_branches_flat_kernel<T, kBranches, kVec><<<grid, 256, shared, stream>>>(
      branches, groups, num_groups, seq_len, heads, parts, out_scale, out, lse, total);
}

// 16-byte pieces per thread of the flat kernel: RA_MERGE_VEC = 1, 2 or 4 (A/B runs), default
// 4; fewer where the row's pieces do not divide. Merge alone at 1M on H100 (all_mode_glue_bench):
// LongNet-base 2.45 / 1.79 / 1.72 ms for 1 / 2 / 4 pieces (2.91 TB/s at 4, cudaMemcpy 3.01),
// wide 4.18 / 3.62 / 3.56: each thread's loads are what keeps bytes in flight.
int flat_vec(int chunks_per_row) {
  const char* env = env_switch("RA_MERGE_VEC", {"1", "2", "4"});
  int n = env != nullptr ? std::atoi(env) : 4;
  while (chunks_per_row % n != 0) n /= 2;
  return n;
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
  // The flat kernel up to 8 branches and 2^31 items; beyond, the loop kernel (or the batched
  // one for more items). RA_MERGE_KERNEL=batched or loop picks one for A/B runs.
  const char* choice = env_switch("RA_MERGE_KERNEL", {"flat", "batched", "loop"});
  const bool force_loop = choice != nullptr && std::strcmp(choice, "loop") == 0;
  const bool force_batched = choice != nullptr && std::strcmp(choice, "batched") == 0;
  const bool loop = num_branches > kMaxBatchedBranches || force_loop;
  const int64_t items = tokens * num_heads * chunks_per_row;
  const bool flat = !loop && !force_batched && items < (int64_t(1) << 31);
  RA_CHECK(flat || shared <= 48 * 1024, "merge_branches: ", num_branches, " branches x ", num_heads,
           " heads need ", shared, " bytes of shared memory (at most 48 KiB)");
  const size_t batched_shared = shared + num_groups * sizeof(MergeGroup);
  const size_t flat_shared = num_groups * sizeof(MergeGroup) + num_branches * sizeof(BranchDivs);
  RA_CHECK(loop || (flat ? flat_shared : batched_shared) <= 48 * 1024,
           "merge_branches: ", num_groups, " head groups need ",
           flat ? flat_shared : batched_shared, " bytes of shared memory (at most 48 KiB)");
  auto run = [&](auto type) {
    using T = decltype(type);
    if (flat) {
      const int vec = flat_vec(chunks_per_row);
      const int64_t flat_items = items / vec;
      const int64_t blocks = std::min<int64_t>((flat_items + 255) / 256, 8192);
      auto launch = [&](auto vec_tag) {
        launch_flat<T, decltype(vec_tag)::value>(
            num_branches, dim3(unsigned(blocks)), flat_shared, stream, branches, groups, num_groups,
            FastDivmod(uint32_t(seq_len)), FastDivmod(uint32_t(num_heads)),
            FastDivmod(uint32_t(chunks_per_row / vec)), out_scale, out, lse, uint32_t(flat_items));
      };
      if (vec == 1) launch(std::integral_constant<int, 1>{});
      if (vec == 2) launch(std::integral_constant<int, 2>{});
      if (vec == 4) launch(std::integral_constant<int, 4>{});
    } else if (loop) {
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
