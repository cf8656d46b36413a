// RA_CUDA_CHECK: wraps a CUDA runtime call and throws ra::Error with the call, the CUDA error
// name and string, file:line and a hint for the common failures. RA_CUDA_CHECK_LAUNCH checks
// the last kernel launch. Include only from code that has the CUDA runtime headers.
#pragma once

#include <cuda_runtime_api.h>

#include "runtime/error.h"

namespace ra::detail {

inline const char* cuda_hint(cudaError_t err) {
  switch (err) {
    case cudaErrorMemoryAllocation:
      return "out of GPU memory: lower --seq-len or --batch-size, or turn on --checkpointing";
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
      return "no usable GPU for this rank: check CUDA_VISIBLE_DEVICES and ranks per node";
    case cudaErrorInvalidConfiguration:
      return "a kernel was launched with an invalid grid; this is a ringattn bug, please report";
    case cudaErrorNoKernelImageForDevice:
      return "the kernels were not built for this GPU: set RA_CUDA_ARCHITECTURES and rebuild";
    default:
      return "";
  }
}

}  // namespace ra::detail

#define RA_CUDA_CHECK(expr)                                                                        \
  do {                                                                                             \
    cudaError_t ra_cuda_err_ = (expr);                                                             \
    if (ra_cuda_err_ != cudaSuccess) {                                                             \
      ::ra::detail::throw_error(                                                                   \
          __FILE__, __LINE__,                                                                      \
          ::ra::detail::concat("CUDA call `", #expr, "` failed: ", cudaGetErrorName(ra_cuda_err_), \
                               " (", cudaGetErrorString(ra_cuda_err_), ")"),                       \
          ::ra::detail::cuda_hint(ra_cuda_err_));                                                  \
    }                                                                                              \
  } while (0)

#define RA_CUDA_CHECK_LAUNCH() RA_CUDA_CHECK(cudaGetLastError())
