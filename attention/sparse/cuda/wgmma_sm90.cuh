// Inline-PTX wrappers for Hopper warpgroup MMA (sm_90a only): shared-memory matrix descriptors
// for 128-byte-swizzled tiles, wgmma.mma_async m64nNk16 (fp32 accumulate, fp16/bf16 inputs) with
// both operands in shared memory (K-major, or both MN-major) or A in registers, and the
// fence/commit/wait that order it. A warpgroup is 4 consecutive warps (128 threads); every wgmma
// here is issued by all of them.
//
// Accumulator fragment of an m64nN result (N/2 fp32 per thread): warp w of the warpgroup holds
// rows 16w..16w+15; d[i] is row 16w + lane/4 + 8 * ((i >> 1) & 1), column 8 * (i >> 2) +
// 2 * (lane % 4) + (i & 1) (mma.sync's m16n8 C layout, repeated over the N/8 column tiles). A
// register A fragment (64x16) uses mma.sync's m16n8k16 A layout in each warp's 16 rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace ra::cuda::detail {

// Descriptor of a 128B-swizzled operand (bits: start >> 4 in [0,14), LBO >> 4 in [16,30),
// SBO >> 4 in [32,46), base offset 0 in [49,52): every tile starts 1024-byte aligned, swizzle
// mode 1 = 128B in [62,64)). The hardware XORs address bits [4,7) with bits [7,10), i.e. the
// 16-byte chunk of a 128-byte row with the row's index mod 8, on absolute shared addresses.
//   K-major (rows of the M/N index, 64 K elements = 128 bytes each): SBO = byte stride between
//     8-row groups, LBO unused (16). The start may step 32 bytes per k16 inside a 128-byte row.
//   MN-major (rows of the K index, 64 M/N elements = 128 bytes each): SBO = byte stride between
//     8-row (8 k) groups, LBO = byte stride between 64-element M/N panels.
// Shared addresses are below 2^18, so start >> 4 fits its 14 bits unmasked; the high word is a
// constant, which keeps each descriptor one 32-bit register until it is used.
template <uint32_t kLbo, uint32_t kSbo>
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t address) {
  static_assert(kLbo % 16 == 0 && kLbo < (1u << 18) && kSbo % 16 == 0 && kSbo < (1u << 18));
  constexpr uint32_t kHigh = (kSbo >> 4) | (1u << 30);
  return static_cast<uint64_t>(kHigh) << 32 | ((address >> 4) | ((kLbo >> 4) << 16));
}

// Orders this warpgroup's register writes (accumulators, A fragments) before the next wgmma.
__device__ inline void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ inline void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most N committed wgmma groups of this warp are pending.
template <int N>
__device__ inline void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes this thread's generic-proxy shared-memory writes (st.shared, cp.async) visible to the
// async proxy that wgmma reads shared memory through. Before the barrier that publishes a tile.
__device__ inline void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// The wgmma asm tells the compiler it writes the accumulators when issued, but the hardware
// writes them until wgmma_wait: after the wait, this pins every later access after it; before
// wgmma_fence, it pins earlier writes (O's rescale, P) before the fence.
template <int N>
__device__ inline void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ inline void fence_registers(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

#define RA_WGMMA_F8(i)                                                                        \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define RA_WGMMA_F32 RA_WGMMA_F8(0), RA_WGMMA_F8(8), RA_WGMMA_F8(16), RA_WGMMA_F8(24)
#define RA_WGMMA_F64 \
  RA_WGMMA_F32, RA_WGMMA_F8(32), RA_WGMMA_F8(40), RA_WGMMA_F8(48), RA_WGMMA_F8(56)
#define RA_WGMMA_R32                                                                            \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
#define RA_WGMMA_R64                                                                            \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63}, "

// Both operands in shared memory; TRANS (imm-trans-a, imm-trans-b) = "0, 0": both K-major,
// "1, 1": both MN-major (16-bit types only). Operands after the accumulators: a desc, b desc,
// accumulate flag.
#define RA_WGMMA_SS(N, TY, TRANS, REGS, ACC, A, B, P)                                            \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" P                                            \
               ", 0;\n"                                                                          \
               "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " REGS "%" A ", %" B \
               ", p, 1, 1, " TRANS ";\n}\n"                                                      \
               : ACC                                                                             \
               : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)))
