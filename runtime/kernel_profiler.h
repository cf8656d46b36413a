// KernelProfiler: records CPU ops and GPU kernels of a stretch of work with LibTorch's Kineto
// profiler and saves a Chrome trace (open in Perfetto, or summarise with
// bench/summarize_trace.py: GPU time per kernel family, busy fraction, launch gaps).
// ring_train --profile-step and the benchmarks' --profile use it.
#pragma once

#include <string>

namespace ra {

class KernelProfiler {
 public:
  // Starts recording (CPU ops, plus CUDA kernels when `cuda`). Throws ra::Error when LibTorch
  // was built without the Kineto profiler.
  explicit KernelProfiler(bool cuda);
  ~KernelProfiler();
  KernelProfiler(const KernelProfiler&) = delete;
  KernelProfiler& operator=(const KernelProfiler&) = delete;

  // Throws ra::Error (with a hint) unless this LibTorch can record and save a trace; call it
  // before long work so a missing profiler fails at start, not after the run.
  static void ensure_available(bool cuda);

  // Stops recording and writes the Chrome trace JSON to `path`. Call once.
  void save(const std::string& path);

 private:
  bool active_ = false;
};

}  // namespace ra
