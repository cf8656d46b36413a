// Shared by the kernel benchmarks that need no LibTorch (kept_row_write_bench,
// all_mode_glue_bench): their command line (--config, --seq-len, --reps), the config's head groups
// and full-size buffers, constant-filled device buffers, the best and median of CUDA-event-timed
// runs, and a markdown row in GB/s of the bytes a pattern must move.
#pragma once

#include <cuda_runtime.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "attention/attention.h"
#include "attention/standard/dilation_plan.h"
#include "attention/standard/plan_kept_rows.h"
#include "bench/bench_configs.h"
#include "bench/bench_options.h"
#include "runtime/cli_values.h"
#include "runtime/cuda_check.h"

namespace ra::bench {

// A device allocation of `bytes`, filled with a constant byte (freed at exit by the driver).
inline void* device_bytes(size_t bytes) {
  void* p = nullptr;
  RA_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  RA_CUDA_CHECK(cudaMemset(p, 0x3c, bytes));
  return p;
}

// Best and median of `reps` timed runs of fn (after one untimed), in ms.
inline std::pair<float, float> time_ms(const std::function<void()>& fn, int reps) {
  cudaEvent_t start, stop;
  RA_CUDA_CHECK(cudaEventCreate(&start));
  RA_CUDA_CHECK(cudaEventCreate(&stop));
  fn();
  std::vector<float> ms(reps);
  for (float& t : ms) {
    RA_CUDA_CHECK(cudaEventRecord(start));
    fn();
    RA_CUDA_CHECK(cudaEventRecord(stop));
    RA_CUDA_CHECK(cudaEventSynchronize(stop));
    RA_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
  }
  std::sort(ms.begin(), ms.end());
  RA_CUDA_CHECK(cudaEventDestroy(start));
  RA_CUDA_CHECK(cudaEventDestroy(stop));
  return {ms.front(), ms[ms.size() / 2]};
}

inline void print_row(const std::string& name, int launches, double bytes,
                      std::pair<float, float> ms) {
  std::printf("| %s | %d | %.2f | %.3f | %.3f | %.0f |\n", name.c_str(), launches, bytes / 1e9,
              ms.first, ms.second, bytes / 1e6 / ms.second);
}

// One benchmark config on S tokens (batch 1), timed `reps` times per row.
struct KernelBenchArgs {
  BenchConfig config;
  int64_t seq_len = 0;
  int reps = 0;

  DilatedAttentionConfig dilated(HeadMode mode) const {
    DilatedAttentionConfig c;
    c.segment_lengths = config.segments;
    c.dilation_rates = config.rates;
    c.head_mode = mode;
    return c;
  }
};

// Parses --config, --seq-len and --reps; false after --help (the program exits 0).
inline bool parse_kernel_bench_args(int argc, char** argv, const std::string& program,
                                    const std::string& head_mode, KernelBenchArgs& args) {
  namespace po = boost::program_options;
  std::string config_name, seq_text;
  po::options_description opts(program + " options");
  opts.add_options()("help,h", "print this help")(
      "config", po::value(&config_name)->default_value("longnet-base"),
      ("longnet-base | wide | longnet-1m (bench/bench_configs.h), head mode " + head_mode).c_str())(
      "seq-len", po::value(&seq_text)->default_value("1M"), "tokens S (K/M/G), batch 1")(
      "reps", po::value(&args.reps)->default_value(10), "timed runs per row (after one untimed)");
  po::variables_map vm;
  if (!parse_options(argc, argv, opts, vm)) return false;
  RA_CHECK(args.reps >= 1, "--reps = ", args.reps, ": need at least 1");
  args.seq_len = parse_token_count(seq_text, "--seq-len");
  args.config = bench_config(config_name);
  return true;
}

// One head group's rows of out, dq, dk, dv ([N, h, L, D] bf16, laid out as cuDNN's attention
// returns them: physical order [N, L, h, D]) and of lse ([N, h, L] fp32).
struct KernelBenchGroup {
  cuda::RowTensor rows[4];  // out, dq, dk, dv
  const float* lse = nullptr;
  int64_t lse_stride_n = 0, lse_stride_h = 0;
  size_t row_bytes = 0, lse_bytes = 0;  // of one rows tensor, of lse
};

// The config's plan and head groups in one head mode, each group's rows, and the layer's
// full-size buffers: out and dq, dk, dv [1, S, H, D] bf16, lse [1, S, H] fp32.
struct KernelBenchLayer {
  int64_t S = 0, H = 0, D = 0;
  DilationPlan plan;
  std::vector<GroupRows> groups;
  std::vector<KernelBenchGroup> group_data;  // per group
  size_t tensor_bytes = 0;                   // one [1, S, H, D] bf16 tensor
  void* out = nullptr;
  std::vector<void*> grads;  // dq, dk, dv
  float* lse = nullptr;

  cuda::TokenTensor tokens(void* p) const { return {p, S * H * D, H * D, D}; }
};

inline KernelBenchLayer kernel_bench_layer(const KernelBenchArgs& args, HeadMode mode) {
  KernelBenchLayer l;
  l.S = args.seq_len, l.H = args.config.heads, l.D = args.config.head_dim;
  l.plan = DilationPlan::build(args.dilated(mode), l.S, l.H);
  l.groups = plan_groups(l.plan, 1, l.S, l.H, mode == HeadMode::kPartition);
  l.tensor_bytes = size_t(l.S) * l.H * l.D * 2;
  l.out = device_bytes(l.tensor_bytes);
  for (int i = 0; i < 3; ++i) l.grads.push_back(device_bytes(l.tensor_bytes));
  l.lse = static_cast<float*>(device_bytes(size_t(l.S) * l.H * 4));
  for (const GroupRows& group : l.groups) {
    const cuda::KeptRows& r = group.rows;
    KernelBenchGroup g;
    g.row_bytes = size_t(r.num_rows()) * l.D * 2;
    g.lse_bytes = size_t(r.num_rows()) * 4;
    for (cuda::RowTensor& t : g.rows) {
      t = {device_bytes(g.row_bytes), int64_t(r.kept) * r.head_count * l.D, l.D,
           int64_t(r.head_count) * l.D};
    }
    g.lse = static_cast<const float*>(device_bytes(g.lse_bytes));
    g.lse_stride_n = int64_t(r.head_count) * r.kept, g.lse_stride_h = r.kept;
    l.group_data.push_back(g);
  }
  return l;
}

// The table's title and header, and its first row: cudaMemcpy of one [1, S, H, D] tensor.
inline void print_table_start(const KernelBenchLayer& l, const std::string& config,
                              const std::string& head_mode, int reps) {
  std::printf("# %s, S = %ld, H = %ld, D = %ld, head mode %s, %zu branches, %zu groups\n",
              config.c_str(), long(l.S), long(l.H), long(l.D), head_mode.c_str(),
              l.plan.branches.size(), l.groups.size());
  std::printf("| pattern | launches | GB moved | best ms | median ms | GB/s (median) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  print_row("cudaMemcpy of one tensor", 1, 2.0 * l.tensor_bytes,
            time_ms(
                [&] {
                  RA_CUDA_CHECK(
                      cudaMemcpyAsync(l.grads[0], l.out, l.tensor_bytes, cudaMemcpyDeviceToDevice));
                },
                reps));
}

}  // namespace ra::bench
