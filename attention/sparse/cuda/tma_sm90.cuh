// Inline-PTX wrappers for Hopper's asynchronous loads (sm_90a only): shared-memory mbarriers
// (init, arrive, arrive with an expected transaction count, parity wait), TMA tile loads
// (cp.async.bulk.tensor, completing on an mbarrier) from a CUtensorMap kernel parameter, and
// setmaxnreg, which moves registers between warpgroups of a warp-specialized CTA.
#pragma once

#include <cstdint>

namespace ra::cuda::detail {

// mbarrier at shared address bar expecting `count` arrivals per phase. Before any use: every
// initializing thread runs fence_mbarrier_init, then the CTA synchronises.
__device__ inline void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initializations visible to the async proxy (TMA's complete_tx) as well.
__device__ inline void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ inline void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives and adds `bytes` to the phase's expected transaction count (the TMA loads that
// complete on this barrier count them down).
__device__ inline void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Waits until the phase of parity `parity` (0 for the first phase, 1 for the second, ...) is
// complete: its arrivals and transactions are all in, and so is the data the TMA wrote.
__device__ inline void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// TMA: the box at coordinates (c0, c1, c2, c3) (innermost first, in elements) of the 4-D tensor
// map `map` (the address of a __grid_constant__ CUtensorMap parameter) into shared memory at
// dst, counted against mbarrier bar's transactions.
__device__ inline void tma_load_4d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1,
                                   int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
__device__ inline void prefetch_tensor_map(const void* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Register reallocation of a warp-specialized CTA: every warp of a warpgroup runs it together.
template <int kRegs>
__device__ inline void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ inline void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// Named barrier kId (1..15; 0 is __syncthreads) over kThreads threads (a multiple of 32). An
// immediate id lets ptxas count the barriers the kernel really uses.
template <int kId, int kThreads>
__device__ inline void named_barrier_sync() {
  static_assert(kId > 0 && kId < 16 && kThreads % 32 == 0);
  asm volatile("bar.sync %0, %1;\n" ::"n"(kId), "n"(kThreads) : "memory");
}
// Arrives at named barrier kId (counting kThreads in all) without waiting for it.
template <int kId, int kThreads>
__device__ inline void named_barrier_arrive() {
  static_assert(kId > 0 && kId < 16 && kThreads % 32 == 0);
  asm volatile("bar.arrive %0, %1;\n" ::"n"(kId), "n"(kThreads) : "memory");
}

}  // namespace ra::cuda::detail
