// Gradient checkpointing: the checkpointed model gives the same loss and the same gradients
// (input and every parameter) as the plain one, in float64 on random weights and data; with
// bf16 checkpoint storage it equals a plain forward that rounds each block input the same way;
// offloading the checkpoints changes nothing (on CPU the offloader copies to another tensor).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "attention/factory.h"
#include "runtime/block_checkpoint.h"
#include "runtime/checkpoint_offload.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "tests/support/dense_reference.h"
#include "tests/support/tiny_model.h"

namespace ra {
namespace {

ModelConfig tiny_model(bool checkpointing) {
  return testing::tiny_model_config(/*num_layers=*/3, checkpointing);
}

LongNetLM make_model(const ModelConfig& config, at::ScalarType dtype) {
  return testing::make_standard_model(config, dtype);
}

// Loss of a forward + backward on fixed random data; the gradients are left in the model.
at::Tensor loss_and_backward(LongNetLM& model) {
  torch::manual_seed(11);
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);  // some ignored (-1)
  at::Tensor loss = model->loss_sum(model->hidden_states(tokens, 64), targets);
  loss.backward();
  return loss.detach();
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

TEST(BlockCheckpoint, DeferredResidualHasTheGradientsOfTheFullSum) {
  auto w = torch::randn({6, 6}, torch::kDouble).requires_grad_();
  auto h = torch::randn({2, 7, 6}, torch::kDouble).requires_grad_();  // 7 tokens, chunks of 3
  auto fn = [&](const at::Tensor& in) { return torch::tanh(in.matmul(w)).pow(2); };
  at::Tensor deferred = add_recomputed_in_backward(fn, h, {w}, /*chunk=*/3);
  EXPECT_TRUE(torch::equal(deferred, h));  // fn's part is left out by design
  auto dy = torch::randn({2, 7, 6}, torch::kDouble);
  auto direct = torch::autograd::grad({h + fn(h)}, {h, w}, {dy});
  auto via_deferred = torch::autograd::grad({deferred}, {h, w}, {dy});
  EXPECT_LT(testing::relative_error(via_deferred[0], direct[0]), 1e-14);
  EXPECT_LT(testing::relative_error(via_deferred[1], direct[1]), 1e-14);
}

TEST(BlockCheckpoint, InsideRecomputeOnlyDuringTheRecompute) {
  auto x = torch::randn({3}, torch::kDouble).requires_grad_();
  std::vector<bool> seen;
  auto fn = [&](const at::Tensor& in) {
    seen.push_back(inside_recompute());
    return in * 2;
  };
  at::Tensor y = checkpoint_block(fn, x, {});
  EXPECT_FALSE(inside_recompute());
  y.sum().backward();
  EXPECT_FALSE(inside_recompute());
  EXPECT_EQ(seen, (std::vector<bool>{false, true}));  // the forward, then the recompute
}

// A block built for checkpointing (chunked FFN) but run directly with grad, outside any
// recompute, computes its true output: the deferred placeholder is only used in a recompute.
TEST(BlockCheckpoint, CheckpointedBlockRunDirectlyIsExact) {
  ModelConfig config = tiny_model(true);
  LongNetLM model = make_model(config, torch::kDouble);
  auto* block = model->blocks->ptr(0)->as<DecoderBlockImpl>();
  auto x = torch::randn({2, 32, config.embed_dim}, torch::kDouble);
  at::Tensor direct = block->forward(x, 0);
  at::Tensor no_grad;
  {
    torch::NoGradGuard guard;  // the chunked, in-place forward of a checkpoint
    no_grad = block->forward(x, 0);
  }
  ModelConfig plain_config = tiny_model(false);
  LongNetLM plain = make_model(plain_config, torch::kDouble);
  at::Tensor want = plain->blocks->ptr(0)->as<DecoderBlockImpl>()->forward(x, 0);
  EXPECT_LT(testing::relative_error(direct, want), 1e-14);
  EXPECT_LT(testing::relative_error(no_grad, want), 1e-14);
}

// Every parameter gradient of `model` equals (float64, 1e-10) that of `plain`, both nonzero.
void expect_same_gradients(LongNetLM& plain, LongNetLM& model) {
  auto p = plain->named_parameters(), m = model->named_parameters();
  ASSERT_EQ(p.size(), m.size());
  for (const auto& item : p) {
    const auto& grad_plain = item.value().grad();
    const auto& grad = m[item.key()].grad();
    ASSERT_TRUE(grad_plain.defined() && grad.defined()) << item.key();
    ASSERT_GT(grad_plain.norm().item<double>(), 0) << item.key();
    EXPECT_LT(testing::relative_error(grad, grad_plain), 1e-10) << item.key();
  }
}

// Every block checkpointed (FFN chunked, its chunks deferred in the recompute), only the first
// one, none: the loss and every gradient equal the plain model's.
TEST(BlockCheckpoint, ModelLossAndGradientsEqualUncheckpointed) {
  auto make = [](bool checkpointing, int64_t checkpoint_layers) {
    ModelConfig config = tiny_model(checkpointing);
    config.checkpoint_layers = checkpoint_layers;
    return make_model(config, torch::kDouble);
  };
  LongNetLM plain = make(false, -1);
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);  // some ignored (-1)
  auto loss_plain = plain->loss_sum(plain->hidden_states(tokens, 64), targets);
  loss_plain.backward();
  for (int64_t checkpoint_layers : {-1, 1, 0}) {
    SCOPED_TRACE("checkpoint_layers = " + std::to_string(checkpoint_layers));
    LongNetLM checkpointed = make(true, checkpoint_layers);
    auto loss_ckpt = checkpointed->loss_sum(checkpointed->hidden_states(tokens, 64), targets);
    loss_ckpt.backward();
    EXPECT_NEAR(loss_ckpt.item<double>(), loss_plain.item<double>(), 1e-10);
    expect_same_gradients(plain, checkpointed);
  }
}

// Blocks whose FFN keeps no activations (its output computed without a graph, its backward
// recomputed in token chunks of 12 of the 32): with checkpointing off (blocks 0 and 1) and after
// one checkpointed block (block 1); the loss and every gradient equal the plain model's.
TEST(BlockCheckpoint, RecomputedFfnEqualsPlainModel) {
  LongNetLM plain = make_model(tiny_model(false), torch::kDouble);
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);
  auto loss_plain = plain->loss_sum(plain->hidden_states(tokens, 64), targets);
  loss_plain.backward();
  struct Case {
    bool checkpointing;
    int64_t checkpoint_layers, recompute_ffn_layers;
  };
  for (const Case& c : {Case{false, -1, 2}, Case{true, 1, 1}, Case{false, -1, 3}}) {
    SCOPED_TRACE("checkpointing " + std::to_string(c.checkpointing) + ", checkpoint_layers " +
                 std::to_string(c.checkpoint_layers) + ", recompute_ffn_layers " +
                 std::to_string(c.recompute_ffn_layers));
    ModelConfig config = tiny_model(c.checkpointing);
    config.checkpoint_layers = c.checkpoint_layers;
    config.recompute_ffn_layers = c.recompute_ffn_layers;
    config.ffn_chunk_tokens = 12;
    LongNetLM model = make_model(config, torch::kDouble);
    auto loss = model->loss_sum(model->hidden_states(tokens, 64), targets);
    loss.backward();
    EXPECT_NEAR(loss.item<double>(), loss_plain.item<double>(), 1e-10);
    expect_same_gradients(plain, model);
  }
  // More recomputed FFNs than blocks that are not checkpointed: a clear error.
  ModelConfig bad = tiny_model(true);
  bad.checkpoint_layers = 2;
  bad.recompute_ffn_layers = 2;
  try {
    make_model(bad, torch::kDouble);
    ADD_FAILURE() << "recompute_ffn_layers beyond the uncheckpointed blocks must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--recompute-ffn-layers = 2"), std::string::npos)
        << e.what();
  }
}

