// RA_NCCL_CHECK: wraps an NCCL call and throws ra::Error with the call, NCCL's error string,
// its last error text and a hint for the common failures. ncclInProgress (non-blocking
// communicators still working) is not an error here: callers poll it under their deadline.
#pragma once

#include <nccl.h>

#include "runtime/error.h"

namespace ra::detail {

inline const char* nccl_hint(ncclResult_t result) {
  switch (result) {
    case ncclUnhandledCudaError:
      return "a CUDA call inside NCCL failed: check the GPU and driver (nvidia-smi)";
    case ncclSystemError:
      return "a system call failed (network, shared memory): check NCCL_SOCKET_IFNAME and "
             "/dev/shm size; NCCL_DEBUG=WARN prints details";
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return "ringattn passed NCCL invalid arguments or ranks disagree on the call; this is a "
             "bug or a rank running different code, please report with NCCL_DEBUG=WARN output";
    case ncclRemoteError:
      return "a peer rank failed or disconnected; look for its own error above";
    default:
      return "rerun with NCCL_DEBUG=WARN for details";
  }
}

}  // namespace ra::detail

#define RA_NCCL_CHECK(expr)                                                                  \
  do {                                                                                       \
    ncclResult_t ra_nccl_res_ = (expr);                                                      \
    if (ra_nccl_res_ != ncclSuccess && ra_nccl_res_ != ncclInProgress) {                     \
      ::ra::detail::throw_error(__FILE__, __LINE__,                                          \
                                ::ra::detail::concat("NCCL call `", #expr, "` failed: ",     \
                                                     ncclGetErrorString(ra_nccl_res_), " (", \
                                                     ncclGetLastError(nullptr), ")"),        \
                                ::ra::detail::nccl_hint(ra_nccl_res_));                      \
    }                                                                                        \
  } while (0)
