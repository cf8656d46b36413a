// MultiheadDilatedAttention (shapes, MAGNETO init, sub-LN, q/k norm, fused qkv, gradients
// against a hand-composed float64 pipeline) and the attention factory.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "attention/factory.h"
#include "attention/standard/multihead_dilated_attention.h"
#include "runtime/error.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

MultiheadConfig small_config() {
  MultiheadConfig c;
  c.embed_dim = 48;
  c.num_heads = 6;
  c.gamma_init = 2.0;
  c.attention.segment_lengths = {8, 16};
  c.attention.dilation_rates = {1, 2};
  return c;
}

TEST(Multihead, ForwardMatchesProjectionsAroundDenseReference) {
  for (bool fused : {false, true}) {
    for (bool qk_norm : {false, true}) {
      auto c = small_config();
      c.fused_qkv = fused;
      c.qk_norm = qk_norm;
      c.attention.causal = true;
      MultiheadDilatedAttention mha(c);
      mha->to(torch::kDouble);
      auto x = torch::randn({2, 32, 48}, torch::kDouble).requires_grad_();
      auto got = mha->forward(x);
      ASSERT_EQ(got.sizes(), x.sizes());
      // Same pipeline by hand, attention from the dense reference.
      at::Tensor q, k, v;
      if (fused) {
        auto qkv = torch::nn::functional::linear(x, mha->qkv_proj->weight, mha->qkv_proj->bias)
                       .chunk(3, -1);
        q = qkv[0], k = qkv[1], v = qkv[2];
      } else {
        q = mha->q_proj->forward(x), k = mha->k_proj->forward(x), v = mha->v_proj->forward(x);
      }
      q = q.reshape({2, 32, 6, 8}), k = k.reshape({2, 32, 6, 8}), v = v.reshape({2, 32, 6, 8});
      if (qk_norm) q = mha->q_norm->forward(q), k = mha->k_norm->forward(k);
      auto attn = testing::dense_dilated_attention(c.attention, q, k, v).out.reshape({2, 32, 48});
      auto want = mha->out_proj->forward(mha->sub_ln->forward(attn));
      EXPECT_LT(testing::relative_error(got, want), 1e-10)
          << "fused=" << fused << " qk_norm=" << qk_norm;
      auto g = torch::randn_like(got);
      auto gx = torch::autograd::grad({got}, {x}, {g})[0];
      auto gx_want = torch::autograd::grad({want}, {x}, {g})[0];
      EXPECT_LT(testing::relative_error(gx, gx_want), 1e-10);
    }
  }
}

TEST(Multihead, MagnetoInit) {
  auto c = small_config();
  c.embed_dim = 256;
  c.num_heads = 4;
  c.gamma_init = 3.0;
  MultiheadDilatedAttention mha(c);
  // xavier normal std = gain * sqrt(2 / (fan_in + fan_out)) = gain * sqrt(2 / 512) = gain / 16.
  auto std_of = [](const at::Tensor& w) { return w.std().item<double>(); };
  EXPECT_NEAR(std_of(mha->q_proj->weight), 1.0 / 16, 0.005);
  EXPECT_NEAR(std_of(mha->k_proj->weight), 1.0 / 16, 0.005);
  EXPECT_NEAR(std_of(mha->v_proj->weight), 3.0 / 16, 0.01);
  EXPECT_NEAR(std_of(mha->out_proj->weight), 3.0 / 16, 0.01);
  for (auto* l : {&mha->q_proj, &mha->k_proj, &mha->v_proj, &mha->out_proj})
    EXPECT_EQ((*l)->bias.abs().sum().item<double>(), 0.0);
  c.fused_qkv = true;
  MultiheadDilatedAttention fused(c);
  EXPECT_NEAR(std_of(fused->qkv_proj->weight.narrow(0, 0, 256)), 1.0 / 16, 0.005);
  EXPECT_NEAR(std_of(fused->qkv_proj->weight.narrow(0, 512, 256)), 3.0 / 16, 0.01);
}

TEST(Multihead, OptionalPartsAndErrors) {
  auto c = small_config();
  c.sub_ln = false;
  c.bias = false;
  MultiheadDilatedAttention mha(c);
  EXPECT_TRUE(mha->sub_ln.is_empty());
  EXPECT_FALSE(mha->q_proj->bias.defined());
  EXPECT_THROW(mha->forward(torch::randn({2, 32, 40})), Error);
  c.fused_qkv = true;
  MultiheadDilatedAttention fused(c);
  EXPECT_THROW(fused->forward(torch::randn({1, 32, 48}), torch::randn({1, 32, 48}),
                              torch::randn({1, 32, 48})),
               Error);
  c.num_heads = 5;
  EXPECT_THROW(MultiheadDilatedAttention{c}, Error);
}

TEST(Factory, CreatesStandardAndListsNamesOnError) {
  AttentionSpec spec;
  spec.attention.segment_lengths = {8};
  spec.attention.dilation_rates = {1};
  auto attn = make_attention("standard", spec);
  EXPECT_EQ(attn->name(), "standard");
  EXPECT_EQ(attention_names().front(), "standard");
  try {
    make_attention("improved", spec);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("'improved'"), std::string::npos);
    EXPECT_NE(e.message().find("standard"), std::string::npos);
  }
  spec.attention.dilation_rates = {};
  EXPECT_THROW(make_attention("standard", spec), Error);  // validated on construction
}

}  // namespace
}  // namespace ra
