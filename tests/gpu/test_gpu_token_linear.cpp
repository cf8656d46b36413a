// token_linears on CUDA (the q, k, v form: one backward node, the input gradient accumulated in
// the GEMMs) against float64 Linear::forward on the CPU: outputs and the gradients of x, every
// weight and bias; bf16 and fp16, token counts that are not multiples of a GEMM tile. And the
// column-sum kernel of the bias gradients against float64. Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/standard/column_sums_cuda.h"
#include "attention/standard/token_linear.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

TEST(GpuTokenLinear, SeveralLayersMatchFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(11);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t tokens : {1, 4099}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " tokens=" + std::to_string(tokens));
      const int64_t E = 256;
      std::vector<torch::nn::Linear> gpu = {
          torch::nn::Linear(torch::nn::LinearOptions(E, E)),
          torch::nn::Linear(torch::nn::LinearOptions(E, E).bias(false)),
          torch::nn::Linear(torch::nn::LinearOptions(E, 3 * E))};
      std::vector<torch::nn::Linear> cpu;
      std::vector<at::Tensor> gpu_params, cpu_params;
      for (auto& layer : gpu) {
        cpu.push_back(torch::nn::Linear(layer->options));
        {
          torch::NoGradGuard no_grad;
          for (auto& p : layer->parameters()) p.normal_(0.0, 0.1);
          layer->to(torch::Device(torch::kCUDA), dtype);
          // The reference gets the rounded values, so only the arithmetic differs.
          const auto from = layer->parameters();
          auto to = cpu.back()->parameters();
          for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i].cpu().to(at::kDouble));
        }
        cpu.back()->to(at::kDouble);
        for (auto& p : layer->parameters()) gpu_params.push_back(p);
        for (auto& p : cpu.back()->parameters()) cpu_params.push_back(p);
      }
      const at::Tensor x_gpu =
          torch::randn({2, tokens, E}, torch::dtype(dtype).device(torch::kCUDA)).requires_grad_();
      const at::Tensor x_cpu = x_gpu.detach().cpu().to(at::kDouble).requires_grad_();
      const std::vector<at::Tensor> got = token_linears(gpu, x_gpu);
      at::Tensor loss_got = at::zeros({}, x_cpu.options()), loss_want = loss_got.clone();
      for (size_t i = 0; i < gpu.size(); ++i) {
        const at::Tensor want = cpu[i]->forward(x_cpu);
        ASSERT_FALSE(torch::isnan(got[i].to(at::kFloat)).any().item<bool>());
        EXPECT_LT(testing::relative_error(got[i], want), 1e-2) << "output " << i;
        const at::Tensor seed = torch::randn_like(want);
        loss_got = loss_got + (got[i].cpu().to(at::kDouble) * seed).sum();
        loss_want = loss_want + (want * seed).sum();
        // The GPU loss's graph runs through got[i] on the GPU (the product's copy is
        // differentiable), so its backward is the token_linears node.
      }
      std::vector<at::Tensor> wrt_got{x_gpu}, wrt_want{x_cpu};
      wrt_got.insert(wrt_got.end(), gpu_params.begin(), gpu_params.end());
      wrt_want.insert(wrt_want.end(), cpu_params.begin(), cpu_params.end());
      const auto dgot = torch::autograd::grad({loss_got}, wrt_got);
      const auto dwant = torch::autograd::grad({loss_want}, wrt_want);
      for (size_t i = 0; i < dgot.size(); ++i) {
        ASSERT_FALSE(torch::isnan(dgot[i].to(at::kFloat)).any().item<bool>()) << "gradient " << i;
        EXPECT_LT(testing::relative_error(dgot[i], dwant[i]), 1e-2) << "gradient " << i;
      }
    }
  }
}

// The bias gradients' column-sum kernel: fp16 and bf16, row counts from one to more than a full
// wave of blocks x 4 rows (and not a multiple of 4), a partly idle last warp (264 columns), the
// training step's [256K, 768]; what it does not take falls back (applies() is false).
TEST(GpuTokenLinear, ColumnSumsMatchFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(13);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{1, 8}, {37, 264}, {4099, 2304}, {262147, 768}}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + std::to_string(rows) + " x " +
                   std::to_string(cols));
      // An offset mean, so a kernel that skips rows is far off (0.1: 256K rows fit in fp16).
      const at::Tensor x =
          torch::randn({rows, cols}, torch::dtype(dtype).device(torch::kCUDA)) + 0.1;
      ASSERT_TRUE(column_sums_kernel_applies(x));
      const at::Tensor got = column_sums_cuda(x);
      ASSERT_EQ(got.scalar_type(), dtype);
      ASSERT_EQ(got.sizes(), at::IntArrayRef({cols}));
      const at::Tensor want = x.cpu().to(at::kDouble).sum(0);
      EXPECT_LT(testing::relative_error(got, want), 1e-2);
    }
  }
  const auto on_gpu = torch::device(torch::kCUDA);
  EXPECT_FALSE(column_sums_kernel_applies(torch::randn({8, 16}, on_gpu)));  // fp32
  EXPECT_FALSE(column_sums_kernel_applies(
      torch::randn({16, 8}, on_gpu.dtype(at::kBFloat16)).t()));  // not contiguous
  EXPECT_FALSE(column_sums_kernel_applies(torch::randn({8, 12}, on_gpu.dtype(at::kBFloat16))));
}

}  // namespace
}  // namespace ra
