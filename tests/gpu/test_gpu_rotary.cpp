// The fused RoPE kernel (RotaryEmbedding on CUDA tensors) against the op-by-op CPU form in
// float64 (float64 angles and tables, so the reference has no fp32 rounding of its own):
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

      at::Tensor xr = x.detach().cpu().to(at::kDouble).requires_grad_();
      at::Tensor want = cpu_rope.rotate(xr, first);
      ASSERT_EQ(want.scalar_type(), at::kDouble);
      const at::Tensor want_grad =
          torch::autograd::grad({want}, {xr}, {grad.cpu().to(at::kDouble)})[0];
      const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
      EXPECT_LT(testing::relative_error(got, want), tol);
      EXPECT_LT(testing::relative_error(got_grad, want_grad), tol);
    }
  }
}

// q and k in one launch (RotaryEmbedding::encode_query_key): bitwise what each alone gives, values
// and gradients, as the per-element math is the same; also for a query and key of different
// strides (two launches) and for one gradient only (the other output unused).
TEST(GpuRotary, QueryAndKeyInOneLaunchEqualEachAlone) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(6);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t D : {8, 64}) {
      for (bool same_strides : {true, false}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + " D=" + std::to_string(D) +
                     (same_strides ? "" : " different strides"));
        const int64_t B = 2, S = 300, H = 3, first = 5 * 1024 * 1024 + 17;
        const auto options = torch::dtype(dtype).device(torch::kCUDA);
        at::Tensor qkv = torch::randn({B, S, 3 * H, D}, options);
        at::Tensor q = qkv.narrow(2, 0, H).detach().requires_grad_();
        at::Tensor k = (same_strides ? qkv.narrow(2, H, H) : torch::randn({B, S, H, D}, options))
                           .detach()
                           .requires_grad_();
        const at::Tensor dq = torch::randn({B, S, H, D}, options),
                         dk = torch::randn({B, S, H, D}, options);
        RotaryEmbedding rope(D);
        const auto [q_rot, k_rot] = rope.encode_query_key(q, k, first);
        const at::Tensor q_alone = rope.encode_query(q, first), k_alone = rope.encode_key(k, first);
        EXPECT_TRUE(q_rot.equal(q_alone));
        EXPECT_TRUE(k_rot.equal(k_alone));
        const auto together = torch::autograd::grad({q_rot, k_rot}, {q, k}, {dq, dk});
        const auto alone = torch::autograd::grad({q_alone, k_alone}, {q, k}, {dq, dk});
        EXPECT_TRUE(together[0].equal(alone[0]));
        EXPECT_TRUE(together[1].equal(alone[1]));
        // Only the key's output used: the query gets no gradient, the key the same one.
        const auto [q_rot2, k_rot2] = rope.encode_query_key(q, k, first);
        const auto key_only =
            torch::autograd::grad({k_rot2}, {q, k}, {dk}, {}, false, /*allow_unused=*/true);
        EXPECT_FALSE(key_only[0].defined());
        EXPECT_TRUE(key_only[1].equal(alone[1]));
      }
    }
  }
}

}  // namespace
}  // namespace ra
