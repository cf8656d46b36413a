// One thread per (token, head, 8 head-dim elements): walks the branches, finds the group and
// row that keep this token for this head, and merges the branch outputs online (running max,
// fp32), then writes out and lse. Index math is 32-bit; addresses are 64-bit.
#include "attention/standard/cuda/merge_branches.h"

#include <cmath>

#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

template <typename T>
__global__ void merge_branches_kernel(const MergeBranch* __restrict__ branches, int num_branches,
                                      const MergeGroup* __restrict__ groups, int seq_len,
                                      int num_heads, int chunks_per_row, int64_t total,
                                      float out_scale, TokenTensor out,
                                      float* __restrict__ lse_out) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int chunk = int(t % chunks_per_row);
    const int64_t row = t / chunks_per_row;  // (b * S + s) * H + h
    const int h = int(row % num_heads);
    const int64_t bs = row / num_heads;
    const int s = int(bs % seq_len);
    const int b = int(bs / seq_len);

    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float running_max = -INFINITY, running_sum = 0.f;
    for (int i = 0; i < num_branches; ++i) {
      const MergeBranch br = branches[i];
      int group, head_index, offset;
      if (br.partition) {
        head_index = h - br.head_start;
        if (head_index < 0 || head_index >= br.head_count) continue;
        group = br.first_group;
        offset = br.offset;
      } else {
        offset = h % br.rate;
        group = br.first_group + offset;
        head_index = h / br.rate;
      }
      const int pos = s % br.segment;
      if (pos % br.rate != offset) continue;
      const int kept_row = pos / br.rate;
      const int64_t n = int64_t(b) * (seq_len / br.segment) + s / br.segment;
      const MergeGroup g = groups[group];
      const float lse_i =
          g.lse[n * g.lse_stride_n + head_index * g.lse_stride_h + kept_row * g.lse_stride_l];
      if (lse_i == -INFINITY) continue;
      float o[8];
      load8(static_cast<const T*>(g.out) + n * g.out_stride_n + head_index * g.out_stride_h +
                kept_row * g.out_stride_l + chunk * 8,
            o);
      const float new_max = fmaxf(running_max, lse_i);
      const float old_scale = __expf(running_max - new_max);  // 0 on the first branch
      const float w = __expf(lse_i - new_max);
      running_sum = running_sum * old_scale + w;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = acc[e] * old_scale + w * o[e];
      running_max = new_max;
    }
    const float inv = running_sum > 0.f ? out_scale / running_sum : 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= inv;
    store8(static_cast<T*>(out.data) + b * out.stride_b + s * out.stride_s + h * out.stride_h +
               chunk * 8,
           acc);
    if (chunk == 0) lse_out[row] = running_sum > 0.f ? running_max + logf(running_sum) : -INFINITY;
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
  const int64_t total = int64_t(batch) * seq_len * num_heads * chunks_per_row;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  switch (kind) {
    case ScalarKind::kHalf:
      merge_branches_kernel<__half>
          <<<blocks, threads, 0, stream>>>(branches, num_branches, groups, seq_len, num_heads,
                                           chunks_per_row, total, out_scale, out, lse);
      break;
    case ScalarKind::kBFloat16:
      merge_branches_kernel<__nv_bfloat16>
          <<<blocks, threads, 0, stream>>>(branches, num_branches, groups, seq_len, num_heads,
                                           chunks_per_row, total, out_scale, out, lse);
      break;
    default:
      RA_THROW("merge_branches: output must be fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
