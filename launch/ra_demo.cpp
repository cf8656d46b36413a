// ra_demo: runs dilated attention (forward + backward) on every rank of an MPI job and prints
// one line per rank. A smoke test of the build and the launch path, e.g.
//   mpirun -n 2 ra_demo --seq-len 4K --segment-lengths 512,1024 --dilation-rates 1,2
#include <boost/program_options.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "attention/factory.h"
#include "attention/standard/dilation_plan.h"
#include "comm/mpi_context.h"
#include "runtime/cli_values.h"
#include "runtime/error.h"
#include "runtime/validation.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  ra::MpiContext mpi(&argc, &argv);
  try {
    std::string seq_len_text, segments_text, rates_text, head_mode, attention;
    int64_t heads = 0, head_dim = 0, batch = 0;
    bool causal = false;
    uint64_t seed = 0;
    po::options_description opts("ra_demo options");
    opts.add_options()
      ("help,h", "print this help")
      ("attention", po::value(&attention)->default_value("standard"), "attention variant")
      ("seq-len", po::value(&seq_len_text)->default_value("4K"), "tokens (K/M/G = powers of 1024)")
      ("batch-size", po::value(&batch)->default_value(1), "sequences per step")
      ("heads", po::value(&heads)->default_value(4), "attention heads")
      ("head-dim", po::value(&head_dim)->default_value(32), "dims per head")
      ("segment-lengths", po::value(&segments_text)->default_value("512,1024,2048"), "w_i, comma-separated")
      ("dilation-rates", po::value(&rates_text)->default_value("1,2,4"), "r_i, comma-separated")
      ("head-mode", po::value(&head_mode)->default_value("all"), "all | partition")
      ("causal", po::bool_switch(&causal), "causal masking")
      ("seed", po::value(&seed)->default_value(0), "random seed (offset by rank)");
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    if (vm.count("help")) {
      if (mpi.rank() == 0) std::cout << opts << std::endl;
      return 0;
    }
    po::notify(vm);

    ra::AttentionSpec spec;
    spec.attention.segment_lengths = ra::parse_int_list(segments_text, "--segment-lengths");
    spec.attention.dilation_rates = ra::parse_int_list(rates_text, "--dilation-rates");
    spec.attention.head_mode = ra::parse_head_mode(head_mode, "--head-mode");
    spec.attention.causal = causal;
    const int64_t seq_len = ra::parse_token_count(seq_len_text, "--seq-len");
    ra::validate(spec.attention);
    ra::validate_sequence_length(spec.attention, seq_len);
    auto attn = ra::make_attention(attention, spec);

    if (mpi.rank() == 0) {
      std::printf("ra_demo: %d ranks, attention=%s, B=%ld S=%ld H=%ld D=%ld, %s\n", mpi.size(),
                  attention.c_str(), long(batch), long(seq_len), long(heads), long(head_dim),
                  ra::describe(spec.attention).c_str());
    }
    torch::manual_seed(seed + mpi.rank());
    auto opts_t = torch::TensorOptions().dtype(torch::kFloat32);
    auto q = torch::randn({batch, seq_len, heads, head_dim}, opts_t).requires_grad_();
    auto k = torch::randn({batch, seq_len, heads, head_dim}, opts_t).requires_grad_();
    auto v = torch::randn({batch, seq_len, heads, head_dim}, opts_t).requires_grad_();
    auto start = std::chrono::steady_clock::now();
    auto out = attn->forward(q, k, v).out;
    out.square().sum().backward();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    double flops = ra::DilationPlan::build(spec.attention, seq_len, heads)
                       .forward_flops(batch, seq_len, head_dim, causal) * 3.5;
    MPI_Barrier(mpi.world());
    std::printf("rank %d/%d: |out| = %.6f  |dq| = %.6f  fwd+bwd %.1f ms  %.2f GFLOP/s\n",
                mpi.rank(), mpi.size(), out.norm().item<double>(), q.grad().norm().item<double>(),
                ms, flops / ms / 1e6);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ra_demo (rank %d): error: %s\n", mpi.rank(), e.what());
    ra::MpiContext::abort_job(2);
  }
}
