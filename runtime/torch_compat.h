// The few LibTorch calls that differ between the CPU-only LibTorch 1.13 of CI machines and the
// CUDA builds (PyTorch 2.x) of GPU machines, in one place. Everything CUDA-specific is compiled
// only when RA_TORCH_HAS_CUDA is 1 (set by CMake for a CUDA LibTorch); the CPU fallbacks keep
// the callers free of #ifs.
#pragma once

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <string>

#ifndef RA_TORCH_HAS_CUDA
#define RA_TORCH_HAS_CUDA 0
#endif

#if RA_TORCH_HAS_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ra::compat {

// Name of the device ("NVIDIA H100 80GB HBM3", or "cpu").
inline std::string device_name(const at::Device& device) {
#if RA_TORCH_HAS_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  return "cpu";
}

// Peak bytes the caching allocator handed out since the last reset (CUDA); on CPU the peak
// resident set size of the process (getrusage, never reset).
inline double peak_memory_gib(const at::Device& device) {
#if RA_TORCH_HAS_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    // Index 0 is StatType::AGGREGATE (all pools); the enum moved namespaces across 2.x.
    return double(stats.allocated_bytes[0].peak) / double(1ull << 30);
  }
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) * 1024.0 / double(1ull << 30);  // ru_maxrss is in KiB
}

inline void reset_peak_memory(const at::Device& device) {
#if RA_TORCH_HAS_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
}

// Turns bf16 autocast on or off for CUDA in this thread (a no-op elsewhere). Autocast keeps
// fp32 master weights and casts matmul inputs to bf16; LayerNorm and the loss stay in fp32.
inline void set_cuda_bf16_autocast(bool enabled) {
#if RA_TORCH_HAS_CUDA
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  if (!enabled) at::autocast::clear_cache();
#endif
}

inline bool cuda_bf16_autocast_enabled() {
#if RA_TORCH_HAS_CUDA
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return false;
#endif
}

}  // namespace ra::compat
