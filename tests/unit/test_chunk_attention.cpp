// The backward targets of the chunk attention shared by the ring and allgather strategies: a dK/dV
// buffer written by the block calls (GradTarget::kOverwrite, never zero-filled first) equals
// zeros plus every block added (kAdd), where calls overlap in key rows, where key chunks get no
// block and where one call covers all, and the unmerged block outputs merged once per row
// (member_block_outputs) equal the running merge; the unsummed block gradients
// (member_block_gradients) summed by sum_pieces_into_ equal them too; a low-precision target is
// never summed into, and is written rounded once; and the CPU form of sum_into_ / accumulate_ /
// sum_pieces_into_.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <vector>

#include "attention/ring/chunk_attention.h"
#include "attention/standard/accumulate.h"
#include "runtime/error.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

std::vector<KeptChunk> chunks(const std::vector<int64_t>& ids, int64_t count) {
  std::vector<KeptChunk> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    out.push_back({ids[i], int64_t(i) * count, count});
  }
  return out;
}

struct Hop {
  std::vector<int64_t> q_ids, kv_ids;
  bool causal;
};

TEST(ChunkAttention, OverwrittenGradientsEqualZerosPlusEveryBlock) {
  torch::manual_seed(3);
  const int64_t B = 2, h = 3, D = 8, L = 5;
  const auto f64 = torch::dtype(torch::kDouble);
  // Overlapping calls; key chunk 3 attended by no query chunk (zero rows); one call for all.
  for (const Hop& hop : {Hop{{0, 2}, {0, 1}, true}, Hop{{1, 2}, {0, 3, 1}, true},
                         Hop{{1, 6}, {2, 5}, true}, Hop{{0, 2}, {0, 1}, false}}) {
    const auto qc = chunks(hop.q_ids, L), kc = chunks(hop.kv_ids, L);
    const int64_t nq = L * int64_t(qc.size()), nk = L * int64_t(kc.size());
    const at::Tensor q = torch::randn({B, h, nq, D}, f64);
    const at::Tensor kv = torch::randn({2, B, h, nk, D}, f64);
    PartialAttention acc = empty_partial(q);
    attend_member(q, qc, kv, kc, at::Tensor(), 0.3, hop.causal, acc);
    // The blocks unmerged, then merged once per row, equal the running merge.
    PartialAttention once{torch::full_like(q, std::nan("")),
                          torch::full_like(acc.lse, std::nan("")), true};
    merge_pieces_into_(once.out, once.lse,
                       member_block_outputs(q, qc, kv, kc, at::Tensor(), 0.3, hop.causal));
    EXPECT_LT(testing::relative_error(once.out, acc.out), 1e-12);
    EXPECT_TRUE(torch::equal(torch::isfinite(once.lse), torch::isfinite(acc.lse)));
    EXPECT_LT((once.lse - acc.lse).nan_to_num(0.0).abs().max().item<double>(), 1e-12);
    EXPECT_THROW(attend_member(q, qc, kv, kc, at::Tensor(), 0.3, hop.causal, once), Error);
    const at::Tensor dout = torch::randn({B, h, nq, D}, f64);

    at::Tensor dq_add = torch::zeros_like(q), dkv_add = torch::zeros_like(kv);
    attend_member_backward(q, acc.out, acc.lse, dout, qc, kv, kc, at::Tensor(), 0.3, hop.causal,
                           dq_add, dkv_add, GradTarget::kAdd);
    at::Tensor dq = torch::zeros_like(q);
    at::Tensor dkv = torch::full_like(kv, std::numeric_limits<double>::quiet_NaN());
    attend_member_backward(q, acc.out, acc.lse, dout, qc, kv, kc, at::Tensor(), 0.3, hop.causal, dq,
                           dkv, GradTarget::kOverwrite);
    ASSERT_FALSE(torch::isnan(dkv).any().item<bool>()) << "a key row was left unwritten";
    EXPECT_LT(testing::relative_error(dkv, dkv_add), 1e-12);
    EXPECT_LT(testing::relative_error(dq, dq_add), 1e-12);
    EXPECT_GT(dkv.abs().sum().item<double>(), 0.0);

    // The same block gradients unsummed, then summed per row (fresh targets, poisoned).
    const MemberGradients pieces =
        member_block_gradients(q, acc.out, acc.lse, dout, qc, kv, kc, 0.3, hop.causal);
    at::Tensor dq_sum = torch::full_like(q, std::numeric_limits<double>::quiet_NaN());
    at::Tensor dkv_sum = torch::full_like(kv, std::numeric_limits<double>::quiet_NaN());
    sum_pieces_into_(dq_sum, pieces.dq);
    sum_pieces_into_(dkv_sum[0], pieces.dk);
    sum_pieces_into_(dkv_sum[1], pieces.dv);
    ASSERT_FALSE(torch::isnan(dkv_sum).any().item<bool>()) << "a key row was left unwritten";
    ASSERT_FALSE(torch::isnan(dq_sum).any().item<bool>()) << "a query row was left unwritten";
    EXPECT_LT(testing::relative_error(dkv_sum, dkv_add), 1e-12);
    EXPECT_LT(testing::relative_error(dq_sum, dq_add), 1e-12);
  }
}

