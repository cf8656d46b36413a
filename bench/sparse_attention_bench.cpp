// Block-sparse attention speed on one GPU: the "sparse" variant's CUDA kernels at several
// densities (local_window layouts sized to the target density) against dense PyTorch SDPA on
// the same inputs, forward and forward+backward. Effective TFLOP/s count active blocks only
// (BlockLayout::forward_flops; backward counted as 2.5x forward). Prints a table and writes
// JSON; bench/sparse_flex_bench.py times FlexAttention with the same block masks.
#include <ATen/cuda/CUDAContext.h>
#include <torch/torch.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>

#include "attention/factory.h"
#include "attention/sparse/sparse_patterns.h"
#include "bench/bench_options.h"
#include "runtime/cli_values.h"
#include "runtime/kernel_profiler.h"
#include "runtime/torch_compat.h"

namespace po = boost::program_options;

namespace {

// Median-free mean of `iters` runs after `warmup`, in milliseconds, timed with CUDA events.
double time_ms(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  auto stream = at::cuda::getCurrentCUDAStream();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, stream);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(stop, stream);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / iters;
}

// The program; main turns what it throws into a message and exit code 2.
int run(int argc, char** argv) {
  std::string seq_text = "64K", densities_text = "25,10,2", json_path = "sparse_bench.json",
              profile_prefix;
  int64_t heads = 16, head_dim = 128, block_size = 128, batch = 1;
  int warmup = 3, iters = 10;
  po::options_description opts("sparse_attention_bench");
  opts.add_options()("help,h", "show options")(
      "seq-len", po::value(&seq_text)->default_value(seq_text), "sequence length (K/M suffixes)")(
      "densities", po::value(&densities_text)->default_value(densities_text),
      "target densities in percent, comma-separated")(
      "heads", po::value(&heads)->default_value(heads), "heads")(
      "head-dim", po::value(&head_dim)->default_value(head_dim), "head dim (64/128)")(
      "block-size", po::value(&block_size)->default_value(block_size), "block size (64/128)")(
      "batch", po::value(&batch)->default_value(batch), "batch")(
      "warmup", po::value(&warmup)->default_value(warmup), "warmup runs")(
      "iters", po::value(&iters)->default_value(iters), "timed runs")(
      "json", po::value(&json_path)->default_value(json_path), "JSON output")(
      "profile", po::value(&profile_prefix)->default_value(""),
      "after timing each density, record one forward+backward as a Chrome trace at "
      "PREFIX.<density>.json (bench/summarize_trace.py summarises it)");
  po::variables_map vm;
  if (!ra::bench::parse_options(argc, argv, opts, vm)) return 0;
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "sparse_attention_bench: needs a CUDA device\n");
    return 1;
  }
  const int64_t S = ra::parse_token_count(seq_text, "--seq-len");
  const int64_t nb = S / block_size;
  auto o = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  at::Tensor q = torch::randn({batch, S, heads, head_dim}, o).requires_grad_();
  at::Tensor k = torch::randn({batch, S, heads, head_dim}, o).requires_grad_();
  at::Tensor v = torch::randn({batch, S, heads, head_dim}, o).requires_grad_();
  at::Tensor grad = torch::randn_like(q);

  // Dense cuDNN SDPA ([B, H, S, D] views): the kernel a user would otherwise run.
  at::Tensor qt = q.detach().transpose(1, 2), kt = k.detach().transpose(1, 2),
             vt = v.detach().transpose(1, 2), gt = grad.transpose(1, 2);
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const double dense_flops = 4.0 * batch * heads * head_dim * double(S) * double(S);
  using ra::compat::FusedOp;
  const double dense_fwd = time_ms(
      [&] { ra::compat::fused_attention_forward(FusedOp::kCudnn, qt, kt, vt, false, scale); },
      warmup, iters);
  // The backward wants grad_out with the forward output's strides.
  const at::Tensor dense_grad =
      at::empty_like(
          ra::compat::fused_attention_forward(FusedOp::kCudnn, qt, kt, vt, false, scale).out)
          .copy_(gt);
  const double dense_fwdbwd = time_ms(
      [&] {
        auto saved = ra::compat::fused_attention_forward(FusedOp::kCudnn, qt, kt, vt, false, scale);
        ra::compat::fused_attention_backward(FusedOp::kCudnn, dense_grad, qt, kt, vt, saved, false,
                                             scale);
      },
      warmup, iters);

  std::printf(
      "S=%lld H=%lld D=%lld b=%lld bf16 | dense cuDNN SDPA: fwd %.2f ms (%.0f TFLOP/s), "
      "fwd+bwd %.2f ms (%.0f TFLOP/s)\n",
      (long long)S, (long long)heads, (long long)head_dim, (long long)block_size, dense_fwd,
      dense_flops / dense_fwd / 1e9, dense_fwdbwd, 3.5 * dense_flops / dense_fwdbwd / 1e9);
  std::printf("%9s %9s %11s %10s %13s %10s\n", "target%", "density%", "window", "fwd ms",
              "fwd TFLOP/s", "fwd+bwd TFLOP/s");
  std::ofstream json(json_path);
  json << "{\"seq_len\": " << S << ", \"heads\": " << heads << ", \"head_dim\": " << head_dim
       << ", \"block_size\": " << block_size << ", \"dense_fwd_ms\": " << dense_fwd
       << ", \"dense_fwdbwd_ms\": " << dense_fwdbwd << ", \"runs\": [";
  bool first = true;
  for (int64_t target : ra::parse_int_list(densities_text, "--densities")) {
    // local_window with block distances 0..w-1 on both sides: density ~ (2w - 1) / nb.
    const int64_t w = std::max<int64_t>(1, (target * nb / 100 + 1) / 2);
    ra::AttentionSpec spec;
    spec.attention.segment_lengths = {S};
    spec.attention.dilation_rates = {1};
    spec.sparse.block_size = block_size;
    spec.sparse.pattern = ra::SparsePattern::kLocalWindow;
    spec.sparse.window = w * block_size;
    ra::BlockLayout layout = ra::build_block_layout(spec.sparse, spec.attention, S);
    auto attention = ra::make_attention("sparse", spec);
    const double flops = layout.forward_flops(batch, heads, head_dim);
    const double fwd = time_ms([&] { attention->forward(q, k, v); }, warmup, iters);
    const double fwdbwd = time_ms(
        [&] {
          at::Tensor out = attention->forward(q, k, v).out;
          torch::autograd::grad({out}, {q, k, v}, {grad});
        },
        warmup, iters);
    if (!profile_prefix.empty()) {
      ra::KernelProfiler profiler(/*cuda=*/true);
      at::Tensor out = attention->forward(q, k, v).out;
      torch::autograd::grad({out}, {q, k, v}, {grad});
      torch::cuda::synchronize();
      profiler.save(profile_prefix + "." + std::to_string(target) + ".json");
    }
    std::printf("%9lld %9.2f %11lld %10.2f %13.0f %10.2f ms %6.0f\n", (long long)target,
                100 * layout.density(), (long long)spec.sparse.window, fwd, flops / fwd / 1e9,
                fwdbwd, 3.5 * flops / fwdbwd / 1e9);
    json << (first ? "" : ", ") << "{\"target_density\": " << target / 100.0
         << ", \"density\": " << layout.density() << ", \"window\": " << spec.sparse.window
         << ", \"fwd_ms\": " << fwd << ", \"fwdbwd_ms\": " << fwdbwd
         << ", \"fwd_tflops\": " << flops / fwd / 1e9 << "}";
    first = false;
  }
  json << "]}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparse_attention_bench: error: %s\n", e.what());
    return 2;
  }
}
