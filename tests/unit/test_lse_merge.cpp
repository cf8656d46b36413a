// merge_by_lse: merging attention over disjoint key sets equals attention over their union,
// forward and gradients; all-masked rows stay finite.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "attention/standard/lse_merge.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

// Attention of q [N, D] over keys k, v [M, D]: (out [N, D], lse [N]).
std::pair<at::Tensor, at::Tensor> attend(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v) {
  auto s = q.matmul(k.t());
  auto lse = s.logsumexp(-1);
  return {(s - lse.unsqueeze(-1)).exp().matmul(v), lse};
}

TEST(LseMerge, ThreeBlocksEqualOneJointSoftmax) {
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto q = torch::randn({10, 8}, opts).requires_grad_();
  auto k = torch::randn({30, 8}, opts).requires_grad_();
  auto v = torch::randn({30, 8}, opts).requires_grad_();
  std::vector<at::Tensor> outs, lses;
  for (int b = 0; b < 3; ++b) {
    auto [o, l] = attend(q, k.narrow(0, 10 * b, 10), v.narrow(0, 10 * b, 10));
    outs.push_back(o), lses.push_back(l);
  }
  auto merged = merge_by_lse(outs, lses);
  auto [want_out, want_lse] = attend(q, k, v);
  EXPECT_LT(testing::relative_error(merged.out, want_out), 1e-12);
  EXPECT_LT(testing::relative_error(merged.lse, want_lse), 1e-12);
  auto g = torch::randn({10, 8}, opts);
  auto got = torch::autograd::grad({merged.out}, {q, k, v}, {g});
  auto want = torch::autograd::grad({want_out}, {q, k, v}, {g});
  for (int i = 0; i < 3; ++i) EXPECT_LT(testing::relative_error(got[i], want[i]), 1e-12);
}

TEST(LseMerge, AllMaskedRowsGiveZeroAndFiniteGradients) {
  const double inf = std::numeric_limits<double>::infinity();
  auto out1 = torch::randn({4, 3}, torch::kDouble).requires_grad_();
  auto out2 = torch::randn({4, 3}, torch::kDouble).requires_grad_();
  auto lse1 = torch::tensor({0.5, -inf, 1.0, -inf}, torch::kDouble).requires_grad_();
  auto lse2 = torch::tensor({-inf, -inf, 2.0, 0.0}, torch::kDouble).requires_grad_();
  auto merged = merge_by_lse({out1, out2}, {lse1, lse2});
  EXPECT_EQ(merged.out[1].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(merged.lse[1].item<double>(), -inf);
  EXPECT_TRUE(torch::allclose(merged.out[0], out1[0]));
  EXPECT_TRUE(torch::allclose(merged.out[3], out2[3]));
  merged.out.sum().backward();
  for (auto* t : {&out1, &out2, &lse1, &lse2})
    EXPECT_TRUE(torch::isfinite(t->grad()).all().item<bool>());
}

}  // namespace
}  // namespace ra
