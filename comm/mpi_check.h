// RA_MPI_CHECK: wraps an MPI call and throws ra::Error with the call, MPI's error string and
// file:line. (MPI's default handler aborts instead; MpiContext switches it to return codes.)
#pragma once

#include <mpi.h>

#include "runtime/error.h"

namespace ra::detail {

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

}  // namespace ra::detail

#define RA_MPI_CHECK(expr)                                                                         \
  do {                                                                                             \
    int ra_mpi_err_ = (expr);                                                                      \
    if (ra_mpi_err_ != MPI_SUCCESS) {                                                              \
      ::ra::detail::throw_error(__FILE__, __LINE__,                                                \
                                ::ra::detail::concat("MPI call `", #expr, "` failed: ",            \
                                                     ::ra::detail::mpi_error_string(ra_mpi_err_)), \
                                "check that every rank runs the same command and is alive");       \
    }                                                                                              \
  } while (0)
