// merge_by_lse: merging attention over disjoint key sets equals attention over their union,
// forward and gradients; all-masked rows stay finite; the in-place and write-once (pieces) forms.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "attention/standard/lse_merge.h"
#include "runtime/error.h"
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

TEST(LseMerge, InPlaceMergeEqualsMergeByLse) {
  const double inf = std::numeric_limits<double>::infinity();
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto opts = torch::TensorOptions().dtype(dtype);
    // Rows: both finite, only the accumulator, only the block, neither.
    auto out1 = torch::randn({4, 3}, opts), out2 = torch::randn({4, 3}, opts);
    auto lse1 = torch::tensor({0.5, 1.0, -inf, -inf}, opts);
    auto lse2 = torch::tensor({2.0, -inf, 0.25, -inf}, opts);
    auto want = merge_by_lse({out1, out2}, {lse1, lse2});
    // Into strided views of a larger accumulator, starting from the empty state.
    auto acc_out = torch::zeros({3, 4}, opts).t(), acc_lse = torch::full({4, 2}, -inf, opts);
    merge_by_lse_(acc_out, acc_lse.select(1, 1), out1, lse1);
    merge_by_lse_(acc_out, acc_lse.select(1, 1), out2, lse2);
    const double tol = dtype == torch::kDouble ? 1e-14 : 1e-6;
    EXPECT_LT(testing::relative_error(acc_out, want.out), tol);
    EXPECT_TRUE(torch::equal(torch::isfinite(acc_lse.select(1, 1)), torch::isfinite(want.lse)));
    EXPECT_LT((acc_lse.select(1, 1) - want.lse).nan_to_num(0.0).abs().max().item<double>(), tol);
    EXPECT_TRUE(torch::isfinite(acc_out).all().item<bool>());
    EXPECT_EQ(acc_out[3].abs().sum().item<double>(), 0.0);
    EXPECT_EQ(acc_lse.select(1, 0).max().item<double>(), -inf);  // the other column untouched
  }
}

// Pieces of a [A0, A1, n, D] output written once: per row the merge of the pieces that cover it
// (overlapping ones, one piece, none: 0 and -inf), the same as merge_by_lse of those rows; a
// bf16 output gets the float merge rounded once.
TEST(LseMerge, MergePiecesIntoWritesEachRowsMerge) {
  const double inf = std::numeric_limits<double>::infinity();
  torch::manual_seed(8);
  const int64_t n = 12;
  auto piece = [&](int64_t start, int64_t count) {
    OutputPiece p{start, torch::randn({2, 3, count, 8}), torch::randn({2, 3, count}) * 2};
    p.lse.select(2, 0).fill_(-inf);  // a row this piece did not attend
    return p;
  };
  // Rows 0-1 and 10-11: none; 2-3: one; 4-9: two or three.
  const std::vector<OutputPiece> pieces = {piece(2, 6), piece(4, 6), piece(6, 2)};
  at::Tensor out = torch::full({2, 3, n, 8}, std::nan("")), lse = torch::full({2, 3, n}, 7.0);
  merge_pieces_into_(out, lse, pieces);
  at::Tensor low = torch::full({2, 3, n, 8}, 5.0, torch::kBFloat16),
             low_lse = torch::empty_like(lse);
  merge_pieces_into_(low, low_lse, pieces);
  for (int64_t row = 0; row < n; ++row) {
    std::vector<at::Tensor> outs, lses;
    for (const OutputPiece& p : pieces) {
      if (p.start <= row && row < p.start + p.out.size(2)) {
        outs.push_back(p.out.select(2, row - p.start));
        lses.push_back(p.lse.select(2, row - p.start));
      }
    }
    const at::Tensor got = out.select(2, row), got_lse = lse.select(2, row);
    if (outs.empty()) {
      EXPECT_EQ(got.abs().max().item<float>(), 0.f) << "row " << row;
      EXPECT_EQ(got_lse.max().item<float>(), -inf) << "row " << row;
      continue;
    }
    const MergedAttention want = merge_by_lse(outs, lses);
    EXPECT_TRUE(torch::allclose(got, want.out, 1e-6, 1e-6)) << "row " << row;
    EXPECT_TRUE(torch::equal(torch::isfinite(got_lse), torch::isfinite(want.lse))) << "row " << row;
    EXPECT_LT((got_lse - want.lse).nan_to_num(0.0).abs().max().item<double>(), 1e-6)
        << "row " << row;
    EXPECT_TRUE(torch::equal(low.select(2, row), got.to(torch::kBFloat16))) << "row " << row;
  }
  EXPECT_THROW(merge_pieces_into_(out, lse, {piece(10, 3)}), Error);  // rows 10-12 of 12
}

}  // namespace
}  // namespace ra
