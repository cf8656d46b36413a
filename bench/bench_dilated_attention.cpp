// bench_dilated_attention: times ringattn's single-GPU DilatedAttention (fused path) over a grid
// of configs, sequence lengths, causal flags, head modes and passes (fwd, fwd+bwd), and writes
// one JSON object per row: median ms over --reps after --warmup (CUDA events), effective
// TFLOP/s (DilationPlan::forward_flops, x3.5 for fwd+bwd), peak GiB of the caching allocator
// for one step (inputs included). bench/run_bench.py drives it next to the Python baselines.
// --profile PREFIX writes one Chrome trace per row (bench/summarize_trace.py summarises it).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#include <torch/torch.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "attention/standard/dilated_attention.h"
#include "attention/standard/dilation_plan.h"
#include "attention/standard/fused_dilated_attention.h"
#include "bench/bench_configs.h"
#include "bench/bench_options.h"
#include "bench/gpu_timing.h"
#include "runtime/cli_values.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"
#include "runtime/kernel_profiler.h"

namespace po = boost::program_options;

namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) parts.push_back(item);
  }
  return parts;
}

struct Row {
  std::string config, head_mode, pass, status = "ok";
  int64_t seq_len = 0;
  bool causal = false;
  double ms = 0, tflops = 0, peak = 0;
};

std::string to_json(const Row& r, const std::string& device, const std::string& backend,
                    const std::string& layout) {
  std::ostringstream os;
  os << "{\"impl\":\"ringattn\",\"config\":\"" << r.config << "\",\"S\":" << r.seq_len
     << ",\"causal\":" << (r.causal ? "true" : "false") << ",\"head_mode\":\"" << r.head_mode
     << "\",\"pass\":\"" << r.pass << "\",\"ms\":" << r.ms << ",\"tflops\":" << r.tflops
     << ",\"peak_gib\":" << r.peak << ",\"status\":\"" << r.status << "\",\"backend\":\"" << backend
     << "\",\"layout\":\"" << layout << "\",\"device\":\"" << device << "\"}";
  return os.str();
}

