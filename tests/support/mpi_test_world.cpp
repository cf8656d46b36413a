// device_skip_reason and test_world over MpiContext (which only reads the running MPI job).
#include "tests/support/mpi_test_world.h"

#include <torch/cuda.h>

#include "comm/mpi_context.h"
#include "comm/world_communicator.h"

namespace ra::testing {

std::string device_skip_reason(c10::DeviceType device) {
  if (device != c10::DeviceType::CUDA) return "";
  static const std::string reason = [] {
    MpiContext mpi(nullptr, nullptr);  // MPI is already started: only reads the layout
    const int64_t gpus = torch::cuda::device_count();
    return gpus >= mpi.layout().local_size
               ? std::string()
               : "needs one GPU per rank: " + std::to_string(mpi.layout().local_size) +
                     " ranks on this node, " + std::to_string(gpus) + " GPUs";
  }();
  return reason;
}

std::shared_ptr<Communicator> test_world(c10::DeviceType device) {
  static std::shared_ptr<Communicator> comm = [device] {
    MpiContext mpi(nullptr, nullptr);
    return make_world_communicator(mpi, device, 60);
  }();
  return comm;
}

}  // namespace ra::testing
