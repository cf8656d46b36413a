// The pieces of a training step's tail: FlatParameters (gradients accumulate in place into the
// flat buffer, in both LibTorch versions we build with; parameters and master weights stay one
// consistent set of views; clip + AdamW on the flat buffers gives the per-parameter
// torch::optim::AdamW result) and the chunked loss deciding which chunks to score on the host.
#include <gtest/gtest.h>
#include <torch/torch.h>  // before clip_grad.h, which does not include what it uses

#include <string>
#include <vector>

#include "attention/factory.h"
#include "runtime/error.h"
#include "runtime/flat_parameters.h"
#include "runtime/model.h"
#include "tests/support/dense_reference.h"
#include "tests/support/tiny_model.h"

namespace ra {
namespace {

// Checkpointed blocks, FFN chunks and loss chunks: several gradient contributions per weight
// (fc1, fc2, lm_head), each through AccumulateGrad.
ModelConfig tiny_model() {
  return testing::tiny_model_config(/*num_layers=*/2, /*checkpointing=*/true);
}

LongNetLM make_model() { return testing::make_standard_model(tiny_model()); }

// The batch of `step`: random tokens, targets with some ignored (-1).
std::pair<at::Tensor, at::Tensor> batch(int64_t step) {
  torch::manual_seed(100 + step);
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);
  return {tokens, targets};
}

void forward_backward(LongNetLM& model, int64_t step) {
  auto [tokens, targets] = batch(step);
  (model->loss_sum(model->hidden_states(tokens, 0), targets, targets) / 40.0).backward();
}

// Every parameter's gradient is its view of the flat buffer (the check collect_grads makes, made
// here directly so that a LibTorch that stops accumulating in place fails this test by name).
void expect_grads_alias(const FlatParameters& flat) {
  for (size_t i = 0; i < flat.params().size(); ++i) {
    const at::Tensor& grad = flat.params()[i].grad();
    ASSERT_TRUE(grad.defined()) << "parameter " << i;
    EXPECT_EQ(grad.data_ptr(), flat.grad_views()[i].data_ptr()) << "parameter " << i;
    EXPECT_EQ(grad.sizes(), flat.params()[i].sizes()) << "parameter " << i;
  }
}

TEST(FlatParameters, GradsAccumulateInPlaceIntoTheFlatBuffer) {
  // a is used twice (two AccumulateGrad calls), b never (keeps zeros), c once.
  auto a = torch::randn({3, 4}).requires_grad_();
  auto b = torch::randn({4}).requires_grad_();
  auto c = torch::randn({5}).requires_grad_();
  torch::OrderedDict<std::string, at::Tensor> named;
  named.insert("a", a), named.insert("b", b), named.insert("c", c);
  FlatParameters flat(named, at::kFloat);
  EXPECT_TRUE(flat.shares_master());
  const at::Tensor a0 = a.detach().clone();
  for (int round = 0; round < 2; ++round) {  // the second round starts from zeroed buffers
    flat.zero_grad();
    (a.sum() * 2).backward();
    (a * a).sum().backward();
    (c * 3).sum().backward();
    expect_grads_alias(flat);
    EXPECT_NO_THROW(flat.collect_grads());
    EXPECT_TRUE(torch::equal(a.grad(), 2 + 2 * a0));
    EXPECT_TRUE(torch::equal(b.grad(), torch::zeros({4})));
    EXPECT_TRUE(torch::equal(c.grad(), torch::full({5}, 3.0)));
  }
  // The parameter and the master weight are one tensor's memory in fp32 runs.
  EXPECT_EQ(a.data_ptr(), flat.master_views()[0].data_ptr());
  EXPECT_TRUE(torch::equal(flat.master(FlatParameters::kDecay).narrow(0, 0, 12), a0.reshape(-1)));

  // A gradient that stops aliasing the buffer (as if AccumulateGrad had replaced it) is caught.
  c.mutable_grad() = torch::ones({5});
  try {
    flat.collect_grads();
    FAIL() << "a replaced gradient was not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 'c'"), std::string::npos) << e.what();
  }
}

