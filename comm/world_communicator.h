// make_world_communicator: the communicator over all ranks of the job for the device the
// tensors live on: MPI for CPU tensors, NCCL for CUDA tensors (GPU = local rank). This is
// the one place that chooses a backend.
#pragma once

#include <c10/core/DeviceType.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_context.h"

namespace ra {

// Collective over MPI_COMM_WORLD. For CUDA, selects and sets the GPU of this rank (an error if
// the node has more ranks than GPUs) and needs a build with NCCL.
std::shared_ptr<Communicator> make_world_communicator(const MpiContext& mpi, at::DeviceType device,
                                                      double timeout_seconds = 300);

}  // namespace ra
