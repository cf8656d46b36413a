// RA_CUBLAS_CHECK: wraps a cuBLAS / cuBLASLt call and throws ra::Error with the call, the status
// name and meaning, and file:line. The names are spelled out here rather than asked of the
// library (cublasGetStatusString), so calls made through looked-up function pointers need no
// link to it. Include only from code that has the CUDA headers.
#pragma once

#include <cublas_api.h>

#include "runtime/error.h"

namespace ra::detail {

inline const char* cublas_status_string(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED (library or handle not initialized)";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED (resource allocation failed)";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE (an unsupported value or parameter was passed)";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH (feature absent on this GPU architecture)";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR (access to GPU memory space failed)";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED (the GPU program failed to execute)";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR (an internal cuBLAS operation failed)";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED (functionality not supported)";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
    default:
      return "unknown cuBLAS status";
  }
}

}  // namespace ra::detail

#define RA_CUBLAS_CHECK(expr)                                                               \
  do {                                                                                      \
    const cublasStatus_t ra_cublas_status_ = (expr);                                        \
    if (ra_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                       \
      ::ra::detail::throw_error(                                                            \
          __FILE__, __LINE__,                                                               \
          ::ra::detail::concat("cuBLAS call `", #expr, "` failed: ",                        \
                               ::ra::detail::cublas_status_string(ra_cublas_status_), " [", \
                               int(ra_cublas_status_), "]"));                               \
    }                                                                                       \
  } while (0)
