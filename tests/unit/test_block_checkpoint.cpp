// Gradient checkpointing: the checkpointed model gives the same loss and the same gradients
// (input and every parameter) as the plain one, in float64 on random weights and data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/factory.h"
#include "runtime/block_checkpoint.h"
#include "runtime/model.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

ModelConfig tiny_model(bool checkpointing) {
  ModelConfig c;
  c.vocab_size = 50;
  c.num_layers = 3;
  c.embed_dim = 32;
  c.num_heads = 4;
  c.ffn_dim = 64;
  c.attention.segment_lengths = {8, 32};
  c.attention.dilation_rates = {1, 2};
  c.attention.causal = true;
  c.checkpointing = checkpointing;
  c.loss_chunk_tokens = 12;  // several chunks, the last one partial
  c.ffn_chunk_tokens = 12;   // the checkpointed FFN runs in chunks too (ignored without)
  return c;
}

TEST(BlockCheckpoint, FunctionGradientsEqualDirectOnes) {
  auto w = torch::randn({6, 6}, torch::kDouble).requires_grad_();
  auto x = torch::randn({4, 6}, torch::kDouble).requires_grad_();
  auto fn = [&](const at::Tensor& in) { return torch::tanh(in.matmul(w)).pow(2); };
  auto direct = torch::autograd::grad({fn(x).sum()}, {x, w});
  auto checkpointed = torch::autograd::grad({checkpoint_block(fn, x, {w}).sum()}, {x, w});
  EXPECT_LT(testing::relative_error(checkpointed[0], direct[0]), 1e-14);
  EXPECT_LT(testing::relative_error(checkpointed[1], direct[1]), 1e-14);
}

TEST(BlockCheckpoint, ModelLossAndGradientsEqualUncheckpointed) {
  auto make = [](bool checkpointing) {
    torch::manual_seed(7);
    LongNetLM model(tiny_model(checkpointing), [] {
      AttentionSpec spec;
      spec.attention = tiny_model(false).attention;
      return make_attention("standard", spec);
    });
    model->to(torch::kDouble);
    model->train();
    return model;
  };
  LongNetLM plain = make(false), checkpointed = make(true);
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);  // some ignored (-1)
  auto loss_plain = plain->loss_sum(plain->hidden_states(tokens, 64), targets);
  auto loss_ckpt = checkpointed->loss_sum(checkpointed->hidden_states(tokens, 64), targets);
  loss_plain.backward();
  loss_ckpt.backward();
  EXPECT_NEAR(loss_ckpt.item<double>(), loss_plain.item<double>(), 1e-10);
  auto p = plain->named_parameters(), c = checkpointed->named_parameters();
  ASSERT_EQ(p.size(), c.size());
  for (const auto& item : p) {
    const auto& grad_plain = item.value().grad();
    const auto& grad_ckpt = c[item.key()].grad();
    ASSERT_TRUE(grad_plain.defined() && grad_ckpt.defined()) << item.key();
    ASSERT_GT(grad_plain.norm().item<double>(), 0) << item.key();
    EXPECT_LT(testing::relative_error(grad_ckpt, grad_plain), 1e-10) << item.key();
  }
}

}  // namespace
}  // namespace ra
