// DilatedAttention (reference backend) against the dense float64 masked form: outputs, LSE
// and gradients of q, k, v, over branch lists, head counts, both head modes, causal or not.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <sstream>

#include "attention/standard/dilated_attention.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

struct Case {
  std::vector<int64_t> w, r;
  int64_t S, H, Hkv, D;
};

std::string name_of(const Case& c, bool causal, HeadMode mode) {
  std::ostringstream os;
  os << "S" << c.S << "_H" << c.H << "_Hkv" << c.Hkv << "_D" << c.D << "_w";
  for (auto x : c.w) os << x << "_";
  os << "r";
  for (auto x : c.r) os << x << "_";
  os << (causal ? "causal" : "full") << "_" << to_string(mode);
  return os.str();
}

const std::vector<Case> kCases = {
    // LongNet's w=[2048..32768], r=[1,2,4,6,12] scaled down 128x; rates 6 and 12 do not
    // divide their segments.
    {{16, 32, 64, 128, 256}, {1, 2, 4, 6, 12}, 256, 7, 7, 8},
    {{8, 16, 32}, {1, 2, 4}, 64, 5, 5, 16},       // H not divisible by 3 branches
    {{12, 24}, {5, 7}, 48, 6, 6, 8},              // rates that do not divide w
    {{64, 128}, {2, 3}, 32, 4, 4, 8},             // w > S: both clipped to S
    {{40}, {1}, 40, 3, 3, 8},                     // one branch w = S, r = 1: dense attention
    {{8, 32}, {2, 4}, 64, 6, 2, 8},               // GQA: 6 query heads on 2 k/v heads
    {{4, 8, 16, 32}, {1, 1, 2, 2}, 32, 2, 2, 4},  // fewer heads than branches
};

class ReferenceVsDense : public ::testing::TestWithParam<std::tuple<int, bool, HeadMode>> {};

TEST_P(ReferenceVsDense, OutputLseAndGradientsMatchInFloat64) {
  const auto [index, causal, mode] = GetParam();
  const Case& c = kCases[index];
  DilatedAttentionConfig config;
  config.segment_lengths = c.w;
  config.dilation_rates = c.r;
  config.causal = causal;
  config.head_mode = mode;
  SCOPED_TRACE(name_of(c, causal, mode));

  auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  auto q = torch::randn({2, c.S, c.H, c.D}, f64).requires_grad_();
  auto k = torch::randn({2, c.S, c.Hkv, c.D}, f64).requires_grad_();
  auto v = torch::randn({2, c.S, c.Hkv, c.D}, f64).requires_grad_();
  auto grad_out = torch::randn({2, c.S, c.H, c.D}, f64);

  DilatedAttention attention(config);
  AttentionResult got = attention.forward(q, k, v);
  testing::DenseResult want = testing::dense_dilated_attention(config, q, k, v);
  ASSERT_EQ(got.out.sizes(), want.out.sizes());
  EXPECT_LT(testing::relative_error(got.out, want.out), 1e-10);

  // LSE: -inf exactly where the dense form has no key, equal elsewhere.
  auto finite = torch::isfinite(want.lse);
  EXPECT_TRUE(torch::equal(torch::isfinite(got.lse), finite));
  EXPECT_LT(testing::relative_error(got.lse.masked_select(finite), want.lse.masked_select(finite)),
            1e-10);

  auto got_grads = torch::autograd::grad({got.out}, {q, k, v}, {grad_out});
  auto want_grads = torch::autograd::grad({want.out}, {q, k, v}, {grad_out});
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(testing::relative_error(got_grads[i], want_grads[i]), 1e-10) << names[i];
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ReferenceVsDense,
    ::testing::Combine(::testing::Range(0, static_cast<int>(kCases.size())), ::testing::Bool(),
                       ::testing::Values(HeadMode::kAll, HeadMode::kPartition)),
    [](const auto& info) {
      return name_of(kCases[std::get<0>(info.param)], std::get<1>(info.param),
                     std::get<2>(info.param));
    });

