// kept_row_write_bench: the partition mode's row writes alone on one GPU, for a config's head
// groups (each group writes its heads' rows of every token, zeros where it keeps nothing).
// Forward: the layer's output (times 1/G) and lse per group with write_kept_rows (the fallback
// beyond 16 groups), the output alone that way, or output and lse together in one pass of whole
// rows (cuda/partition_forward.h, the fused path's form). Backward: a group's dq, dk, dv in one
// write_kept_rows launch (whole groups here; the fused path cuts large ones into
// chunks). Reported in GB/s of the bytes each must move, beside cudaMemset and cudaMemcpy of one
// [B, S, H, D] tensor: the distance from the card's copy bandwidth is what faster writes can win
// (issue 3). The sources hold constant bytes; these memory-bound copies do not time differently
// on other values.
//   kept_row_write_bench --config longnet-base --seq-len 1M
#include <cuda_runtime.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "attention/standard/cuda/partition_forward.h"
#include "attention/standard/cuda/write_kept_rows.h"
#include "attention/standard/dilation_plan.h"
#include "attention/standard/plan_kept_rows.h"
#include "bench/bench_configs.h"
#include "bench/bench_options.h"
#include "runtime/cli_values.h"
#include "runtime/cuda_check.h"

namespace po = boost::program_options;

