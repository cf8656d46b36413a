// The one place that turns an MPI job into what training needs: this rank's device (picked by
// local rank) and the world Communicator (make_world_communicator: MPI for CPU, NCCL for CUDA).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/mpi_context.h"

namespace ra {

struct DistributedRuntime {
  std::shared_ptr<Communicator> world;  // every rank of the job
  at::Device device = at::kCPU;
  DistributedConfig layout;
};

// device_kind: "auto" (CUDA when LibTorch sees a GPU, else CPU), "cpu" or "cuda".
// `timeout_seconds` bounds every blocking communication wait.
DistributedRuntime setup_distributed(const MpiContext& mpi, const std::string& device_kind,
                                     double timeout_seconds);

}  // namespace ra
