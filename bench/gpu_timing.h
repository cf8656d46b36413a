// Timing and memory helpers shared by the GPU benchmarks: the median of CUDA-event-timed steps
// after warm-up, and the caching allocator's peak since the last reset.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "runtime/cuda_check.h"
#include "runtime/torch_compat.h"

namespace ra::bench {

inline at::Device current_cuda_device() {
  return at::Device(at::kCUDA, c10::cuda::current_device());
}
inline double peak_gib() { return compat::peak_memory_gib(current_cuda_device()); }
inline void reset_peak() { compat::reset_peak_memory(current_cuda_device()); }

// Runs step() warmup times, then reps times between CUDA events on the current stream; returns
// the median in ms. `before_each` runs outside the timed region (e.g. an MPI barrier).
template <typename Step, typename Before>
double median_step_ms(Step&& step, int warmup, int reps, Before&& before_each) {
  for (int i = 0; i < warmup; ++i) before_each(), step();
  cudaEvent_t start, stop;
  RA_CUDA_CHECK(cudaEventCreate(&start));
  RA_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    before_each();
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    RA_CUDA_CHECK(cudaEventRecord(start, stream));
    step();
    RA_CUDA_CHECK(cudaEventRecord(stop, at::cuda::getCurrentCUDAStream().stream()));
    RA_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    RA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  RA_CUDA_CHECK(cudaEventDestroy(start));
  RA_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

template <typename Step>
double median_step_ms(Step&& step, int warmup, int reps) {
  return median_step_ms(step, warmup, reps, [] {});
}

}  // namespace ra::bench