namespace {

// A device allocation of `bytes`, filled with a constant byte (freed at exit by the driver).
void* device_bytes(size_t bytes) {
  void* p = nullptr;
  RA_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  RA_CUDA_CHECK(cudaMemset(p, 0x3c, bytes));
  return p;
}

// Best and median of `reps` timed runs of fn (after one untimed), in ms.
std::pair<float, float> time_ms(const std::function<void()>& fn, int reps) {
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

void print_row(const std::string& name, int launches, double bytes, std::pair<float, float> ms) {
  std::printf("| %s | %d | %.2f | %.3f | %.3f | %.0f |\n", name.c_str(), launches, bytes / 1e9,
              ms.first, ms.second, bytes / 1e6 / ms.second);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string config_name, seq_text;
    int reps = 0;
    po::options_description opts("kept_row_write_bench options");
    opts.add_options()("help,h", "print this help")(
        "config", po::value(&config_name)->default_value("longnet-base"),
        "longnet-base | wide | longnet-1m (bench/bench_configs.h), head mode partition")(
        "seq-len", po::value(&seq_text)->default_value("1M"), "tokens S (K/M/G), batch 1")(
        "reps", po::value(&reps)->default_value(10), "timed runs per row (after one untimed)");
    po::variables_map vm;
    if (!ra::bench::parse_options(argc, argv, opts, vm)) return 0;
    RA_CHECK(reps >= 1, "--reps = ", reps, ": need at least 1");
    const int64_t S = ra::parse_token_count(seq_text, "--seq-len");
    const ra::bench::BenchConfig bc = ra::bench::bench_config(config_name);
    ra::DilatedAttentionConfig config;
    config.segment_lengths = bc.segments;
    config.dilation_rates = bc.rates;
    config.head_mode = ra::HeadMode::kPartition;
    const int64_t H = bc.heads, D = bc.head_dim;
    const ra::DilationPlan plan = ra::DilationPlan::build(config, S, H);
    const std::vector<ra::GroupRows> groups = ra::plan_groups(plan, 1, S, H, /*partition=*/true);
    const cudaStream_t stream = nullptr;
    const auto bf16 = ra::cuda::ScalarKind::kBFloat16;

    // [1, S, H, D] bf16 tensors: out and dq, dk, dv; lse [1, S, H] fp32.
    const size_t tensor_bytes = size_t(S) * H * D * 2;
    void* out = device_bytes(tensor_bytes);
    std::vector<void*> grads = {device_bytes(tensor_bytes), device_bytes(tensor_bytes),
                                device_bytes(tensor_bytes)};
    auto* lse = static_cast<float*>(device_bytes(size_t(S) * H * 4));
    auto token = [&](void* p) { return ra::cuda::TokenTensor{p, S * H * D, H * D, D}; };
    // Per group: its kept rows [N, h, L, D] of three tensors (the forward uses the first) and
    // its lse rows [N, h, L].
    struct Sources {
      std::vector<ra::cuda::RowTensor> rows;
      const float* lse = nullptr;
      size_t row_bytes = 0, lse_bytes = 0;
    };
    std::vector<Sources> sources(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
      const ra::cuda::KeptRows& r = groups[g].rows;
      Sources& s = sources[g];
      s.row_bytes = size_t(r.num_rows()) * D * 2;
      s.lse_bytes = size_t(r.num_rows()) * 4;
      for (int i = 0; i < 3; ++i) {
        s.rows.push_back({device_bytes(s.row_bytes), int64_t(r.head_count) * r.kept * D,
                          int64_t(r.kept) * D, D});
      }
      s.lse = static_cast<const float*>(device_bytes(s.lse_bytes));
    }

    std::printf("# %s, S = %ld, H = %ld, D = %ld, head mode partition, %zu groups\n",
                bc.name.c_str(), long(S), long(H), long(D), groups.size());
    std::printf("| pattern | launches | GB moved | best ms | median ms | GB/s (median) |\n");
    std::printf("|---|---|---|---|---|---|\n");
    print_row("cudaMemset of one tensor", 1, tensor_bytes,
              time_ms([&] { RA_CUDA_CHECK(cudaMemsetAsync(out, 0, tensor_bytes, stream)); }, reps));
    print_row("cudaMemcpy of one tensor", 1, 2.0 * tensor_bytes,
              time_ms(
                  [&] {
                    RA_CUDA_CHECK(cudaMemcpyAsync(grads[0], out, tensor_bytes,
                                                  cudaMemcpyDeviceToDevice, stream));
                  },
                  reps));

    // Forward: every group writes its heads' rows of out (x 1/G) and lse; bytes = out and lse
    // written once, every group's kept rows read.
    double forward_bytes = tensor_bytes + double(S) * H * 4;
    for (const Sources& s : sources) forward_bytes += s.row_bytes + s.lse_bytes;
    // Per group: each launch writes its heads' output and lse rows.
    print_row("forward: out and lse per group", int(groups.size()), forward_bytes,
              time_ms(
                  [&] {
                    for (size_t g = 0; g < groups.size(); ++g) {
                      const ra::cuda::KeptRows& r = groups[g].rows;
                      ra::cuda::KeptLse lse_rows;
                      lse_rows.src = sources[g].lse;
                      lse_rows.src_sn = int64_t(r.head_count) * r.kept;
                      lse_rows.src_sh = r.kept, lse_rows.src_sl = 1;
                      lse_rows.dst = lse, lse_rows.dst_sb = S * H, lse_rows.dst_ss = H;
                      lse_rows.dst_sh = 1;
                      ra::cuda::launch_write_kept_rows(r, sources[g].rows[0], token(out), D, bf16,
                                                       stream, float(plan.output_scale), lse_rows);
                    }
                  },
                  reps));
    // Both in one pass (partition_forward.h); the output alone per group (write_kept_rows).
    auto write_out = [&] {
      for (size_t g = 0; g < groups.size(); ++g) {
        ra::cuda::launch_write_kept_rows(groups[g].rows, sources[g].rows[0], token(out), D, bf16,
                                         stream, float(plan.output_scale));
      }
    };
    std::vector<ra::cuda::PartitionGroup> pass;
    for (size_t g = 0; g < groups.size(); ++g) {
      const ra::cuda::KeptRows& r = groups[g].rows;
      const ra::cuda::RowTensor& rows = sources[g].rows[0];
      pass.push_back({r, rows.data, rows.stride_n, rows.stride_h, rows.stride_l, sources[g].lse,
                      int64_t(r.head_count) * r.kept, r.kept, 1});
    }
    print_row("forward: out and lse in one pass", 1, forward_bytes,
              time_ms(
                  [&] {
                    ra::cuda::launch_write_partition_forward(pass.data(), int(pass.size()), 1, S, H,
                                                             D, bf16, float(plan.output_scale), out,
                                                             lse, stream);
                  },
                  reps));
    print_row("forward: out only", int(groups.size()), forward_bytes - double(S) * H * 4,
              time_ms(write_out, reps));

    // Backward: every group writes dq, dk, dv (dv x 1/G) in one launch; bytes = the three
    // tensors written once, three kept-row sources read per group.
    double backward_bytes = 3.0 * tensor_bytes;
    for (const Sources& s : sources) backward_bytes += 3.0 * s.row_bytes;
    print_row("backward: dq, dk, dv", int(groups.size()), backward_bytes,
              time_ms(
                  [&] {
                    for (size_t g = 0; g < groups.size(); ++g) {
                      ra::cuda::KeptRowsWrite writes[3];
                      for (int i = 0; i < 3; ++i) {
                        writes[i] = {sources[g].rows[i], token(grads[i]),
                                     i == 2 ? float(plan.output_scale) : 1.f};
                      }
                      ra::cuda::launch_write_kept_rows(groups[g].rows, writes, 3, D, bf16, stream);
                    }
                  },
                  reps));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kept_row_write_bench: error: %s\n", e.what());
    return 2;
  }
}
