// fault_probe: a training-like loop of sequence-parallel attention steps in which one rank
// misbehaves at step 1: it stalls (sleeps far past the deadline) or exits mid-step. The other
// ranks must notice within the communication deadline, print rank, host, operation and step,
// and end the whole job with a non-zero code (run_fault_test.sh checks all of that).
//   fault_probe <stall|exit|none> <ring|allgather> <deadline seconds> [cpu|cuda]
// cpu runs over MPI, cuda over NCCL with one GPU per rank. The last rank is the victim.
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "attention/factory.h"
#include "comm/mpi_context.h"
#include "comm/world_communicator.h"

int main(int argc, char** argv) {
  ra::MpiContext mpi(&argc, &argv);
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: fault_probe <stall|exit|none> <ring|allgather> <deadline s> "
                 "[cpu|cuda]\n");
    return 2;
  }
  const std::string mode = argv[1], strategy = argv[2];
  const double deadline = std::atof(argv[3]);
  const at::DeviceType device = argc > 4 && std::string(argv[4]) == "cuda" ? at::kCUDA : at::kCPU;
  const int victim = mpi.size() - 1;
  int step = 0;
  try {
    auto world = ra::make_world_communicator(mpi, device, deadline);
    ra::AttentionSpec spec;
    const int64_t shard = 32, seq_len = shard * mpi.size();
    spec.attention.segment_lengths = {shard / 2, seq_len};  // one local, one spanning branch
    spec.attention.dilation_rates = {1, 2};
    spec.ring.timeout_seconds = deadline;
    spec.comm = world;
    auto attention = ra::make_attention(strategy, spec);
    torch::manual_seed(mpi.rank());
    for (step = 0; step < 4; ++step) {
      world->set_context("step " + std::to_string(step));
      at::Tensor q = torch::randn({1, shard, 4, 16}).to(device).requires_grad_();
      at::Tensor out = attention->forward(q, q, q).out;
      if (step == 1 && mpi.rank() == victim) {
        if (mode == "stall")
          std::this_thread::sleep_for(std::chrono::duration<double>(deadline * 30));
        if (mode == "exit") {
          std::fprintf(stderr, "fault_probe: rank %d exits mid-step %d on purpose\n", mpi.rank(),
                       step);
          std::_Exit(3);
        }
      }
      out.sum().backward();
    }
    world->barrier();
    if (mpi.rank() == 0) std::printf("fault_probe: %d steps done\n", step);
    return 0;
  } catch (const ra::Error& e) {
    std::fprintf(stderr, "[ringattn] rank %d: error at step %d: %s\n", mpi.rank(), step, e.what());
    std::fflush(stderr);
    ra::MpiContext::abort_job(1);
  }
}
