// Backend choice by device type.
#include "comm/world_communicator.h"

#include "comm/mpi_communicator.h"

#if defined(RA_HAVE_NCCL)
#include "comm/nccl_communicator.h"
#endif

namespace ra {

std::shared_ptr<Communicator> make_world_communicator(const MpiContext& mpi, at::DeviceType device,
                                                      double timeout_seconds) {
  if (device == at::kCPU) return std::make_shared<MpiCommunicator>(mpi.world(), timeout_seconds);
  RA_CHECK(device == at::kCUDA, "device = ", device, ": allowed cpu (MPI) or cuda (NCCL)");
#if defined(RA_HAVE_NCCL)
  const int gpu = NcclComm::device_for_local_rank(mpi.layout().local_rank, mpi.layout().local_size);
  return std::make_shared<NcclCommunicator>(mpi.world(), gpu, timeout_seconds);
#else
  RA_THROW_HINT("install NCCL (or use the PyTorch wheel's) and reconfigure with CMake",
                "device = cuda: this build has no NCCL backend (RA_HAVE_NCCL is off)");
#endif
}

}  // namespace ra
