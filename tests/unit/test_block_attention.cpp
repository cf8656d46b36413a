// Block-attention primitive: forward (out, lse) and the flash-identity backward against
// autograd of the dense masked softmax, for one block and for two blocks merged by LSE (the
// way ring attention uses it), in float64 and float32.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "attention/standard/block_attention.h"
#include "attention/standard/lse_merge.h"
#include "runtime/error.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

using testing::relative_error;
using testing::tolerance_for;

// Dense softmax over the concatenated keys with autograd; mask [Lq, Lk] true = attended.
struct Dense {
  at::Tensor out, lse;
};
Dense dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
            const at::Tensor& allowed) {
  at::Tensor s = torch::matmul(q, k.transpose(-1, -2)) * scale;
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  at::Tensor lse = torch::logsumexp(s, -1);
  return {torch::matmul(torch::softmax(s, -1), v), lse};
}

class BlockAttentionTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(BlockAttentionTest, OneBlockMatchesAutogradBothMasks) {
  const auto dtype = GetParam();
  torch::manual_seed(3);
  for (BlockMask mask : {BlockMask::kNone, BlockMask::kCausalDiagonal}) {
    const int64_t N = 2, H = 3, L = 7, D = 5;
    auto opts = torch::TensorOptions().dtype(torch::kDouble);
    at::Tensor q = torch::randn({N, H, L, D}, opts).requires_grad_();
    at::Tensor k = torch::randn({N, H, L, D}, opts).requires_grad_();
    at::Tensor v = torch::randn({N, H, L, D}, opts).requires_grad_();
    at::Tensor dout = torch::randn({N, H, L, D}, opts);
    at::Tensor allowed = mask == BlockMask::kNone ? torch::ones({L, L}, torch::kBool)
                                                  : torch::ones({L, L}, torch::kBool).tril();
    Dense want = dense(q, k, v, 0.4, allowed);
    auto grads = torch::autograd::grad({want.out}, {q, k, v}, {dout});

    BlockForward got = block_attention_forward(q.detach().to(dtype), k.detach().to(dtype),
                                               v.detach().to(dtype), 0.4, mask);
    const double tol = tolerance_for(dtype);
    EXPECT_LT(relative_error(got.out, want.out), tol);
    EXPECT_LT(relative_error(got.lse, want.lse), tol);
    BlockGradients g =
        block_attention_backward(q.detach().to(dtype), k.detach().to(dtype), v.detach().to(dtype),
                                 got.out, got.lse, dout.to(dtype), 0.4, mask);
    EXPECT_LT(relative_error(g.dq, grads[0]), tol);
    EXPECT_LT(relative_error(g.dk, grads[1]), tol);
    EXPECT_LT(relative_error(g.dv, grads[2]), tol);
  }
}

// Two key blocks (a full one and a causal diagonal one) merged by LSE, and the backward of
// each block with the merged out / lse: equals one softmax over the union of keys.
TEST_P(BlockAttentionTest, TwoBlocksMergedEqualJointSoftmax) {
  const auto dtype = GetParam();
  torch::manual_seed(4);
  const int64_t N = 1, H = 2, L = 6, D = 4;
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  at::Tensor q = torch::randn({N, H, L, D}, opts).requires_grad_();
  at::Tensor k = torch::randn({N, H, 2 * L, D}, opts).requires_grad_();
  at::Tensor v = torch::randn({N, H, 2 * L, D}, opts).requires_grad_();
  at::Tensor dout = torch::randn({N, H, L, D}, opts);
  // Keys 0..L-1: an earlier chunk (all attended); keys L..2L-1: the same chunk (causal).
  at::Tensor allowed =
      torch::cat({torch::ones({L, L}, torch::kBool), torch::ones({L, L}, torch::kBool).tril()}, 1);
  Dense want = dense(q, k, v, 0.5, allowed);
  auto grads = torch::autograd::grad({want.out}, {q, k, v}, {dout});

  at::Tensor qd = q.detach().to(dtype), kd = k.detach().to(dtype), vd = v.detach().to(dtype);
  BlockForward a =
      block_attention_forward(qd, kd.narrow(2, 0, L), vd.narrow(2, 0, L), 0.5, BlockMask::kNone);
  BlockForward b = block_attention_forward(qd, kd.narrow(2, L, L), vd.narrow(2, L, L), 0.5,
                                           BlockMask::kCausalDiagonal);
  MergedAttention merged = merge_by_lse({a.out, b.out}, {a.lse, b.lse});
  const double tol = tolerance_for(dtype);
  EXPECT_LT(relative_error(merged.out, want.out), tol);
  EXPECT_LT(relative_error(merged.lse, want.lse), tol);
  BlockGradients ga =
      block_attention_backward(qd, kd.narrow(2, 0, L), vd.narrow(2, 0, L), merged.out, merged.lse,
                               dout.to(dtype), 0.5, BlockMask::kNone);
  BlockGradients gb =
      block_attention_backward(qd, kd.narrow(2, L, L), vd.narrow(2, L, L), merged.out, merged.lse,
                               dout.to(dtype), 0.5, BlockMask::kCausalDiagonal);
  EXPECT_LT(relative_error(ga.dq + gb.dq, grads[0]), tol);
  EXPECT_LT(relative_error(torch::cat({ga.dk, gb.dk}, 2), grads[1]), tol);
  EXPECT_LT(relative_error(torch::cat({ga.dv, gb.dv}, 2), grads[2]), tol);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BlockAttentionTest,
                         ::testing::Values(torch::kDouble, torch::kFloat));

TEST(BlockAttention, RejectsMismatchedShapes) {
  at::Tensor q = torch::randn({1, 2, 3, 4}), k = torch::randn({1, 2, 5, 4});
  EXPECT_THROW(block_attention_forward(q, k, k, 1.0, BlockMask::kCausalDiagonal), Error);
  EXPECT_THROW(block_attention_forward(q, k, torch::randn({1, 2, 4, 4}), 1.0, BlockMask::kNone),
               Error);
}

}  // namespace
}  // namespace ra