TEST(BlockCheckpoint, Bf16StorageEqualsFunctionOnRoundedInput) {
  auto w = torch::randn({6, 6}).requires_grad_();
  auto x = torch::randn({4, 6}).requires_grad_();
  auto fn = [&](const at::Tensor& in) { return torch::tanh(in.matmul(w)).pow(2); };
  CheckpointStorage bf16;
  bf16.dtype = at::kBFloat16;
  at::Tensor y_ckpt = checkpoint_block(fn, x, {w}, bf16);
  at::Tensor y_ref = fn(round_through(x, at::kBFloat16));
  EXPECT_TRUE(torch::equal(y_ckpt, y_ref));
  EXPECT_FALSE(torch::equal(y_ckpt, fn(x)));  // the rounding is real
  auto grads_ckpt = torch::autograd::grad({y_ckpt.sum()}, {x, w});
  auto grads_ref = torch::autograd::grad({y_ref.sum()}, {x, w});
  EXPECT_TRUE(torch::equal(grads_ckpt[0], grads_ref[0]));
  EXPECT_TRUE(torch::equal(grads_ckpt[1], grads_ref[1]));
}

// A float32 model whose checkpoints store bf16 computes exactly what a plain (uncheckpointed)
// forward computes when it rounds every block input to bf16: the loss and every gradient agree
// to fp32 accuracy (the checkpointed FFN runs in chunks, so not bit for bit).
TEST(BlockCheckpoint, Bf16CheckpointStorageEqualsPlainForwardOnRoundedBlockInputs) {
  ModelConfig config = tiny_model(true);
  config.checkpoint_dtype = at::kBFloat16;
  LongNetLM checkpointed = make_model(config, torch::kFloat);
  LongNetLM reference = make_model(tiny_model(false), torch::kFloat);
  LongNetLM unrounded = make_model(tiny_model(true), torch::kFloat);

  const double loss_ckpt = loss_and_backward(checkpointed).item<double>();
  const double loss_unrounded = loss_and_backward(unrounded).item<double>();
  torch::manual_seed(11);  // the data of loss_and_backward
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);
  at::Tensor x = reference->embed->forward(tokens);
  for (size_t i = 0; i < reference->blocks->size(); ++i) {
    x = reference->blocks->ptr<DecoderBlockImpl>(i)->forward(round_through(x, at::kBFloat16), 64);
  }
  at::Tensor loss_ref = reference->loss_sum(reference->final_ln->forward(x), targets);
  loss_ref.backward();

  const double error = std::abs(loss_ckpt - loss_ref.item<double>());
  EXPECT_LT(error, 1e-5 * std::abs(loss_ref.item<double>()));
  // Rounding moves the loss far more than the comparison's tolerance: the reference models it.
  EXPECT_GT(std::abs(loss_unrounded - loss_ckpt), 20 * error);
  auto expected = reference->named_parameters();
  for (const auto& item : checkpointed->named_parameters()) {
    const auto& grad = item.value().grad();
    const auto& grad_ref = expected[item.key()].grad();
    ASSERT_TRUE(grad.defined() && grad_ref.defined()) << item.key();
    ASSERT_GT(grad_ref.norm().item<double>(), 0) << item.key();
    EXPECT_LT(testing::relative_error(grad, grad_ref), 1e-5) << item.key();
  }
}