// The real model (checkpointed blocks, chunked FFN and loss: custom autograd functions) gives the
// gradients of an unflattened copy, accumulated in the flat buffer, in fp32 and bf16.
TEST(FlatParameters, ModelGradsAliasTheFlatBufferAndEqualThePlainModels) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(std::string("dtype ") + c10::toString(dtype));
    LongNetLM reference = make_model();
    reference->to(dtype);
    LongNetLM model = make_model();
    FlatParameters flat(model->named_parameters(), dtype);
    EXPECT_EQ(flat.shares_master(), dtype == at::kFloat);
    for (int64_t step = 1; step <= 2; ++step) {
      for (auto& p : reference->parameters()) p.mutable_grad() = at::Tensor();
      forward_backward(reference, step);
      flat.zero_grad();
      forward_backward(model, step);
      expect_grads_alias(flat);
      flat.collect_grads();
      auto expected = reference->named_parameters();
      for (const auto& item : model->named_parameters()) {
        EXPECT_EQ(item.value().scalar_type(), dtype);
        EXPECT_TRUE(torch::equal(item.value(), expected[item.key()])) << item.key();
        const at::Tensor& want = expected[item.key()].grad();
        EXPECT_LT(testing::relative_error(item.value().grad(), want), 1e-6) << item.key();
      }
      // The master gradient buffers hold the up-cast gradient buffers.
      for (size_t g = 0; g < FlatParameters::kNumGroups; ++g) {
        EXPECT_TRUE(torch::equal(flat.master(g).grad(), flat.grad_buffer(g).to(at::kFloat)));
      }
    }
  }
}

// The trainer's step on the flat buffers, and the same step as the trainer did it before the
// buffers existed: per-parameter clip_grad_norm_ and torch::optim::AdamW.
std::unique_ptr<torch::optim::AdamW> make_adamw(std::vector<at::Tensor> decay,
                                                std::vector<at::Tensor> no_decay) {
  auto options = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(0.1));
  groups.emplace_back(no_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(1e-2));
}

constexpr double kClip = 0.05;  // small enough to clip every step here

// Relative error of the parameters of `model` against `reference`, per name, and over all.
void expect_same_parameters(LongNetLM& model, LongNetLM& reference, double per_parameter,
                            double overall, const std::string& when) {
  auto expected = reference->named_parameters();
  std::vector<at::Tensor> got_all, want_all;
  for (const auto& item : model->named_parameters()) {
    EXPECT_LT(testing::relative_error(item.value(), expected[item.key()]), per_parameter)
        << item.key() << " " << when;
    got_all.push_back(item.value().detach().reshape(-1));
    want_all.push_back(expected[item.key()].detach().reshape(-1));
  }
  EXPECT_LT(testing::relative_error(at::cat(got_all), at::cat(want_all)), overall) << when;
}

TEST(FlatParameters, ClipAndAdamWOnFlatBuffersEqualPerParameterAdamW) {
  // Reference: what the trainer did per parameter.
  LongNetLM reference = make_model();
  std::vector<at::Tensor> decay, no_decay;
  for (auto& p : reference->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto reference_adamw = make_adamw(decay, no_decay);
  // Flat: what the trainer does now.
  LongNetLM model = make_model();
  FlatParameters flat(model->named_parameters(), at::kFloat);
  auto flat_adamw =
      make_adamw({flat.master(FlatParameters::kDecay)}, {flat.master(FlatParameters::kNoDecay)});
  const LongNetLM initial = make_model();
  for (int64_t step = 1; step <= 4; ++step) {
    reference_adamw->zero_grad();
    forward_backward(reference, step);
    for (auto& p : reference->parameters()) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    }
    const double reference_norm = torch::nn::utils::clip_grad_norm_(reference->parameters(), kClip);
    reference_adamw->step();

    flat.zero_grad();
    forward_backward(model, step);
    flat.collect_grads();
    const double flat_norm = flat.clip_grad_norm_(kClip).item<double>();
    flat_adamw->step();
    flat.copy_master_to_params();

    EXPECT_GT(reference_norm, kClip);  // clipping happened
    EXPECT_NEAR(flat_norm, reference_norm, 1e-6 * reference_norm) << "step " << step;
    // One step from the same weights: every parameter within fp32 rounding (the norm's
    // summation order differs). Later steps start from weights that differ by that rounding;
    // the gradients of some weights are pure rounding noise (k_proj's bias: softmax ignores a
    // constant added to every key), so there the comparison is over all parameters at once.
    expect_same_parameters(model, reference, step == 1 ? 1e-6 : 1e-4, 1e-6,
                           "after step " + std::to_string(step));
  }
  for (const auto& item : initial->named_parameters()) {  // not vacuous: every weight moved
    EXPECT_FALSE(torch::equal(item.value(), model->named_parameters()[item.key()])) << item.key();
  }
}