class ReferenceDtypes : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(ReferenceDtypes, MatchesDenseWithinDtypeTolerance) {
  const auto dtype = GetParam();
  DilatedAttentionConfig config;
  config.segment_lengths = {16, 32, 64};
  config.dilation_rates = {1, 2, 4};
  config.causal = true;
  auto opts = torch::TensorOptions().dtype(dtype);
  auto q = torch::randn({1, 64, 6, 16}, opts).requires_grad_();
  auto k = torch::randn({1, 64, 6, 16}, opts).requires_grad_();
  auto v = torch::randn({1, 64, 6, 16}, opts).requires_grad_();
  auto grad_out = torch::randn({1, 64, 6, 16}, opts);
  AttentionResult got = DilatedAttention(config).forward(q, k, v);
  EXPECT_EQ(got.out.scalar_type(), dtype);
  EXPECT_EQ(got.lse.scalar_type(), torch::kFloat);
  auto want = testing::dense_dilated_attention(config, q, k, v);
  const double tol = testing::tolerance_for(dtype);
  EXPECT_LT(testing::relative_error(got.out, want.out), tol);
  auto qd = q.detach().to(torch::kDouble).requires_grad_();
  auto kd = k.detach().to(torch::kDouble).requires_grad_();
  auto vd = v.detach().to(torch::kDouble).requires_grad_();
  auto want_d = testing::dense_dilated_attention(config, qd, kd, vd);
  auto got_grads = torch::autograd::grad({got.out}, {q, k, v}, {grad_out});
  auto want_grads =
      torch::autograd::grad({want_d.out}, {qd, kd, vd}, {grad_out.to(torch::kDouble)});
  for (int i = 0; i < 3; ++i) EXPECT_LT(testing::relative_error(got_grads[i], want_grads[i]), tol);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ReferenceDtypes,
                         ::testing::Values(torch::kFloat, torch::kBFloat16, torch::kHalf));

TEST(Reference, UncoveredPositionsGiveZeroOutputMinusInfLseAndFiniteGradients) {
  // One branch, r = 4, two heads: offsets 0 and 1 are kept, offsets 2 and 3 by no head.
  DilatedAttentionConfig config;
  config.segment_lengths = {8};
  config.dilation_rates = {4};
  auto q = torch::randn({1, 16, 2, 8}, torch::kDouble).requires_grad_();
  auto k = torch::randn({1, 16, 2, 8}, torch::kDouble).requires_grad_();
  auto v = torch::randn({1, 16, 2, 8}, torch::kDouble).requires_grad_();
  AttentionResult got = DilatedAttention(config).forward(q, k, v);
  // Head 0 keeps positions 0, 4, 8, 12; position 2 is uncovered for head 0.
  EXPECT_EQ(got.out[0][2][0].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(got.lse[0][2][0].item<double>(), -std::numeric_limits<double>::infinity());
  EXPECT_NE(got.out[0][4][0].abs().sum().item<double>(), 0.0);
  got.out.sum().backward();
  for (const auto& t : {q, k, v}) EXPECT_TRUE(torch::isfinite(t.grad()).all().item<bool>());
}

TEST(Reference, DropoutActsOnlyInTraining) {
  DilatedAttentionConfig config;
  config.segment_lengths = {16};
  config.dilation_rates = {1};
  config.dropout = 0.5;
  auto q = torch::randn({1, 32, 2, 8}), k = torch::randn({1, 32, 2, 8}),
       v = torch::randn({1, 32, 2, 8});
  DilatedAttention attention(config);
  auto eval_out = attention.forward(q, k, v).out;
  DilatedAttentionConfig no_dropout = config;
  no_dropout.dropout = 0;
  EXPECT_TRUE(torch::allclose(eval_out, DilatedAttention(no_dropout).forward(q, k, v).out));
  attention.train();
  torch::manual_seed(1);
  auto train_a = attention.forward(q, k, v).out;
  torch::manual_seed(1);
  auto train_b = attention.forward(q, k, v).out;
  EXPECT_FALSE(torch::allclose(train_a, eval_out));
  EXPECT_TRUE(torch::equal(train_a, train_b));  // same seed, same mask
}

TEST(Reference, CustomSoftmaxScaleIsUsed) {
  DilatedAttentionConfig config;
  config.segment_lengths = {16};
  config.dilation_rates = {2};
  config.softmax_scale = 0.3;
  auto q = torch::randn({1, 32, 4, 8}, torch::kDouble),
       k = torch::randn({1, 32, 4, 8}, torch::kDouble),
       v = torch::randn({1, 32, 4, 8}, torch::kDouble);
  auto got = DilatedAttention(config).forward(q, k, v).out;
  EXPECT_LT(testing::relative_error(got, testing::dense_dilated_attention(config, q, k, v).out),
            1e-10);
}

}  // namespace
}  // namespace ra