// Offloading is pure data movement: identical loss and gradients, bit for bit.
TEST(BlockCheckpoint, OffloadedCheckpointsGiveIdenticalLossAndGradients) {
  for (auto storage : {at::kFloat, at::kBFloat16}) {
    ModelConfig config = tiny_model(true);
    config.checkpoint_dtype = storage;
    LongNetLM kept = make_model(config, torch::kFloat);
    config.offload_checkpoints = true;
    LongNetLM offloaded = make_model(config, torch::kFloat);
    EXPECT_TRUE(torch::equal(loss_and_backward(offloaded), loss_and_backward(kept)));
    auto expected = kept->named_parameters();
    for (const auto& item : offloaded->named_parameters()) {
      ASSERT_TRUE(item.value().grad().defined()) << item.key();
      EXPECT_TRUE(torch::equal(item.value().grad(), expected[item.key()].grad()))
          << item.key() << " storage " << storage;
    }
  }
}

TEST(CheckpointOffloader, GivesBackCopiesInReverseOrderOnceEach) {
  CheckpointOffloader offloader;
  std::vector<at::Tensor> originals;
  for (int i = 0; i < 3; ++i) {
    originals.push_back(torch::randn({2, 5}));
    EXPECT_EQ(offloader.store(originals.back()), i);
  }
  at::Tensor expected_last = originals[2].clone();
  originals[2].add_(1);  // the store is a copy: later writes to the source do not reach it
  EXPECT_TRUE(torch::equal(offloader.take(2), expected_last));
  EXPECT_TRUE(torch::equal(offloader.take(1), originals[1]));  // prefetched by take(2)
  offloader.prefetch(0);
  offloader.prefetch(0);  // a second prefetch is a no-op
  EXPECT_TRUE(torch::equal(offloader.take(0), originals[0]));
  EXPECT_THROW(offloader.take(1), Error);
  EXPECT_THROW(offloader.take(3), Error);
  offloader.prefetch(5);  // out of range: ignored
  EXPECT_EQ(offloader.size(), 3);
}

}  // namespace
}  // namespace ra
