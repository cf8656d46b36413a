// MPI start-up and the world layout.
#include "comm/mpi_context.h"

#include <cstdlib>

#include "comm/mpi_check.h"

namespace ra {

MpiContext::MpiContext(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    owns_mpi_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  RA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &layout_.rank));
  RA_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &layout_.world_size));
  MPI_Comm node;
  RA_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, layout_.rank,
                                   MPI_INFO_NULL, &node));
  RA_MPI_CHECK(MPI_Comm_rank(node, &layout_.local_rank));
  RA_MPI_CHECK(MPI_Comm_size(node, &layout_.local_size));
  MPI_Comm_free(&node);
}

MpiContext::~MpiContext() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

void MpiContext::abort_job(int exit_code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

}  // namespace ra
