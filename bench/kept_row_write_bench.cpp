// kept_row_write_bench: the partition mode's row writes alone on one GPU, for a config's head
// groups (each group writes its heads' rows of every token, zeros where it keeps nothing).
// Forward: the layer's output (times 1/G) and lse per group with write_kept_rows (the fallback
// beyond 16 groups), the output alone that way, or output and lse together in one pass of whole
// rows (cuda/partition_forward.h, the fused path's form). Backward: a group's dq, dk, dv in one
// write_kept_rows launch (whole groups here; the fused path cuts large ones into
// chunks). Reported in GB/s of the bytes each must move, beside cudaMemset and cudaMemcpy of one
// [B, S, H, D] tensor: the distance from the card's copy bandwidth is what faster writes can win
// (issue 3). The sources are laid out as cuDNN returns them (bench/raw_kernel_timing.h; before
// session 18 they were contiguous [N, h, L, D]) and hold constant bytes: these memory-bound
// copies do not time differently on other values.
//   kept_row_write_bench --config longnet-base --seq-len 1M
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "attention/standard/cuda/partition_forward.h"
#include "attention/standard/cuda/write_kept_rows.h"
#include "bench/raw_kernel_timing.h"
#include "runtime/cuda_check.h"

int main(int argc, char** argv) {
  try {
    ra::bench::KernelBenchArgs args;
    if (!ra::bench::parse_kernel_bench_args(argc, argv, "kept_row_write_bench", "partition", args))
      return 0;
    const ra::bench::KernelBenchLayer layer =
        ra::bench::kernel_bench_layer(args, ra::HeadMode::kPartition);
    const int64_t S = layer.S, H = layer.H, D = layer.D;
    const int reps = args.reps;
    const float scale = float(layer.plan.output_scale);
    const std::vector<ra::GroupRows>& groups = layer.groups;
    const std::vector<ra::bench::KernelBenchGroup>& sources = layer.group_data;
    const ra::cuda::TokenTensor out = layer.tokens(layer.out);
    const cudaStream_t stream = nullptr;
    const auto bf16 = ra::cuda::ScalarKind::kBFloat16;
    ra::bench::print_table_start(layer, args.config.name, "partition", reps);
    ra::bench::print_row(
        "cudaMemset of one tensor", 1, layer.tensor_bytes,
        ra::bench::time_ms(
            [&] { RA_CUDA_CHECK(cudaMemsetAsync(layer.out, 0, layer.tensor_bytes, stream)); },
            reps));

    // Forward: every group writes its heads' rows of out (x 1/G) and lse; bytes = out and lse
    // written once, every group's kept rows read.
    double forward_bytes = layer.tensor_bytes + double(S) * H * 4;
    for (const ra::bench::KernelBenchGroup& g : sources) forward_bytes += g.row_bytes + g.lse_bytes;
    // Per group: each launch writes its heads' output and lse rows.
    ra::bench::print_row("forward: out and lse per group", int(groups.size()), forward_bytes,
                         ra::bench::time_ms(
                             [&] {
                               for (size_t g = 0; g < groups.size(); ++g) {
                                 const ra::cuda::KeptRows& r = groups[g].rows;
                                 ra::cuda::KeptLse lse_rows;
                                 lse_rows.src = sources[g].lse;
                                 lse_rows.src_sn = sources[g].lse_stride_n;
                                 lse_rows.src_sh = sources[g].lse_stride_h, lse_rows.src_sl = 1;
                                 lse_rows.dst = layer.lse, lse_rows.dst_sb = S * H;
                                 lse_rows.dst_ss = H;
                                 lse_rows.dst_sh = 1;
                                 ra::cuda::launch_write_kept_rows(r, sources[g].rows[0], out, D,
                                                                  bf16, stream, scale, lse_rows);
                               }
                             },
                             reps));
    // Both in one pass (partition_forward.h); the output alone per group (write_kept_rows).
    auto write_out = [&] {
      for (size_t g = 0; g < groups.size(); ++g) {
        ra::cuda::launch_write_kept_rows(groups[g].rows, sources[g].rows[0], out, D, bf16, stream,
                                         scale);
      }
    };
    std::vector<ra::cuda::PartitionGroup> pass;
    for (size_t g = 0; g < groups.size(); ++g) {
      const ra::cuda::KeptRows& r = groups[g].rows;
      const ra::cuda::RowTensor& rows = sources[g].rows[0];
      pass.push_back({r, rows.data, rows.stride_n, rows.stride_h, rows.stride_l, sources[g].lse,
                      sources[g].lse_stride_n, sources[g].lse_stride_h, 1});
    }
    ra::bench::print_row("forward: out and lse in one pass", 1, forward_bytes,
                         ra::bench::time_ms(
                             [&] {
                               ra::cuda::launch_write_partition_forward(
                                   pass.data(), int(pass.size()), 1, S, H, D, bf16, scale,
                                   layer.out, layer.lse, stream);
                             },
                             reps));
    ra::bench::print_row("forward: out only", int(groups.size()), forward_bytes - double(S) * H * 4,
                         ra::bench::time_ms(write_out, reps));

    // Backward: every group writes dq, dk, dv (dv x 1/G) in one launch; bytes = the three
    // tensors written once, three kept-row sources read per group.
    double backward_bytes = 3.0 * layer.tensor_bytes;
    for (const ra::bench::KernelBenchGroup& g : sources) backward_bytes += 3.0 * g.row_bytes;
    ra::bench::print_row("backward: dq, dk, dv", int(groups.size()), backward_bytes,
                         ra::bench::time_ms(
                             [&] {
                               for (size_t g = 0; g < groups.size(); ++g) {
                                 ra::cuda::KeptRowsWrite writes[3];
                                 for (int i = 0; i < 3; ++i) {
                                   writes[i] = {sources[g].rows[i + 1],
                                                layer.tokens(layer.grads[i]), i == 2 ? scale : 1.f};
                                 }
                                 ra::cuda::launch_write_kept_rows(groups[g].rows, writes, 3, D,
                                                                  bf16, stream);
                               }
                             },
                             reps));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kept_row_write_bench: error: %s\n", e.what());
    return 2;
  }
}
