// all_mode_glue_bench: head mode all's own kernels alone on one GPU, for a config's head groups:
// the forward's merge of every branch (launch_merge_branches, each of its kernels and piece
// widths, picked through RA_MERGE_KERNEL / RA_MERGE_VEC as the fused path reads them) and the
// backward's scatter-add of dq, dk, dv by every group but the rate-1 one (whose gradients become
// dq, dk, dv). Group rows are laid out as cuDNN returns them ([N, h, L, D] with physical order
// [N, L, h, D]). Reported in GB/s of the bytes each must move, beside cudaMemcpy of one
// [B, S, H, D] tensor (issue 3: what is left of the all-mode step besides cuDNN).
//   all_mode_glue_bench --config longnet-base --seq-len 1M
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "attention/standard/cuda/merge_branches.h"
#include "attention/standard/cuda/scatter_add_kept_rows.h"
#include "bench/raw_kernel_timing.h"
#include "runtime/cuda_check.h"

int main(int argc, char** argv) {
  try {
    ra::bench::KernelBenchArgs args;
    if (!ra::bench::parse_kernel_bench_args(argc, argv, "all_mode_glue_bench", "all", args))
      return 0;
    const ra::bench::KernelBenchLayer layer =
        ra::bench::kernel_bench_layer(args, ra::HeadMode::kAll);
    const int64_t S = layer.S, H = layer.H, D = layer.D;
    const std::vector<ra::GroupRows>& groups = layer.groups;
    const std::vector<ra::bench::KernelBenchGroup>& data = layer.group_data;
    const auto bf16 = ra::cuda::ScalarKind::kBFloat16;
    std::vector<ra::cuda::MergeGroup> merge_groups;
    for (const ra::bench::KernelBenchGroup& g : data) {
      const ra::cuda::RowTensor& o = g.rows[0];
      merge_groups.push_back(
          {o.data, o.stride_n, o.stride_h, o.stride_l, g.lse, g.lse_stride_n, g.lse_stride_h, 1});
    }
    std::vector<ra::cuda::MergeBranch> merge_branches(layer.plan.branches.size());
    for (size_t i = 0, first = 0; i < merge_branches.size(); ++i) {
      merge_branches[i].segment = int32_t(layer.plan.branches[i].segment);
      merge_branches[i].rate = int32_t(layer.plan.branches[i].rate);
      merge_branches[i].first_group = int32_t(first);
      first += layer.plan.branches[i].groups.size();
    }
    const size_t branch_bytes = merge_branches.size() * sizeof(merge_branches[0]);
    const size_t group_bytes = merge_groups.size() * sizeof(merge_groups[0]);
    void* branches_dev = ra::bench::device_bytes(branch_bytes);
    void* groups_dev = ra::bench::device_bytes(group_bytes);
    RA_CUDA_CHECK(
        cudaMemcpy(branches_dev, merge_branches.data(), branch_bytes, cudaMemcpyHostToDevice));
    RA_CUDA_CHECK(cudaMemcpy(groups_dev, merge_groups.data(), group_bytes, cudaMemcpyHostToDevice));
    ra::bench::print_table_start(layer, args.config.name, "all", args.reps);

    // Forward: every group's rows and lse read, out and lse written once.
    double merge_bytes = layer.tensor_bytes + double(S) * H * 4;
    for (const ra::bench::KernelBenchGroup& g : data) merge_bytes += g.row_bytes + g.lse_bytes;
    auto merge = [&] {
      ra::cuda::launch_merge_branches(
          static_cast<const ra::cuda::MergeBranch*>(branches_dev), int(merge_branches.size()),
          static_cast<const ra::cuda::MergeGroup*>(groups_dev), int(merge_groups.size()), 1, int(S),
          int(H), int(D), bf16, 1.f, layer.tokens(layer.out), layer.lse, nullptr);
    };
    const struct {
      const char *kernel, *vec, *name;
    } variants[] = {{"flat", "1", "merge: flat, 16 B per thread"},
                    {"flat", "2", "merge: flat, 32 B per thread"},
                    {"flat", "4", "merge: flat, 64 B per thread"},
                    {"batched", "1", "merge: batched"},
                    {"loop", "1", "merge: loop"}};
    for (const auto& v : variants) {
      setenv("RA_MERGE_KERNEL", v.kernel, 1);
      setenv("RA_MERGE_VEC", v.vec, 1);
      ra::bench::print_row(v.name, 1, merge_bytes, ra::bench::time_ms(merge, args.reps));
    }
    unsetenv("RA_MERGE_KERNEL");
    unsetenv("RA_MERGE_VEC");

    // Backward: every group but the rate-1 one adds its dq, dk, dv rows (read) into the full
    // gradients (read and written).
    double add_bytes = 0;
    int adds = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      if (groups[g].rows.rate == 1) continue;
      add_bytes += 3.0 * (data[g].row_bytes + 2.0 * data[g].row_bytes);
      ++adds;
    }
    auto scatter_add = [&] {
      for (size_t g = 0; g < groups.size(); ++g) {
        if (groups[g].rows.rate == 1) continue;
        ra::cuda::KeptRowsAdd a[3];
        for (int i = 0; i < 3; ++i) a[i] = {data[g].rows[i + 1], layer.tokens(layer.grads[i])};
        ra::cuda::launch_scatter_add_kept_rows(groups[g].rows, a, 3, D, bf16, nullptr);
      }
    };
    ra::bench::print_row("backward: scatter-add of dq, dk, dv", adds, add_bytes,
                         ra::bench::time_ms(scatter_add, args.reps));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "all_mode_glue_bench: error: %s\n", e.what());
    return 2;
  }
}
