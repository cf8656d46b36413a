// The backward targets of the chunk attention shared by the ring and allgather strategies: a dK/dV
// buffer written by the block calls (GradTarget::kOverwrite, never zero-filled first) equals
// zeros plus every block added (kAdd), where calls overlap in key rows, where key chunks get no
// block and where one call covers all; which block-call plans write each key row once; that a
// low-precision target is never summed into; and the CPU form of sum_into_ / accumulate_.
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

TEST(ChunkAttention, WhichPlansWriteEachKeyRowOnce) {
  // Zigzag at P = 4 (rank p holds chunks p and 7 - p): every hop is one call.
  for (int64_t p = 0; p < 4; ++p) {
    for (int64_t m = 0; m < 4; ++m) {
      EXPECT_TRUE(block_calls_write_kv_rows_once(chunks({p, 7 - p}, 16), chunks({m, 7 - m}, 16),
                                                 /*causal=*/true))
          << p << " against " << m;
    }
  }
  // Non-causal: one rectangle over everything.
  EXPECT_TRUE(block_calls_write_kv_rows_once(chunks({0, 2}, 8), chunks({0, 1}, 8), false));
  // Causal q chunks {0, 2} against key chunks {0, 1}: the diagonal (0, 0) and the rectangle
  // chunk 2 x {0, 1} both touch key chunk 0.
  EXPECT_FALSE(block_calls_write_kv_rows_once(chunks({0, 2}, 8), chunks({0, 1}, 8), true));
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
  }
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
  EXPECT_THROW(sum_into_(dst, {}), Error);
}

}  // namespace
}  // namespace ra
