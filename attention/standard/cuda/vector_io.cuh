// 16-byte loads and stores of 8 fp16/bf16 values as fp32, shared by the dilated-attention
// kernels so each moves its rows with full-width memory transactions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

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

// Two fp32 values rounded to fp16/bf16 and packed into one 32-bit word by one conversion
// instruction (cvt.rn.bf16x2.f32 / f16x2; element-wise conversions need one each, then a merge).
template <typename T>
__device__ inline uint32_t pack2(float lo, float hi);
template <>
__device__ inline uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ inline uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// 8 packed fp16/bf16 values (one 16-byte load) as fp32. Kernels that prefetch keep the raw form.
// A bf16 is the high half of its fp32, so those take one shift or mask each.
template <typename T>
__device__ inline void unpack8(const uint4& raw, float (&dst)[8]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      dst[2 * i] = __uint_as_float(words[i] << 16);
      dst[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  } else {
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[i] = to_float(v[i]);
  }
}

template <typename T>
__device__ inline void load8(const T* src, float (&dst)[8]) {
  unpack8<T>(*reinterpret_cast<const uint4*>(src), dst);
}

template <typename T>
__device__ inline void store8(T* dst, const float (&src)[8]) {
  const uint4 raw = make_uint4(pack2<T>(src[0], src[1]), pack2<T>(src[2], src[3]),
                               pack2<T>(src[4], src[5]), pack2<T>(src[6], src[7]));
  *reinterpret_cast<uint4*>(dst) = raw;
}

// 8 packed fp16/bf16 values times scale, rounded once.
template <typename T>
__device__ inline uint4 scaled8(uint4 raw, float scale) {
  float v[8];
  unpack8<T>(raw, v);
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] *= scale;
  uint4 out;
  store8(reinterpret_cast<T*>(&out), v);
  return out;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace ra::cuda
