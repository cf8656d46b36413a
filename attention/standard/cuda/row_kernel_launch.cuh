// The launch shape of the row kernels whose threads each own 8 elements (16 bytes of fp16/bf16)
// of a row and whose blocks stride over rows (LayerNorm, column sums): threads_for, one thread
// per 8 elements in whole warps; resident_blocks, the blocks that fit on the GPU at once (one
// full wave, so no part-empty last wave), at most `max_blocks`. Host code of their .cu files.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "runtime/cuda_check.h"

namespace ra::cuda {

inline int threads_for(int width) { return (width / 8 + 31) / 32 * 32; }

template <typename Kernel>
int resident_blocks(Kernel kernel, int threads, int64_t max_blocks, int device) {
  int sms = 0, per_sm = 0;
  RA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  RA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return int(
      std::max<int64_t>(1, std::min<int64_t>(max_blocks, int64_t(sms) * std::max(1, per_sm))));
}

}  // namespace ra::cuda
