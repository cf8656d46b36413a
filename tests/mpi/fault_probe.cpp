// fault_probe: a training-like loop of sequence-parallel attention steps in which one rank
// misbehaves at step 1: it stalls (sleeps far past the deadline) or exits mid-step. The other
// ranks must notice within the communication deadline, print rank, host, operation and step,
// and end the whole job with a non-zero code (run_fault_test.sh checks all of that).
//   fault_probe <stall|exit|none> <ring|allgather|train> <deadline seconds> [cpu|cuda]
// cpu runs over MPI, cuda over NCCL with one GPU per rank. The last rank is the victim. `train`
// runs the model's training step with the gradient all-reduce during backward (GradientReducer
// on a split communicator), and the victim fails after forward: the others are then waiting in
// the first gradient bucket's all-reduce.
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
#include "runtime/flat_parameters.h"
#include "runtime/gradient_reducer.h"
#include "runtime/model.h"

namespace {

// The victim's misbehaviour.
void misbehave(const std::string& mode, double deadline, int rank, int step) {
  if (mode == "stall") std::this_thread::sleep_for(std::chrono::duration<double>(deadline * 30));
  if (mode == "exit") {
    std::fprintf(stderr, "fault_probe: rank %d exits mid-step %d on purpose\n", rank, step);
    std::_Exit(3);
  }
}

// A 2-layer model with ring attention (one local, one spanning branch), trained with the
// gradient all-reduce during backward.
void train_steps(const std::shared_ptr<ra::Communicator>& world, at::DeviceType device,
                 const std::string& mode, double deadline, int victim, int& step) {
  const int64_t shard = 32, seq_len = shard * world->size();
  ra::ModelConfig config;
  config.vocab_size = 16, config.num_layers = 2, config.embed_dim = 32, config.num_heads = 4;
  config.ffn_dim = 64;
  config.attention.segment_lengths = {shard / 2, seq_len};
  config.attention.dilation_rates = {1, 2};
  config.attention.causal = true;
  torch::manual_seed(0);
  ra::LongNetLM model(config, [&] {
    ra::AttentionSpec spec;
    spec.attention = config.attention;
    spec.ring.timeout_seconds = deadline;
    spec.comm = world;
    return ra::make_attention("ring", spec);
  });
  model->to(device);
  ra::FlatParameters flat(model->named_parameters(), at::kFloat);
  std::shared_ptr<ra::Communicator> grad_comm = world->split(0, world->rank());
  grad_comm->set_timeout_seconds(deadline);
  ra::GradientReducer reducer(flat, model->backward_stage_parameters(), grad_comm);
  model->set_backward_stage_hook([&](size_t stage) { reducer.stage_done(stage); });
  for (step = 0; step < 4; ++step) {
    world->set_context("step " + std::to_string(step));
    grad_comm->set_context("step " + std::to_string(step));
    const at::Tensor tokens = torch::randint(0, 16, {1, shard}).to(device);
    flat.zero_grad();
    at::Tensor loss = model->loss_sum(model->hidden_states(tokens, shard * world->rank()), tokens);
    if (step == 1 && world->rank() == victim) misbehave(mode, deadline, world->rank(), step);
    loss.backward();
    reducer.finish();
  }
  model->set_backward_stage_hook(nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  ra::MpiContext mpi(&argc, &argv);
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: fault_probe <stall|exit|none> <ring|allgather|train> <deadline s> "
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
    if (strategy == "train") {
      train_steps(world, device, mode, deadline, victim, step);
      world->barrier();
      if (mpi.rank() == 0) std::printf("fault_probe: %d training steps done\n", step);
      return 0;
    }
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
      if (step == 1 && mpi.rank() == victim) misbehave(mode, deadline, mpi.rank(), step);
      out.sum().backward();
    }
    world->barrier();
    if (mpi.rank() == 0) std::printf("fault_probe: %d steps done\n", step);
    return 0;
  } catch (const std::exception& e) {  // ra::Error, or one rethrown by autograd's engine
    std::fprintf(stderr, "[ringattn] rank %d: error at step %d: %s\n", mpi.rank(), step, e.what());
    std::fflush(stderr);
    ra::MpiContext::abort_job(1);
  }
}
