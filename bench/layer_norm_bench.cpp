// LayerNorm kernels on one GPU, each form against the ATen ops a user would otherwise call, on
// the same inputs: plain LN(x) vs at::layer_norm; LN(GELU(a + bias)) vs at::layer_norm(at::gelu(a
// + bias)); {h = r + a, LN(h)} vs r + a then at::layer_norm. Forward alone and backward alone
// (gradients of every input, from one retained graph), median of CUDA-event-timed runs. GB/s
// counts the bytes each form must move at least (one read of every [rows, F] input, one write of
// every [rows, F] output), so it reads as a fraction of the card's bandwidth.
#include <torch/torch.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "attention/standard/layer_norm_op.h"
#include "bench/bench_options.h"
#include "bench/gpu_timing.h"
#include "runtime/cli_values.h"

namespace po = boost::program_options;

namespace {

enum class Form { kPlain, kGelu, kResidual };

struct Inputs {
  at::Tensor a, bias, r, gamma, beta;  // a, r: [rows, F]; the others [F]
};

// The form's outputs ({y} or {y, h}) through ringattn's op (fused) or the ATen ops.
std::vector<at::Tensor> run(const Inputs& in, Form form, bool fused) {
  switch (form) {
    case Form::kGelu:
      return {ra::gelu_layer_norm(in.a, in.bias, in.gamma, in.beta, 1e-5, fused)};
    case Form::kResidual: {
      const ra::ResidualNorm out = ra::add_layer_norm(in.r, in.a, in.gamma, in.beta, 1e-5, fused);
      return {out.normed, out.sum};
    }
    default:
      return {fused ? ra::fast_layer_norm(in.a, in.gamma, in.beta, 1e-5)
                    : at::layer_norm(in.a, {in.a.size(-1)}, in.gamma, in.beta, 1e-5)};
  }
}

std::vector<at::Tensor> leaves(const Inputs& in, Form form) {
  if (form == Form::kGelu) return {in.a, in.bias, in.gamma, in.beta};
  if (form == Form::kResidual) return {in.a, in.r, in.gamma, in.beta};
  return {in.a, in.gamma, in.beta};
}

// [rows, F] tensors each pass must read or write: forward, backward.
std::pair<int, int> full_size_tensors(Form form) {
  if (form == Form::kResidual) return {4, 4};  // r, a -> h, y; dy, dh, h -> dx
  return {2, 3};                               // a -> y; dy, a -> da
}

const char* name(Form form) {
  return form == Form::kGelu ? "gelu+bias" : form == Form::kResidual ? "residual" : "plain";
}

}  // namespace

int main(int argc, char** argv) {
  std::string rows_text = "256K", features_text = "768,3072", dtype_text = "bf16";
  int warmup = 3, iters = 20;
  po::options_description opts("layer_norm_bench options");
  opts.add_options()("help,h", "print this help and exit")(
      "rows", po::value(&rows_text)->default_value(rows_text),
      "rows (tokens); K, M = powers of 1024")(
      "features", po::value(&features_text)->default_value(features_text),
      "feature counts F, comma-separated (multiples of 8 up to 8192 take the kernels)")(
      "dtype", po::value(&dtype_text)->default_value(dtype_text), "bf16 | fp16")(
      "warmup", po::value(&warmup)->default_value(warmup), "untimed runs first")(
      "iters", po::value(&iters)->default_value(iters), "timed runs (the median is printed)");
  po::variables_map vm;
  try {
    if (!ra::bench::parse_options(argc, argv, opts, vm)) return 0;
  } catch (const po::error& e) {
    std::fprintf(stderr, "layer_norm_bench: error: %s (see --help)\n", e.what());
    return 2;
  }
  try {
    if (!torch::cuda::is_available()) throw std::runtime_error("no CUDA device");
    if (dtype_text != "bf16" && dtype_text != "fp16")
      throw std::runtime_error("--dtype = '" + dtype_text + "': allowed: bf16, fp16");
    if (warmup < 0 || iters < 1) throw std::runtime_error("--warmup >= 0 and --iters >= 1");
    const int64_t rows = ra::parse_token_count(rows_text, "--rows");
    const std::vector<int64_t> features = ra::parse_int_list(features_text, "--features");
    const auto options = torch::dtype(dtype_text == "bf16" ? at::kBFloat16 : at::kHalf)
                             .device(ra::bench::current_cuda_device());
    std::printf("%-10s %6s %-6s %10s %8s %10s %8s\n", "form", "F", "impl", "fwd ms", "GB/s",
                "bwd ms", "GB/s");
    for (const int64_t F : features) {
      for (Form form : {Form::kPlain, Form::kGelu, Form::kResidual}) {
        const Inputs in{torch::randn({rows, F}, options).requires_grad_(),
                        (0.1 * torch::randn({F}, options)).requires_grad_(),
                        torch::randn({rows, F}, options).requires_grad_(),
                        (1 + 0.1 * torch::randn({F}, options)).requires_grad_(),
                        torch::randn({F}, options).requires_grad_()};
        const double bytes = double(rows) * double(F) * double(in.a.element_size());
        const auto [fwd_tensors, bwd_tensors] = full_size_tensors(form);
        for (bool fused : {true, false}) {
          const double fwd_ms = ra::bench::median_step_ms(
              [&] {
                torch::NoGradGuard no_grad;
                run(in, form, fused);
              },
              warmup, iters);
          const std::vector<at::Tensor> outs = run(in, form, fused);
          std::vector<at::Tensor> seeds;
          for (const at::Tensor& out : outs) seeds.push_back(torch::randn_like(out));
          const double bwd_ms = ra::bench::median_step_ms(
              [&] { torch::autograd::grad(outs, leaves(in, form), seeds, /*retain_graph=*/true); },
              warmup, iters);
          std::printf("%-10s %6ld %-6s %10.3f %8.0f %10.3f %8.0f\n", name(form), long(F),
                      fused ? "ours" : "aten", fwd_ms, fwd_tensors * bytes / fwd_ms / 1e6, bwd_ms,
                      bwd_tensors * bytes / bwd_ms / 1e6);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "layer_norm_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