Row run_one(const ra::bench::BenchConfig& bc, int64_t S, bool causal, ra::HeadMode mode,
            bool backward, ra::AttentionBackend backend, int warmup, int reps,
            const std::string& profile_path) {
  Row row{bc.name, ra::to_string(mode), backward ? "fwdbwd" : "fwd"};
  row.seq_len = S;
  row.causal = causal;
  ra::DilatedAttentionConfig config;
  config.segment_lengths = bc.segments;
  config.dilation_rates = bc.rates;
  config.causal = causal;
  config.head_mode = mode;
  config.backend = backend;
  ra::DilatedAttention attention(config);
  const ra::DilationPlan plan = ra::DilationPlan::build(config, S, bc.heads);
  const double flops = plan.forward_flops(1, S, bc.head_dim, causal) * (backward ? 3.5 : 1.0);

  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::Tensor q = torch::randn({1, S, bc.heads, bc.head_dim}, opts).requires_grad_(backward);
  torch::Tensor k = torch::randn_like(q).requires_grad_(backward);
  torch::Tensor v = torch::randn_like(q).requires_grad_(backward);
  torch::Tensor grad_out = torch::randn_like(q);
  auto step = [&] {
    if (backward) {
      ra::AttentionResult r = attention.forward(q, k, v);
      torch::autograd::grad({r.out}, {q, k, v}, {grad_out});
    } else {
      torch::NoGradGuard no_grad;
      attention.forward(q, k, v);
    }
  };
  torch::cuda::synchronize();
  ra::bench::reset_peak();
  row.ms = ra::bench::median_step_ms(step, warmup, reps);
  row.tflops = flops / (row.ms * 1e-3) / 1e12;
  row.peak = ra::bench::peak_gib();
  if (!profile_path.empty()) {
    ra::KernelProfiler profiler(/*cuda=*/true);
    step();
    torch::cuda::synchronize();
    profiler.save(profile_path);
  }
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string configs, seq_lens, causal_list, head_modes, passes, backend, layout, json_path,
        profile_prefix;
    int warmup = 0, reps = 0;
    int64_t backward_chunk_mib = 0;
    po::options_description opts("bench_dilated_attention options");
    opts.add_options()("help,h", "print this help")(
        "configs", po::value(&configs)->default_value("longnet-base,wide"), "longnet-base,wide")(
        "seq-lens", po::value(&seq_lens)->default_value("64K,256K,1M"), "tokens, K/M suffixes")(
        "causal", po::value(&causal_list)->default_value("0,1"), "0 and/or 1")(
        "head-modes", po::value(&head_modes)->default_value("all,partition"), "all,partition")(
        "passes", po::value(&passes)->default_value("fwd,fwdbwd"), "fwd,fwdbwd")(
        "backend", po::value(&backend)->default_value("auto"), "auto | cudnn | flash")(
        "layout", po::value(&layout)->default_value("auto"), "auto | strided | gathered")(
        "warmup", po::value(&warmup)->default_value(2), "untimed steps first")(
        "reps", po::value(&reps)->default_value(5), "timed steps (median reported)")(
        "backward-chunk-mib", po::value(&backward_chunk_mib)->default_value(0),
        "the fused backward's per-chunk temporary budget in MiB (0: the library default, "
        "max(192 MiB, |q| / 32))")("json", po::value(&json_path)->default_value(""),
                                   "append JSON lines here too")(
        "profile", po::value(&profile_prefix)->default_value(""),
        "after timing each row, record one more step as a Chrome trace at "
        "PREFIX.<config>.<S>.<causal|full>.<head mode>.<pass>.json");
    po::variables_map vm;
    if (!ra::bench::parse_options(argc, argv, opts, vm)) return 0;
    RA_CHECK(torch::cuda::is_available(), "bench_dilated_attention needs a CUDA GPU");
    RA_CHECK(reps > 0 && warmup >= 0, "--reps = ", reps, ", --warmup = ", warmup,
             ": need reps > 0 and warmup >= 0");
    RA_CHECK(backward_chunk_mib >= 0, "--backward-chunk-mib = ", backward_chunk_mib,
             ": must be >= 0");
    ra::set_fused_backward_chunk_bytes(backward_chunk_mib << 20);
    const ra::AttentionBackend attention_backend = ra::parse_backend(backend, "--backend");
    RA_CHECK(layout == "auto" || layout == "strided" || layout == "gathered", "--layout = ", layout,
             ": use auto, strided or gathered");
    ra::set_fused_input_layout(layout == "strided"    ? ra::FusedInputLayout::kStridedView
                               : layout == "gathered" ? ra::FusedInputLayout::kGathered
                                                      : ra::FusedInputLayout::kAuto);
    const std::string device = at::cuda::getCurrentDeviceProperties()->name;
    std::ofstream json;
    if (!json_path.empty()) json.open(json_path, std::ios::app);

    for (const auto& name : split(configs)) {
      const ra::bench::BenchConfig bc = ra::bench::bench_config(name);
      for (const auto& s_text : split(seq_lens)) {
        const int64_t S = ra::parse_token_count(s_text, "--seq-lens");
        for (const auto& c : split(causal_list)) {
          for (const auto& m : split(head_modes)) {
            for (const auto& p : split(passes)) {
              RA_CHECK(p == "fwd" || p == "fwdbwd", "--passes: '", p, "'; use fwd or fwdbwd");
              Row row;
              try {
                const std::string trace = profile_prefix.empty()
                                              ? ""
                                              : profile_prefix + "." + name + "." + s_text + "." +
                                                    (c == "1" ? "causal" : "full") + "." + m + "." +
                                                    p + ".json";
                row = run_one(bc, S, c == "1", ra::parse_head_mode(m, "--head-modes"),
                              p == "fwdbwd", attention_backend, warmup, reps, trace);
              } catch (const c10::OutOfMemoryError&) {
                row = Row{name, m, p, "oom"};
                row.seq_len = S;
                row.causal = c == "1";
              }
              c10::cuda::CUDACachingAllocator::emptyCache();
              const std::string line = to_json(row, device, backend, layout);
              std::cout << line << std::endl;
              if (json.is_open()) json << line << std::endl;
            }
          }
        }
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_dilated_attention: " << e.what() << std::endl;
    return 1;
  }
}
