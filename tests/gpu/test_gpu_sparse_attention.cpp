// The block-sparse CUDA kernels (through the "sparse" variant on CUDA tensors) against the
// float64 dense masked reference: forward, lse and dq/dk/dv at the dtype's tolerance, every
// pattern, causal and not, fp16/bf16, head dims 64/128, block sizes 64/128, GQA. Skips without
// a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "attention/factory.h"
#include "tests/support/dense_reference.h"
#include "tests/support/sparse_cases.h"
#include "tests/support/sparse_token_mask.h"

namespace ra {
namespace {

struct GpuCase {
  at::ScalarType dtype;
  int64_t head_dim, block_size, heads, kv_heads;
};

TEST(GpuSparseAttention, KernelsMatchDenseReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(31);
  // D 128 / block 128 runs the wgmma forward and backward on compute capability 9.0.
  const GpuCase gpu_cases[] = {{at::kBFloat16, 128, 64, 4, 2},
                               {at::kHalf, 64, 128, 2, 2},
                               {at::kBFloat16, 64, 128, 2, 1},
                               {at::kBFloat16, 128, 128, 4, 2}};
  constexpr int64_t B = 2, S = 1024;
  for (const auto& g : gpu_cases) {
    for (const auto& c : testing::sparse_pattern_cases(S, g.block_size)) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(c.name + (causal ? " causal" : "") + " D=" + std::to_string(g.head_dim) +
                     " b=" + std::to_string(g.block_size));
        auto opts = torch::TensorOptions().dtype(g.dtype).device(torch::kCUDA);
        at::Tensor q = torch::randn({B, S, g.heads, g.head_dim}, opts).requires_grad_();
        at::Tensor k = torch::randn({B, S, g.kv_heads, g.head_dim}, opts).requires_grad_();
        at::Tensor v = torch::randn({B, S, g.kv_heads, g.head_dim}, opts).requires_grad_();
        at::Tensor grad = torch::randn({B, S, g.heads, g.head_dim}, opts);
        AttentionSpec spec;
        spec.attention = testing::sparse_test_attention(S, causal);
        spec.sparse = c.sparse;
        AttentionResult got = make_attention("sparse", spec)->forward(q, k, v);
        auto gr = torch::autograd::grad({got.out}, {q, k, v}, {grad});

        auto to_ref = [](const at::Tensor& t) {
          return t.detach().to(torch::kCPU, at::kDouble).requires_grad_();
        };
        at::Tensor qd = to_ref(q), kd = to_ref(k), vd = to_ref(v);
        at::Tensor mask =
            testing::sparse_token_mask(c.sparse, spec.attention, S).to(at::kDouble).unsqueeze(0);
        auto want = testing::dense_attention_with_counts(mask, qd, kd, vd,
                                                         1.0 / std::sqrt(double(g.head_dim)));
        auto gw = torch::autograd::grad({want.out}, {qd, kd, vd}, {grad.cpu().to(at::kDouble)});
        const double tol = testing::tolerance_for(g.dtype);
        EXPECT_LT(testing::relative_error(got.out, want.out), tol);
        EXPECT_LT(testing::relative_error(got.lse, want.lse), tol);
        EXPECT_LT(testing::relative_error(gr[0], gw[0]), tol);
        EXPECT_LT(testing::relative_error(gr[1], gw[1]), tol);
        EXPECT_LT(testing::relative_error(gr[2], gw[2]), tol);
      }
    }
  }
}

}  // namespace
}  // namespace ra
