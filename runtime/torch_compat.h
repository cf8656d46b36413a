// The LibTorch calls that differ between the CPU-only LibTorch 1.13 of CI machines and the CUDA
// builds (PyTorch 2.x) of GPU machines, in one place: device names, peak memory, bf16 autocast,
// and ATen's fused attention ops (cuDNN and flash, forward and backward) as spelled in PyTorch
// 2.x (checked against 2.11's native_functions.yaml). Everything CUDA-specific is compiled only
// when RA_TORCH_HAS_CUDA is 1 (set by CMake for a CUDA LibTorch); the CPU fallbacks keep the
// callers free of #ifs.
#pragma once

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <optional>
#include <string>
#include <tuple>

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

#if RA_TORCH_HAS_CUDA

// What a fused forward returns that the backward needs: out [N, h, L, D]; lse [N, h, L]
// (flash) or [N, h, L, 1] (cuDNN), fp32, natural log; the philox state the backward expects
// (unused without dropout, but the ops take it).
struct FusedAttentionForward {
  at::Tensor out, lse, philox_seed, philox_offset;
};

using FusedAttentionGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // dq, dk, dv

// The two fused attention kernels ATen offers on sm_90.
enum class FusedOp : int64_t { kCudnn = 0, kFlash = 1 };

// q, k, v: [N, h, L, D] (strided views allowed, last dim contiguous); no dropout, no mask.
inline FusedAttentionForward fused_attention_forward(FusedOp op, const at::Tensor& q,
                                                     const at::Tensor& k, const at::Tensor& v,
                                                     bool causal, double scale) {
  if (op == FusedOp::kCudnn) {
    auto r = at::_scaled_dot_product_cudnn_attention(q, k, v, /*attn_bias=*/std::nullopt,
                                                     /*compute_log_sumexp=*/true,
                                                     /*dropout_p=*/0.0, causal,
                                                     /*return_debug_mask=*/false, scale);
    return {std::get<0>(r), std::get<1>(r), std::get<6>(r), std::get<7>(r)};
  }
  auto r = at::_scaled_dot_product_flash_attention(q, k, v, /*dropout_p=*/0.0, causal,
                                                   /*return_debug_mask=*/false, scale);
  return {std::get<0>(r), std::get<1>(r), std::get<6>(r), std::get<7>(r)};
}

// `saved` from fused_attention_forward (lse in the layout the forward returned, or the merged
// lse shaped like it); out and grad_out with identical strides.
inline FusedAttentionGrads fused_attention_backward(FusedOp op, const at::Tensor& grad_out,
                                                    const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    const FusedAttentionForward& saved, bool causal,
                                                    double scale) {
  const int64_t max_q = q.size(2), max_k = k.size(2);
  if (op == FusedOp::kCudnn) {
    return at::_scaled_dot_product_cudnn_attention_backward(
        grad_out, q, k, v, saved.out, saved.lse, saved.philox_seed, saved.philox_offset,
        /*attn_bias=*/at::Tensor(), /*cum_seq_q=*/at::Tensor(), /*cum_seq_k=*/at::Tensor(), max_q,
        max_k, /*dropout_p=*/0.0, causal, scale);
  }
  return at::_scaled_dot_product_flash_attention_backward(
      grad_out, q, k, v, saved.out, saved.lse, /*cum_seq_q=*/at::Tensor(),
      /*cum_seq_k=*/at::Tensor(), max_q, max_k, /*dropout_p=*/0.0, causal, saved.philox_seed,
      saved.philox_offset, scale);
}
#endif  // RA_TORCH_HAS_CUDA

}  // namespace ra::compat
