// bench_ring_attention: times sequence-parallel dilated attention (fwd+bwd, bf16) across the
// ranks of an MPI job, one GPU per rank over NCCL, and prints one JSON line (rank 0): median ms,
// effective TFLOP/s per GPU (DESIGN.md's count over the whole sequence / P), tokens/s, peak GiB.
//   mpirun -n 4 bench_ring_attention --config dense-causal --seq-len 128K --zigzag
//   mpirun -n 4 bench_ring_attention --config longnet-base --seq-len 1M [--local-copy]
// --local-copy replaces every transfer by a local copy of the same bytes (exposed-comm check);
// --no-transfers: local copies where received values feed attention kernels, the dK/dV
// exchange dropped; with --strategy allgather the step almost without transfers (meaningless);
// --profile FILE records one more step of rank 0 as a Chrome trace (bench/summarize_trace.py).
#include <ATen/cuda/CUDAContext.h>
#include <torch/torch.h>
#include <boost/program_options.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "attention/factory.h"
#include "attention/standard/dilation_plan.h"
#include "bench/bench_configs.h"
#include "bench/bench_options.h"
#include "bench/gpu_timing.h"
#include "bench/local_copy_communicator.h"
#include "comm/mpi_context.h"
#include "comm/world_communicator.h"
#include "runtime/cli_values.h"
#include "runtime/error.h"
#include "runtime/kernel_profiler.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  ra::MpiContext mpi(&argc, &argv);
  try {
    std::string config_name, seq_text, strategy, json_path, head_mode, profile_path;
    bool causal = false, zigzag = false, local_copy = false, no_transfers = false,
         unstacked = false, unbalanced = false;
    int warmup = 0, reps = 0, exchange_ctas = 0;
    po::options_description opts("bench_ring_attention options");
    opts.add_options()("help,h", "print this help")(
        "config", po::value(&config_name)->default_value("dense-causal"),
        "dense-causal (H=16 D=128, w=S r=1, causal) | longnet-base | wide | longnet-1m "
        "(bench/bench_configs.h)")("seq-len", po::value(&seq_text)->default_value("128K"),
                                   "global tokens (K/M/G)")(
        "strategy", po::value(&strategy)->default_value("ring"), "ring | allgather")(
        "head-mode", po::value(&head_mode)->default_value("all"), "all | partition")(
        "causal", po::bool_switch(&causal), "causal masking (always on for dense-causal)")(
        "zigzag", po::bool_switch(&zigzag), "zigzag layout (dense-causal only)")(
        "local-copy", po::bool_switch(&local_copy), "replace transfers by local copies")(
        "no-transfers", po::bool_switch(&no_transfers),
        "K/V transfers as local copies, the allgather's dK/dV exchange dropped "
        "(bench/local_copy_communicator.h; results meaningless)")(
        "exchange-ctas", po::value(&exchange_ctas)->default_value(ra::RingConfig{}.exchange_ctas),
        "CTAs of the allgather backward's dK/dV exchange, 0 = NCCL's choice "
        "(RingConfig::exchange_ctas)")(
        "unstacked", po::bool_switch(&unstacked),
        "one block call and K/V message per spanning head group (RingConfig::stack_head_groups "
        "off)")("unbalanced", po::bool_switch(&unbalanced),
                "causal spanning segments in the plain layout, not the mirror one (RingConfig::"
                "balance_causal off)")("warmup", po::value(&warmup)->default_value(2),
                                       "untimed steps")("reps", po::value(&reps)->default_value(5),
                                                        "timed steps (median)")(
        "json", po::value(&json_path)->default_value(""), "append the JSON line here")(
        "profile", po::value(&profile_path)->default_value(""),
        "after timing, rank 0 records one more step as a Chrome trace at this path");
    po::variables_map vm;
    if (!ra::bench::parse_options(argc, argv, opts, vm, /*print_help=*/mpi.rank() == 0)) return 0;
    const int64_t S = ra::parse_token_count(seq_text, "--seq-len");
    const int P = mpi.size();

    ra::AttentionSpec spec;
    int64_t H = 16, D = 128;
    if (config_name == "dense-causal") {
      spec.attention.segment_lengths = {S};
      spec.attention.dilation_rates = {1};
      causal = true;
    } else {
      const ra::bench::BenchConfig bc = ra::bench::bench_config(config_name);
      spec.attention.segment_lengths = bc.segments;
      spec.attention.dilation_rates = bc.rates;
      H = bc.heads, D = bc.head_dim;
    }
    spec.attention.causal = causal;
    spec.attention.head_mode = ra::parse_head_mode(head_mode, "--head-mode");
    spec.ring.zigzag = zigzag;
    spec.ring.stack_head_groups = !unstacked;
    spec.ring.balance_causal = !unbalanced;
    spec.ring.exchange_ctas = exchange_ctas;
    std::shared_ptr<ra::Communicator> world = ra::make_world_communicator(mpi, at::kCUDA);
    RA_CHECK(!(local_copy && no_transfers), "--local-copy and --no-transfers: pick one");
    using Fake = ra::bench::LocalCopyCommunicator;
    spec.comm = local_copy     ? std::make_shared<Fake>(world, Fake::Mode::kCopy)
                : no_transfers ? std::make_shared<Fake>(world, Fake::Mode::kSkip)
                               : world;
    auto attention = ra::make_attention(strategy, spec);

    auto opts_t = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
    torch::manual_seed(1234 + mpi.rank());
    const int64_t shard = S / P;
    torch::Tensor q = torch::randn({1, shard, H, D}, opts_t).requires_grad_();  // [1, S/P, H, D]
    torch::Tensor k = torch::randn_like(q).requires_grad_();
    torch::Tensor v = torch::randn_like(q).requires_grad_();
    torch::Tensor dout = torch::randn_like(q);
    auto step = [&] {
      ra::AttentionResult r = attention->forward(q, k, v);
      torch::autograd::grad({r.out}, {q, k, v}, {dout});
    };
    torch::cuda::synchronize();
    ra::bench::reset_peak();
    double ms = ra::bench::median_step_ms(step, warmup, reps, [&] {
      torch::cuda::synchronize();
      world->barrier();
    });
    // The slowest rank sets the step time.
    at::Tensor t = torch::full({1}, ms, torch::TensorOptions().dtype(torch::kFloat64));
    MPI_Allreduce(MPI_IN_PLACE, t.data_ptr<double>(), 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    ms = t.item<double>();
    if (!profile_path.empty()) {  // every rank runs the step; rank 0 records it
      std::optional<ra::KernelProfiler> profiler;
      if (mpi.rank() == 0) profiler.emplace(/*cuda=*/true);
      step();
      torch::cuda::synchronize();
      if (profiler) profiler->save(profile_path);
    }
    const double flops =
        ra::DilationPlan::build(spec.attention, S, H).forward_flops(1, S, D, causal) * 3.5;
    if (mpi.rank() == 0) {
      std::ostringstream row;
      row << "{\"impl\":\"ringattn." << strategy << (zigzag ? "+zigzag" : "")
          << (local_copy ? "+local-copy" : "") << (no_transfers ? "+no-transfers" : "")
          << (unstacked ? "+unstacked" : "") << (unbalanced ? "+unbalanced" : "")
          << "\",\"config\":\"" << config_name << "\",\"gpus\":" << P << ",\"seq_len\":" << S
          << ",\"heads\":" << H << ",\"head_dim\":" << D
          << ",\"causal\":" << (causal ? "true" : "false") << ",\"head_mode\":\"" << head_mode
          << "\",\"exchange_ctas\":" << exchange_ctas << ",\"fwd_bwd_ms\":" << ms
          << ",\"tflops_per_gpu\":" << flops / P / (ms * 1e-3) / 1e12
          << ",\"tokens_per_s\":" << S / (ms * 1e-3) << ",\"peak_gib\":" << ra::bench::peak_gib()
          << ",\"device\":\"" << at::cuda::getCurrentDeviceProperties()->name << "\"}";
      std::cout << row.str() << std::endl;
      if (!json_path.empty()) std::ofstream(json_path, std::ios::app) << row.str() << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ring_attention (rank %d): error: %s\n", mpi.rank(), e.what());
    ra::MpiContext::abort_job(2);
  }
}