// A in registers (4 x 32-bit), B in shared memory MN-major (imm-trans-b = 1).
// Operands after the accumulators: a0..a3, b desc, accumulate flag.
#define RA_WGMMA_RS_TB(N, TY, REGS, ACC, AREGS, B, P)                                            \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" P                                            \
               ", 0;\n"                                                                          \
               "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " REGS AREGS ", %" B \
               ", p, 1, 1, 1;\n}\n"                                                              \
               : ACC                                                                             \
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(b), "r"(static_cast<int>(accumulate)))

// d (64 x N, fp32) = A B^T (+ d if accumulate): A = 64 x 16 at descriptor a, B = N x 16 at
// descriptor b, both K-major. T: __half or __nv_bfloat16; N: 64 or 128.
template <typename T, int N>
__device__ inline void wgmma_ss(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(N == 64 || N == 128, "m64n64k16 or m64n128k16");
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (N == 64 && kBf16) {
    RA_WGMMA_SS("64", "bf16", "0, 0", RA_WGMMA_R32, RA_WGMMA_F32, "32", "33", "34");
  } else if constexpr (N == 64) {
    RA_WGMMA_SS("64", "f16", "0, 0", RA_WGMMA_R32, RA_WGMMA_F32, "32", "33", "34");
  } else if constexpr (kBf16) {
    RA_WGMMA_SS("128", "bf16", "0, 0", RA_WGMMA_R64, RA_WGMMA_F64, "64", "65", "66");
  } else {
    RA_WGMMA_SS("128", "f16", "0, 0", RA_WGMMA_R64, RA_WGMMA_F64, "64", "65", "66");
  }
}

// d (64 x N, fp32) = A B (+ d if accumulate): A = 64 x 16 at descriptor a, MN-major (16 rows of
// k, the 64 M elements contiguous), B = 16 x N at descriptor b, MN-major. N: 64 only (the fused
// dQ product of block_sparse_backward_sm90.cu).
template <typename T, int N>
__device__ inline void wgmma_ss_tt(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(N == 64, "m64n64k16");
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    RA_WGMMA_SS("64", "bf16", "1, 1", RA_WGMMA_R32, RA_WGMMA_F32, "32", "33", "34");
  } else {
    RA_WGMMA_SS("64", "f16", "1, 1", RA_WGMMA_R32, RA_WGMMA_F32, "32", "33", "34");
  }
}

// d (64 x N, fp32) = A B (+ d if accumulate): A = 64 x 16 in registers (a0..a3, two T each, in
// the register A fragment layout), B = 16 x N at descriptor b, MN-major (16 rows of k, N
// contiguous).
template <typename T, int N>
__device__ inline void wgmma_rs_tb(float (&d)[N / 2], uint32_t a0, uint32_t a1, uint32_t a2,
                                   uint32_t a3, uint64_t b, bool accumulate) {
  static_assert(N == 64 || N == 128, "m64n64k16 or m64n128k16");
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (N == 64 && kBf16) {
    RA_WGMMA_RS_TB("64", "bf16", RA_WGMMA_R32, RA_WGMMA_F32, "{%32, %33, %34, %35}", "36", "37");
  } else if constexpr (N == 64) {
    RA_WGMMA_RS_TB("64", "f16", RA_WGMMA_R32, RA_WGMMA_F32, "{%32, %33, %34, %35}", "36", "37");
  } else if constexpr (kBf16) {
    RA_WGMMA_RS_TB("128", "bf16", RA_WGMMA_R64, RA_WGMMA_F64, "{%64, %65, %66, %67}", "68", "69");
  } else {
    RA_WGMMA_RS_TB("128", "f16", RA_WGMMA_R64, RA_WGMMA_F64, "{%64, %65, %66, %67}", "68", "69");
  }
}

#undef RA_WGMMA_RS_TB
#undef RA_WGMMA_SS
#undef RA_WGMMA_R64
#undef RA_WGMMA_R32
#undef RA_WGMMA_F64
#undef RA_WGMMA_F32
#undef RA_WGMMA_F8

}  // namespace ra::cuda::detail
