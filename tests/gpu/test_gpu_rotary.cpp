// The fused RoPE kernel (RotaryEmbedding on CUDA tensors) against the op-by-op CPU form:
// values and gradients, fp32 and bf16, a strided input view (as the qkv split hands it over),
// positions far into an 8M-token sequence. Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "runtime/rotary_embedding.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

TEST(GpuRotary, FusedKernelMatchesOpForm) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(5);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t D : {8, 64, 128}) {  // 8: the scalar kernel; 64, 128: 16-byte vectors (bf16)
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " D=" + std::to_string(D));
      const int64_t B = 2, S = 512, H = 3, first = 7 * 1024 * 1024 + 123;
      // A [B, S, 3H, D] buffer sliced like the fused qkv projection: x is a strided view.
      at::Tensor qkv = torch::randn({B, S, 3 * H, D}, torch::dtype(dtype).device(torch::kCUDA));
      at::Tensor x = qkv.narrow(2, H, H).detach().requires_grad_();
      at::Tensor grad = torch::randn({B, S, H, D}, torch::dtype(dtype).device(torch::kCUDA));
      RotaryEmbedding gpu_rope(D), cpu_rope(D);
      at::Tensor got = gpu_rope.rotate(x, first);
      const at::Tensor got_grad = torch::autograd::grad({got}, {x}, {grad})[0];
      ASSERT_EQ(got.sizes(), x.sizes());
      ASSERT_FALSE(torch::isnan(got.to(at::kFloat)).any().item<bool>());

      at::Tensor xr = x.detach().cpu().to(at::kFloat).requires_grad_();
      at::Tensor want = cpu_rope.rotate(xr, first);
      const at::Tensor want_grad =
          torch::autograd::grad({want}, {xr}, {grad.cpu().to(at::kFloat)})[0];
      const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
      EXPECT_LT(testing::relative_error(got, want), tol);
      EXPECT_LT(testing::relative_error(got_grad, want_grad), tol);
    }
  }
}

}  // namespace
}  // namespace ra