// bf16 compute: the model's weights are bf16 views of one flat buffer per group that always hold
// the rounded fp32 master weights, which are views of the flat master buffers.
TEST(FlatParameters, Bf16ParamsStayTheRoundedMasterViewsAfterSteps) {
  LongNetLM model = make_model();
  std::vector<at::Tensor> initial;
  for (const auto& p : model->parameters()) initial.push_back(p.detach().clone());
  FlatParameters flat(model->named_parameters(), at::kBFloat16);
  auto adamw =
      make_adamw({flat.master(FlatParameters::kDecay)}, {flat.master(FlatParameters::kNoDecay)});
  for (size_t i = 0; i < initial.size(); ++i) {
    EXPECT_TRUE(torch::equal(flat.master_views()[i], initial[i]));  // the fp32 init, not rounded
  }
  auto check_views = [&] {
    std::vector<at::Tensor> params = model->parameters();
    ASSERT_EQ(params.size(), flat.params().size());
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor& p = params[i];
      const size_t g = p.dim() >= 2 ? FlatParameters::kDecay : FlatParameters::kNoDecay;
      EXPECT_EQ(p.scalar_type(), at::kBFloat16);
      EXPECT_TRUE(p.requires_grad());
      // Inside the group's bf16 buffer, and equal to the rounded master view.
      const auto* base = static_cast<const char*>(flat.param_buffer(g).data_ptr());
      const auto* data = static_cast<const char*>(p.data_ptr());
      EXPECT_TRUE(data >= base && data + p.nbytes() <= base + flat.param_buffer(g).nbytes()) << i;
      EXPECT_EQ((data - base) % 128, 0) << i;  // aligned views
      EXPECT_TRUE(torch::equal(p, flat.master_views()[i].to(at::kBFloat16))) << i;
      EXPECT_EQ(flat.master_views()[i].scalar_type(), at::kFloat);
      EXPECT_EQ(flat.master_views()[i].sizes(), p.sizes());
    }
  };
  check_views();
  for (int64_t step = 1; step <= 2; ++step) {
    flat.zero_grad();
    forward_backward(model, step);
    flat.collect_grads();
    flat.clip_grad_norm_(1.0);
    adamw->step();
    flat.copy_master_to_params();
    check_views();
  }
  // The master weights moved (and the bf16 weights with them).
  for (size_t i = 0; i < initial.size(); ++i) {
    EXPECT_FALSE(torch::equal(flat.master_views()[i], initial[i])) << i;
  }
}

// The chunks with something to score are found on the host: the same loss with targets on the
// host as a separate tensor, read from the targets, or none at all; a shard with nothing to
// score still gives a loss that runs backward.
TEST(LossSum, HostTargetsDecideTheChunksWithTheSameResult) {
  LongNetLM model = make_model();
  auto [tokens, targets] = batch(1);
  targets.narrow(1, 0, 12).fill_(-1);  // the first chunk has nothing to score
  at::Tensor hidden = model->hidden_states(tokens, 0);
  const at::Tensor plain = model->loss_sum(hidden, targets);
  EXPECT_TRUE(torch::equal(model->loss_sum(hidden, targets, targets.clone()), plain));
  EXPECT_GT(plain.item<double>(), 0);
  EXPECT_THROW(model->loss_sum(hidden, targets, targets.narrow(1, 0, 8)), Error);

  at::Tensor none = torch::full_like(targets, -1);
  at::Tensor zero = model->loss_sum(hidden, none, none);
  EXPECT_EQ(zero.item<double>(), 0.0);
  ASSERT_TRUE(zero.requires_grad());
  zero.backward();
  EXPECT_TRUE(model->embed->weight.grad().defined());
}

}  // namespace
}  // namespace ra
