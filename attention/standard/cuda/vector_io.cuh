// 16-byte loads and stores of 8 fp16/bf16 values as fp32, shared by the dilated-attention
// kernels so each moves its rows with full-width memory transactions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace ra::cuda {

// Explicit conversions: LibTorch builds may define __CUDA_NO_HALF_CONVERSIONS__ and friends.
__device__ inline float to_float(__half x) { return __half2float(x); }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ inline T from_float(float x);
template <>
__device__ inline __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// 8 packed fp16/bf16 values (one 16-byte load) as fp32. Kernels that prefetch keep the raw form.
template <typename T>
__device__ inline void unpack8(const uint4& raw, float (&dst)[8]) {
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) dst[i] = to_float(v[i]);
}

template <typename T>
__device__ inline void load8(const T* src, float (&dst)[8]) {
  unpack8<T>(*reinterpret_cast<const uint4*>(src), dst);
}

template <typename T>
__device__ inline void store8(T* dst, const float (&src)[8]) {
  uint4 raw;
  T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = from_float<T>(src[i]);
  *reinterpret_cast<uint4*>(dst) = raw;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace ra::cuda
