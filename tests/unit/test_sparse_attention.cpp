// Block-sparse attention (factory "sparse") forward and gradients against the float64 dense
// masked reference softmax(q k^T s + mask) v, with the mask from the brute-force token builder:
// every pattern, causal and not, float64/float32/bfloat16, GQA, rows longer than one chunk.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "attention/factory.h"
#include "attention/sparse/sparse_dilated_attention.h"
#include "attention/standard/multihead_dilated_attention.h"
#include "runtime/error.h"
#include "tests/support/dense_reference.h"
#include "tests/support/sparse_cases.h"
#include "tests/support/sparse_token_mask.h"

namespace ra {
namespace {

using testing::sparse_pattern_cases;
using testing::sparse_test_attention;

struct Errors {
  double out, lse, dq, dk, dv;
};

// Runs the sparse variant and the dense reference on the same fresh random inputs.
Errors compare(const SparseConfig& sparse, const DilatedAttentionConfig& attention,
               at::ScalarType dtype, int64_t B, int64_t S, int64_t H, int64_t Hkv, int64_t D) {
  auto opts = torch::TensorOptions().dtype(dtype);
  at::Tensor q = torch::randn({B, S, H, D}, opts).requires_grad_();
  at::Tensor k = torch::randn({B, S, Hkv, D}, opts).requires_grad_();
  at::Tensor v = torch::randn({B, S, Hkv, D}, opts).requires_grad_();
  at::Tensor grad = torch::randn({B, S, H, D}, opts);

  AttentionSpec spec;
  spec.attention = attention;
  spec.sparse = sparse;
  auto variant = make_attention("sparse", spec);
  AttentionResult got = variant->forward(q, k, v);
  EXPECT_EQ(got.out.scalar_type(), dtype);
  EXPECT_EQ(got.lse.scalar_type(), dtype == at::kDouble ? at::kDouble : at::kFloat);
  auto g = torch::autograd::grad({got.out}, {q, k, v}, {grad});

  at::Tensor qd = q.detach().to(at::kDouble).requires_grad_();
  at::Tensor kd = k.detach().to(at::kDouble).requires_grad_();
  at::Tensor vd = v.detach().to(at::kDouble).requires_grad_();
  at::Tensor mask = testing::sparse_token_mask(sparse, attention, S).to(at::kDouble).unsqueeze(0);
  auto want = testing::dense_attention_with_counts(mask, qd, kd, vd, 1.0 / std::sqrt(double(D)));
  auto gw = torch::autograd::grad({want.out}, {qd, kd, vd}, {grad.to(at::kDouble)});
  return {testing::relative_error(got.out, want.out), testing::relative_error(got.lse, want.lse),
          testing::relative_error(g[0], gw[0]), testing::relative_error(g[1], gw[1]),
          testing::relative_error(g[2], gw[2])};
}

void expect_within(const Errors& e, double tol) {
  EXPECT_LT(e.out, tol);
  EXPECT_LT(e.lse, tol);
  EXPECT_LT(e.dq, tol);
  EXPECT_LT(e.dk, tol);
  EXPECT_LT(e.dv, tol);
}

TEST(SparseAttention, EveryPatternFloat64ForwardAndGradients) {
  torch::manual_seed(11);
  for (const auto& c : sparse_pattern_cases(256, 16)) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(c.name + (causal ? " causal" : ""));
      expect_within(
          compare(c.sparse, sparse_test_attention(256, causal), at::kDouble, 2, 256, 2, 2, 8),
          1e-10);
    }
  }
}

TEST(SparseAttention, Float32AndGqa) {
  torch::manual_seed(12);
  for (const auto& c : sparse_pattern_cases(128, 16)) {
    SCOPED_TRACE(c.name);
    expect_within(compare(c.sparse, sparse_test_attention(128, true), at::kFloat, 1, 128, 4, 2, 16),
                  1e-5);
  }
}

TEST(SparseAttention, BFloat16) {
  torch::manual_seed(13);
  auto c = sparse_pattern_cases(128, 16)[2];
  expect_within(
      compare(c.sparse, sparse_test_attention(128, false), at::kBFloat16, 1, 128, 2, 1, 16), 1e-2);
}

TEST(SparseAttention, RowsLongerThanOneChunkAreOneJointSoftmax) {
  // 48 key blocks in the global rows: three chunks merged online.
  torch::manual_seed(14);
  static_assert(kKeyBlocksPerChunk < 48);
  SparseConfig s;
  s.block_size = 16;
  s.pattern = SparsePattern::kGlobalLocal;
  s.window = 16;
  s.global_tokens = 16;
  for (bool causal : {false, true}) {
    expect_within(compare(s, sparse_test_attention(768, causal), at::kDouble, 1, 768, 1, 1, 8),
                  1e-10);
  }
}

TEST(SparseAttention, MultiheadWithAFullLayoutEqualsStandardDenseAttention) {
  // A window covering the whole sequence makes every block active: dense (causal) attention,
  // which the standard variant computes with one branch (w = S, r = 1).
  torch::manual_seed(15);
  MultiheadConfig c;
  c.embed_dim = 32;
  c.num_heads = 4;
  c.attention.segment_lengths = {64};
  c.attention.dilation_rates = {1};
  c.attention.causal = true;
  AttentionSpec spec;
  spec.attention = c.attention;
  spec.sparse.block_size = 16;
  spec.sparse.window = 64;
  MultiheadDilatedAttention standard(c);
  MultiheadDilatedAttention sparse(c, make_attention("sparse", spec));
  standard->to(torch::kDouble);
  sparse->to(torch::kDouble);
  auto reference_params = standard->named_parameters();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : sparse->named_parameters()) p.value().copy_(reference_params[p.key()]);
  }
  at::Tensor x = torch::randn({2, 64, 32}, torch::kDouble).requires_grad_();
  at::Tensor grad = torch::randn({2, 64, 32}, torch::kDouble);
  at::Tensor want = standard->forward(x);
  at::Tensor got = sparse->forward(x);
  EXPECT_LT(testing::relative_error(got, want), 1e-10);
  auto gw = torch::autograd::grad({want}, {x, reference_params["q_proj.weight"]}, {grad});
  auto gg = torch::autograd::grad({got}, {x, sparse->named_parameters()["q_proj.weight"]}, {grad});
  EXPECT_LT(testing::relative_error(gg[0], gw[0]), 1e-10);
  EXPECT_LT(testing::relative_error(gg[1], gw[1]), 1e-10);
}

TEST(SparseAttention, FactoryAndConfigErrors) {
  AttentionSpec spec;
  spec.attention = sparse_test_attention(128, false);
  spec.sparse.block_size = 16;
  auto variant = make_attention("sparse", spec);
  EXPECT_EQ(variant->name(), "sparse");
  auto t = [](int64_t S) { return torch::randn({1, S, 2, 8}, torch::kDouble); };
  EXPECT_THROW(variant->forward(t(120), t(120), t(120)), Error);  // S not a multiple of 16
  spec.attention.dropout = 0.1;
  EXPECT_THROW(make_attention("sparse", spec), Error);
  spec.attention.dropout = 0;
  spec.attention.head_mode = HeadMode::kPartition;
  EXPECT_THROW(make_attention("sparse", spec), Error);
  spec.attention.head_mode = HeadMode::kAll;
  spec.sparse.block_size = 48;
  EXPECT_THROW(make_attention("sparse", spec), Error);
}

}  // namespace
}  // namespace ra
