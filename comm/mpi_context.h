// MpiContext: starts MPI for the process (MPI_Init_thread, FUNNELED) and tells where this
// process sits: world rank/size and its rank among the processes of its node (local rank, via
// MPI_COMM_TYPE_SHARED), which picks its GPU. One per process, created first in main().
#pragma once

#include <mpi.h>

#include "runtime/config.h"

namespace ra {

class MpiContext {
 public:
  MpiContext(int* argc, char*** argv);
  ~MpiContext();  // MPI_Finalize, unless MPI was already initialised by someone else
  MpiContext(const MpiContext&) = delete;
  MpiContext& operator=(const MpiContext&) = delete;

  const DistributedConfig& layout() const { return layout_; }
  int rank() const { return layout_.rank; }
  int size() const { return layout_.world_size; }
  MPI_Comm world() const { return MPI_COMM_WORLD; }

  // Ends the whole job from any rank (MPI_Abort): for failures other ranks cannot see.
  [[noreturn]] static void abort_job(int exit_code);

 private:
  DistributedConfig layout_;
  bool owns_mpi_ = false;
};

}  // namespace ra