// Pieces of a [A0, A1, n, D] gradient: overlapping ones summed, rows none covers zero-filled
// (kept when accumulating), every element rounded once to a lower-precision target.
TEST(ChunkAttention, SumPiecesIntoSumsEachRowsCoveringPieces) {
  torch::manual_seed(6);
  const int64_t n = 20;
  auto piece = [](int64_t start, int64_t count) {
    return RowPiece{start, torch::randn({2, 3, count, 8}).to(torch::kBFloat16)};
  };
  // Rows 0-2 and 17-19: none; 3-7: one; 5-9 and 8-15: overlaps of two and three.
  const std::vector<RowPiece> pieces = {piece(3, 5), piece(5, 5), piece(8, 8), piece(6, 4)};
  at::Tensor want = torch::zeros({2, 3, n, 8}, torch::kFloat);
  for (const RowPiece& p : pieces)
    want.narrow(2, p.start, p.rows.size(2)) += p.rows.to(torch::kFloat);

  at::Tensor dst = torch::full({2, 3, n, 8}, std::numeric_limits<float>::quiet_NaN());
  sum_pieces_into_(dst, pieces);
  EXPECT_TRUE(torch::allclose(dst, want, 0, 1e-6));
  at::Tensor low = torch::full({2, 3, n, 8}, 7.0, torch::kBFloat16);
  sum_pieces_into_(low, pieces);
  EXPECT_TRUE(torch::equal(low, want.to(torch::kBFloat16))) << "rounded more than once";

  at::Tensor base = torch::randn({2, 3, n, 8});
  at::Tensor acc = base.clone();
  sum_pieces_into_(acc, pieces, /*accumulate=*/true);
  EXPECT_TRUE(torch::allclose(acc, base + want, 0, 1e-6));
  EXPECT_THROW(sum_pieces_into_(low, pieces, /*accumulate=*/true), Error);
  EXPECT_THROW(sum_pieces_into_(dst, {piece(18, 3)}), Error);  // rows 18-20 of 20
}

// A bf16 target holds one block's gradients exactly only if no two blocks meet in it: where
// they would (causal {0, 2} x {0, 1}), the call refuses instead of summing rounded values.
TEST(ChunkAttention, LowPrecisionTargetIsNeverSummedInto) {
  torch::manual_seed(4);
  const int64_t B = 1, h = 2, D = 8, L = 4;
  const auto qc = chunks({0, 2}, L), kc = chunks({0, 1}, L);
  const at::Tensor q = torch::randn({B, h, 2 * L, D});
  const at::Tensor kv = torch::randn({2, B, h, 2 * L, D});
  PartialAttention acc = empty_partial(q);
  attend_member(q, qc, kv, kc, at::Tensor(), 0.3, true, acc);
  at::Tensor dq = torch::zeros_like(q);
  at::Tensor dkv = torch::empty({2, B, h, 2 * L, D}, torch::kBFloat16);
  EXPECT_THROW(attend_member_backward(q, acc.out, acc.lse, torch::randn_like(q), qc, kv, kc,
                                      at::Tensor(), 0.3, true, dq, dkv, GradTarget::kOverwrite),
               Error);
}

TEST(ChunkAttention, SumIntoAndAccumulateOnCpu) {
  torch::manual_seed(5);
  std::vector<at::Tensor> srcs;
  at::Tensor want = torch::zeros({2, 3, 4, 5, 8}, torch::kDouble);
  for (int i = 0; i < 3; ++i) {
    srcs.push_back(torch::randn({2, 3, 4, 5, 8}).to(torch::kBFloat16));
    want += srcs.back().to(torch::kDouble);
  }
  at::Tensor dst = torch::full({2, 3, 4, 5, 8}, std::numeric_limits<float>::quiet_NaN());
  sum_into_(dst, srcs);
  EXPECT_LT(testing::relative_error(dst, want), 1e-6);
  accumulate_(dst, srcs[0]);
  EXPECT_LT(testing::relative_error(dst, want + srcs[0].to(torch::kDouble)), 1e-6);
  sum_into_(dst, srcs, /*accumulate=*/true);
  EXPECT_LT(testing::relative_error(dst, 2 * want + srcs[0].to(torch::kDouble)), 1e-6);
  EXPECT_THROW(sum_into_(dst, {}), Error);
  // A bf16 target: the fp32 sum rounded once, never accumulated into.
  at::Tensor low = torch::empty({2, 3, 4, 5, 8}, torch::kBFloat16);
  sum_into_(low, srcs);
  at::Tensor sum32 =
      srcs[0].to(torch::kFloat) + srcs[1].to(torch::kFloat) + srcs[2].to(torch::kFloat);
  EXPECT_TRUE(torch::equal(low, sum32.to(torch::kBFloat16)));
  EXPECT_THROW(sum_into_(low, srcs, /*accumulate=*/true), Error);
}

}  // namespace
}  // namespace ra
