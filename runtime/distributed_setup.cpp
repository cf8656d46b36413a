// Device choice and world communicator creation (see distributed_setup.h).
#include "runtime/distributed_setup.h"

#include <torch/cuda.h>

#include "comm/world_communicator.h"
#include "runtime/error.h"

namespace ra {

DistributedRuntime setup_distributed(const MpiContext& mpi, const std::string& device_kind,
                                     double timeout_seconds) {
  RA_CHECK(device_kind == "auto" || device_kind == "cpu" || device_kind == "cuda", "--device = '",
           device_kind, "': allowed: auto, cpu, cuda");
  DistributedRuntime runtime;
  runtime.layout = mpi.layout();
  const bool have_cuda = torch::cuda::is_available();
  RA_CHECK(device_kind != "cuda" || have_cuda,
           "--device = cuda: LibTorch sees no CUDA device (CPU-only build or no GPU visible)");
  if (device_kind == "cuda" || (device_kind == "auto" && have_cuda)) {
    const int gpus = static_cast<int>(torch::cuda::device_count());
    RA_CHECK(runtime.layout.local_rank < gpus, "local rank ", runtime.layout.local_rank,
             " has no GPU: this node shows ", gpus,
             " GPU(s); start one rank per GPU (mpirun -n <GPUs per node> per node)");
    runtime.device = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(runtime.layout.local_rank));
    runtime.world = make_world_communicator(mpi, at::kCUDA, timeout_seconds);  // NCCL
    return runtime;
  }
  runtime.world = make_world_communicator(mpi, at::kCPU, timeout_seconds);
  return runtime;
}

}  // namespace ra
